"""``refine`` runs that go wrong on the way, through the real command in subprocesses: killed with SIGKILL and
resumed, two parts writing one dataset at once, a model that predicts nothing or never one class; and the raw
datasets a whole chain must leave untouched.

SAM is the deterministic stand-in (``stub_sam_cli.py``) except where a real model is cheap (nothing to segment).
Models that predict nothing / never class 3 are real nnU-Net checkpoints with edited weights (``_edited_model``).
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from conftest import tiny_copy
from _tiny_model import TINY_DFG, ThresholdSegmenter, TinyModel
from cli_env import assert_one_error_line, cli, cli_command, kill_midway, nnunet_env, snapshot, tree_hashes

TARGET = "Dataset702_DFGSynthTarget"
CASES = ["case_0000", "case_0001", "case_0002"]
ABSENT = 3  # left_kidney: present in every hidden target label
# One torch thread per process: on a busy 2-core machine two threads contend (a 12-slice case took 5-12 s instead
# of 0.3 s), and the parallel-parts test runs two processes anyway.
ENV = {"OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tiny_model_root) -> TinyModel:
    yield from tiny_copy(tmp_path_factory, tiny_model_root, "robustness_runs")


def _out(tiny: TinyModel, out_id: int, name: str = "DFGSynthTarget") -> Path:
    return tiny.raw / f"Dataset{out_id}_{name}PseudoDFG"


def _run(tiny: TinyModel, args: list[str], stub_sam: bool = True) -> subprocess.CompletedProcess:
    proc = cli(args, tiny.root, stub_sam=stub_sam, **ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _start(tiny: TinyModel, args: list[str]) -> subprocess.Popen:
    return subprocess.Popen(cli_command(args, stub_sam=True), env=nnunet_env(tiny.root, **ENV),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _labels(out: Path) -> dict[str, bytes]:
    """Every label file of a pseudo-label dataset (post-processed, raw and the model's), by relative path."""
    return {str(p.relative_to(out)): p.read_bytes() for sub in ("labelsTr", "dfg_refine/labels_raw",
                                                                 "dfg_refine/labels_model")
            for p in sorted((out / sub).iterdir())}


def _assert_complete_and_clean(out: Path, reference: Path) -> None:
    """Same labels and dataset.json as the uninterrupted run, valid reports, nothing left in ``.tmp/`` or as a
    hidden file in the dataset's root."""
    assert _labels(out) == _labels(reference)
    assert json.loads((out / "dataset.json").read_text()) == json.loads((reference / "dataset.json").read_text())
    for report in (reference / "dfg_refine/reports").iterdir():
        assert json.loads((out / "dfg_refine/reports" / report.name).read_text())["case"] == report.stem
    assert not list((out / "dfg_refine/.tmp").iterdir())
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]


def _edited_model(tiny: TinyModel, name: str, never: list[int]) -> Path:
    """A copy of the tiny model that can never predict the classes ``never``: one feature channel (the one the
    prototypes weigh least) of the last decoder stage is made constant 1 (its norm's scale 0, shift 1) and dropped
    from every prototype, except that each class in ``never`` gets background's prototype with -10 there: with the
    bias-free heads its logit is background's - 10 at every voxel. A real checkpoint, run by nnU-Net's own
    predictor: no test double between the model and refine."""
    dest = tiny.root / "res_edited" / name / tiny.model_dir.name
    shutil.copytree(tiny.model_dir, dest, ignore=shutil.ignore_patterns("checkpoint_best.pth", "validation"))
    path = dest / "fold_all" / "checkpoint_final.pth"
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    weights = checkpoint["network_weights"]
    head = weights[f"decoder.seg_layers.{max(int(k.split('.')[2]) for k in weights if 'seg_layers' in k)}.weight"]
    channel = int(head[:, :, 0, 0].norm(dim=0).argmin())
    stage = max(int(k.split(".")[2]) for k in weights if k.startswith("decoder.stages."))
    conv = max(int(k.split(".")[4]) for k in weights if k.startswith(f"decoder.stages.{stage}.convs."))
    for norm in ("norm", "all_modules.1"):  # one InstanceNorm, listed under two names
        weights[f"decoder.stages.{stage}.convs.{conv}.{norm}.weight"][channel] = 0.0
        weights[f"decoder.stages.{stage}.convs.{conv}.{norm}.bias"][channel] = 1.0
    head[:, channel] = 0.0
    for k in never:
        head[k] = head[0]
        head[k, channel] = -10.0
    torch.save(checkpoint, path)
    return dest


# ---------------------------------------------------------------- 10. raw datasets untouched by a whole chain

@pytest.fixture(scope="module")
def reference(tiny):
    """Hashes of the raw datasets, then prepare-target, refine and prepare-target --labels of the pseudo-labels
    (the file-handling steps of DFG 2-5, as a user chains them)."""
    raw = [tiny.raw / TARGET, tiny.raw / "Dataset701_DFGSynthSource", tiny.raw / "_hidden_labels"]
    before = tree_hashes(*raw)
    model = ["-m", str(tiny.model_dir), "-c", "2d"]
    _run(tiny, ["prepare-target", "-d", "702", *model], stub_sam=False)
    _run(tiny, tiny.refine_args("--out-id", "850", "--search-config", TINY_DFG))
    _run(tiny, ["prepare-target", "-d", "850", *model, "--labels"], stub_sam=False)
    return {"raw": raw, "before": before, "out": _out(tiny, 850)}


def test_raw_datasets_unchanged_by_prepare_refine_prepare(tiny, reference):
    assert tree_hashes(*reference["raw"]) == reference["before"]
    assert sorted(p.name for p in (reference["out"] / "labelsTr").iterdir()) == [f"{c}.nii.gz" for c in CASES]
    assert (tiny.root / "pre/Dataset850_DFGSynthTargetPseudoDFG/gt_segmentations/case_0002.nii.gz").is_file()


# ---------------------------------------------------------------- 8./9. SIGKILL and resume; two parts at once

@pytest.fixture(scope="module")
def eight(tiny) -> dict:
    """A target of 8 cases (the 3 images, linked under 8 names: the run lasts long enough to be killed halfway)
    and its uninterrupted refinement."""
    images = tiny.raw / "Dataset703_Eight" / "imagesTr"
    images.mkdir(parents=True)
    shutil.copy(tiny.raw / TARGET / "dataset.json", images.parent)
    for i in range(8):
        source = tiny.raw / TARGET / "imagesTr" / f"{CASES[i % 3]}_0000.nii.gz"
        (images / f"case_{i:04d}_0000.nii.gz").symlink_to(source)
    args = tiny.refine_args("--search-config", TINY_DFG, dataset=703)
    _run(tiny, [*args, "--out-id", "860"])
    return {"args": args, "reference": _out(tiny, 860, "Eight")}


def test_sigkill_then_resume_gives_identical_labels(tiny, eight):
    args, out = [*eight["args"], "--out-id", "861"], _out(tiny, 861, "Eight")
    proc = _start(tiny, args)
    done = kill_midway(proc, out / "labelsTr", 8, timeout=300)
    # what a kill in the middle of a write leaves (too short a window to hit on purpose)
    (out / "dfg_refine/.tmp/.case_0007.nii.gz.k1ll3d.nii.gz").write_bytes(b"half a label")
    resumed = _run(tiny, args)
    assert f"refined {8 - done} case(s), {done} already done" in resumed.stdout
    _assert_complete_and_clean(out, eight["reference"])


def test_two_parts_at_once_equal_one_run(tiny, eight):
    args = [*eight["args"], "--out-id", "862"]
    procs = [_start(tiny, [*args, "-num_parts", "2", "-part_id", str(i)]) for i in (0, 1)]
    results = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in results]
    assert [int(re.search(r"refined (\d+) case", out)[1]) for out, _ in results] == [4, 4]
    _assert_complete_and_clean(_out(tiny, 862, "Eight"), eight["reference"])


# ---------------------------------------------------------------- 5. empty predictions

def test_model_predicting_nothing_publishes_no_dataset(tiny):
    blind = _edited_model(tiny, "blind", never=[1, 2, 3, 4])
    before = snapshot(tiny.raw)
    proc = cli(tiny.refine_args("--out-id", "853", model=blind), tiny.root, **ENV)  # real LiteMedSAM: never called
    assert_one_error_line(proc, "the model predicts no foreground in any of the 3 case(s)")
    assert "Dataset853_DFGSynthTargetPseudoDFG was removed" in proc.stderr
    assert snapshot(tiny.raw) == before


def test_one_empty_case_among_others_is_kept(tiny, monkeypatch):
    """Per-case emptiness is legitimate (an organ-free scan): only an all-empty dataset is refused. The prediction
    of case_0001 is blanked in process (a test double of the network's output)."""
    from nnunet_dfg.refine import refine_dataset
    from nnunet_dfg.volume.predictor import FeaturePredictor

    predict = FeaturePredictor.predict_case

    def blank_case_0001(self, files, with_features=True, **kw):
        pred = predict(self, files, with_features, **kw)
        if Path(files[0]).name.startswith("case_0001"):
            pred.probs[:] = 0.0
            pred.probs[0] = 1.0
        return pred

    monkeypatch.setattr(FeaturePredictor, "predict_case", blank_case_0001)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as ENV does for the subprocesses
    try:
        summary = refine_dataset(tiny.refine_options(out_id=854, search_config=TINY_DFG), ThresholdSegmenter())
    finally:
        torch.set_num_threads(threads)
    assert summary["cases_done"] == CASES
    counts = {c: np.bincount(sitk.GetArrayFromImage(sitk.ReadImage(str(_out(tiny, 854) / "labelsTr" /
                                                                       f"{c}.nii.gz"))).ravel(), minlength=5)
              for c in CASES}
    assert counts["case_0001"][1:].sum() == 0 and counts["case_0000"][1:].sum() > 0


# ---------------------------------------------------------------- 6. a class absent from whole volumes

def test_class_the_model_never_predicts_stays_absent_and_evaluates_by_convention(tiny, tmp_path):
    model = _edited_model(tiny, "no_left_kidney", never=[ABSENT])
    _run(tiny, tiny.refine_args("--out-id", "855", "--search-config", TINY_DFG, model=model))
    out = _out(tiny, 855)
    labels = [sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
              for path in sorted((out / "labelsTr").iterdir()) + sorted((out / "dfg_refine/labels_raw").iterdir())]
    assert len(labels) == 2 * len(CASES) and not any((label == ABSENT).any() for label in labels)
    assert any(label.any() for label in labels)  # the other classes are still predicted
    report = json.loads((out / "dfg_refine/reports/case_0000.json").read_text())
    assert all(counts["left_kidney"] == 0 for counts in report["voxels"].values())
    # references: case_0000 without the class (both empty), case_0001 with it (prediction empty only)
    hidden = tiny.raw / "_hidden_labels" / TARGET / "labelsTr"
    refs = tmp_path / "refs"
    refs.mkdir()
    shutil.copy(hidden / "case_0001.nii.gz", refs)
    ref0 = sitk.ReadImage(str(hidden / "case_0000.nii.gz"))
    array = sitk.GetArrayFromImage(ref0)
    array[array == ABSENT] = 0
    no_class = sitk.GetImageFromArray(array)
    no_class.CopyInformation(ref0)
    sitk.WriteImage(no_class, str(refs / "case_0000.nii.gz"))
    result_file = tmp_path / "eval.json"
    _run(tiny, ["evaluate", "-pred", str(out / "labelsTr"), "-ref", str(refs), "-o", str(result_file)], stub_sam=False)
    per_case = json.loads(result_file.read_text())["per_case"]
    ref1 = sitk.ReadImage(str(refs / "case_0001.nii.gz"))
    diagonal = float(np.sqrt(sum((n * s) ** 2 for n, s in zip(ref1.GetSize(), ref1.GetSpacing()))))
    assert per_case["case_0000"]["left_kidney"] == {"dice": 1.0, "assd": 0.0}
    assert per_case["case_0001"]["left_kidney"]["dice"] == 0.0
    assert per_case["case_0001"]["left_kidney"]["assd"] == pytest.approx(diagonal)
