"""Tests for fedtwin.pipelines.model.networks: shapes, deterministic init, head expansion, config validation."""

from __future__ import annotations

import re

import pytest
import torch

from fedtwin.pipelines.model.networks import MODELS, ModelConfig, VideoCNN, build_model, count_parameters, expand_head


def _clips(batch: int = 3, frames: int = 8, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, frames, 1, size, size, generator=torch.Generator().manual_seed(seed))


def test_tiny3d_shapes_of_logits_feature_map_and_embedding() -> None:
    # Prepare: default tiny3d, widths (8, 16, 32), input pooled 32 -> 16, two 2x spatial pools -> 4x4.
    model = build_model(ModelConfig(), seed=0)
    x = _clips()

    # Execute
    logits = model(x)
    feature_map, embedding = model.forward_features(x)

    # Assert: time is kept in the feature map, which is (B, T', C, H', W').
    assert logits.shape == (3, 10)
    assert feature_map.shape == (3, 8, 32, 4, 4)
    assert embedding.shape == (3, 32)
    torch.testing.assert_close(model.classify(embedding), logits)


def test_embedding_is_the_global_max_of_the_feature_map() -> None:
    model = build_model(ModelConfig(), seed=1)

    feature_map, embedding = model.forward_features(_clips())

    torch.testing.assert_close(embedding, feature_map.amax(dim=(1, 3, 4)))


def test_temporal_pool_halves_time_and_c3d_keeps_full_resolution() -> None:
    pooled = build_model(ModelConfig(temporal_pool=(1,)), seed=0)
    c3d = build_model(ModelConfig(arch="c3d", widths=(4, 8)), seed=0)

    fm_pooled, _ = pooled.forward_features(_clips())
    fm_c3d, emb_c3d = c3d.forward_features(_clips())

    assert fm_pooled.shape == (3, 4, 32, 4, 4)
    # c3d: no input pooling, one 2x spatial pool between its two stages: 32 -> 16.
    assert fm_c3d.shape == (3, 8, 8, 16, 16)
    assert emb_c3d.shape == (3, 8)


def test_default_model_is_small() -> None:
    # 1*8*9 + 16 | 8*16*9 + 16*16*3 + 64 | 16*32*9 + 32*32*3 + 128 | 32*10 + 10 = 10210 parameters.
    assert count_parameters(build_model(ModelConfig(), seed=0)) == 10210


def test_build_model_is_deterministic_per_seed_and_leaves_global_rng_alone() -> None:
    # Prepare
    before = torch.random.get_rng_state()

    # Execute
    a = build_model(ModelConfig(), seed=7).state_dict()
    b = build_model(ModelConfig(), seed=7).state_dict()
    c = build_model(ModelConfig(), seed=8).state_dict()

    # Assert
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["head.weight"], c["head.weight"])
    assert torch.equal(torch.random.get_rng_state(), before)


def test_expand_head_keeps_old_rows_and_zero_initialises_new_ones() -> None:
    # Prepare
    model = build_model(ModelConfig(num_classes=4), seed=0)
    old_w, old_b = model.head.weight.detach().clone(), model.head.bias.detach().clone()

    # Execute
    expand_head(model, 6)

    # Assert
    assert model.head.weight.shape == (6, 32) and model.head.bias.shape == (6,)
    torch.testing.assert_close(model.head.weight[:4], old_w)
    torch.testing.assert_close(model.head.bias[:4], old_b)
    assert torch.count_nonzero(model.head.weight[4:]) == 0 and torch.count_nonzero(model.head.bias[4:]) == 0
    assert model.cfg.num_classes == 6
    assert model(_clips()).shape == (3, 6)
    assert all(p.requires_grad for p in model.head.parameters())


def test_expand_head_with_generator_draws_new_rows_reproducibly() -> None:
    a = build_model(ModelConfig(num_classes=2), seed=0)
    b = build_model(ModelConfig(num_classes=2), seed=0)

    expand_head(a, 5, generator=torch.Generator().manual_seed(3))
    expand_head(b, 5, generator=torch.Generator().manual_seed(3))

    bound = 1 / 32**0.5
    assert torch.equal(a.head.weight, b.head.weight)
    assert a.head.weight[2:].abs().max() <= bound and torch.count_nonzero(a.head.weight[2:]) == 3 * 32


def test_expand_head_refuses_to_shrink() -> None:
    model = build_model(ModelConfig(), seed=0)

    with pytest.raises(ValueError, match="num_classes=5 is below the current 10"):
        expand_head(model, 5)


def test_wrong_clip_shape_is_rejected_with_the_expected_shape() -> None:
    model = build_model(ModelConfig(frames=8), seed=0)

    with pytest.raises(ValueError, match=r"expected clips shaped \(B, T=8, C=1, H, W\), got \(2, 4, 1, 32, 32\)"):
        model(torch.zeros(2, 4, 1, 32, 32))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"arch": "resnet"}, "arch: unknown model 'resnet'; choose one of c3d, tiny3d"),
        ({"widths": ()}, "widths: must be a non-empty list of positive ints, got []"),
        ({"dropout": 1.0}, "dropout: must be in [0, 1), got 1.0"),
        ({"temporal_pool": (3,)}, "temporal_pool: stages must be in 0..2, got [3]"),
        (
            {"frames": 6, "temporal_pool": (0, 1)},
            "frames: must be divisible by 2**2 to pool time at stages [0, 1], got 6",
        ),
    ],
)
def test_config_errors_name_the_field(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        ModelConfig(**kwargs)  # type: ignore[arg-type]


def test_config_resolves_arch_defaults() -> None:
    cfg = ModelConfig(arch="c3d")

    assert cfg.widths == MODELS["c3d"].default_widths and cfg.input_pool == 1
    assert isinstance(build_model(ModelConfig(widths=[4, 8]), seed=0), VideoCNN)  # lists from YAML are fine
    assert ModelConfig(widths=[4, 8]).widths == (4, 8)
