"""``nnunet_dfg`` command: the steps nnU-Net has no command for. Training and prediction stay nnU-Net's own.

Every sub-command imports its machinery lazily so ``--help`` and bad-input errors come back fast, and every
expected failure (a ``UserError`` or a missing/existing file) ends as one ``ERROR:`` line with exit status 2.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .errors import UserError


def _synthetic(args) -> None:
    from .nnunet_io import env_folder
    from .synthetic import write_benchmark
    raw = Path(args.raw) if args.raw else env_folder("nnUNet_raw")
    try:
        info = write_benchmark(str(raw), source_id=args.source_id, target_id=args.target_id, n_source=args.n_source,
                               n_target=args.n_target, n_target_test=args.n_test, severity=args.severity,
                               seed=args.seed, shape=tuple(args.shape), direction=args.direction)
    except ValueError as e:
        raise UserError(str(e)) from None
    print(json.dumps({k: (str(v) if not isinstance(v, (list, dict)) else v) for k, v in info.items()}, indent=2))


def _prepare_target(args) -> None:
    from .nnunet_io import dataset_folder, env_folder, read_json
    from .prepare_target import link_folder_as_dataset, model_folder, prepare_target
    model = Path(args.m) if args.m else model_folder(args.s, args.tr, args.p, args.c[0] if args.c else None)
    if not model.is_dir():
        raise UserError(f"source model folder not found: {model}")
    if args.i:
        source_dataset = read_json(model / "dataset.json")
        channels = source_dataset["channel_names"]
        raw = link_folder_as_dataset(Path(args.i), int(args.d), args.name, source_dataset["file_ending"],
                                     len(channels), channel_names=channels)
    else:
        raw = dataset_folder(env_folder("nnUNet_raw"), args.d)
    out = prepare_target(raw, model, args.c, with_labels=args.labels)
    print(f"preprocessed {raw.name} with the plans of {model} -> {out}")
    for channel, change in read_json(out / "dataset.json").get("dfg_target_normalization", {}).items():
        print(f"channel {channel}: target is {change['modality'].upper()}, normalised with {change['target']} "
              f"instead of the source's {change['source']}")


def _evaluate(args) -> None:
    from .evaluation import evaluate_folders, format_table
    from .nnunet_io import write_json_atomic
    for folder in (args.pred, args.ref):
        if not Path(folder).is_dir():
            raise UserError(f"folder not found: {folder}")
    labels = json.loads(args.labels) if args.labels else None
    result = evaluate_folders(args.pred, args.ref, labels=labels, file_ending=args.file_ending)
    out = Path(args.o) if args.o else Path(args.pred) / "dfg_evaluation.json"
    write_json_atomic(out, result)
    print(format_table(result))
    print(f"written {out}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nnunet_dfg", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synthetic", help="write the synthetic T2-SPIR MRI -> portal-venous CT benchmark into nnUNet_raw")
    p.add_argument("--raw", help="raw root (default: $nnUNet_raw)")
    p.add_argument("--source-id", type=int, default=701)
    p.add_argument("--target-id", type=int, default=702)
    p.add_argument("--n-source", type=int, default=16)
    p.add_argument("--n-target", type=int, default=16, help="unlabelled target images for adaptation")
    p.add_argument("--n-test", type=int, default=16, help="held-out target test images")
    p.add_argument("--severity", type=float, default=1.0,
                   help="domain shift: 1 (default) portal-venous CT; 0 none, between 0 and 1 a blend in HU (for "
                        "sweeps), 2 harsher (less organ contrast, more noise)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--shape", type=int, nargs=3, default=[36, 64, 64], metavar=("Z", "Y", "X"),
                   help="voxels over the fixed 216 x 360 x 360 mm field (default 36 x 64 x 64: 6 mm slices, 5.6 mm "
                        "pixels)")
    p.add_argument("--direction", default="mr2ct",
                   help="mr2ct (default: MRI-like source, CT-like target) or ct2mr (CT source, MRI-like target at "
                        "the blend 1 - severity; severity <= 1)")
    p.set_defaults(func=_synthetic)

    p = sub.add_parser("prepare-target", help="preprocess unlabelled target images with the source model's plans")
    p.add_argument("-d", required=True, help="target dataset id/name in nnUNet_raw (with -i: the id to create)")
    p.add_argument("-i", help="a folder of target images in nnU-Net naming, registered as new dataset -d")
    p.add_argument("--name", default="DFGTarget", help="with -i: the new dataset's name")
    p.add_argument("-m", help="source model folder (nnUNet_results/DatasetXXX/TRAINER__PLANS__CONFIG)")
    p.add_argument("-s", help="source dataset id (instead of -m, with -tr -p -c)")
    p.add_argument("-tr", default="nnUNetTrainerDFG_Source")
    p.add_argument("-p", default="nnUNetPlans")
    p.add_argument("-c", nargs="+", help="configuration(s) to preprocess (default: the model's)")
    p.add_argument("--labels", action="store_true",
                   help="also preprocess labelsTr: pseudo-label/oracle datasets only (not checked)")
    p.set_defaults(func=_prepare_target)

    p = sub.add_parser("evaluate", help="per-class 3D Dice and ASSD (mm) of predictions against labels")
    p.add_argument("-pred", required=True, help="prediction folder")
    p.add_argument("-ref", required=True, help="reference label folder")
    p.add_argument("-o", help="output JSON (default: PRED/dfg_evaluation.json)")
    p.add_argument("--labels", help='JSON {"name": value} (default: dataset.json next to the predictions)')
    p.add_argument("--file-ending", default=".nii.gz")
    p.set_defaults(func=_evaluate)

    from .pipeline.command import add_pipeline_parsers
    from .refine.command import add_refine_parser
    from .sdg.command import add_sdg_parsers
    add_refine_parser(sub)
    add_sdg_parsers(sub)
    add_pipeline_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "prepare-target" and not (args.m or args.s):
        print("ERROR: prepare-target needs the source model: -m MODEL_FOLDER or -s SOURCE_ID", file=sys.stderr)
        return 2
    try:
        args.func(args)
    except (UserError, FileExistsError, FileNotFoundError) as e:
        message = str(e) if isinstance(e, UserError) else f"{type(e).__name__}: {e}"
        print(f"ERROR: {message.splitlines()[0] if message else type(e).__name__}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
