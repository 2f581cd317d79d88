"""BENCHMARKS.md rendering: means and spreads over seeds, goal checks, plots (fabricated figures, no training)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import plots  # noqa: E402
import report  # noqa: E402

CLASSES = ("spleen", "liver")


def _row(dice: float) -> dict:
    return {"mean_dice": dice, "mean_assd": 1.0, "per_class": {c: {"dice": dice, "assd": 1.0} for c in CLASSES}}


def _record(seed: int, severity: float, source: float, fa: float, pseudo: float, st: float, oracle: float) -> dict:
    table = {"source_only": _row(source), "fa": _row(fa), "pseudo_dfg_post": _row(pseudo),
             "self_trained": _row(st), "oracle": _row(oracle)}
    return {"configuration": "2d", "seed": seed, "severity": severity, "table": table,
            "search": {"spleen": {"0": 3, "1": 1, "absent": 4}, "liver": {"2": 2}}}


@pytest.fixture
def records():
    return [_record(0, 0.3, 0.2, 0.4, 0.5, 0.6, 0.62), _record(1, 0.3, 0.4, 0.6, 0.5, 0.7, 0.9),
            _record(0, 0.5, 0.1, 0.05, 0.3, 0.3, 0.8)]


def test_summary_is_mean_and_spread_over_seeds(records):
    summary = report.summarise(records)
    mean, sd = summary["2d"]["fa"][0.3]
    assert mean == pytest.approx(0.5) and sd == pytest.approx(0.1)
    assert summary["2d"]["fa"][0.5] == (pytest.approx(0.05), 0.0)


def test_goal_checks_count_each_rule(records):
    lines, counts = report.goal_checks(records)
    assert counts == {"source<fa": 2, "fa<pseudo": 2, "pseudo<=st": 3, "st>=0.9oracle": 1, "runs": 3}
    failing = [line for line in lines if "| 0.5 |" in line][0]
    assert "**no** (0.10 → 0.05)" in failing and "**0.37**" in failing  # 0.3 / 0.8 in floating point


def test_refined_labels_are_compared_with_fa_labels_on_the_same_images(records):
    records[0]["table"]["pseudo_fa"] = _row(0.55)  # FA's own labels on the training images beat the refined 0.5
    lines, counts = report.goal_checks(records)
    assert counts["fa<pseudo"] == 1 and "**no** (0.55 → 0.50)" in [line for line in lines if "| 0 | 0.3 |" in line][0]


def test_search_table_shares_exclude_absent(records):
    lines = report.search_table(records)
    spleen = [line for line in lines if "| spleen |" in line][0]
    assert spleen == "| 2d | spleen | 12 | 75% | 0% | 25% | 0% | 0% |"  # 3 runs x (3 + 1) present slices


def test_render_and_plots(records, tmp_path):
    meta = {"command": "run_all.py -o x", "wall_min": 42.0, "machine": "2 CPU cores", "date": "2026-11-23",
            "n_source": 8, "n_target": 2, "n_test": 2,
            "settings": {"2d": {"shape": [12, 64, 64], "variant": "_b", "oracle_variant": "_f", "search_config": "{}"}},
            "seeds": [0, 1], "severities": [0.3, 0.5], "configurations": ["2d"]}
    memory = [{"cases": 1, "slices": 12, "peak_rss_mb": 2000, "wall_s": 30.0, "s_per_slice": 2.5},
              {"cases": 4, "slices": 48, "peak_rss_mb": 2004, "wall_s": 80.0, "s_per_slice": 1.67}]
    refine = {"sam": "litemedsam", "runtime": "onnx", "slices_searched": 10, "encoder_only_s": 10.0,
              "fast_search_s": 30.0, "ratio_fast_over_encoder": 3.0, "decoder_calls_per_slice_and_class": {"fast": 12.0}}
    text = report.render(meta, records, {"refine": refine, "memory": memory}, {}, "## Analysis\nby hand")
    assert "| fa | 0.500 ± 0.100 | 0.050 ± 0.000 |" in text
    assert "ratio **3.00**" in text and "1.00x the 1-case figure" in text and text.endswith("by hand\n")
    assert "not measured: no GPU machine" in text
    plots.dice_by_severity(report.summarise(records), ["2d"], [0.3, 0.5], tmp_path / "d.png")
    plots.time_per_slice(refine, memory, tmp_path / "t.png")
    for name in ("d.png", "t.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_tiling_without_boxes_is_reported_as_not_measured():
    none = {"encoder_passes": {"1": 0, "2": 0}, "slices": 24, "passes_saved": None, "agreement_dice": None,
            "time_ratio_tiled_over_untiled": 0.9}
    assert report.speed_section({"tiling": none})[0] == ("- **2×2 tiling**: not measured: the model gave no SDG box "
                                                         "on the 24 slices.")
    some = {**none, "encoder_passes": {"1": 24, "2": 6}, "passes_saved": 0.75, "agreement_dice": 0.98}
    assert "**75% saved**" in report.speed_section({"tiling": some})[0]
