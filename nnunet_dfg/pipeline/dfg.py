"""The whole DFG pipeline as a list of steps on nnU-Net's own commands.

source training -> target-test prediction (source only) -> prepare-target -> FA -> refine (DFG, and the box and
SDG prompts for comparison) -> self-training -> predictions -> evaluation; plus a target-supervised oracle.
Target labels are read only by the evaluation steps and by the oracle (a reference row, never used for a
model choice): every model is its run's last checkpoint.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..cpu_plans import CPU_PLANS, cpu_plans
from ..errors import UserError
from ..nnunet_io import atomic_folder, dataset_folder, read_json, write_json_atomic
from ..seed import DEFAULT_SEED, SEED_ENV
from ..command_base import OUT_ID_OFFSET, RELIABLE_ID_OFFSET
from .runner import Runner, Step
from .stage_figure import StageFiles

PSEUDO_PROMPTS = ("dfg", "box", "sdg")


@dataclass
class PipelineConfig:
    source_id: int
    target_id: int
    configuration: str = "2d"
    variant: str = ""  # trainer-name suffix, e.g. "_demo"
    oracle_variant: Optional[str] = None  # the oracle's (it starts from the source model); default: variant
    device: str = "cpu"
    sam: str = "litemedsam"
    plans: str = "nnUNetPlans"  # nnUNetPlansCPU: derived from nnUNetPlans with a narrower network (cpu_plans)
    seed: int = DEFAULT_SEED  # of every training run (nnUNet_dfg_seed)
    source_fold: str = "0"
    target_labels_tr: Optional[Path] = None  # evaluation (and oracle) only
    target_labels_ts: Optional[Path] = None  # evaluation only
    oracle: bool = True
    disable_tta: bool = True
    search_config: Optional[str] = None  # JSON overrides of the search configs (refine --search-config)
    # refine --pseudo-ignore RULE: also the reliable chain (the same search's ignore-labelled dataset -> self-training
    # through nnU-Net's ignore label) and its rows; "none": the reference chain only
    pseudo_ignore: str = "none"
    sam_intensity: str = "auto"  # refine/sdg-predict --sam-intensity: ct, mr or auto (the target's dataset.json)
    sam_window: Optional[str] = None  # refine/sdg-predict --sam-window LOW,HIGH (HU; default -125,275)
    sdg: bool = True  # also the SDG rows: source model boxes -> SAM with a decoder fine-tuned on the source (sdg)
    sdg_finetuned: bool = True  # with sdg: the sdg row (finetune-sam, then sdg-predict with its decoder)
    sdg_no_finetune: bool = True  # with sdg: the ablation row sdg_no_finetune, SAM as shipped
    sdg_tile: str = "auto"  # sdg-predict and finetune-sam --tile: auto = 1 for LiteMedSAM (256 px), 2 for SAM/MedSAM
    sdg_empty_box: str = "none"  # sdg-predict and finetune-sam --empty-box (full: the SDG reference's)
    finetune_epochs: int = 200  # finetune-sam --epochs: passes over the source slices (the reference's 200)
    finetune_max_slices: Optional[int] = None  # finetune-sam --max-slices: None = every boxed source slice
    finetune_batch_canvases: Optional[int] = None  # finetune-sam --batch-canvases: None = 16 slices (the reference)
    # a finetune-sam checkpoint of this source model to predict the sdg row with, instead of training one
    # (the decoder learns from the source only, so one serves every target of that source)
    sdg_checkpoint: Optional[Path] = None
    # nnUNetv2_predict -npp/-nps; None: 0 on the CPU (one process: each worker would import torch for a few small
    # volumes), nnU-Net's own default elsewhere (workers keep a GPU fed)
    predict_workers: Optional[int] = None

    def pseudo_id(self, prompt: str) -> int:
        return self.target_id + OUT_ID_OFFSET[prompt]  # refine's default output ids

    @property
    def reliable_id(self) -> int:
        return self.pseudo_id("dfg") + RELIABLE_ID_OFFSET  # refine's default id of a --pseudo-ignore rule's dataset

    @property
    def oracle_id(self) -> int:
        return self.target_id + 130

    def trainer(self, phase: str) -> str:
        if phase == "Oracle":
            return f"nnUNetTrainerDFG_Source{self.variant if self.oracle_variant is None else self.oracle_variant}"
        return f"nnUNetTrainerDFG_{phase}{self.variant}"


class DFGPipeline:
    def __init__(self, cfg: PipelineConfig, runner: Runner, raw: Path, results: Path):
        self.cfg, self.runner, self.raw, self.results = cfg, runner, raw, results
        self.predictions = runner.work / "predictions"
        self.sources: dict[str, tuple] = {}  # stage -> (predictions, reference, images), filled by evaluate()

    def model(self, dataset: int, phase: str) -> Path:
        c = self.cfg
        return dataset_folder(self.results, dataset) / f"{c.trainer(phase)}__{c.plans}__{c.configuration}"

    def train(self, name: str, dataset: int, fold: str, phase: str, init=None) -> Step:
        c = self.cfg
        cmd = ["nnUNetv2_train", str(dataset), c.configuration, fold, "-tr", c.trainer(phase), "-p", c.plans,
               "-device", c.device]
        first = (lambda: cmd + ["-pretrained_weights", str(init())]) if init else cmd
        # a killed run continues from its latest checkpoint
        return Step(name, first, env={SEED_ENV: str(c.seed)}, retry_command=cmd + ["--c"])

    def predict(self, stage: str, dataset: int, phase: str, fold: str) -> Step:
        c = self.cfg
        workers = c.predict_workers if c.predict_workers is not None else 0 if c.device == "cpu" else None
        extra = ([] if workers is None else ["-npp", str(workers), "-nps", str(workers)]) \
            + (["--disable_tta"] if c.disable_tta else [])
        cmd = lambda: ["nnUNetv2_predict", "-i", str(self.test_images),  # noqa: E731
                       "-o", str(self.predictions / stage), "-d", str(dataset), "-c", c.configuration, "-f", fold,
                       "-tr", c.trainer(phase), "-p", c.plans, "-device", c.device] + extra
        return Step(f"predict_{stage}", cmd)

    def evaluate(self, stage: str, pred, ref: Path, only_predicted: bool = False, images=None) -> Step:
        """``pred``, ``ref`` and ``images`` (default: the target test images) may be callables, resolved late."""
        self.sources[stage] = (pred, ref, images if images is not None else (lambda: self.test_images))

        def action():
            from ..evaluation import evaluate_folders
            folder, labels = (pred() if callable(pred) else pred), (ref() if callable(ref) else ref)
            result = evaluate_folders(str(folder), str(labels), labels=self.labels, only_predicted=only_predicted)
            write_json_atomic(self.runner.work / "eval" / f"{stage}.json", result)
        return Step(f"evaluate_{stage}", action=action)

    def stage_sources(self) -> dict[str, StageFiles]:
        """Each evaluated stage's files (after ``steps()``), for the stage figure; a stage whose dataset does not
        exist (a step that never ran) is left out."""
        out = {}
        for stage, files in self.sources.items():
            try:
                out[stage] = StageFiles(*(Path(x() if callable(x) else x) for x in files))
            except UserError:
                continue
        return out

    @property
    def target_raw(self) -> Path:
        return dataset_folder(self.raw, self.cfg.target_id)

    @property
    def test_images(self) -> Path:
        return self.target_raw / "imagesTs"

    @property
    def labels(self) -> dict:
        return {k: v for k, v in read_json(self.target_raw / "dataset.json")["labels"].items() if k != "background"}

    def steps(self) -> list[Step]:
        c = self.cfg
        src_ckpt = lambda: self.model(c.source_id, "Source") / f"fold_{c.source_fold}" / "checkpoint_final.pth"  # noqa
        fa_ckpt = lambda: self.model(c.target_id, "FA") / "fold_all" / "checkpoint_final.pth"  # noqa: E731
        steps = [
            # -npfp: nnU-Net fingerprints with 8 processes by default, each importing torch (~12 s of 2 cores)
            Step("plan_source", ["nnUNetv2_plan_and_preprocess", "-d", str(c.source_id), "-c", c.configuration,
                                 "-np", "1", "-npfp", "1"], env={"nnUNet_n_proc_DA": "1"}),
        ]
        if c.plans == CPU_PLANS:
            steps.append(Step("cpu_plans", action=self.write_cpu_plans))
        steps += [
            self.train("train_source", c.source_id, c.source_fold, "Source"),
            self.predict("source_only", c.source_id, "Source", c.source_fold),
            Step("prepare_target", ["nnunet_dfg", "prepare-target", "-d", str(c.target_id), "-s", str(c.source_id),
                                    "-tr", c.trainer("Source"), "-p", c.plans, "-c", c.configuration]),
            self.train("train_fa", c.target_id, "all", "FA", init=src_ckpt),
            self.predict("fa", c.target_id, "FA", "all"),
        ]
        # one run writes all three pseudo-label datasets: each case predicted once, each slice encoded once
        steps.append(Step("refine", [
            "nnunet_dfg", "refine", "-d", str(c.target_id), "-c", c.configuration, "-f", "all", "-tr",
            c.trainer("FA"), "-p", c.plans, "--prompt", ",".join(PSEUDO_PROMPTS), "--sam", c.sam, "-device",
            c.device, "--no-progress"] + (["--disable-tta"] if c.disable_tta else [])
            + (["--search-config", c.search_config] if c.search_config else []) + self.sam_intensity_args
            + (["--pseudo-ignore", f"none,{c.pseudo_ignore}"] if c.pseudo_ignore != "none" else [])))
        steps += [
            Step("prepare_self_training", lambda: ["nnunet_dfg", "prepare-target", "-d", str(c.pseudo_id("dfg")),
                                                   "-m", str(self.model(c.target_id, "FA")), "-c", c.configuration,
                                                   "--labels"]),
            self.train("train_self_training", c.pseudo_id("dfg"), "all", "ST", init=fa_ckpt),
            self.predict("self_trained", c.pseudo_id("dfg"), "ST", "all"),
        ]
        if c.sdg:
            steps += self.sdg_steps()
        if c.oracle and c.target_labels_tr is not None:
            steps += [
                Step("oracle_dataset", action=self.link_oracle_dataset),
                Step("prepare_oracle", lambda: ["nnunet_dfg", "prepare-target", "-d", str(c.oracle_id), "-m",
                                                str(self.model(c.source_id, "Source")), "-c", c.configuration,
                                                "--labels"]),
                # fine-tuned from the source model (nnU-Net's loader re-initialises the classifier): a few
                # labelled target volumes and a short schedule are not enough for training from scratch
                self.train("train_oracle", c.oracle_id, "all", "Oracle", init=src_ckpt),
                self.predict("oracle", c.oracle_id, "Oracle", "all"),
            ]
        if c.source_fold != "all":  # nnU-Net's own validation of the source fold: the source model in its domain
            validation = lambda: self.model(c.source_id, "Source") / f"fold_{c.source_fold}" / "validation"  # noqa
            source_labels = lambda: dataset_folder(self.raw, c.source_id) / "labelsTr"  # noqa: E731
            steps.append(self.evaluate("source_in_domain", validation, source_labels, only_predicted=True,
                                       images=lambda: dataset_folder(self.raw, c.source_id) / "imagesTr"))
        if c.target_labels_ts is not None:
            sdg = (("sdg",) * c.sdg_finetuned + ("sdg_no_finetune",) * c.sdg_no_finetune) if c.sdg else ()
            stages = ("source_only", "fa", "self_trained") + sdg \
                + (("oracle",) if c.oracle and c.target_labels_tr else ())
            for stage in stages:
                steps.append(self.evaluate(stage, self.predictions / stage, c.target_labels_ts))
        if c.target_labels_tr is not None:
            # pseudo_fa: the FA model's own labels, where the search starts, scored on the same images
            pseudo = {"pseudo_fa": ("dfg", "dfg_refine/labels_model"),
                      "pseudo_box": ("box", "labelsTr"), "pseudo_sdg": ("sdg", "labelsTr"),
                      "pseudo_dfg_raw": ("dfg", "dfg_refine/labels_raw"), "pseudo_dfg_post": ("dfg", "labelsTr")}
            for stage, (prompt, sub) in pseudo.items():
                folder = lambda prompt=prompt, sub=sub: dataset_folder(self.raw, c.pseudo_id(prompt)) / sub  # noqa
                steps.append(self.evaluate(stage, folder, c.target_labels_tr,
                                           images=lambda: self.target_raw / "imagesTr"))
        return steps + self.reliable_steps()

    def reliable_steps(self) -> list[Step]:
        """With ``pseudo_ignore``: the ignore-labelled dataset refine wrote from the same search -> prepare-target
        --labels -> self-training from the same FA model (nnU-Net leaves ignored voxels out of the loss) ->
        prediction; rows self_trained_reliable and pseudo_dfg_reliable (Dice over kept voxels, kept fractions)."""
        c = self.cfg
        if c.pseudo_ignore == "none":
            return []
        fa_ckpt = lambda: self.model(c.target_id, "FA") / "fold_all" / "checkpoint_final.pth"  # noqa: E731
        steps = [
            Step("prepare_self_training_reliable", lambda: [
                "nnunet_dfg", "prepare-target", "-d", str(c.reliable_id), "-m", str(self.model(c.target_id, "FA")),
                "-c", c.configuration, "--labels"]),
            self.train("train_self_training_reliable", c.reliable_id, "all", "ST", init=fa_ckpt),
            self.predict("self_trained_reliable", c.reliable_id, "ST", "all"),
        ]
        if c.target_labels_ts is not None:
            steps.append(self.evaluate("self_trained_reliable", self.predictions / "self_trained_reliable",
                                       c.target_labels_ts))
        if c.target_labels_tr is not None:
            steps.append(self.evaluate("pseudo_dfg_reliable",
                                       lambda: dataset_folder(self.raw, c.reliable_id) / "labelsTr",
                                       c.target_labels_tr, images=lambda: self.target_raw / "imagesTr"))
        return steps

    @property
    def sam_intensity_args(self) -> list[str]:
        """What SAM is fed in refine and sdg-predict (the target's images, so the target's modality)."""
        c = self.cfg
        return ["--sam-intensity", c.sam_intensity] + (["--sam-window", c.sam_window] if c.sam_window else [])

    def sdg_steps(self) -> list[Step]:
        """SDG, no adaptation: the source model's refined boxes prompt SAM on the target test images, with its mask
        decoder fine-tuned on the source (the sdg row: SDG trains on the source) and, as an ablation, as shipped
        (sdg_no_finetune)."""
        c = self.cfg
        checkpoint = self.runner.work / "sam_finetuned_on_source.pth"
        tta = ["--disable-tta"] if c.disable_tta else []
        empty_box = ["--empty-box", c.sdg_empty_box]

        def predict(stage: str, sam: str) -> Step:
            return Step(f"predict_{stage}", lambda: [
                "nnunet_dfg", "sdg-predict", "-i", str(self.test_images), "-o", str(self.predictions / stage), "-m",
                str(self.model(c.source_id, "Source")), "-f", c.source_fold, "--sam", sam, "--tile", str(c.sdg_tile),
                "-device", c.device, "--no-progress"] + tta + empty_box + self.sam_intensity_args)
        steps = [predict("sdg_no_finetune", c.sam)] if c.sdg_no_finetune else []
        if not c.sdg_finetuned:
            return steps
        if c.sdg_checkpoint is not None:
            return steps + [predict("sdg", str(c.sdg_checkpoint))]
        # the source model's refined boxes on its training slices, on the canvases sdg-predict uses; SAM is fed the
        # source as sdg-predict feeds the target: the same equalisation, else the window of the source's modality
        intensity = ["--sam-intensity", "equalize"] if c.sam_intensity == "equalize" else []
        budget = ([] if c.finetune_max_slices is None else ["--max-slices", str(c.finetune_max_slices)]) \
            + ([] if c.finetune_batch_canvases is None else ["--batch-canvases", str(c.finetune_batch_canvases)])
        finetune = Step("finetune_sam", lambda: [
            "nnunet_dfg", "finetune-sam", "-d", str(c.source_id), "-o", str(checkpoint), "-c", c.configuration,
            "-p", c.plans, "--boxes", "refined", "-m", str(self.model(c.source_id, "Source")), "-f",
            c.source_fold, "--tile", str(c.sdg_tile), "--sam", c.sam, "--epochs", str(c.finetune_epochs),
            "-device", c.device, "--no-progress"] + budget + tta + empty_box + intensity)
        return steps + [finetune, predict("sdg", str(checkpoint))]

    def write_cpu_plans(self) -> None:
        """nnUNetPlansCPU beside the nnUNetPlans that planning wrote (same preprocessed data, narrower network)."""
        folder = dataset_folder(Path(self.runner.env["nnUNet_preprocessed"]), self.cfg.source_id)
        write_json_atomic(folder / f"{CPU_PLANS}.json", cpu_plans(read_json(folder / "nnUNetPlans.json")))

    def link_oracle_dataset(self) -> None:
        """Target images + their true labels: the oracle's training data (a reference row only)."""
        out = self.raw / f"Dataset{self.cfg.oracle_id:03d}_{self.target_raw.name.split('_', 1)[1]}Oracle"
        if out.exists():
            return
        with atomic_folder(out) as tmp:
            for sub, src in (("imagesTr", self.target_raw / "imagesTr"), ("labelsTr", Path(self.cfg.target_labels_tr))):
                (tmp / sub).mkdir()
                for f in sorted(src.iterdir()):
                    os.symlink(f.resolve(), tmp / sub / f.name)
            write_json_atomic(tmp / "dataset.json", read_json(self.target_raw / "dataset.json"))
