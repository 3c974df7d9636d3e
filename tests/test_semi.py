"""Semi-supervised engine pieces: the EMA teacher, CutMix of images and of the teacher's targets, the two views."""

import pytest
import torch
from torch import nn

from contrastseg.data.transforms import WeakStrongViews, strong_photometric, train_transform
from contrastseg.engine.semi import CutMix, EmaTeacher, mean_teacher_momentum


def small_model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1))


def test_ema_update_is_the_moving_average_of_parameters_and_buffers():
    student = small_model(0)
    teacher = EmaTeacher(student, momentum=0.9)
    before = {name: value.clone() for name, value in teacher.module.state_dict().items()}
    with torch.no_grad():
        for parameter in student.parameters():
            parameter.add_(torch.randn_like(parameter))
    student.train()
    student(torch.randn(4, 3, 8, 8))  # moves the BatchNorm running statistics
    teacher.update(student, step=100)  # past the ramp: momentum 0.9
    after, current = teacher.module.state_dict(), student.state_dict()
    for name, value in after.items():
        if value.is_floating_point():
            torch.testing.assert_close(value, 0.9 * before[name] + 0.1 * current[name])
        else:
            assert torch.equal(value, current[name])  # BatchNorm's batch counter is copied
    assert not any(parameter.requires_grad for parameter in teacher.module.parameters())


def test_mean_teacher_ramp_copies_the_student_at_step_zero():
    assert mean_teacher_momentum(0, 0.999) == 0.0
    assert mean_teacher_momentum(9, 0.999) == pytest.approx(0.9)
    assert mean_teacher_momentum(10_000, 0.999) == 0.999
    student, other = small_model(0), small_model(1)
    teacher = EmaTeacher(other, momentum=0.99)
    teacher.update(student, step=0)
    for mine, theirs in zip(teacher.module.parameters(), student.parameters()):
        assert torch.equal(mine, theirs)


def test_teacher_runs_in_eval_mode_without_gradient():
    student = small_model(0)
    teacher = EmaTeacher(student, momentum=0.99)
    teacher.train()
    images = torch.randn(2, 3, 8, 8, requires_grad=True)
    out = teacher(images)
    assert not out.requires_grad and not teacher.module.training
    student.eval()
    torch.testing.assert_close(out, student(images).detach())


def test_cutmix_boxes_are_seeded_sized_and_mixed_with_the_partner():
    first = CutMix.draw(6, 40, 50, probability=1.0, seed=3, step=7)
    again = CutMix.draw(6, 40, 50, probability=1.0, seed=3, step=7)
    other = CutMix.draw(6, 40, 50, probability=1.0, seed=3, step=8)
    assert torch.equal(first.box, again.box) and not torch.equal(first.box, other.box)
    areas = first.box.flatten(1).float().mean(1)
    assert ((areas > 0.01) & (areas < 0.45)).all()
    for box in first.box:  # one axis-aligned rectangle each
        rows, columns = box.any(1).nonzero()[:, 0], box.any(0).nonzero()[:, 0]
        assert box[rows.min():rows.max() + 1, columns.min():columns.max() + 1].all()
        assert box.sum() == len(rows) * len(columns)
    assert first.partner.tolist() == [1, 2, 3, 4, 5, 0]
    images = torch.arange(6.0).view(6, 1, 1, 1).expand(6, 3, 40, 50)
    mixed = first.mix_with_partner(images)
    for index in range(6):
        inside, outside = mixed[index][:, first.box[index]], mixed[index][:, ~first.box[index]]
        assert (inside == (index + 1) % 6).all() and (outside == index).all()
    assert not CutMix.draw(6, 40, 50, probability=0.0, seed=3, step=7).box.any()
    assert not CutMix.draw(1, 40, 50, probability=1.0, seed=3, step=7).box.any()  # no partner


def test_cutmix_of_coarser_maps_uses_the_resized_box():
    cutmix = CutMix(torch.zeros(2, 8, 8, dtype=torch.bool), torch.tensor([1, 0]))
    cutmix.box[0, :4, :4] = True
    maps = torch.stack([torch.zeros(5, 4, 4), torch.ones(5, 4, 4)])
    mixed = cutmix.mix_with_partner(maps)
    assert (mixed[0, :, :2, :2] == 1).all() and mixed[0].sum() == 5 * 4 and (mixed[1] == 1).all()


def test_weak_and_strong_views_are_aligned_and_drop_the_label():
    torch.manual_seed(0)
    image = torch.rand(3, 80, 80)
    image[:, :, :40] = 0.0  # a dark left half: photometric changes keep it dark-ish, geometry moves it
    views = WeakStrongViews(train_transform(64, colour_jitter=0.0), strong_photometric(jitter_probability=1.0))
    weak, strong = views(image, torch.zeros(80, 80, dtype=torch.long))
    assert weak.shape == strong.shape == (3, 64, 64)
    assert not torch.equal(weak, strong)
    dark = weak.mean(0) < 0.05
    assert dark.any() and (~dark).any()
    assert strong.mean(0)[dark].mean() < strong.mean(0)[~dark].mean()  # same places in both views
