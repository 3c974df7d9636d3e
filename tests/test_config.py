import pytest

from contrastseg.config import ExperimentConfig, demo, preset, smoke


@pytest.mark.parametrize("field, value, listed", [
    ("dataset", "nope", "synthscapes"),
    ("backbone", "resnet9000", "resnet18"),
    ("head", "unet", "deeplabv3"),
    ("method", "magic", "ce"),
    ("device", "tpu", "cuda"),
])
def test_unknown_names_list_the_valid_ones(field, value, listed):
    with pytest.raises(ValueError, match=listed) as error:
        ExperimentConfig(**{field: value})
    assert repr(value) in str(error.value)


@pytest.mark.parametrize("field, value", [
    ("steps", 0), ("batch_size", 0), ("lr", 0.0), ("momentum", 1.0), ("image_size", 8),
    ("output_stride", 12), ("num_train", -1), ("boundary_width", 0),
])
def test_out_of_range_values_are_rejected_by_name(field, value):
    with pytest.raises(ValueError, match=field):
        ExperimentConfig(**{field: value})


def test_wrong_types_are_rejected_and_ints_become_floats():
    with pytest.raises(TypeError, match="steps"):
        ExperimentConfig(steps="10")
    with pytest.raises(TypeError, match="amp"):
        ExperimentConfig(amp=1)
    assert isinstance(ExperimentConfig(lr=1).lr, float)


def test_hash_is_stable_and_ignores_bookkeeping_fields():
    assert smoke().hash() == smoke().hash()
    assert smoke().hash() == smoke(num_workers=4, checkpoint_every=7, num_threads=1).hash()
    cpu = smoke(device="cpu")
    assert cpu.hash() == cpu.replace(speed="fast", channels_last=True, compile=True).hash()  # one CPU numerics
    assert smoke().hash() != smoke(seed=1).hash()
    assert smoke().hash() != smoke(num_devices=2).hash()  # per-process anchor budgets: not the same run
    assert smoke().hash() != demo().hash()
    assert len(smoke().hash()) == 12


def test_frozen_round_trip_and_unknown_keys():
    cfg = demo(seed=3)
    with pytest.raises(Exception):
        cfg.seed = 4
    assert ExperimentConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="bogus"):
        ExperimentConfig.from_dict({"bogus": 1})


def test_presets_by_name():
    assert preset("smoke", steps=5).steps == 5
    assert preset("demo").backbone == "resnet18"
    with pytest.raises(ValueError, match="smoke"):
        preset("huge")


def test_laptop_preset_is_the_calibrated_setting():
    from contrastseg.config import laptop

    cfg = laptop()
    assert (cfg.backbone, cfg.head, cfg.image_size, cfg.num_train, cfg.num_val, cfg.steps) == \
        ("tiny", "fcn", 96, 512, 128, 2500)
    assert preset("laptop", seed=3) == laptop(seed=3)
    assert preset("laptop", method="pixel_contrast").proj_dim == smoke().proj_dim  # the smoke budgets
    rc2l = preset("laptop", method="rc2l")
    assert (rc2l.head, rc2l.steps, rc2l.image_size, rc2l.optimizer) == ("mask_classification", 2500, 96, "adamw")
