import math

import numpy as np
import pytest
import torch

from fedtwin.pipelines.transfer.gradient_mixing import (
    GradientMixer,
    agem_project,
    cosine_similarity,
    mix_flat,
    simmix_weights,
)


def _t(values):
    return torch.tensor(values, dtype=torch.float64)


def test_cosine_similarity_of_aligned_orthogonal_opposed_and_zero_vectors():
    # Prepare
    a = np.array([1.0, 2.0, 2.0])

    # Execute / Assert
    assert cosine_similarity(a, 2 * a) == pytest.approx(1.0)
    assert cosine_similarity(np.array([1.0, 0.0]), np.array([0.0, 3.0])) == 0.0
    assert cosine_similarity(a, -a) == pytest.approx(-1.0)
    assert cosine_similarity(_t([3.0, 4.0]), _t([4.0, 3.0])) == pytest.approx(24.0 / 25.0)
    assert cosine_similarity(np.zeros(2), np.array([1.0, 1.0])) == 0.0


def test_simmix_weights_follow_the_clipped_rule():
    assert simmix_weights(1.0) == pytest.approx((0.9, 0.1))  # (1-1)/2 = 0 -> clipped up to w_min
    assert simmix_weights(0.0) == pytest.approx((0.5, 0.5))
    assert simmix_weights(0.5) == pytest.approx((0.75, 0.25))
    assert simmix_weights(-1.0) == pytest.approx((0.1, 0.9))  # 1 -> clipped down to w_max
    assert simmix_weights(-0.2, w_min=0.0, w_max=1.0) == pytest.approx((0.4, 0.6))


def test_agem_project_removes_only_the_conflicting_component():
    # Prepare: <g, ref> = -2 - 2 = -4, ||ref||^2 = 8 -> g + 0.5 ref = [0, 3]
    g, ref = np.array([-1.0, 1.0]), np.array([2.0, -2.0])

    # Execute
    projected = agem_project(g, ref)
    untouched = agem_project(np.array([1.0, 0.0]), ref)

    # Assert
    np.testing.assert_allclose(projected, [0.0, 0.0])
    np.testing.assert_array_equal(untouched, [1.0, 0.0])
    np.testing.assert_allclose(agem_project(np.array([-3.0, 1.0]), np.array([1.0, 0.0])), [0.0, 1.0])
    np.testing.assert_array_equal(agem_project(np.array([-3.0, 1.0]), np.zeros(2)), [-3.0, 1.0])


@pytest.mark.parametrize(
    ("g_n", "g_h", "expected", "s", "w_h", "projected"),
    [
        # aligned: s = 1 -> w_h = 0.1; 0.9*[2,0] + 0.1*[1,0]
        ([2.0, 0.0], [1.0, 0.0], [1.9, 0.0], 1.0, 0.1, False),
        # orthogonal: s = 0 -> w_h = 0.5; 0.5*[1,0] + 0.5*[0,2]
        ([1.0, 0.0], [0.0, 2.0], [0.5, 1.0], 0.0, 0.5, False),
        # opposed: s = -1 -> w_h = 0.9; 0.1*[-4,0] + 0.9*[1,0] = [0.5, 0] still agrees with g_h
        ([-4.0, 0.0], [1.0, 0.0], [0.5, 0.0], -1.0, 0.9, False),
        # nearly opposed and large: 0.1*[-10,2] + 0.9*[1,0] = [-0.1, 0.2] conflicts -> projected to [0, 0.2]
        ([-10.0, 2.0], [1.0, 0.0], [0.0, 0.2], -10.0 / math.sqrt(104.0), 0.9, True),
    ],
)
def test_simmix_mixed_gradient_matches_hand_computed_vector(g_n, g_h, expected, s, w_h, projected):
    # Prepare
    mixer = GradientMixer("simmix")

    # Execute
    mixed, stats = mixer.mix_gradients([_t(g_n)], [_t(g_h)])

    # Assert
    np.testing.assert_allclose(mixed[0].numpy(), expected, atol=1e-12)
    assert stats.s == pytest.approx(s)
    assert stats.w_h == pytest.approx(w_h)
    assert stats.projected is projected
    assert stats.inner_after == pytest.approx(float(np.dot(expected, g_h)), abs=1e-12)


def test_projection_leaves_a_non_negative_inner_product_with_the_history_gradient():
    # Prepare: random pairs, half of them strongly conflicting
    rng = np.random.default_rng(0)
    mixer = GradientMixer("simmix", w_min=0.0, w_max=0.3)  # a low w_max keeps conflicts after mixing
    n_projected = 0

    for _ in range(200):
        g_h = rng.normal(size=9)
        g_n = -3.0 * g_h + rng.normal(size=9) if rng.random() < 0.5 else rng.normal(size=9)

        # Execute
        res = mix_flat(g_n, g_h, mixer.history_weight(cosine_similarity(g_n, g_h)), project=True)

        # Assert
        scale = np.linalg.norm(res.g) * np.linalg.norm(g_h)
        assert np.dot(res.g, g_h) >= -1e-12 * scale
        assert res.inner_after == pytest.approx(float(np.dot(res.g, g_h)))
        n_projected += res.projected
    assert n_projected > 50  # the property was exercised, not vacuously true


def _reference_pairs(seed=1, n=60, dim=6):
    rng = np.random.default_rng(seed)
    pairs = []
    for i in range(n):
        g_h = rng.normal(size=dim)
        g_n = rng.normal(size=dim) - (2.0 * g_h if i % 2 else 0.0)  # every other pair conflicts
        pairs.append((g_n, g_h))
    return pairs


def test_finetune_setting_returns_the_new_gradient_bit_for_bit():
    mixer = GradientMixer("finetune")
    for g_n, g_h in _reference_pairs():
        mixed, stats = mixer.mix_gradients([torch.from_numpy(g_n)], [torch.from_numpy(g_h)])
        np.testing.assert_array_equal(mixed[0].numpy(), g_n)
        assert stats.w_h == 0.0 and not stats.projected


def test_replay_setting_returns_the_average_of_both_gradients():
    mixer = GradientMixer("replay")
    for g_n, g_h in _reference_pairs():
        mixed, stats = mixer.mix_gradients([torch.from_numpy(g_n)], [torch.from_numpy(g_h)])
        np.testing.assert_allclose(mixed[0].numpy(), (g_n + g_h) / 2.0, rtol=0, atol=1e-15)
        assert stats.w_h == 0.5 and not stats.projected


def test_agem_setting_matches_the_published_projection_formula():
    mixer = GradientMixer("agem")
    conflicts = 0
    for g_n, g_h in _reference_pairs():
        # Independent formula (Chaudhry et al. 2019): g~ = g - (g.g_ref / g_ref.g_ref) g_ref if g.g_ref < 0.
        dot = float(np.dot(g_n, g_h))
        expected = g_n - dot / float(np.dot(g_h, g_h)) * g_h if dot < 0 else g_n
        conflicts += dot < 0

        mixed, stats = mixer.mix_gradients([torch.from_numpy(g_n)], [torch.from_numpy(g_h)])

        np.testing.assert_allclose(mixed[0].numpy(), expected, rtol=0, atol=1e-12)
        assert stats.projected == (dot < 0)
        assert stats.w_h == 0.0
    assert conflicts >= 20


def test_layer_granularity_mixes_each_tensor_with_its_own_similarity():
    # Prepare: block A aligned (-> w_h 0.1), block B the projected case from the table above
    mixer = GradientMixer("simmix", granularity="layer")
    grads_new = [_t([1.0, 0.0]), _t([-10.0, 2.0])]
    grads_hist = [_t([2.0, 0.0]), _t([1.0, 0.0])]

    # Execute
    mixed, stats = mixer.mix_gradients(grads_new, grads_hist)

    # Assert: A = 0.9*[1,0] + 0.1*[2,0]; B = [0, 0.2]
    np.testing.assert_allclose(mixed[0].numpy(), [1.1, 0.0], atol=1e-12)
    np.testing.assert_allclose(mixed[1].numpy(), [0.0, 0.2], atol=1e-12)
    assert stats.n_blocks == 2 and stats.n_projected == 1 and stats.projected
    assert stats.s == pytest.approx(-8.0 / math.sqrt(105.0 * 5.0))  # cosine of the concatenated vectors
    assert stats.w_h == pytest.approx(0.5)  # numel-weighted mean of 0.1 and 0.9
    assert stats.inner_after == pytest.approx(2.2)


class _Line(torch.nn.Module):
    """y = w x + b with scalar w, b, plus a frozen parameter and one that no loss reaches."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor([1.0]))
        self.b = torch.nn.Parameter(torch.tensor([0.0]))
        self.frozen = torch.nn.Parameter(torch.tensor([5.0]), requires_grad=False)
        self.unused = torch.nn.Parameter(torch.tensor([7.0]))

    def forward(self, x):
        return self.w * x + self.b


def _losses(model):
    # One forward over both batches (a shared graph), split into the two squared errors.
    out = model(torch.tensor([1.0, 2.0]))
    loss_new = (out[0] - 3.0) ** 2  # at w=1,b=0: r=-2 -> grads (2 r x, 2 r) = (-4, -4)
    loss_hist = (out[1] - 0.0) ** 2  # r=2, x=2 -> grads (8, 4)
    return loss_new, loss_hist


@pytest.mark.parametrize(
    ("mode", "expected_w", "expected_b"),
    [
        # cos = -48 / sqrt(32*80) -> w_h clipped to 0.9: 0.1*(-4,-4) + 0.9*(8,4) = (6.8, 3.2)
        ("simmix", 6.8, 3.2),
        # <g_n, g_h> = -48 < 0: (-4,-4) + 48/80 * (8,4) = (0.8, -1.6)
        ("agem", 0.8, -1.6),
        ("replay", 2.0, 0.0),
        ("finetune", -4.0, -4.0),
    ],
)
def test_mixer_writes_the_expected_grad_into_a_two_parameter_model(mode, expected_w, expected_b):
    # Prepare
    model = _Line()
    model.w.grad = torch.tensor([100.0])  # stale gradient must be replaced, not accumulated
    loss_new, loss_hist = _losses(model)

    # Execute
    stats = GradientMixer(mode).mix(model, loss_new, loss_hist)

    # Assert
    assert model.w.grad.item() == pytest.approx(expected_w, abs=1e-6)
    assert model.b.grad.item() == pytest.approx(expected_b, abs=1e-6)
    assert model.frozen.grad is None and model.unused.grad is None
    assert stats.s == pytest.approx(-48.0 / math.sqrt(32.0 * 80.0), abs=1e-6)
    assert stats.n_blocks == 1


def test_finetune_without_history_loss_skips_the_second_gradient():
    model = _Line()
    loss_new, _ = _losses(model)

    stats = GradientMixer("finetune").mix(model, loss_new)

    assert (model.w.grad.item(), model.b.grad.item()) == (-4.0, -4.0)
    assert math.isnan(stats.s)
    with pytest.raises(ValueError, match="needs loss_hist"):
        GradientMixer("simmix").mix(_Line(), _losses(_Line())[0])


def test_invalid_settings_are_rejected_with_the_field_name():
    with pytest.raises(ValueError, match="mode='sgd'"):
        GradientMixer("sgd")
    with pytest.raises(ValueError, match="granularity"):
        GradientMixer(granularity="block")
    with pytest.raises(ValueError, match="w_min"):
        GradientMixer(w_min=0.8, w_max=0.2)
