"""The stage figure (``stage_figure.png``) on constructed label files: the slice it picks, what each row shows, the
bars' intervals, a stage whose files are missing, and where the pipeline says each stage's files are."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from nnunet_dfg.evaluation import evaluate_folders
from nnunet_dfg.pipeline.dfg import DFGPipeline, PipelineConfig
from nnunet_dfg.pipeline.runner import Runner
from nnunet_dfg.pipeline.stage_figure import StageFiles, _rows, pick_slice, stage_intervals, write_stage_figure
from nnunet_dfg.statistics import case_dice

LABELS = {"background": 0, "organ": 1, "other": 2}


def _write(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(sitk.GetImageFromArray(array), str(path))


def _case(rng, organ_slice: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A 4 x 16 x 16 image and its labels: the organ (1) largest on ``organ_slice``, class 2 a small square."""
    truth = np.zeros((4, 16, 16), np.uint8)
    truth[organ_slice, 2:2 + size, 2:2 + size] = 1
    truth[(organ_slice + 1) % 4, 1:3, 1:3] = 1
    truth[:, 12:14, 12:14] = 2
    return (rng.normal(0, 1, truth.shape) + 3.0 * truth).astype(np.float32), truth


@pytest.fixture
def run(tmp_path):
    """Two image sets as the pipeline leaves them: test images with two stages' predictions, training images with
    one pseudo-label stage; every stage evaluated by the real evaluation."""
    rng = np.random.default_rng(0)
    sets = {"imagesTs": {"c1": _case(rng, 1, 4), "c2": _case(rng, 2, 8)}, "imagesTr": {"t1": _case(rng, 3, 6)}}
    ref = {"imagesTs": tmp_path / "labels/labelsTs", "imagesTr": tmp_path / "labels/labelsTr"}
    for images, cases in sets.items():
        for case, (image, truth) in cases.items():
            _write(tmp_path / "raw/Dataset702_T" / images / f"{case}_0000.nii.gz", image)
            _write(ref[images] / f"{case}.nii.gz", truth)
    preds = {"source_only": ("imagesTs", lambda t: np.zeros_like(t)), "fa": ("imagesTs", lambda t: t),
             "pseudo_dfg_post": ("imagesTr", lambda t: np.where(t == 2, 0, t).astype(np.uint8))}
    sources, evaluations = {}, {}
    for stage, (images, change) in preds.items():
        folder = tmp_path / "predictions" / stage
        for case, (_, truth) in sets[images].items():
            _write(folder / f"{case}.nii.gz", change(truth))
        sources[stage] = StageFiles(folder, ref[images], tmp_path / "raw/Dataset702_T" / images)
        evaluations[stage] = evaluate_folders(str(folder), str(ref[images]), labels=LABELS)
    # the oracle was evaluated once, but its predictions are gone: its bar stays, its panel goes
    evaluations["oracle"] = evaluations["fa"]
    sources["oracle"] = StageFiles(tmp_path / "predictions/oracle", ref["imagesTs"], sources["fa"].images)
    return {"sets": sets, "sources": sources, "evaluations": evaluations, "root": tmp_path}


def test_pick_slice_takes_the_most_foreground_first_case_on_ties():
    a, b = np.zeros((3, 4, 4), np.uint8), np.zeros((3, 4, 4), np.uint8)
    a[2, :2, :2], b[1, :2, :3] = 1, 2
    assert pick_slice({"b": b, "a": a}) == ("b", 1)
    b[1] = 0
    b[0, :2, :2] = 1  # as much as a's slice 2: the first case by name wins
    assert pick_slice({"b": b, "a": a}) == ("a", 2)


def test_rows_show_the_chosen_slice_with_ground_truth_and_each_stage(run):
    rows = _rows(run["sources"], ".nii.gz")
    assert [r.name for r in rows] == ["Dataset702_T/imagesTs", "Dataset702_T/imagesTr"]
    test, train = rows
    assert test.stages == ["source_only", "fa"] and train.stages == ["pseudo_dfg_post"]  # no oracle panel
    image, truth = run["sets"]["imagesTs"]["c2"]  # c2 slice 2 holds the most foreground of the test set
    assert test.panels[0].title.startswith("Dataset702_T/imagesTs\nc2, slice 2")
    np.testing.assert_array_equal(test.panels[0].labels, truth[2])
    np.testing.assert_allclose(test.panels[0].image, image[2])
    np.testing.assert_array_equal(test.panels[1].labels, np.zeros_like(truth[2]))  # source_only: nothing
    np.testing.assert_array_equal(test.panels[2].labels, truth[2])  # fa: the truth
    _, truth_tr = run["sets"]["imagesTr"]["t1"]
    np.testing.assert_array_equal(train.panels[1].labels, np.where(truth_tr[3] == 2, 0, truth_tr[3]))


def test_intervals_follow_the_stage_order_and_bracket_the_mean(run):
    intervals = stage_intervals(run["evaluations"])
    assert list(intervals) == ["source_only", "fa", "pseudo_dfg_post", "oracle"]
    for stage, (mean, low, high) in intervals.items():
        assert mean == pytest.approx(np.mean(list(case_dice(run["evaluations"][stage]).values())))
        assert low <= mean <= high
    assert intervals["fa"][0] == pytest.approx(1.0) and intervals["source_only"][0] == pytest.approx(0.0)


def test_the_figure_is_a_png_and_a_missing_stage_does_not_stop_it(run):
    out = write_stage_figure(run["root"] / "work" / "stage_figure.png", run["evaluations"], run["sources"], LABELS)
    with Image.open(out) as png:
        assert png.format == "PNG" and png.width > 600 and png.height > 400
    assert [p.name for p in out.parent.iterdir()] == ["stage_figure.png"]  # written atomically, nothing left over
    # nothing but the bars (no label files at all) still draws
    bare = {s: StageFiles(run["root"] / "gone", f.reference, f.images) for s, f in run["sources"].items()}
    with Image.open(write_stage_figure(run["root"] / "bars.png", run["evaluations"], bare)) as png:
        assert png.format == "PNG"


def test_the_pipeline_says_where_each_evaluated_stage_is(tmp_path):
    """Test-image stages are drawn on the target's imagesTs, pseudo-labels on its imagesTr, the source model in its
    own domain on the source's imagesTr; a stage whose dataset was never made is left out."""
    for name in ("Dataset701_S", "Dataset702_T", "Dataset802_TPseudoDFG"):
        (tmp_path / "raw" / name).mkdir(parents=True)
    (tmp_path / "res/Dataset701_S").mkdir(parents=True)
    cfg = PipelineConfig(source_id=701, target_id=702, target_labels_tr=tmp_path / "lt", target_labels_ts=tmp_path / "ls")
    pipeline = DFGPipeline(cfg, Runner(tmp_path / "work", {}, quiet=True), tmp_path / "raw", tmp_path / "res")
    pipeline.steps()
    sources = pipeline.stage_sources()
    target = tmp_path / "raw/Dataset702_T"
    assert sources["fa"] == StageFiles(tmp_path / "work/predictions/fa", tmp_path / "ls", target / "imagesTs")
    assert sources["pseudo_dfg_post"] == StageFiles(tmp_path / "raw/Dataset802_TPseudoDFG/labelsTr", tmp_path / "lt",
                                                    target / "imagesTr")
    assert sources["pseudo_fa"].predictions == tmp_path / "raw/Dataset802_TPseudoDFG/dfg_refine/labels_model"
    assert sources["source_in_domain"].images == tmp_path / "raw/Dataset701_S/imagesTr"
    assert "pseudo_box" not in sources and "pseudo_sdg" not in sources  # Dataset812/822 do not exist
    assert json.loads(json.dumps([str(p) for p in sources["oracle"]]))  # every stage resolved to paths


def test_the_pipeline_draws_its_evaluated_stages_beside_the_table(tmp_path, capsys):
    """The glue in ``pipeline/command.py``: after the steps, the figure is drawn from the files the pipeline says
    it evaluated; a run without evaluations draws nothing."""
    from nnunet_dfg.pipeline.command import _figure

    rng = np.random.default_rng(1)
    target = tmp_path / "raw/Dataset702_T"
    target.mkdir(parents=True)
    (target / "dataset.json").write_text(json.dumps({"labels": LABELS, "channel_names": {"0": "CT"}}))
    image, truth = _case(rng, 2, 6)
    _write(target / "imagesTs/c1_0000.nii.gz", image)
    _write(tmp_path / "labelsTs/c1.nii.gz", truth)
    work = tmp_path / "work"
    _write(work / "predictions/fa/c1.nii.gz", truth)
    cfg = PipelineConfig(source_id=701, target_id=702, source_fold="all", sdg=False, oracle=False,
                         target_labels_ts=tmp_path / "labelsTs")
    pipeline = DFGPipeline(cfg, Runner(work, {}, quiet=True), tmp_path / "raw", tmp_path / "res")
    pipeline.steps()
    _figure(work / "none.png", {}, pipeline)
    assert not (work / "none.png").exists()
    evaluations = {"fa": evaluate_folders(str(work / "predictions/fa"), str(tmp_path / "labelsTs"), labels=LABELS)}
    _figure(work / "stage_figure.png", evaluations, pipeline)
    assert f"stage figure: {work / 'stage_figure.png'}" in capsys.readouterr().out
    with Image.open(work / "stage_figure.png") as png:
        assert png.format == "PNG"
    (rows,) = [_rows(pipeline.stage_sources(), ".nii.gz")]
    assert [r.stages for r in rows] == [["fa"]]  # source_only and self_trained have no predictions: left out


def test_an_ignore_label_is_named_from_the_dataset_json_beside_its_labels(tmp_path):
    """The reliable pseudo-label set marks unreliable pixels with nnU-Net's ignore label, a value the target's own
    labels do not have: its legend entry comes from the pseudo-label dataset's dataset.json."""
    from nnunet_dfg.pipeline.stage_figure import _label_names

    pseudo = tmp_path / "Dataset902_TPseudoReliable"
    (pseudo / "labelsTr").mkdir(parents=True)
    (pseudo / "dataset.json").write_text(json.dumps({"labels": {**LABELS, "ignore": 5}}))
    predicted = tmp_path / "predictions/fa"
    predicted.mkdir(parents=True)
    (predicted / "dataset.json").write_text(json.dumps({"labels": LABELS}))
    sources = {"pseudo_dfg_reliable": StageFiles(pseudo / "labelsTr", tmp_path, tmp_path),
               "fa": StageFiles(predicted, tmp_path, tmp_path),
               "oracle": StageFiles(tmp_path / "nowhere", tmp_path, tmp_path)}
    names = _label_names(sources)
    assert names[5] == "ignore" and names[1] == next(k for k, v in LABELS.items() if v == 1) and 0 not in names
