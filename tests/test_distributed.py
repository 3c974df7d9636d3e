"""Data parallelism on the CPU with gloo: synchronised BatchNorm, gradient averaging (DistributedDataParallel and the
flattened all-reduce), batch shards, two-process training against one process (supervised and semi-supervised), the
torchrun launch from the run store, grid dispatch, the config-file CLI."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from torch.nn.parallel import DistributedDataParallel

from contrastseg import runs
from contrastseg.config import MASK_CLASSIFICATION_SETTINGS, smoke
from contrastseg.data import dataset_info
from contrastseg.engine.batching import StepBatchSampler
from contrastseg.engine.checkpoint import load_checkpoint
from contrastseg.engine.distributed import (GRADIENT_SYNC_ENV, GRADIENT_SYNCS, CpuSyncBatchNorm, Distributed,
                                            convert_sync_batchnorm)
from contrastseg.engine.train import (TrainingLoss, build_model, build_optimizer, build_training_loss, read_log,
                                      training_loader, training_step)
from contrastseg.objectives import CrossEntropyObjective
from contrastseg.train import read_config
from test_benchmarks import BENCHMARKS, load as load_benchmark

WORLD = 2
TINY = dict(steps=4, checkpoint_every=2, num_train=16, num_val=8, batch_size=4, image_size=64, num_threads=1,
            device="cpu")
# for one process against two: a head without dropout (each process draws its own masks) and no rescaling (whose
# padding is ignored, and a mean over each process's valid pixels is not the mean over the whole batch's)
WITHOUT_RANDOMNESS = TINY | dict(head="deeplabv3", scale_min=1.0, scale_max=1.0)


def in_processes(worker, tmp_path, *args) -> None:
    """Run ``worker(rank, *args)`` in WORLD gloo processes (the process group set up from a file store)."""
    mp.spawn(_join_and_run, args=(worker, str(tmp_path / "store"), args), nprocs=WORLD, join=True)


def _join_and_run(rank, worker, store, args):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD)
    try:
        worker(rank, *args)
    finally:
        dist.destroy_process_group()


def _batchnorm_worker(rank, inputs, weights, out_path):
    layer = CpuSyncBatchNorm(3)
    layer.weight.data = torch.tensor([1.0, 2.0, 0.5])
    layer.bias.data = torch.tensor([0.1, -0.2, 0.3])
    share = inputs[rank * 2:(rank + 1) * 2].clone().requires_grad_()
    output = layer(share)
    (output * weights[rank * 2:(rank + 1) * 2]).sum().backward()
    torch.save({"output": output.detach(), "input_grad": share.grad, "weight_grad": layer.weight.grad,
                "bias_grad": layer.bias.grad, "running_mean": layer.running_mean,
                "running_var": layer.running_var}, f"{out_path}.{rank}")


@pytest.mark.multiprocess
def test_cpu_sync_batchnorm_equals_batchnorm_over_the_whole_batch(tmp_path):
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(4, 3, 5, 6, generator=generator, dtype=torch.float64).float() * 3 + 1
    weights = torch.randn(4, 3, 5, 6, generator=generator)
    in_processes(_batchnorm_worker, tmp_path, inputs, weights, str(tmp_path / "bn"))

    reference = nn.BatchNorm2d(3)
    reference.weight.data = torch.tensor([1.0, 2.0, 0.5])
    reference.bias.data = torch.tensor([0.1, -0.2, 0.3])
    whole = inputs.clone().requires_grad_()
    output = reference(whole)
    (output * weights).sum().backward()
    parts = [torch.load(f"{tmp_path / 'bn'}.{rank}") for rank in range(WORLD)]
    torch.testing.assert_close(torch.cat([p["output"] for p in parts]), output.detach(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.cat([p["input_grad"] for p in parts]), whole.grad, atol=1e-5, rtol=1e-5)
    # each process holds the gradient of its own share; their sum is the whole batch's
    torch.testing.assert_close(sum(p["weight_grad"] for p in parts), reference.weight.grad, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(sum(p["bias_grad"] for p in parts), reference.bias.grad, atol=1e-4, rtol=1e-5)
    for part in parts:
        torch.testing.assert_close(part["running_mean"], reference.running_mean)
        torch.testing.assert_close(part["running_var"], reference.running_var)


def test_cpu_sync_batchnorm_is_plain_batchnorm_in_one_process():
    layer, reference = CpuSyncBatchNorm(4), nn.BatchNorm2d(4)
    inputs = torch.randn(3, 4, 5, 5)
    torch.testing.assert_close(layer(inputs), reference(inputs))
    converted = convert_sync_batchnorm(nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)), torch.device("cpu"))
    assert isinstance(converted[1], CpuSyncBatchNorm)
    assert set(converted.state_dict()) == set(nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)).state_dict())


def _gradient_worker(rank, out_path):
    world = Distributed(rank, WORLD, rank)
    only_first, both, neither = (nn.Parameter(torch.zeros(3)) for _ in range(3))
    if rank == 0:
        only_first.grad = torch.tensor([2.0, 4.0, 6.0])
    both.grad = torch.full((3,), float(rank + 1))
    world.average_gradients([only_first, both, neither])
    values = world.mean_values({"loss": float(rank), "ce": 2.0 * rank}, torch.device("cpu"))
    torch.save({"only_first": only_first.grad, "both": both.grad, "neither": neither.grad, "values": values},
               f"{out_path}.{rank}")


@pytest.mark.multiprocess
def test_gradients_and_logged_values_are_averaged_over_processes(tmp_path):
    in_processes(_gradient_worker, tmp_path, str(tmp_path / "grad"))
    for rank in range(WORLD):
        part = torch.load(f"{tmp_path / 'grad'}.{rank}")
        torch.testing.assert_close(part["only_first"], torch.tensor([1.0, 2.0, 3.0]))  # a zero on process 1
        torch.testing.assert_close(part["both"], torch.full((3,), 1.5))
        assert part["neither"] is None
        assert part["values"] == {"loss": 0.5, "ce": 1.0}


def test_the_processes_shares_make_up_the_single_process_batch():
    whole = list(StepBatchSampler(20, 4, 9, seed=3))
    shares = [list(StepBatchSampler(20, 4, 9, seed=3, rank=rank, world_size=2)) for rank in range(2)]
    assert [first + second for first, second in zip(*shares)] == whole
    with pytest.raises(ValueError, match="multiple of the number of devices"):
        StepBatchSampler(20, 5, 9, seed=3, rank=0, world_size=2)
    with pytest.raises(ValueError, match="num_devices"):
        smoke(batch_size=5, num_devices=2)


@pytest.mark.multiprocess
def test_two_processes_under_torchrun_match_one_process(runs_root):
    one = runs.get_or_train(smoke(**WITHOUT_RANDOMNESS), progress=False)
    two = runs.get_or_train(smoke(**WITHOUT_RANDOMNESS, num_devices=2), progress=False)
    assert two.metrics["num_devices"] == 2 and one.metrics.get("num_devices", 1) == 1
    assert two.metrics["gradient_sync"] == "ddp" and "gradient_sync" not in one.metrics
    assert (two.run_dir / runs.TRAIN_LOG_NAME).exists()  # trained by the torchrun subprocess
    one_losses = [step["loss"] for step in one.log()]
    two_losses = [step["loss"] for step in two.log()]
    assert len(two_losses) == TINY["steps"]
    # the same images, the global batch's BatchNorm statistics and averaged gradients: equal up to float order and
    # to the weighting of pixels (each process averages over its own valid pixels; SynthScapes ignores a few)
    assert two_losses == pytest.approx(one_losses, rel=1e-3)
    assert two.metrics["val"]["miou"] == pytest.approx(one.metrics["val"]["miou"], abs=5e-3)
    assert two.load_model()  # the checkpoint of SyncBatchNorm layers loads into the plain model


@pytest.mark.multiprocess
@pytest.mark.parametrize("gradient_sync", GRADIENT_SYNCS)
def test_one_update_on_two_processes_equals_the_update_on_one(runs_root, monkeypatch, gradient_sync):
    monkeypatch.setenv(GRADIENT_SYNC_ENV, gradient_sync)  # the torchrun processes inherit it
    one = runs.get_or_train(smoke(**WITHOUT_RANDOMNESS | dict(steps=1)), progress=False)
    two = runs.get_or_train(smoke(**WITHOUT_RANDOMNESS | dict(steps=1, num_devices=2)), progress=False)
    assert two.metrics["gradient_sync"] == gradient_sync
    one_weights = load_checkpoint(one.checkpoint)["model"]
    two_weights = load_checkpoint(two.checkpoint)["model"]
    for name, value in one_weights.items():  # the first batch has 7 and 25 ignored pixels of 8192 per process
        torch.testing.assert_close(two_weights[name].float(), value.float(), atol=2e-5, rtol=1e-3, msg=name)
    assert two.metrics["val"]["miou"] == pytest.approx(one.metrics["val"]["miou"], abs=1e-3)


@pytest.mark.multiprocess
def test_a_semi_supervised_run_on_two_processes_matches_one_process(tmp_path, monkeypatch):
    # RC²L: the student runs twice in one DDP forward (labeled, strong views), the EMA teacher outside DDP, the
    # objective's region projector averaged with the model; without CutMix boxes (drawn per process) and with SGD,
    # whose update is linear in the gradient (AdamW's first steps are about lr x its sign)
    rc2l = smoke(**WITHOUT_RANDOMNESS | MASK_CLASSIFICATION_SETTINGS["smoke"]
                 | dict(method="rc2l", steps=3, cutmix_probability=0.0, optimizer="sgd"))
    one = runs.get_or_train(rc2l, root=tmp_path / "one", progress=False)
    two = {}
    for gradient_sync in GRADIENT_SYNCS:
        monkeypatch.setenv(GRADIENT_SYNC_ENV, gradient_sync)
        two[gradient_sync] = runs.get_or_train(rc2l.replace(num_devices=2), root=tmp_path / gradient_sync,
                                               progress=False)
        assert two[gradient_sync].metrics["gradient_sync"] == gradient_sync
    # the set loss normalises over each process's matched queries, so the terms differ from one process's in the
    # fourth digit; the region losses are zero this early (the teacher keeps no region), the projector is used
    for name in ("loss", "rcc", "smc", "rmc", "rfc"):
        assert [step[name] for step in two["ddp"].log()] == pytest.approx([step[name] for step in one.log()],
                                                                        rel=2e-3, abs=1e-6), name
    states = {name: load_checkpoint(run.checkpoint) for name, run in [("one", one), *two.items()]}
    for part in ("model", "objective", "teacher"):
        assert list(states["ddp"][part]) == list(states["one"][part])  # a plain model's keys: no "module." prefix
        for name, value in states["allreduce"][part].items():  # DDP's update is the flattened all-reduce's
            torch.testing.assert_close(states["ddp"][part][name], value, atol=1e-7, rtol=1e-6, msg=f"{part}: {name}")
        for name, value in states["one"][part].items():
            torch.testing.assert_close(states["ddp"][part][name].float(), value.float(), atol=5e-4, rtol=1e-3,
                                       msg=f"{part}: {name}")
    assert two["ddp"].load_model(teacher=True)


class HalfUsedParameterObjective(CrossEntropyObjective):
    """CE + a term ``scale`` x mean logit whose parameter ``scale`` only process 0 reaches (process 1 detaches it),
    and a parameter ``never`` that no process uses."""

    def __init__(self, num_classes, ignore_index=255):
        super().__init__(num_classes, ignore_index)
        self.scale = nn.Parameter(torch.ones(()))
        self.never = nn.Parameter(torch.ones(3))
        self.mean_logit = None

    def forward(self, outputs, labels, step, unlabeled=None):
        terms = super().forward(outputs, labels, step)
        self.mean_logit = outputs["logits"].float().mean()
        scale = self.scale if dist.get_rank() == 0 else self.scale.detach()
        terms["scaled"] = scale * self.mean_logit
        return terms

    def weights(self, step):
        return super().weights(step) | {"scaled": 1.0}


def _half_used_worker(rank, images, labels, out_path):
    cfg = smoke(**WITHOUT_RANDOMNESS)
    share = slice(rank * 2, (rank + 1) * 2)
    saved = {}
    for gradient_sync in GRADIENT_SYNCS:
        world = Distributed(rank, WORLD, rank, gradient_sync)
        torch.manual_seed(0)
        model = convert_sync_batchnorm(build_model(cfg), torch.device("cpu"))
        objective = HalfUsedParameterObjective(dataset_info(cfg.dataset).num_classes)
        optimizer = build_optimizer(cfg, [*model.parameters(), *objective.parameters()])
        forward = build_training_loss(cfg, model, objective, torch.device("cpu"), world)
        values = training_step(model, objective, optimizer, images[share], labels[share], step=0, lr=cfg.lr,
                               amp=False, forward=forward, world=world)
        saved[gradient_sync] = {"wrapped": isinstance(forward, DistributedDataParallel), "values": values,
                                "model": model.state_dict(), "scale": objective.scale.detach().clone(),
                                "scale_grad": objective.scale.grad, "never_grad": objective.never.grad,
                                "mean_logit": objective.mean_logit.detach()}
    torch.save(saved, f"{out_path}.{rank}")


@pytest.mark.multiprocess
def test_ddp_and_the_all_reduce_give_the_same_update_also_to_a_parameter_used_on_one_process(tmp_path):
    cfg = smoke(**WITHOUT_RANDOMNESS)
    images, labels = next(iter(training_loader(cfg, 0, torch.device("cpu"))[0]))
    in_processes(_half_used_worker, tmp_path, images, labels, str(tmp_path / "half"))
    parts = [torch.load(f"{tmp_path / 'half'}.{rank}") for rank in range(WORLD)]
    for part in parts:
        assert part["ddp"]["wrapped"] and not part["allreduce"]["wrapped"]
    # process 0's gradient of scale is its mean logit, process 1 counts as zero: every process gets half of it
    expected = parts[0]["ddp"]["mean_logit"] / WORLD
    for part in parts:
        for gradient_sync in GRADIENT_SYNCS:
            torch.testing.assert_close(part[gradient_sync]["scale_grad"], expected)
            torch.testing.assert_close(part[gradient_sync]["scale"], 1 - cfg.lr * (expected + cfg.weight_decay))
            assert part[gradient_sync]["never_grad"] is None  # no process used it: no gradient, as in one process
        assert part["ddp"]["values"] == part["allreduce"]["values"]
        for name, value in part["allreduce"]["model"].items():  # equal up to the order of float additions
            torch.testing.assert_close(part["ddp"]["model"][name], value, atol=1e-7, rtol=1e-6, msg=name)
    for name, value in parts[0]["ddp"]["model"].items():  # DDP's reduced gradients are the same on each process
        assert torch.equal(parts[1]["ddp"]["model"][name], value), name


def _compiled_worker(rank, images, labels, out_path):
    from contrastseg.engine import speed

    speed.COMPILE_BACKEND = "eager"  # inductor needs a C++ compiler; dynamo's DDP graph splitting is the same
    share = slice(rank * 2, (rank + 1) * 2)
    saved = {}
    for compiled in (False, True):
        cfg = smoke(**WITHOUT_RANDOMNESS, compile=compiled)
        world = Distributed(rank, WORLD, rank)
        torch.manual_seed(0)
        model = convert_sync_batchnorm(build_model(cfg), torch.device("cpu"))
        objective = CrossEntropyObjective(dataset_info(cfg.dataset).num_classes)
        optimizer = build_optimizer(cfg, model.parameters())
        forward = build_training_loss(cfg, model, objective, torch.device("cpu"), world)
        for step in range(2):
            training_step(model, objective, optimizer, images[share], labels[share], step=step, lr=cfg.lr, amp=False,
                          forward=forward, world=world)
        saved[compiled] = {"model": model.state_dict(), "compiled": type(forward.module.run_student).__name__}
    torch.save(saved, f"{out_path}.{rank}")


@pytest.mark.multiprocess
def test_a_compiled_student_trains_through_ddp_as_the_plain_one(tmp_path):
    images, labels = next(iter(training_loader(smoke(**WITHOUT_RANDOMNESS), 0, torch.device("cpu"))[0]))
    in_processes(_compiled_worker, tmp_path, images, labels, str(tmp_path / "compiled"))
    for rank in range(WORLD):
        part = torch.load(f"{tmp_path / 'compiled'}.{rank}")
        assert part[True]["compiled"] == "OptimizedModule" and part[False]["compiled"] != "OptimizedModule"
        assert list(part[True]["model"]) == list(part[False]["model"])  # no "_orig_mod." prefix
        for name, value in part[False]["model"].items():
            torch.testing.assert_close(part[True]["model"][name], value, atol=1e-6, rtol=1e-5, msg=name)


def test_a_world_of_one_wraps_nothing_and_the_gradient_sync_is_checked(monkeypatch):
    model = nn.Linear(2, 2)
    loss = TrainingLoss(model, CrossEntropyObjective(2))
    for gradient_sync in GRADIENT_SYNCS:
        assert Distributed(gradient_sync=gradient_sync).data_parallel(loss, torch.device("cpu")) is loss
    assert list(loss.state_dict()) == ["student.weight", "student.bias"]  # the compiled form is not a submodule
    monkeypatch.setenv(GRADIENT_SYNC_ENV, "allreduce")
    assert Distributed.from_environment("cpu")[0].gradient_sync == "allreduce"
    monkeypatch.setenv(GRADIENT_SYNC_ENV, "nccl")
    with pytest.raises(ValueError, match=f"{GRADIENT_SYNC_ENV}='nccl'.*valid: ddp, allreduce"):
        Distributed.from_environment("cpu")


def test_sync_batchnorm_refuses_batchnorm_subclasses_it_would_change():
    class BatchNormWithActivation(nn.BatchNorm2d):
        def forward(self, input):
            return super().forward(input).relu()

    with pytest.raises(TypeError, match="BatchNormWithActivation"):
        convert_sync_batchnorm(nn.Sequential(BatchNormWithActivation(3)), torch.device("cpu"))


@pytest.mark.multiprocess
def test_grid_dispatch_trains_runs_side_by_side_with_the_in_process_results(tmp_path, runs_root):
    configs = [smoke(**TINY, seed=seed) for seed in (0, 1)]
    in_process = [runs.get_or_train(cfg, root=tmp_path / "alone", progress=False) for cfg in configs]
    side_by_side = runs.get_or_train([*configs, configs[0]], slots=["", ""], progress=False)
    assert [r.config for r in side_by_side] == [*configs, configs[0]]
    for alone, dispatched in zip(in_process, side_by_side):
        assert (dispatched.run_dir / runs.TRAIN_LOG_NAME).exists()
        assert [s["loss"] for s in dispatched.log()] == pytest.approx([s["loss"] for s in alone.log()], rel=1e-6)
        assert dispatched.metrics["val"]["miou"] == pytest.approx(alone.metrics["val"]["miou"], abs=1e-6)


def test_dispatch_slots_follow_the_environment(monkeypatch):
    monkeypatch.setenv(runs.PARALLEL_ENV, "3")
    expected = [str(i % torch.cuda.device_count()) for i in range(3)] if torch.cuda.is_available() else [""] * 3
    assert runs.dispatch_slots() == expected
    monkeypatch.delenv(runs.PARALLEL_ENV)
    assert len(runs.dispatch_slots()) == (torch.cuda.device_count() if torch.cuda.device_count() > 1 else 0)


@pytest.mark.multiprocess
def test_a_failed_subprocess_run_names_its_log(tmp_path, runs_root):
    cfg = smoke(**TINY | dict(data_root=str(tmp_path / "nowhere"), dataset="cityscapes"))
    with pytest.raises(RuntimeError, match="train.log"):
        runs.get_or_train([cfg], slots=["", ""], progress=False)  # two slots: a subprocess
    assert (runs.run_dir_for(cfg) / runs.TRAIN_LOG_NAME).is_file()


def test_config_files_in_json_and_yaml_with_preset_and_overrides(tmp_path):
    (tmp_path / "run.yaml").write_text("preset: smoke\nmethod: pixel_contrast\nsteps: 7\n")
    cfg = read_config(tmp_path / "run.yaml", ["seed=3"])
    assert cfg == smoke(method="pixel_contrast", steps=7, seed=3)
    (tmp_path / "run.json").write_text(json.dumps(cfg.to_dict()))
    assert read_config(tmp_path / "run.json") == cfg
    (tmp_path / "bad.yaml").write_text("stepz: 3\n")
    with pytest.raises(ValueError, match=r"bad\.yaml.*stepz"):
        read_config(tmp_path / "bad.yaml")
    with pytest.raises(FileNotFoundError, match="missing.json"):
        read_config(tmp_path / "missing.json")


def test_the_cli_does_not_import_the_notebook_batch(tmp_path):
    (tmp_path / "run.yaml").write_text("preset: smoke\nsteps: 7\n")
    code = ("import json, sys\n"
            "from contrastseg.train import read_config\n"
            f"assert read_config({str(tmp_path / 'run.yaml')!r}, ['seed=3']).seed == 3\n"
            "print(json.dumps(sorted(sys.modules)))")
    listing = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    imported = json.loads(listing.stdout)
    assert "contrastseg.train" in imported and "contrastseg.overrides" in imported  # --set is read
    assert "contrastseg.suite" not in imported


def test_cli_trains_into_the_run_store(tmp_path, runs_root, capsys):
    from contrastseg.train import main

    (tmp_path / "run.json").write_text(json.dumps(smoke(**TINY).to_dict()))
    assert main(["--config", str(tmp_path / "run.json"), "--no-progress"]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["run_dir"] == str(runs.run_dir_for(smoke(**TINY)))
    assert len(read_log(printed["run_dir"])) == TINY["steps"]
    assert (Path(printed["run_dir"]) / runs.KEY_NAME).is_file()  # a store folder like any other
    assert runs.older_runs() == []
    assert runs.get_or_train(smoke(**TINY), progress=False).metrics["val"]["miou"] == printed["miou"]
    assert main(["--config", str(tmp_path / "run.json"), "--no-progress"]) == 0  # finished: not trained twice
    assert len(read_log(printed["run_dir"])) == TINY["steps"]


def test_no_torchrun_environment_is_a_world_of_one(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    world, device = Distributed.from_environment("cpu")
    assert (world.world_size, world.rank, world.is_main, device.type) == (1, 0, True, "cpu")
    assert not dist.is_initialized()


STEP_TIME = BENCHMARKS / "step_time.py"


@pytest.mark.multiprocess
def test_step_time_compares_ddp_with_the_all_reduce_under_torchrun(tmp_path):
    out = tmp_path / "step_time.json"
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={WORLD}",
                    str(STEP_TIME), "--preset", "smoke", "--device", "cpu", "--threads", "1", "--steps", "2",
                    "--warmup", "1", "--methods", "ce", "rc2l", "--gradient-sync", *GRADIENT_SYNCS, "--out", str(out)],
                   check=True, capture_output=True, text=True, timeout=600)
    result = json.loads(out.read_text())
    assert result["processes"] == WORLD and result["batch_size"] == 8  # the global batch, 4 images per process
    assert [(row["method"], row["gradient_sync"]) for row in result["rows"]] == [
        ("ce [ddp]", "ddp"), ("ce [allreduce]", "allreduce"), ("rc2l [ddp]", "ddp"), ("rc2l [allreduce]", "allreduce")]
    for row in result["rows"]:
        assert len(row["times_ms"]) == 2 and row["median_ms"] > 0
        assert row["images_per_second"] == pytest.approx(8 / (row["median_ms"] / 1000), rel=1e-9)
    assert result["command"].startswith(f"torchrun --nproc-per-node {WORLD} ")


def test_step_time_refuses_a_gradient_sync_without_torchrun(capsys):
    with pytest.raises(SystemExit):
        load_benchmark("step_time").main(["--preset", "smoke", "--device", "cpu", "--gradient-sync", *GRADIENT_SYNCS])
    assert "under torchrun" in capsys.readouterr().err
