"""``nnunet_dfg refine``: a target dataset + a trained model -> a new raw dataset of refined pseudo-labels.

Per case: nnU-Net preprocessing and sliding-window prediction of softmax and decoder features (network grid),
the prompt search on every axial slice, the merged labels exported back to the image grid with nnU-Net's own
export, then the largest 3D component per class. Reads the model folder and the target images only: no source
data, no target labels. Sharded with ``-num_parts/-part_id`` like ``nnUNetv2_predict``; resumable (a case whose
label file exists is skipped, and each case's result depends on that case alone). With ``--pseudo-ignore RULE`` the
same search also writes a dataset with nnU-Net's ignore label on the voxels the rule marks unreliable
(``prompt_search.reliability``; ``refine.ignore``, ``refine.case``).
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from ..command_base import OUT_ID_OFFSET, ModelOptions, add_model_arguments, check_images, options_from_args
from ..errors import UserError
from ..nnunet_io import dataset_folder, env_folder, list_cases, read_json
from ..prepare_target import check_compatible
from ..prompt_search.reliability import PSEUDO_IGNORE
from ..volume import PROMPTS, default_config
from .case import search_case, write_case
from .ignore import (NO_RULE, name_suffix, output_id_offset, parse_pseudo_ignore, rule_metadata, rules_for,
                     with_ignore_entry)
from .layout import OutputDataset, check_resumable, output_dataset_json, resolve_output, write_dataset_json


@dataclass(kw_only=True)
class RefineOptions(ModelOptions):
    """``-d`` is the target raw dataset (images) and, without ``-m``, the model's dataset."""

    images: Path | None = None            # -i: image folder instead of the dataset's imagesTr
    prompt: str = "dfg"
    search_config: str | None = None      # JSON overrides of DFGConfig / SDGConfig fields
    out_id: int | None = None
    name: str | None = None               # output dataset name (default: <target name>Pseudo<PROMPT>)
    copy_images: bool = False
    max_cases: int | None = None          # stop after this many cases (this part)
    max_slices: int | None = None         # search at most this many slices per case (debugging, tests)
    save_figures: Path | None = None
    pseudo_ignore: str = NO_RULE          # none (the reference), a rule, or several comma-separated (one dataset each)


def parse_prompts(text: str) -> list[str]:
    """``--prompt dfg`` or ``--prompt dfg,box,sdg`` -> the modes, in the order given."""
    prompts = [p.strip() for p in str(text).split(",") if p.strip()]
    if not prompts or any(p not in PROMPTS for p in prompts) or len(set(prompts)) != len(prompts):
        raise UserError(f"--prompt must name one or more of {', '.join(PROMPTS)} (comma-separated, each once), "
                        f"got {text!r}")
    return prompts


def parse_search_configs(prompts: list[str], text: str | None) -> dict[str, tuple[Any, dict]]:
    """``--search-config`` JSON -> each prompt's config dataclass and the overrides it took.

    With several prompts each config takes the fields it has; a key that no config has is refused.
    """
    overrides: dict = {}
    if text:
        try:
            overrides = json.loads(text)
        except json.JSONDecodeError as e:
            raise UserError(f"--search-config is not valid JSON ({e.msg})") from None
        if not isinstance(overrides, dict):
            raise UserError("--search-config must be a JSON object of config fields")
    bases = {p: default_config(p) for p in prompts}
    known = {p: {f.name for f in fields(base)} for p, base in bases.items()}
    unknown = sorted(set(overrides) - set().union(*known.values()))
    if unknown:
        names = "/".join(sorted({type(b).__name__ for b in bases.values()}))
        raise UserError(f"unknown {names} field(s) {unknown}; known: {sorted(set().union(*known.values()))}")
    out = {}
    for p, base in bases.items():
        mine = {k: v for k, v in overrides.items() if k in known[p]}
        try:
            out[p] = (type(base)(**mine), mine)
        except (TypeError, ValueError) as e:
            raise UserError(f"--search-config: {e}") from None
    return out


def parse_search_config(prompt: str, text: str | None):
    """One prompt's config and overrides (see :func:`parse_search_configs`)."""
    return parse_search_configs([prompt], text)[prompt]


def _resolve_target(opts: RefineOptions) -> tuple[Path, str, int | None]:
    """(image folder, target name, target id or None)."""
    if opts.images is not None:
        return Path(opts.images), "Target", None
    if opts.dataset is None:
        raise UserError("need -d DATASET or -i IMAGE_FOLDER")
    raw = dataset_folder(env_folder("nnUNet_raw"), opts.dataset)
    return raw / "imagesTr", raw.name.split("_", 1)[1], int(raw.name[len("Dataset"):].split("_")[0])


def _metadata(opts: RefineOptions, prompt: str, model: Path, images: Path, overrides: dict, rule: str) -> dict:
    """What determines the labels: stored in dataset.json, and equal across parts and resumed runs."""
    extra = {} if rule == NO_RULE else {
        "pseudo_ignore": rule_metadata(rule),
        "postprocessing": "largest 3D component per class (face connectivity); removed voxels are ignore"}
    return json.loads(json.dumps({
        "prompt": prompt, **opts.settings(model, images), "search_config": overrides, "max_slices": opts.max_slices,
        "sam_modality": opts.sam_modality(images, read_json(model / "dataset.json")),
        "postprocessing": "largest 3D component per class (face connectivity)", **extra,
    }))


@dataclass
class _Output:
    """One output dataset (a prompt mode, with or without a --pseudo-ignore rule) and the cases it still needs."""
    prompt: str
    rule: str
    config: Any
    metadata: dict
    out: OutputDataset
    todo: list[str]
    n_done_before: int

    @property
    def key(self) -> str:
        """Its name in the returned summaries: the prompt, ``_RULE`` appended for a rule's dataset."""
        return self.prompt if self.rule == NO_RULE else f"{self.prompt}_{self.rule}"


def refine_dataset(opts: RefineOptions, segmenter: Any = None) -> dict:
    """Run (this part of) a refinement with one prompt mode and one --pseudo-ignore choice; returns its summary.
    ``segmenter`` overrides ``--sam`` (tests)."""
    summaries = refine_datasets(opts, segmenter)
    if len(summaries) != 1:
        raise UserError("refine_dataset writes one dataset; use refine_datasets for several --prompt/--pseudo-ignore")
    return next(iter(summaries.values()))


def refine_datasets(opts: RefineOptions, segmenter: Any = None) -> dict[str, dict]:
    """Refine with every mode of ``opts.prompt`` (``dfg,box,sdg``) in one pass over the cases: each case is
    predicted once and each slice encoded once, whatever the number of modes; one output dataset per mode, and per
    ``--pseudo-ignore`` choice for dfg (searched once). Returns each dataset's summary (``_Output.key``)."""
    from tqdm import tqdm

    from ..sam.memo import EmbeddingMemo

    prompts = parse_prompts(opts.prompt)
    ignore_names = parse_pseudo_ignore(opts.pseudo_ignore, prompts)
    opts.check()
    if opts.tile > 1 and "dfg" in prompts:
        raise UserError("--tile 2 is for --prompt sdg or box (the DFG search decodes step by step per slice)")
    pairs = [(prompt, rule) for prompt in prompts for rule in rules_for(prompt, ignore_names)]
    if len(pairs) > 1 and (opts.out_id is not None or opts.name):
        raise UserError("--out-id/--name name one output: with several --prompt modes or --pseudo-ignore choices "
                        "each takes its default (target id + 100 dfg, + 110 box, + 120 sdg; a rule's dfg dataset "
                        "+ 105)")
    configs = parse_search_configs(prompts, opts.search_config)
    model = opts.resolve_model()
    images, target_name, target_id = _resolve_target(opts)
    model_dataset = read_json(model / "dataset.json")
    if opts.images is None and (images.parent / "dataset.json").is_file():
        check_compatible(model_dataset, read_json(images.parent / "dataset.json"))
    cases = list_cases(images, model_dataset["file_ending"], len(model_dataset["channel_names"]))
    mine = opts.my_cases(cases)
    modality = opts.sam_modality(images, model_dataset)
    outputs = []
    for prompt, rule in pairs:
        folder = resolve_output(env_folder("nnUNet_raw"), opts.out_id, target_id,
                                opts.name or f"{target_name}Pseudo{prompt.upper()}{name_suffix(rule)}",
                                output_id_offset(OUT_ID_OFFSET[prompt], rule))
        metadata = _metadata(opts, prompt, model, images, configs[prompt][1], rule)
        check_resumable(folder, metadata)
        out = OutputDataset(folder, model_dataset["file_ending"], with_reliability=rule != NO_RULE)
        todo = [c for c in mine if not out.is_done(c)]
        n_done_before = len(mine) - len(todo)
        if opts.max_cases is not None:
            todo = todo[:max(0, opts.max_cases)]
        outputs.append(_Output(prompt, rule, configs[prompt][0], metadata, out, todo, n_done_before))
    if any(o.rule != NO_RULE for o in outputs):
        with_ignore_entry(model_dataset)  # refuses region-based labels before anything is written
    todo = [c for c in mine if any(c in o.todo for o in outputs)]
    predictor = None
    if todo:  # check the images, load everything (and fail on bad models) before the first file is written
        predictor = opts.open_predictor(model)
        check_images({c: cases[c] for c in todo}, predictor.plans_manager.image_reader_writer_class)
        segmenter = opts.open_segmenter(segmenter)
    memo = EmbeddingMemo(segmenter) if len(prompts) > 1 else segmenter
    for o in outputs:
        o.out.create()
        dataset = output_dataset_json(model_dataset, len(cases), o.metadata)
        write_dataset_json(o.out.root, dataset if o.rule == NO_RULE else with_ignore_entry(dataset))
    labels = {str(k): int(v) for k, v in model_dataset["labels"].items() if not isinstance(v, list)}
    summaries = {o.key: {"output": str(o.out.root), "cases_done": [], "cases_skipped": o.n_done_before,
                         "timings_s": {}} for o in outputs}
    bar = tqdm(todo, desc=f"refine {opts.prompt}", unit="case", disable=not opts.progress)
    for case in bar:
        t0 = time.perf_counter()
        wanted = [o for o in outputs if case in o.todo]
        # a large volume's softmax and features are memory-mapped here (volume/stream.py); .tmp/ is cleared of
        # what a killed run leaves once every case is done
        work = Path(tempfile.mkdtemp(dir=wanted[0].out.tmp, prefix=f"{case}_predict_"))
        pred = predictor.predict_case(cases[case], with_features=any(o.prompt == "dfg" for o in wanted),
                                      store=work)
        sam_input = opts.sam_volume(predictor, cases[case], modality)
        predict_s = time.perf_counter() - t0
        grid = {"network_grid_shape": list(pred.probs.shape[1:]),
                "feature_channels": None if pred.features is None else int(pred.features.shape[0])}
        for prompt in dict.fromkeys(o.prompt for o in wanted):  # each prompt searched once for all its datasets
            group = [o for o in wanted if o.prompt == prompt]
            figures = None if opts.save_figures is None else \
                Path(opts.save_figures) / (prompt if len(prompts) > 1 else "")
            searched = search_case(case, pred, predictor, memo, prompt, group[0].config, opts, labels,
                                   [o.rule for o in group if o.rule != NO_RULE], figures, group[0].out,
                                   bar if opts.progress else None, sam_input)
            for o in group:
                report = write_case(case, cases[case], searched, predict_s, predictor, o, opts, labels,
                                    pred.properties, grid)
                summaries[o.key]["cases_done"].append(case)
                summaries[o.key]["timings_s"][case] = report["timings_s"]
        if memo is not segmenter:
            memo.clear()
        del pred
        shutil.rmtree(work, ignore_errors=True)
    empty = [o for o in outputs if not _finish(o.out, cases)]
    if empty:
        names = ", ".join(o.out.root.name for o in empty)
        raise UserError(f"the model predicts no foreground in any of the {len(cases)} case(s): an all-background "
                        f"pseudo-label dataset is useless for self-training, so {names} was removed (check the "
                        f"model, -f and -chk)")
    return summaries


def _finish(out: OutputDataset, cases: dict) -> bool:
    """Once every case of the dataset has its label (written by whichever part): clears what killed runs left in
    ``.tmp/``, and discards the dataset if no case has any foreground. False when discarded."""
    if not all(out.is_done(c) for c in cases):
        return True
    out.clear_tmp()
    try:
        if any(out.has_foreground(c) for c in cases):
            return True
    except UserError:  # a report vanished: a parallel part is discarding the dataset
        if out.root.is_dir():
            raise
    out.discard()
    return False


def _run(args: argparse.Namespace) -> None:
    opts = options_from_args(RefineOptions, args)
    for key, summary in refine_datasets(opts).items():
        print(f"{key}: refined {len(summary['cases_done'])} case(s), {summary['cases_skipped']} already done "
              f"-> {summary['output']}")


def add_refine_parser(subparsers) -> argparse.ArgumentParser:
    """Adds ``refine`` to the ``nnunet_dfg`` sub-command parsers."""
    p = subparsers.add_parser("refine", help="refine a model's predictions with box-prompted SAM into a new "
                                             "pseudo-labelled raw dataset",
                              description=__doc__.splitlines()[0])
    add_model_arguments(p, "nnUNetTrainerDFG_FA", "target dataset id/name: its imagesTr, and (without -m) the "
                                                   "dataset the model was trained on in nnUNet_results", 1,
                        "sdg/box: 2 tiles 2x2 slices into one encoder pass (SDG's merging strategy)")
    p.add_argument("-i", dest="images", type=Path, help="image folder instead of the target's imagesTr "
                                                        "(needs --out-id)")
    p.add_argument("--prompt", default="dfg",
                   help="dfg: dual-feature-guided search; sdg: SDG's filtered box; box: plain bbox (baseline); "
                        "several, comma-separated (dfg,box,sdg), share one prediction and one encoder pass per "
                        "slice and write one dataset each")
    p.add_argument("--search-config",
                   help='JSON overrides of the search constants, e.g. \'{"presence_min_pixels": 100}\'; the DFG pixel '
                        'constants are for 256 px slices and scaled to each slice ("reference_side": 0: plain pixels)')
    p.add_argument("--out-id", type=int, help="output dataset id (default: target id + 100 dfg, + 110 box, "
                                              "+ 120 sdg; + 105 dfg with a --pseudo-ignore rule)")
    p.add_argument("--name", help="output dataset name (default: <target name>Pseudo<PROMPT>, + Evidence with "
                                  "--pseudo-ignore evidence)")
    p.add_argument("--copy-images", action="store_true", help="copy images instead of symlinking them")
    p.add_argument("--max-cases", type=int, help="stop after this many cases (the rest on a later run)")
    p.add_argument("--max-slices", type=int, help="search only the N slices with most foreground (debugging)")
    p.add_argument("--save-figures", type=Path, metavar="DIR",
                   help="PNG of every search (boxes + change curve; with --pseudo-ignore RULE the ignored pixels)")
    p.add_argument("--pseudo-ignore", default=NO_RULE, metavar="RULE",
                   help=f"{' or '.join(PSEUDO_IGNORE)}: none (default) is the reference; evidence also writes "
                        "dfg_refine/reliability/ and puts nnU-Net's ignore label (dataset.json \"ignore\") on the "
                        "voxels the search's own evidence does not support and on those the post-processing "
                        "removes (docs/METHOD.md, \"Beyond the reference\"); none,evidence writes both datasets "
                        "from one search (the rule's dataset: target id + 105, <Target>PseudoDFGEvidence)")
    p.set_defaults(func=_run)
    return p
