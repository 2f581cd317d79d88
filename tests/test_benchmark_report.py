"""BENCHMARKS.md rendering: pooled means with intervals, paired goal checks, plots (fabricated figures, no training)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import plots  # noqa: E402
import report  # noqa: E402

CLASSES = ("spleen", "liver")
CASES = [f"case_{i}" for i in range(8)]


def _evaluation(dice: float, spread: float = 0.0) -> dict:
    per_case = {c: {k: {"dice": dice + spread * (i % 2 * 2 - 1), "assd": 1.0} for k in CLASSES}
                for i, c in enumerate(CASES)}
    return {"mean_dice": dice, "mean_assd": 1.0, "per_case": per_case,
            "per_class": {k: {"dice": dice, "assd": 1.0} for k in CLASSES}}


def _record(seed: int, source: float, fa: float, pseudo_fa: float, pseudo: float, st: float, oracle: float) -> dict:
    evaluations = {"source_in_domain": _evaluation(0.9), "source_only": _evaluation(source), "fa": _evaluation(fa),
                   "pseudo_fa": _evaluation(pseudo_fa), "pseudo_dfg_post": _evaluation(pseudo, spread=0.2),
                   "self_trained": _evaluation(st), "oracle": _evaluation(oracle)}
    table = {k: {**v, "description": ""} for k, v in evaluations.items()}
    return {"configuration": "2d", "seed": seed, "severity": 1.0, "table": table, "evaluations": evaluations,
            "search": {"spleen": {"0": 3, "1": 1, "absent": 4}, "liver": {"2": 2}}}


@pytest.fixture
def records():
    return [_record(seed, 0.2 + 0.01 * seed, 0.5, 0.5, 0.52, 0.45, 0.9) for seed in range(3)]


def test_stage_summary_pools_cases_of_all_seeds(records):
    fa = report.stage_summary(records)["2d"]["fa"]
    assert fa["mean"] == pytest.approx(0.5) and fa["low"] == pytest.approx(0.5) and fa["n"] == 24
    source = report.stage_summary(records)["2d"]["source_only"]
    assert source["mean"] == pytest.approx(0.21) and source["sd_seeds"] == pytest.approx(np.std([0.2, 0.21, 0.22]))


def test_goal_tables_judge_by_the_interval(records):
    lines, verdicts = report.goal_tables(records)
    assert verdicts[("2d", "source < FA")].met and verdicts[("2d", "source < FA")].n == 24
    assert verdicts[("2d", "FA labels < refined")].verdict() == "not shown"  # +0.02 +- 0.2 per case
    assert verdicts[("2d", "FA <= self-trained")].verdict() == "reversed"
    assert verdicts[("2d", "self-trained >= 0.9x oracle")].verdict() == "reversed"  # 0.45 - 0.81
    assert "| source < SDG | – | – | 0 | not measured |" in lines


def test_search_table_shares_exclude_absent(records):
    lines = report.search_table(records)
    spleen = [line for line in lines if "| spleen |" in line][0]
    assert spleen == "| 2d | spleen | 12 | 75% | 0% | 25% | 0% | 0% |"  # 3 runs x (3 + 1) present slices


def test_render_and_plots(records, tmp_path):
    meta = {"command": "run_all.py -o x", "wall_min": 42.0, "machine": "2 CPU cores", "date": "2026-11-23",
            "n_source": 16, "n_target": 6, "n_test": 8, "plans": "nnUNetPlansCPU", "severities": [1.0],
            "settings": {"2d": {"shape": [12, 64, 64], "variant": "_b", "oracle_variant": "_f", "search_config": "{}",
                                "seeds": [0, 1, 2]}}, "configurations": ["2d"]}
    memory = [{"cases": 1, "slices": 12, "peak_rss_mb": 2000, "wall_s": 30.0, "s_per_slice": 2.5},
              {"cases": 4, "slices": 48, "peak_rss_mb": 2004, "wall_s": 80.0, "s_per_slice": 1.67}]
    refine = {"sam": "litemedsam", "runtime": "onnx", "slices_searched": 10, "encoder_only_s": 10.0,
              "fast_search_s": 30.0, "ratio_fast_over_encoder": 3.0, "decoder_calls_per_slice_and_class": {"fast": 12.0}}
    text = report.render(meta, records, {"refine": refine, "memory": memory}, {}, "## Analysis\nby hand")
    assert "| fa | 0.500 | [0.500, 0.500] | 0.000 | 8 x 3 |" in text
    assert "| source < FA | +0.290 |" in text and "**met**" in text
    assert "ratio **3.00**" in text and "1.00x the 1-case figure" in text and text.endswith("by hand\n")
    assert "not measured: no GPU machine" in text
    plots.dice_by_stage(report.stage_summary(records), ["2d"], tmp_path / "d.png")
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


def test_convergence_names_a_seed_below_the_bar(records):
    records[1]["table"]["source_in_domain"]["mean_dice"] = 0.62  # a source model that confused the kidneys
    lines = report.convergence(records)
    assert "| 2d | 0 | 0.900 | 0.900 | yes |" in lines
    assert "| 2d | 1 | 0.620 | 0.900 | **no** |" in lines


def test_grid_results_of_a_configuration_without_the_chain(tmp_path):
    """3d_fullres runs only the source model's rows and the oracle: its record has no search to count (there is
    no pseudo-label dataset), where the 2d chain's has."""
    import json

    import quality_grid

    setting = quality_grid.ConfigSetting((12, 64, 64), "_x", "_y", "{}", (0,), chain=False)
    grid = quality_grid.GridRun(quality_grid.GridSpec(settings={"3d_fullres": setting}), tmp_path)
    eval_dir = grid.chain_work("3d_fullres", 0, 1.0) / "eval"
    eval_dir.mkdir(parents=True)
    for stage in ("source_in_domain", "source_only", "oracle"):
        (eval_dir / f"{stage}.json").write_text(json.dumps(_evaluation(0.5)))
    (record,) = grid.results()
    assert record["search"] == {} and set(record["table"]) == {"source_in_domain", "source_only", "oracle"}
    lines, verdicts = report.goal_tables([record])
    assert not verdicts and any("No goal measured" in line for line in lines)
    assert "predict_sdg" not in quality_grid.REFERENCE_STEPS and "train_fa" not in quality_grid.REFERENCE_STEPS


def test_grid_job_order_queues_each_chain_after_its_source():
    """Every run gets one source and one chain job, the chain after its own source (FIFO pool), the 3d source
    second so that it overlaps the 2d chains, and the first seed's chain before the last source."""
    import quality_grid

    runs = [("2d", 0), ("2d", 1), ("2d", 2), ("3d_fullres", 0)]
    order = quality_grid.job_order(runs, workers=2)
    assert order == [("source", ("2d", 0)), ("source", ("3d_fullres", 0)), ("source", ("2d", 1)),
                     ("chain", ("2d", 0)), ("source", ("2d", 2)), ("chain", ("3d_fullres", 0)),
                     ("chain", ("2d", 1)), ("chain", ("2d", 2))]
    for workers in (1, 2, 3, 8):
        order = quality_grid.job_order(runs, workers)
        assert sorted(order) == sorted([(k, r) for r in runs for k in ("source", "chain")])
        assert all(order.index(("source", r)) < order.index(("chain", r)) for r in runs)


def test_chain_branches_split_a_real_chain_and_the_grid_runs_them_in_order(tmp_path, monkeypatch):
    """Every step of a 2d chain lands in exactly one branch, in the chain's order; the side branches hold only steps
    that need the source model alone; and a 2-worker grid runs each seed's evaluations after all its branches."""
    import threading
    import time
    from types import SimpleNamespace

    import quality_grid
    from nnunet_dfg.pipeline.runner import Step

    grid = quality_grid.GridRun(quality_grid.GridSpec(), tmp_path)
    steps = [s for s in grid.pipeline("2d", 0, 1.0).steps() if s.name not in quality_grid.SOURCE_STEPS]
    steps.append(Step("commit", action=lambda: None))
    branches = quality_grid.chain_branches(steps)
    names = [s.name for b in branches.values() for s in b]
    assert sorted(names) == sorted(s.name for s in steps) and len(names) == len(set(names))
    for branch in branches.values():
        assert [s.name for s in branch] == [s.name for s in steps if s in branch]
    assert [s.name for s in branches["sdg"]] == ["predict_sdg_no_finetune", "finetune_sam", "predict_sdg"]
    assert [s.name for s in branches["oracle"]] == ["oracle_dataset", "prepare_oracle", "train_oracle",
                                                    "predict_oracle"]
    assert {"train_fa", "refine", "train_self_training_reliable"} <= {s.name for s in branches["dfg"]}
    assert all(s.name.startswith("evaluate_") for s in branches["evaluate"][:-1])
    assert branches["evaluate"][-1].name == "commit"

    spec = quality_grid.GridSpec(settings={"2d": quality_grid.ConfigSetting(
        (4, 8, 8), "_test", "_test", "{}", (0, 1, 2))}, workers=2)
    run = quality_grid.GridRun(spec, tmp_path)
    done, lock = [], threading.Lock()

    def record(runner, steps, label):
        time.sleep(0.02)
        with lock:
            done.append(label)
    monkeypatch.setattr(run, "_run", record)
    monkeypatch.setattr(run, "pipeline", lambda *a, **k: SimpleNamespace(
        steps=lambda: steps, runner=SimpleNamespace(work=tmp_path, env={"nnUNet_raw": str(tmp_path)})))
    monkeypatch.setattr(run, "results", lambda: [])
    run.run()
    for seed in (0, 1, 2):
        mine = [d for d in done if f"seed {seed}" in d]
        assert len(mine) == 5 and mine[0].endswith("source") and mine[-1].endswith("evaluate"), mine


@pytest.mark.slow  # ONNX export and profiled runs of the real decoder
def test_decoder_profile_of_the_real_decoder_and_its_floor():
    import decoder_profile

    figures = decoder_profile.profile(calls=3)
    ops = figures["per_op_ms"]
    assert figures["calls"] == 3 and 0 < figures["matrix_ms_per_call"] < figures["ms_per_call"]
    assert ops["MatMul"] > 0 and "LayerNormalization" in ops  # the transformer's products and norms were profiled
    speed = {"encoder_s_per_slice": 0.4, "decoder_calls_per_slice": {"fast": 60.0}}
    floor = decoder_profile.floor_ratio({"ms_per_call": 20.0, "matrix_ms_per_call": 10.0}, speed)
    assert floor["ratio_profiled_decoder"] == 4.0 and floor["ratio_matrix_products_only"] == 2.5
    assert abs(floor["ms_per_call_for_ratio_1_5"] - 3.33) < 0.01
    line = report.speed_section({"decoder": {**figures, "floor": floor}})[0]
    assert line.startswith("- **Where a decoder call goes**") and "alone **2.50**" in line


def test_confirmation_seeds_never_pool_with_development_seeds(records):
    confirm = [{**_record(seed, 0.6, 0.5, 0.5, 0.52, 0.45, 0.9), "role": "confirmation", "commit": "abc123"}
               for seed in (100, 101)]
    grouped = report.by_role(records + confirm)
    assert {r["configuration"] for r in grouped} == {"2d, development seeds", "2d, confirmation seeds"}
    _, verdicts = report.goal_tables(grouped)
    assert verdicts[("2d, development seeds", "source < FA")].met  # 0.2 -> 0.5
    assert verdicts[("2d, confirmation seeds", "source < FA")].verdict() == "reversed"  # 0.6 -> 0.5
    assert verdicts[("2d, confirmation seeds", "source < FA")].n == 16
    assert report.by_role(records) == records  # development seeds alone keep their configuration's name
    meta = {"command": "run_all.py -o x --confirmation", "wall_min": 1.0, "machine": "2 CPU cores", "date": "d",
            "n_source": 16, "n_target": 16, "n_test": 16, "plans": "p", "severities": [1.0], "configurations": ["2d"],
            "settings": {"2d": {"shape": [36, 64, 64], "variant": "_b", "oracle_variant": "_f", "search_config": "{}",
                                "seeds": [0, 1, 2, 100, 101]}},
            "development_seeds": [0, 1, 2], "confirmation_seeds": [100, 101]}
    text = report.render(meta, records + confirm, {}, {}, "")
    assert "seed 100: `abc123`, seed 101: `abc123`" in text and "### `2d, confirmation seeds`" in text
    assert "No confirmation seed has run yet" in report.render(meta, records, {}, {}, "")
