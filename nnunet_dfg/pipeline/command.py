"""``nnunet_dfg pipeline`` (your datasets) and ``nnunet_dfg demo`` (the synthetic benchmark, self-contained)."""
from __future__ import annotations

import os
import time
from pathlib import Path

from ..command_base import add_sam_intensity_arguments, check_sam_intensity
from ..cpu_plans import CPU_PLANS
from ..errors import UserError
from ..nnunet_io import dataset_folder, env_folder, read_json, write_json_atomic
from ..seed import DEFAULT_SEED, parse_seed
from ..statistics import compare_goals, format_comparisons
from .dfg import DFGPipeline, PipelineConfig
from .runner import Runner, Step, nnunet_environment
from .stage_figure import write_stage_figure
from .stage_table import format_stage_table, stage_table


# The search scales the reference's pixel constants (given for 256 px slices) to the demo's 64 px slices itself
# (DFGConfig.for_slice). The growth bound (a ratio, a project option off in the reference) keeps the CPU-trained
# models' leaking boxes out of the pseudo-labels: benchmarks/ANALYSIS.md.
DEMO_SEARCH_CONFIG = '{"max_growth": 2.0}'
# The demo's decoder fine-tuning, far below the reference's 200 passes over every source slice in batches of 16:
# the 20-minute budget on 2 CPU cores (its help says so).
DEMO_FINETUNE = {"finetune_epochs": 2, "finetune_max_slices": 40, "finetune_batch_canvases": 1}


def _run(cfg: PipelineConfig, work: Path, env: dict, extra_first: list[Step] = ()) -> dict:
    runner = Runner(work, env)
    pipeline = DFGPipeline(cfg, runner, Path(env["nnUNet_raw"]), Path(env["nnUNet_results"]))
    started = time.time()
    for step in list(extra_first) + pipeline.steps():
        runner.run(step)
    table = stage_table(work / "eval")
    write_json_atomic(work / "stage_table.json", table)
    print()
    print(format_stage_table(table))
    evaluations = {f.stem: read_json(f) for f in sorted((work / "eval").glob("*.json"))}
    print("\nGoals, as mean paired differences over this run's cases (95% bootstrap interval; one seed: "
          "BENCHMARKS.md pools several seeds):")
    print(format_comparisons(compare_goals([evaluations])))
    print(f"\nstage table: {work / 'stage_table.json'}   ({time.time() - started:.0f} s this run)")
    _figure(work / "stage_figure.png", evaluations, pipeline)
    return table


def _figure(path: Path, evaluations: dict, pipeline: DFGPipeline) -> None:
    """The stage figure beside the table; a picture that cannot be drawn (unreadable files) does not fail a run
    whose table is written: one line says why. Without target labels nothing was evaluated and nothing is drawn."""
    if not evaluations:
        return
    try:
        labels = pipeline.labels
    except (UserError, OSError, KeyError):
        labels = None
    try:
        write_stage_figure(path, evaluations, pipeline.stage_sources(), labels)
    except (OSError, RuntimeError, ValueError) as e:
        print(f"stage figure not written: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
        return
    print(f"stage figure: {path}")


def _seed(value: str) -> int:
    try:
        return parse_seed(value)
    except ValueError as e:
        raise UserError(f"--seed: {e}") from None


def _pseudo_ignore(value: str) -> str:
    """``--pseudo-ignore``: ``none``, or the rule of the reliable chain run beside the reference one."""
    from ..prompt_search.reliability import PSEUDO_IGNORE
    if value not in PSEUDO_IGNORE:
        raise UserError(f"--pseudo-ignore must be one of {', '.join(PSEUDO_IGNORE)}, got {value!r}")
    return value


def _check_plans(plans: str, preprocessed: Path | None, source_id: int) -> None:
    """nnUNetPlans (planned by the pipeline), nnUNetPlansCPU (derived from it) or a plans file already there."""
    if plans in ("nnUNetPlans", CPU_PLANS):
        return
    folder = dataset_folder(preprocessed, source_id) if preprocessed else None
    if folder is None or not (folder / f"{plans}.json").is_file():
        raise UserError(f"-p {plans}: no such plans in nnUNet_preprocessed for dataset {source_id} (the pipeline "
                        f"makes nnUNetPlans and {CPU_PLANS}; other plans must be planned first)")


def run_pipeline(args) -> None:
    pseudo_ignore = _pseudo_ignore(args.pseudo_ignore)
    env = dict(os.environ)
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        env[name] = str(env_folder(name))
    env.setdefault("nnUNet_n_proc_DA", "0")
    seed = _seed(args.seed)
    check_sam_intensity(args.sam_intensity, args.sam_window)
    _check_plans(args.p, Path(env["nnUNet_preprocessed"]), args.s)
    cfg = PipelineConfig(source_id=args.s, target_id=args.t, configuration=args.c, variant=args.variant,
                         device=args.device, sam=args.sam, source_fold=args.source_fold, plans=args.p, seed=seed,
                         target_labels_tr=args.target_labels_tr, target_labels_ts=args.target_labels_ts,
                         oracle=not args.no_oracle, search_config=args.search_config,
                         sam_intensity=args.sam_intensity, sam_window=args.sam_window,
                         sdg=not args.no_sdg, sdg_finetuned=not args.no_sdg_finetune, pseudo_ignore=pseudo_ignore)
    _run(cfg, Path(args.o), env)


def run_demo(args) -> None:
    pseudo_ignore = _pseudo_ignore(args.pseudo_ignore)
    seed = _seed(args.seed)
    check_sam_intensity(args.sam_intensity, args.sam_window)
    from ..synthetic import DIRECTIONS
    if args.direction not in DIRECTIONS:
        raise UserError(f"--direction must be one of {', '.join(DIRECTIONS)}, got {args.direction!r}")
    _check_plans(args.p, None, 701)
    root = Path(args.o).resolve()
    env = nnunet_environment(root)
    raw = Path(env["nnUNet_raw"])
    hidden = raw / "_hidden_labels" / "Dataset702_DFGSynthTarget"

    def synthetic():
        from ..synthetic import write_benchmark
        write_benchmark(str(raw), source_id=701, target_id=702, n_source=args.n_source, n_target=args.n_target,
                        n_target_test=args.n_test, severity=args.severity, seed=seed, shape=tuple(args.shape),
                        direction=args.direction)

    cfg = PipelineConfig(source_id=701, target_id=702, configuration=args.c, variant=args.variant,
                         oracle_variant=args.oracle_variant, device=args.device, **DEMO_FINETUNE,
                         sam=args.sam, target_labels_tr=hidden / "labelsTr", target_labels_ts=hidden / "labelsTs",
                         search_config=args.search_config, plans=args.p, seed=seed,
                         sam_intensity=args.sam_intensity, sam_window=args.sam_window,
                         sdg=not args.no_sdg, sdg_finetuned=not args.no_sdg_finetune, pseudo_ignore=pseudo_ignore)
    _run(cfg, root / "work", env, [Step("synthetic", action=synthetic)])


def add_pipeline_parsers(sub) -> None:
    p = sub.add_parser("pipeline", help="source training -> FA -> refine -> self-training -> evaluation")
    p.add_argument("-s", type=int, required=True, help="labelled source dataset id")
    p.add_argument("-t", type=int, required=True, help="unlabelled target dataset id (imagesTr; imagesTs = test)")
    p.add_argument("-c", default="2d", help="nnU-Net configuration (2d or 3d_fullres)")
    p.add_argument("-o", required=True, help="work folder: step markers, logs, predictions, stage_table.json")
    p.add_argument("--variant", default="", help="trainer-name suffix, e.g. _demo or _test (default: reference)")
    p.add_argument("--source-fold", default="0")
    p.add_argument("--target-labels-tr", type=Path, help="labels of the target images (evaluation/oracle only)")
    p.add_argument("--target-labels-ts", type=Path, help="labels of the target test images (evaluation only)")
    p.add_argument("--no-oracle", action="store_true", help="skip the oracle (target-supervised) reference row")
    p.add_argument("--no-sdg", action="store_true",
                   help="skip the SDG rows (sdg, sdg_no_finetune): SDG is not source-free, finetune-sam trains on "
                        "the source labels")
    p.add_argument("--no-sdg-finetune", action="store_true",
                   help="skip finetune-sam (the only step after source training that trains on source data; 200 "
                        "passes over the source slices, the reference's) and so the sdg row (SDG with the "
                        "fine-tuned decoder); keep the sdg_no_finetune ablation")
    p.add_argument("--sam", default="litemedsam")
    p.add_argument("--search-config", help="JSON overrides of the DFG search constants (refine --search-config)")
    p.add_argument("--pseudo-ignore", default="none", metavar="RULE",
                   help="also run the reliable chain: refine writes, from the same search, a pseudo-label dataset "
                        "with nnU-Net's ignore label on the voxels RULE marks unreliable (evidence: docs/METHOD.md, "
                        "\"Beyond the reference\"), self-trained from the same FA model; rows pseudo_dfg_reliable "
                        "and self_trained_reliable (default none: the reference chain only)")
    p.add_argument("-p", default="nnUNetPlans",
                   help=f"plans identifier (default nnU-Net's; {CPU_PLANS}: a narrower network for CPU runs)")
    add_sam_intensity_arguments(p)
    p.add_argument("--seed", default=str(DEFAULT_SEED), help="seed of every training run (nnUNet_dfg_seed)")
    p.add_argument("-device", dest="device", default="cpu")
    p.set_defaults(func=run_pipeline)

    p = sub.add_parser("demo", help="the whole DFG pipeline on the synthetic benchmark, in its own folder")
    p.add_argument("-o", required=True, help="folder for everything (nnUNet_raw/preprocessed/results inside)")
    p.add_argument("-c", default="2d")
    p.add_argument("--severity", type=float, default=1.0,
                   help="domain shift (default 1: T2-SPIR-like MRI -> portal-venous CT; between 0 and 1 a blend; "
                        "see docs/SYNTHETIC_BENCHMARK.md)")
    p.add_argument("--seed", default=str(DEFAULT_SEED), help="seed of the synthetic data and of every training run")
    p.add_argument("-p", default=CPU_PLANS,
                   help=f"plans identifier (default {CPU_PLANS}: nnU-Net's plans with a narrower network, see "
                        "nnunet_dfg/cpu_plans.py; nnUNetPlans: nnU-Net's own)")
    p.add_argument("--n-source", type=int, default=16, help="labelled source images (fold 0 holds out a fifth)")
    p.add_argument("--n-target", type=int, default=4,
                   help="unlabelled target images (adaptation; the benchmark uses 16, the demo fewer for its budget)")
    p.add_argument("--n-test", type=int, default=8,
                   help="held-out target test images (the benchmark uses 16, the demo fewer for its budget)")
    p.add_argument("--shape", type=int, nargs=3, default=[36, 64, 64], metavar=("Z", "Y", "X"),
                   help="voxels over the benchmark's fixed field (default: 6 mm slices of 64 px, as the benchmark)")
    p.add_argument("--direction", default="mr2ct",
                   help="mr2ct (default: MRI-like source, CT-like target) or ct2mr (CT-like source, MRI-like target)")
    add_sam_intensity_arguments(p)
    p.add_argument("--sam", default="litemedsam")
    p.add_argument("--variant", default="_demo",
                   help="trainer-name suffix (default _demo: converged schedules for nnUNetPlansCPU; _test: plumbing)")
    p.add_argument("--oracle-variant", default="_demoFinetune", help="the oracle trainer's suffix")
    p.add_argument("--no-sdg", action="store_true", help="skip the SDG rows (sdg, sdg_no_finetune)")
    p.add_argument("--no-sdg-finetune", action="store_true",
                   help="skip finetune-sam and so the sdg row, keep the sdg_no_finetune ablation. The demo "
                        "fine-tunes on a small budget to stay within 20 minutes on 2 cores: 2 passes over 40 source "
                        "slices, one slice per step (the reference: 200 passes over all, 16 per step)")
    p.add_argument("--pseudo-ignore", default="none", metavar="RULE",
                   help="also run the reliable chain: refine writes, from the same search, a pseudo-label dataset "
                        "with nnU-Net's ignore label on the voxels RULE marks unreliable (evidence: docs/METHOD.md, "
                        "\"Beyond the reference\"), self-trained from the same FA model; rows pseudo_dfg_reliable "
                        "and self_trained_reliable (default none: the reference chain only)")
    p.add_argument("--search-config", default=DEMO_SEARCH_CONFIG,
                   help="JSON overrides of the DFG search constants (default: the growth bound 2x; pixel "
                        "constants are scaled to the slice size by the search itself)")
    p.add_argument("-device", dest="device", default="cpu")
    p.set_defaults(func=run_demo)
