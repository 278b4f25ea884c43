"""The mutual study's reading of a run: the convergence budget and the paired interval (no runs)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.study_mutual import at_budget, converged_at, interval  # noqa: E402


def test_convergence_is_the_first_epoch_after_three_small_nmi_changes_in_a_row():
    # changes: 0.1, 0.004, 0.004, 0.01, 0.001, 0.002, 0.003 -> three small ones end at epoch 7
    nmi = [0.3, 0.4, 0.404, 0.408, 0.418, 0.419, 0.421, 0.424, 0.5]
    assert converged_at(nmi, cap=8) == (7, True)
    assert converged_at([0.1, 0.2, 0.3, 0.4, 0.5], cap=4) == (4, False)


def test_budgets_read_the_fixed_epoch_convergence_and_the_oracle_at_the_cap():
    settings = {"cap": 8, "fixed": 2}
    run = {"arm": "mmt", "pseudo_nmi": [0.3, 0.4, 0.404, 0.408, 0.418, 0.419, 0.421, 0.424, 0.5]}
    assert at_budget(run, "fixed", settings) == (2, True)
    assert at_budget(run, "convergence", settings) == (7, True)
    assert at_budget({"arm": "oracle", "pseudo_nmi": [1.0] * 9}, "convergence", settings) == (8, False)


def test_interval_is_the_student_t_interval_of_the_mean():
    stats = interval([0.1, 0.2, 0.3])
    half = 4.302653 * 0.1 / math.sqrt(3)  # t(0.975, 2) * sd / sqrt(n)
    assert stats["mean"] == pytest.approx(0.2) and stats["n"] == 3
    assert (stats["lo"], stats["hi"]) == pytest.approx((0.2 - half, 0.2 + half), abs=1e-6)
    assert math.isnan(interval([0.5])["lo"])
