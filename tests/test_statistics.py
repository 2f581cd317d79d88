"""Paired goal checks: the interval must be able to say no."""
from __future__ import annotations

import numpy as np
import pytest

from nnunet_dfg.statistics import (Comparison, bootstrap_interval, case_dice, compare_goals, format_comparisons,
                                   paired_differences)


def _evaluation(per_case: dict[str, float]) -> dict:
    return {"per_case": {c: {"liver": {"dice": d, "assd": 1.0}, "spleen": {"dice": d, "assd": 1.0}}
                         for c, d in per_case.items()}}


def test_case_dice_averages_classes_per_case():
    ev = {"per_case": {"a": {"liver": {"dice": 0.8, "assd": 1}, "spleen": {"dice": 0.4, "assd": 2}}}}
    assert case_dice(ev) == {"a": pytest.approx(0.6)}


def test_paired_differences_use_common_cases_and_factor():
    d = paired_differences({"a": 0.9, "b": 0.5, "c": 0.1}, {"a": 0.5, "b": 0.5}, factor=0.9)
    np.testing.assert_allclose(d, [0.9 - 0.45, 0.5 - 0.45])


def test_interval_excludes_zero_for_a_consistent_gain_and_not_for_noise():
    rng = np.random.default_rng(1)
    mean, low, high = bootstrap_interval(0.1 + 0.02 * rng.standard_normal(24))
    assert low > 0.05 and high < 0.15 and low < mean < high
    mean, low, high = bootstrap_interval(0.3 * rng.standard_normal(24))
    assert low < 0 < high


def test_bootstrap_is_repeatable():
    d = np.array([0.1, -0.2, 0.3, 0.05])
    assert bootstrap_interval(d) == bootstrap_interval(d)


def test_compare_goals_pools_seeds_and_judges_by_the_interval():
    runs = [{"source_only": _evaluation({f"c{i}": 0.2 for i in range(8)}),
             "fa": _evaluation({f"c{i}": 0.3 + 0.01 * i for i in range(8)}),
             "self_trained": _evaluation({f"c{i}": 0.3 + (0.2 if i % 2 else -0.2) for i in range(8)})}
            for _ in range(3)]
    by_name = {c.name: c for c in compare_goals(runs)}
    assert by_name["source < FA"].n == 24 and by_name["source < FA"].met
    assert by_name["source < FA"].mean == pytest.approx(0.135)
    assert not by_name["FA <= self-trained"].met and by_name["FA <= self-trained"].verdict() == "not shown"
    assert by_name["source < SDG"].n == 0 and by_name["source < SDG"].verdict() == "not measured"
    text = format_comparisons(list(by_name.values()))
    assert "source < FA" in text and "met" in text and "not measured" in text


def test_a_reversed_goal_says_so():
    assert Comparison("x", -0.2, -0.3, -0.1, 10).verdict() == "reversed"
