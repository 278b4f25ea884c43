"""Tests for fedtwin.pipelines.mutual.ema: the mean-model update in both units against hand-computed values."""

import pytest
import torch

from fedtwin.pipelines.mutual.ema import EmaSchedule, ema_update, init_ema


class Scalar(torch.nn.Module):
    """One float parameter, one float buffer and one integer buffer, so every update rule is visible."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor([value]))
        self.register_buffer("running", torch.tensor([value]))
        self.register_buffer("count", torch.tensor(0, dtype=torch.long))

    def set(self, value: float, count: int) -> None:
        with torch.no_grad():
            self.w.fill_(value)
            self.running.fill_(value)
            self.count.fill_(count)


def test_init_ema_is_an_independent_frozen_copy():
    # Prepare
    model = Scalar(10.0)

    # Execute
    ema = init_ema(model)
    model.set(1.0, 5)

    # Assert: E^(0) = θ at the time of the copy, and later changes to θ do not leak in
    assert ema.w.item() == 10.0 and ema.running.item() == 10.0
    assert not ema.w.requires_grad


def test_ema_update_interpolates_floats_and_copies_integer_buffers():
    # Prepare
    model = Scalar(10.0)
    ema = init_ema(model)
    model.set(20.0, 7)

    # Execute
    ema_update(ema, model, momentum=0.75)

    # Assert: 0.75 * 10 + 0.25 * 20 = 12.5
    assert ema.w.item() == pytest.approx(12.5)
    assert ema.running.item() == pytest.approx(12.5)
    assert ema.count.item() == 7


def test_per_iteration_schedule_with_warm_up_by_hand():
    # Prepare: alpha = 0.6; a(step) = min(1 - 1/(step+1), 0.6) = 0, 0.5, 0.6, 0.6
    schedule = EmaSchedule(unit="iter", momentum=0.6)
    model = Scalar(10.0)
    ema = init_ema(model)
    thetas = [1.0, 2.0, 3.0, 4.0]
    momenta, values = [], []

    # Execute
    for step, theta in enumerate(thetas):
        model.set(theta, step)
        momenta.append(schedule.after_iteration(ema, model, step))
        values.append(ema.w.item())
    epoch_result = schedule.after_epoch(ema, model)

    # Assert: E = 1;  0.5*1 + 0.5*2 = 1.5;  0.6*1.5 + 0.4*3 = 2.1;  0.6*2.1 + 0.4*4 = 2.86
    assert momenta == pytest.approx([0.0, 0.5, 0.6, 0.6])
    assert values == pytest.approx([1.0, 1.5, 2.1, 2.86])
    assert epoch_result is None and ema.w.item() == pytest.approx(2.86)


def test_per_epoch_schedule_by_hand():
    # Prepare: lambda = 0.9, E^(0) = θ = 10
    schedule = EmaSchedule(unit="epoch", momentum=0.9)
    model = Scalar(10.0)
    ema = init_ema(model)

    # Execute: iterations do not touch the EMA in this unit; two cycles end with θ = 0 then θ = 20
    model.set(0.0, 1)
    assert schedule.after_iteration(ema, model, step=0) is None
    assert ema.w.item() == 10.0
    schedule.after_epoch(ema, model)
    after_first = ema.w.item()
    model.set(20.0, 2)
    schedule.after_epoch(ema, model)

    # Assert: 0.9*10 + 0.1*0 = 9;  0.9*9 + 0.1*20 = 10.1
    assert after_first == pytest.approx(9.0)
    assert ema.w.item() == pytest.approx(10.1)


def test_schedule_rejects_bad_unit_and_momentum():
    with pytest.raises(ValueError, match="unit: .*'batch'"):
        EmaSchedule(unit="batch")
    with pytest.raises(ValueError, match="momentum: .*1.5"):
        EmaSchedule(unit="epoch", momentum=1.5)
