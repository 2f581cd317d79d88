"""Regenerates BENCHMARKS.md and its plots from scratch: the quality grid, then the speed figures.

    .venv/bin/python benchmarks/run_all.py -o bench_out            # under an hour from scratch (2 cores)
    .venv/bin/python benchmarks/run_all.py -o bench_out --quick    # plumbing check in minutes (bench_out/BENCHMARKS.md)

Resumable: every pipeline step and every finished phase leaves a marker in ``-o``, so a killed run continues.
``--report-only`` re-renders the markdown from the JSON a run left. ``--gpu-figures FILE`` adds vit_b timings
measured elsewhere (a JSON object of label -> figure), ``--memory-curve FILE`` the rows of
``benchmarks/memory_curve.py -o FILE`` (peak memory up to CT size: minutes more than the hour allows).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import tempfile
import time
from datetime import date
from pathlib import Path

from nnunet_dfg.nnunet_io import read_json, write_json_atomic
from nnunet_dfg.pipeline.runner import nnunet_environment

import decoder_profile
import plots
import quality_grid
import refine_speed
import report
import speed_ratios

REPO = Path(__file__).resolve().parent.parent


def _machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
                 platform.processor() or "unknown CPU")
    return f"{os.cpu_count()} CPU cores ({model})"


def _phase(out: Path, name: str, compute):
    """Run ``compute`` once; its JSON result is kept in ``out`` so a resumed run skips it."""
    path = out / f"{name}.json"
    if path.is_file():
        return read_json(path)
    started = time.time()
    result = compute()
    write_json_atomic(path, result)
    print(f"[bench] {name} in {time.time() - started:.0f} s", flush=True)
    return result


def speed(grid: quality_grid.GridRun, out: Path) -> None:
    """The speed figures, on the 2d chain of the first seed (the budget keeps them to one configuration)."""
    spec = grid.spec
    severity = spec.severities[len(spec.severities) // 2]
    p = grid.pipeline("2d", spec.settings["2d"].seeds[0], severity)
    setting = spec.settings["2d"]
    fa_model, source_model = p.model(p.cfg.target_id, "FA"), p.model(quality_grid.SOURCE_ID, "Source")
    env = {k: v for k, v in p.runner.env.items() if k not in quality_grid.PARALLEL_ENV}  # one job: every core
    refine = _phase(out, "refine_2d", lambda: {**refine_speed.measure(
        fa_model, p.target_raw / "imagesTr", Path(p.cfg.target_labels_tr), cases=1,
        search_config=setting.search_config, plain=False), "cases": 1})

    def profile():
        figures = decoder_profile.profile()
        return {**figures, "floor": decoder_profile.floor_ratio(figures, refine)}
    _phase(out, "decoder_profile", profile)
    _phase(out, "steps_2d", lambda: speed_ratios.step_ratios(
        env, "2d", p.cfg.target_id, p.cfg.pseudo_id("dfg"), {"fa": p.cfg.trainer("FA"), "st": p.cfg.trainer("ST")},
        {"source": source_model / f"fold_{p.cfg.source_fold}" / "checkpoint_final.pth",
         "fa": fa_model / "fold_all" / "checkpoint_final.pth"}, plans=p.cfg.plans))
    _phase(out, "tiling", lambda: speed_ratios.tiling_savings(fa_model, "all", p.test_images, max_cases=4))

    def memory():
        from nnunet_dfg.synthetic import write_benchmark
        scratch = out / "memory"
        images = scratch / "synthetic" / "Dataset702_DFGSynthTarget" / "imagesTr"
        if not images.is_dir():
            write_benchmark(str(scratch / "synthetic"), n_source=1, n_target=max(spec.memory_counts),
                            n_target_test=0, severity=severity, seed=999, shape=setting.shape)
        return speed_ratios.refine_memory(fa_model, images, scratch, env, setting.search_config, spec.memory_counts)
    _phase(out, "memory", memory)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", required=True, help="work folder (models, logs, figures as JSON)")
    parser.add_argument("--quick", action="store_true", help="one configuration, seed and severity, smoke schedules")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--gpu-figures", type=Path)
    parser.add_argument("--memory-curve", type=Path,
                        help="rows from benchmarks/memory_curve.py -o (CT-size volumes do not fit the hour)")
    parser.add_argument("--workers", type=int, default=2,
                        help="grid jobs at the same time, one thread each (default 2: on 2 cores ~1.5x the throughput "
                             "of one job with two threads)")
    parser.add_argument("--configurations", nargs="+", default=list(quality_grid.DEFAULT_SETTINGS),
                        help="grid settings (default: 2d, the 64 px chain; also 2d_128, the chain at 128 px on seed "
                             "0, and 3d_fullres, a source model and its oracle)")
    parser.add_argument("--seeds", type=int, nargs="+",
                        help=f"seeds of the 2d chain (default: the development seeds "
                             f"{' '.join(map(str, quality_grid.DEVELOPMENT_SEEDS))})")
    parser.add_argument("--confirmation", action="store_true",
                        help="add the confirmation seeds "
                             f"{' '.join(map(str, quality_grid.CONFIRMATION_SEEDS))} to the 2d chain's seeds: run "
                             "them once, after every choice is frozen and committed (each chain records its commit)")
    args = parser.parse_args()
    out = Path(args.o).resolve()
    out.mkdir(parents=True, exist_ok=True)
    spec = quality_grid.GridSpec(workers=args.workers)
    unknown = sorted(set(args.configurations) - set(quality_grid.ALL_SETTINGS))
    if unknown:
        parser.error(f"unknown configuration(s) {unknown}; choose from {sorted(quality_grid.ALL_SETTINGS)}")
    spec.settings = {c: v for c, v in quality_grid.ALL_SETTINGS.items() if c in args.configurations}
    if args.seeds and "2d" in spec.settings:
        if len(set(args.seeds)) != len(args.seeds) or min(args.seeds) < 0:
            parser.error(f"--seeds must be distinct non-negative integers, got {args.seeds}")
        spec.settings["2d"] = dataclasses.replace(spec.settings["2d"], seeds=tuple(args.seeds))
    if args.confirmation and "2d" in spec.settings:
        seeds = spec.settings["2d"].seeds
        spec.settings["2d"] = dataclasses.replace(
            spec.settings["2d"], seeds=seeds + tuple(s for s in quality_grid.CONFIRMATION_SEEDS if s not in seeds))
    if args.quick:
        quick = quality_grid.ConfigSetting((8, 48, 48), "_test", "_test", quality_grid.DEMO_SEARCH_CONFIG, (0,))
        spec = quality_grid.GridSpec(settings={"2d": quick}, n_source=5, n_target=2, n_test=2, workers=1,
                                     memory_counts=(1, 2))
    grid = quality_grid.GridRun(spec, out / "grid")
    started = time.time()
    if not args.report_only:
        if (out / "grid.json").is_file() and _recorded_runs(out) != sorted(set(spec.runs())):
            (out / "grid.json").unlink()  # other seeds or configurations: the grid resumes, finished chains skip
        _phase(out, "grid", grid.run)
        if "2d" in spec.settings:
            speed(grid, out)
        earlier = read_json(out / "meta.json")["wall_s"] if (out / "meta.json").is_file() else 0.0
        wall = earlier + time.time() - started  # a resumed run adds its time to the killed one's
        earlier_note = read_json(out / "meta.json").get("note", "") if (out / "meta.json").is_file() else ""
        write_json_atomic(out / "meta.json", {"wall_s": wall, "date": date.today().isoformat(),
                                              "machine": _machine(), "note": earlier_note})
    if _recorded_runs(out) != sorted(set(spec.runs())):  # the header states the spec's seeds: they must be the records'
        parser.error(f"{out / 'grid.json'} holds the runs {_recorded_runs(out)}, not {sorted(set(spec.runs()))}: "
                     "give the run's --configurations and --seeds")
    records = read_json(out / "grid.json")
    meta = {**read_json(out / "meta.json"), "n_source": spec.n_source, "n_target": spec.n_target,
            "n_test": spec.n_test, "settings": {c: vars(v) for c, v in spec.settings.items()},
            "plans": spec.plans, "severities": list(spec.severities),
            "development_seeds": list(quality_grid.DEVELOPMENT_SEEDS),
            "confirmation_seeds": list(quality_grid.CONFIRMATION_SEEDS),
            "configurations": list(spec.configurations),
            "command": ".venv/bin/python benchmarks/run_all.py -o bench_out" + (" --quick" if args.quick else "")
            + ("" if args.quick or set(spec.settings) == set(quality_grid.DEFAULT_SETTINGS)
               else " --configurations " + " ".join(spec.settings))
            + (f" --seeds {' '.join(map(str, args.seeds))}" if args.seeds and not args.quick else "")
            + (" --confirmation" if args.confirmation and not args.quick else "")
            + (f" --memory-curve {args.memory_curve}" if args.memory_curve else "")}
    meta["wall_min"] = meta["wall_s"] / 60
    steps = {"2d": _read(out / "steps_2d.json")}
    speed_figures = {"refine": _read(out / "refine_2d.json"), "decoder": _read(out / "decoder_profile.json"),
                     "steps": {c: s for c, s in steps.items() if s},
                     "tiling": _read(out / "tiling.json"), "memory": _read(out / "memory.json"),
                     "gpu": read_json(args.gpu_figures) if args.gpu_figures else None,
                     "memory_curve": read_json(args.memory_curve) if args.memory_curve else None}
    target = out / "BENCHMARKS.md" if args.quick else REPO / "BENCHMARKS.md"
    fig_dir = target.parent / "docs" / "benchmarks" if not args.quick else out / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    groups = report.by_role(records)
    plots.dice_by_stage(report.stage_summary(groups), sorted({r["configuration"] for r in groups}),
                        fig_dir / "dice_by_stage.png")
    figures = {"dice": str((fig_dir / "dice_by_stage.png").relative_to(target.parent))}
    if speed_figures["refine"]:
        plots.time_per_slice(speed_figures["refine"], speed_figures["memory"] or [], fig_dir / "time_per_slice.png")
        figures["time"] = str((fig_dir / "time_per_slice.png").relative_to(target.parent))
    analysis_file = Path(__file__).with_name("ANALYSIS.md")
    text = report.render(meta, records, speed_figures, figures, analysis_file.read_text() if analysis_file.is_file()
                         and not args.quick else "")
    with tempfile.NamedTemporaryFile("w", dir=target.parent, delete=False, suffix=".partial") as f:
        f.write(text)
    os.replace(f.name, target)
    print(f"written {target} ({(time.time() - started) / 60:.1f} min this run)")


def _recorded_runs(out: Path) -> list[tuple[str, int]]:
    """The (configuration, seed) pairs the grid phase's records hold."""
    return sorted({(r["configuration"], r["seed"]) for r in read_json(out / "grid.json")})


def _read(path: Path):
    return read_json(path) if path.is_file() else None


if __name__ == "__main__":
    main()
