"""Tests for fedtwin.pipelines.transfer.transfer_step.

The paired mixing grad_fn, GSS signatures of a model, summaries.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as nnf

from fedtwin.pipelines.model.networks import ModelConfig, build_model
from fedtwin.pipelines.model.training import TrainSettings, local_train
from fedtwin.pipelines.transfer.gradient_mixing import GradientMixer, cosine_similarity
from fedtwin.pipelines.transfer.transfer_step import (
    PairedMixStep,
    StepTrace,
    harmonic_mean,
    head_signatures,
    similarity_summary,
)


def _tiny_model(seed: int = 0) -> nn.Module:
    """Flatten + linear over (B, T=2, C=1, H=2, W=2) clips: 8 inputs, 3 classes."""
    gen = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(8, 3))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))
    return model


def _batches(n_batches: int, size: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [
        (rng.integers(0, 256, (size, 2, 1, 2, 2), dtype=np.uint8), rng.integers(0, 3, size)) for _ in range(n_batches)
    ]


def _flat_grads(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    loss = nnf.cross_entropy(model(x), y)
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, list(model.parameters()))])


def test_paired_step_writes_the_simmix_of_separately_computed_gradients():
    # Prepare: one transfer batch and one history batch; the reference gradients come from two separate
    # forward passes, the rule applied by hand
    model = _tiny_model()
    (clips_n, y_n), (clips_h, y_h) = _batches(2, 4, seed=1)
    x_n = torch.from_numpy(clips_n).float() / 255.0
    x_h = torch.from_numpy(clips_h).float() / 255.0
    g_n = _flat_grads(model, x_n, torch.from_numpy(y_n))
    g_h = _flat_grads(model, x_h, torch.from_numpy(y_h))
    s = cosine_similarity(g_n, g_h)
    w_h = min(max((1 - s) / 2, 0.1), 0.9)
    expected = (1 - w_h) * g_n + w_h * g_h
    if float(expected @ g_h) < 0:
        expected = expected - float(expected @ g_h) / float(g_h @ g_h) * g_h
    step = PairedMixStep(GradientMixer("simmix"), iter([(clips_h, y_h)]))

    # Execute
    loss, metrics = step(model, x_n, torch.from_numpy(y_n))

    # Assert
    written = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
    torch.testing.assert_close(written, expected, rtol=1e-5, atol=1e-6)
    assert step.trace[0].s == pytest.approx(s, abs=1e-6)
    assert step.trace[0].w_h == pytest.approx(w_h, abs=1e-6)
    assert metrics["w_h"] == pytest.approx(w_h, abs=1e-6)
    assert loss == pytest.approx(nnf.cross_entropy(model(x_n), torch.from_numpy(y_n)).item(), rel=1e-6)


def test_finetune_with_history_writes_the_plain_new_gradient_and_still_traces_s():
    # Prepare
    model = _tiny_model(2)
    (clips_n, y_n), history = _batches(2, 5, seed=3)[0], _batches(1, 5, seed=4)
    x_n = torch.from_numpy(clips_n).float() / 255.0
    g_n = _flat_grads(model, x_n, torch.from_numpy(y_n))
    step = PairedMixStep(GradientMixer("finetune"), iter(history))

    # Execute
    step(model, x_n, torch.from_numpy(y_n))

    # Assert
    written = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
    torch.testing.assert_close(written, g_n, rtol=1e-5, atol=1e-6)
    assert step.trace[0].w_h == 0.0 and not math.isnan(step.trace[0].s)


def test_local_train_pairs_every_step_with_the_next_history_batch():
    # Prepare: 10 transfer clips in batches of 4 -> 3 steps per epoch, 2 epochs -> 6 history batches used
    model = _tiny_model(5)
    rng = np.random.default_rng(6)
    clips = rng.integers(0, 256, (10, 2, 1, 2, 2), dtype=np.uint8)
    labels = rng.integers(0, 3, 10)
    history = iter(_batches(7, 4, seed=7))
    step = PairedMixStep(GradientMixer("replay"), history)

    # Execute
    result = local_train(
        model,
        (clips, labels),
        TrainSettings(epochs=2, batch_size=4, lr=0.1),
        grad_fn=step,
        generator=torch.Generator().manual_seed(0),
    )

    # Assert
    assert result.steps == 6
    assert [t.step for t in step.trace] == [1, 2, 3, 4, 5, 6]
    assert all(t.w_h == 0.5 for t in step.trace)
    assert len(list(history)) == 1  # exactly one of the seven batches left
    assert result.metrics["w_h"] == pytest.approx(0.5)


def test_missing_history_is_refused_unless_plain_finetune():
    with pytest.raises(ValueError, match="needs history batches"):
        PairedMixStep(GradientMixer("agem"), None)
    step = PairedMixStep(GradientMixer("finetune"), None)
    model = _tiny_model()
    clips, labels = _batches(1, 3, seed=0)[0]
    loss, metrics = step(model, torch.from_numpy(clips).float() / 255.0, torch.from_numpy(labels))
    assert math.isnan(step.trace[0].s) and math.isnan(metrics["loss_history"]) and loss > 0


def test_head_signatures_equal_autograd_of_each_clip_loss_on_the_head_weight():
    # Prepare
    model = build_model(ModelConfig(widths=(4, 8), num_classes=3), seed=0)
    rng = np.random.default_rng(0)
    clips = rng.integers(0, 256, (3, 8, 1, 16, 16), dtype=np.uint8)
    labels = np.array([0, 2, 1])
    expected = []
    for clip, y in zip(clips, labels):
        x = torch.from_numpy(clip[None]).float() / 255.0
        loss = nnf.cross_entropy(model(x), torch.tensor([int(y)]))
        (grad,) = torch.autograd.grad(loss, [model.head.weight])
        expected.append(grad.reshape(-1).numpy())

    # Execute
    sigs = head_signatures(model, clips, labels)

    # Assert
    np.testing.assert_allclose(sigs, np.stack(expected), rtol=1e-4, atol=1e-6)


def test_similarity_summary_by_hand():
    # Prepare
    trace = [
        StepTrace(i + 1, s, w, p, 0.0, 1.0, 1.0)
        for i, (s, w, p) in enumerate([(-0.5, 0.75, True), (0.1, 0.45, False), (0.3, 0.30, False)])
    ]

    # Execute
    out = similarity_summary(trace)

    # Assert
    assert out["similarity_steps"] == 3
    assert out["similarity_mean"] == pytest.approx(-0.1 / 3)
    assert (out["similarity_min"], out["similarity_max"]) == (-0.5, 0.3)
    assert (out["similarity_first"], out["similarity_last"]) == (-0.5, 0.3)
    assert out["similarity_negative_fraction"] == pytest.approx(1 / 3)
    # bins of width 0.2 from -1: -0.5 -> bin 2, 0.1 -> bin 5, 0.3 -> bin 6
    assert out["similarity_histogram"] == [0, 0, 1, 0, 0, 1, 1, 0, 0, 0]
    assert out["history_weight_mean"] == pytest.approx(0.5)
    assert out["projected_fraction"] == pytest.approx(1 / 3)
    assert similarity_summary([]) == {"similarity_steps": 0}


def test_harmonic_mean_by_hand():
    assert harmonic_mean(0.5, 1.0) == pytest.approx(2 * 0.5 / 1.5)
    assert harmonic_mean(0.8, 0.8) == pytest.approx(0.8)
    assert harmonic_mean(0.0, 0.0) == 0.0
