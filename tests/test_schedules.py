"""The adaptation schedules in the reference's units: FA's lr steps per iteration, self-training's per pass."""
import pytest
import torch

from nnunet_dfg.trainers.adaptation import StepDecayLR


def _optimizer():
    return torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1.0)


def test_fa_decay_first_after_one_iteration_then_every_five():
    opt = _optimizer()
    s = StepDecayLR(opt, 1e-4, 0.8, every=5, iterations_per_epoch=5, first=1)
    lrs = []
    for i in range(12):
        s.at_iteration(i)
        lrs.append(opt.param_groups[0]["lr"])
    powers = [0, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 3]
    assert lrs == pytest.approx([1e-4 * 0.8 ** p for p in powers])
    s.step(2)  # nnU-Net's epoch-start call agrees with the iteration count (epoch 2 starts at iteration 10)
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-4 * 0.8 ** 2)


def test_per_epoch_decay_ignores_iterations():
    opt = _optimizer()
    s = StepDecayLR(opt, 1e-4, 0.8, every=1, iterations_per_epoch=72, first=1, per_iteration=False)
    for epoch in range(4):
        s.step(epoch)
        s.at_iteration(epoch * 72 + 50)  # no effect: the unit is the pass
        assert opt.param_groups[0]["lr"] == pytest.approx(1e-4 * 0.8 ** epoch)
