"""The hand-run analyses (``benchmarks/analyses``): their arithmetic (SDG box coverage, SAM by slice size, search by
stage) on constructed inputs, and each one's question and place in the index."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path[:0] = [str(BENCH), str(BENCH / "analyses")]  # the runner's modules; the analyses

import quality_grid  # noqa: E402
import sam_by_slice_size  # noqa: E402
import sdg_boxes  # noqa: E402
from sdg_image_grid import fine_patients  # noqa: E402

from nnunet_dfg.prompt_search import SDGConfig  # noqa: E402


def test_sdg_box_covers_only_what_the_model_is_confident_about():
    """An organ of 10 x 10 px whose left half the model labels confidently: the SDG box covers that half only."""
    truth = np.zeros((1, 32, 32), np.uint8)
    truth[0, 10:20, 10:20] = 1
    probs = np.zeros((2, 1, 32, 32), np.float32)
    probs[1, 0, 10:20, 10:15] = 0.9
    probs[0] = 1.0 - probs[1]
    sdg = np.zeros_like(truth)
    sdg[0, 10:20, 10:18] = 1
    (row,) = sdg_boxes.slice_rows(probs, truth, sdg, {"organ": 1}, SDGConfig())
    assert row["box"] and row["area"] == 100
    assert row["box_recall"] == pytest.approx(0.5) and row["model_recall"] == pytest.approx(0.5)
    assert row["sdg_recall"] == pytest.approx(0.8)
    assert row["model_dice"] == pytest.approx(2 * 50 / 150) and row["sdg_dice"] == pytest.approx(2 * 80 / 180)
    summary = sdg_boxes.summary([row, dict(row, box=False, box_recall=0.0, sdg_dice=0.0, sdg_recall=0.0)])["organ"]
    assert summary["with_box"] == 0.5 and summary["box_recall"] == 0.25 and summary["boxed_box_recall"] == 0.5
    assert summary["sdg_finetuned - model"][0] == pytest.approx(2 * 80 / 180 - 2 * 50 / 150, abs=1e-3)


def test_same_patients_in_both_domains_and_at_every_factor():
    """The source rendering keeps the target's anatomy; a finer factor keeps the organs' physical size."""
    spec = quality_grid.GridSpec()
    _, target, label_t, spacing = next(fine_patients(spec, 0, 1))
    _, source, label_s, _ = next(fine_patients(spec, 0, 1, "source"))
    assert np.array_equal(label_t, label_s) and not np.allclose(target, source)
    _, _, fine, fine_spacing = next(fine_patients(spec, 0, 2))
    assert fine.shape == (label_t.shape[0], 2 * label_t.shape[1], 2 * label_t.shape[2])
    assert fine_spacing[1] == spacing[1] / 2
    for value in (1, 4):  # spleen and liver: 4x the pixels at 2x the in-plane samples, within rasterisation
        assert (fine == value).sum() / (label_t == value).sum() == pytest.approx(4.0, rel=0.1)


def test_slice_size_summary_pairs_each_factor_with_the_first():
    runs = {(1, "target"): [{"a": {"spleen": 0.8, "liver": 0.6}, "b": {"spleen": 0.9}}],
            (2, "target"): [{"a": {"spleen": 0.9, "liver": 0.7}, "b": {"spleen": 0.9}}]}
    out = sam_by_slice_size.summary(runs, [1, 2])
    assert out["factor 1 target"]["mean_dice"] == pytest.approx(0.8)  # (0.7 + 0.9) / 2
    assert out["factor 2 target"]["per_class"]["liver"] == 0.7
    assert out["factor 2 target"]["minus factor 1"][0] == pytest.approx(0.05)
    assert "minus factor 1" not in out["factor 1 target"]


def test_search_by_stage_groups_and_scores_each_slice():
    """A refined class is grouped by its stage, a kept one by why; an overwritten kept class shows its loss."""
    import search_by_stage

    truth = np.zeros((1, 16, 16), np.uint8)
    truth[0, 2:6, 2:6], truth[0, 8:12, 8:12] = 1, 2
    model = truth.copy()
    searched = truth.copy()
    searched[0, 8:12, 8:10] = 1  # class 1's refined mask takes half of class 2, whose model mask was kept
    trace = {"present": True, "refined": True, "stage": 2, "reason": "stage 2: box stopped, stable one-step"}
    kept = {"present": True, "refined": False, "stage": 1,
            "reason": "stage 1: stable one-step; mask of 90 px > 2 x the model's 16 px, model prediction kept"}
    report = {"network_grid_shape": [1, 16, 16], "labels": {"background": 0, "a": 1, "b": 2},
              "slices": {"0": {"classes": {"1": trace, "2": kept, "3": {"present": False}}}}}
    rows = search_by_stage.slice_rows(report, truth, model, searched)
    assert [(r["class"], r["group"]) for r in rows] == [("a", "stage 2"), ("b", "growth bound")]
    assert rows[0]["model"] == 1.0 and rows[0]["search"] == pytest.approx(2 * 16 / (16 + 24))
    assert rows[1]["search"] == pytest.approx(2 * 8 / (8 + 16))
    assert search_by_stage.group({"present": True, "refined": False, "reason": "stage 1: max steps, no stable box"}) \
        == "no stable box"
    out = search_by_stage.summary(rows)
    assert out["b / growth bound"]["search - model"][0] == pytest.approx(2 * 8 / 24 - 1.0, abs=1e-3)
    with pytest.raises(ValueError, match="not on the search's grid"):
        search_by_stage.slice_rows(dict(report, network_grid_shape=[2, 16, 16]), truth, model, searched)


def test_every_script_is_indexed_and_every_analysis_states_its_question():
    """benchmarks/README.md lists every script; an analysis's first docstring line is the question it answers."""
    import ast

    index = (BENCH / "README.md").read_text()
    for script in sorted(BENCH.glob("*.py")):
        assert f"]({script.name})" in index, f"{script.name} is not in benchmarks/README.md"
    analyses = sorted((BENCH / "analyses").glob("*.py"))
    assert len(analyses) >= 10
    for script in analyses:
        assert f"](analyses/{script.name})" in index, f"{script.name} is not in benchmarks/README.md"
        first = ast.get_docstring(ast.parse(script.read_text())).splitlines()[0]
        assert first.endswith("?") or "? " in first, f"{script.name}: first docstring line is not a question"
        assert len(first) <= 117, script.name
