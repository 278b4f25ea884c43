"""The recipes that read a model's features share one model check (in preflight) and one step count."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedtwin.orchestrator.config.loader import ConfigError
from fedtwin.orchestrator.config.spec import ExperimentSpec
from fedtwin.orchestrator.recipes.incremental.recipe import IncrementalRecipe
from fedtwin.orchestrator.recipes.mutual.recipe import MutualRecipe
from fedtwin.orchestrator.recipes.transfer.recipe import TransferRecipe

PLAIN = """
import torch
from torch import nn


class PlainNet(nn.Module):
    default_widths = (4,)

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.head = nn.Linear(4, cfg.num_classes)

    def forward(self, x):
        return self.head(x.mean(dim=(1, 3, 4)).repeat(1, 4))
"""


@pytest.mark.parametrize(
    ("recipe", "section", "count", "steps"),
    [
        (MutualRecipe, "twin", {"adaptation": {"epochs": 3}}, 3),
        (IncrementalRecipe, "incremental", {"tasks": 4}, 4),
        (TransferRecipe, "transfer", {"stream": {"sessions": 2}}, 2),
    ],
)
def test_plain_classifier_loads_but_fails_preflight_in_one_line(tmp_path: Path, recipe, section, count, steps):
    # Prepare: a model plugin without forward_features / classify
    (tmp_path / "plain_model.py").write_text(PLAIN)
    spec = ExperimentSpec.from_dict(
        {
            "recipe": recipe.name,
            "model": {"arch": "plain_model:PlainNet"},
            "plugins": {"paths": [str(tmp_path)]},
            "data": {"root": str(tmp_path / "data")},
            "run": {"output_dir": str(tmp_path / "runs")},
            section: count,
        }
    )

    # Execute / Assert: loading the spec does not build the model; preflight names the field
    assert recipe.steps(spec) == steps
    with pytest.raises(ConfigError) as err:
        recipe.preflight(spec)
    message = str(err.value)
    assert message.startswith("model.arch: 'plain_model:PlainNet'") and "lacks forward_features, classify" in message
    assert "\n" not in message
    assert not (tmp_path / "runs").exists()
