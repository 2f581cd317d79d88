"""Bad input to the real commands on a real (tiny) trained model: one ``ERROR:`` line, exit status 2, and not one
file or folder created. Complements test_bad_input.py (prepare-target on a fake model folder) with what needs a
loadable model: unknown ids for the other commands, bad SAM checkpoints, incompatible or defective target images.
Processes killed mid-run, parallel parts and empty predictions: test_robustness_runs.py.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from conftest import tiny_copy
from _tiny_model import TinyModel
from cli_env import assert_one_error_line, snapshot
from nnunet_dfg.errors import UserError
from nnunet_dfg.image_checks import check_case_images, image_problem

TARGET = "Dataset702_DFGSynthTarget"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tiny_model_root) -> TinyModel:
    yield from tiny_copy(tmp_path_factory, tiny_model_root, "robustness")


def _refused(cli_here, tiny: TinyModel, args: list[str], fragment: str, *also: Path) -> str:
    """Runs the command (in this process: the entry point's subprocess check is test_bad_input.py's); asserts the
    bad-input rule and that nothing appeared under the model root or ``also``."""
    before = snapshot(tiny.root, *also)
    line = assert_one_error_line(cli_here(args, tiny.root), fragment)
    assert snapshot(tiny.root, *also) == before
    return line


def _image(tiny: TinyModel, case: str = "case_0000") -> sitk.Image:
    return sitk.ReadImage(str(tiny.raw / TARGET / "imagesTr" / f"{case}_0000.nii.gz"))


def _write_target(tiny: TinyModel, dataset_id: int, name: str, cases: dict[str, list[sitk.Image]],
                  ending: str = ".nii.gz") -> Path:
    """A raw dataset like the target, with the given channel images per case (dataset.json to match)."""
    folder = tiny.raw / f"Dataset{dataset_id}_{name}"
    (folder / "imagesTr").mkdir(parents=True)
    channels = max((len(v) for v in cases.values()), default=1)
    for case, images in cases.items():
        for c, image in enumerate(images):
            sitk.WriteImage(image, str(folder / "imagesTr" / f"{case}_{c:04d}{ending}"))
    ds = json.loads((tiny.raw / TARGET / "dataset.json").read_text())
    ds.update(channel_names={str(c): f"CT{c}" for c in range(channels)}, file_ending=ending, numTraining=len(cases))
    (folder / "dataset.json").write_text(json.dumps(ds))
    return folder


def _with_values(image: sitk.Image, edit) -> sitk.Image:
    array = sitk.GetArrayFromImage(image)
    edit(array)
    out = sitk.GetImageFromArray(array)
    out.CopyInformation(image)
    return out


# ---------------------------------------------------------------- the image checks, pure

def test_image_problem_names_nan_inf_and_constant_images():
    rng = np.random.default_rng(0)
    good = rng.normal(size=(1, 4, 8, 8)).astype(np.float32)
    assert image_problem(good) is None and image_problem(good.astype(np.int16) * 0 + np.arange(8)) is None
    nan, inf = good.copy(), good.copy()
    nan[0, 1, 2, 3] = np.nan
    inf[0, 0, 0, :2] = -np.inf
    assert image_problem(nan) == "image contains NaN (1 voxel)"
    assert image_problem(inf) == "image contains inf (2 voxels)"
    assert image_problem(np.zeros((1, 4, 8, 8))) == "image is constant (value 0.0): nothing to segment"
    # several channels: NaN in any is refused, one blank channel is allowed, all constant is not
    assert image_problem(np.stack([good[0], nan[0]])) == "channel 1 contains NaN (1 voxel)"
    assert image_problem(np.stack([good[0], np.zeros_like(good[0])])) is None
    assert image_problem([np.ones((2, 2)), np.zeros((3, 3))]).startswith("image is constant (value 1.0, 0.0)")
    assert image_problem(np.zeros((1, 0, 4, 4))) == "image is empty" == image_problem([])


def test_check_case_images_names_the_case_and_unreadable_files(tmp_path):
    class Reader:  # nnU-Net's reader interface, for formats other than NIfTI
        def read_images(self, files):
            if "broken" in files[0]:
                raise RuntimeError("\nITK ERROR: cannot read\nmore detail")
            return (np.full((1, 2, 3, 3), 7.0) if "flat" in files[0] else np.arange(18.0).reshape(1, 2, 3, 3)), {}

    check_case_images({"a": [Path("a_0000.mha")]}, Reader)
    with pytest.raises(UserError, match=r"^b: image is constant \(value 7.0\): nothing to segment$"):
        check_case_images({"a": [Path("a_0000.mha")], "b": [Path("flat_0000.mha")]}, Reader)
    with pytest.raises(UserError, match=r"^c: cannot read broken_0000.mha: ITK ERROR: cannot read$"):
        check_case_images({"c": [Path("broken_0000.mha")]}, Reader)
    # NIfTI is read with nibabel: SimpleITK (nnU-Net's default reader) silently reads a stored NaN as 0
    array = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    array[1, 1, 1] = np.nan
    sitk.WriteImage(sitk.GetImageFromArray(array), str(tmp_path / "d_0000.nii.gz"))
    assert not np.isnan(sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "d_0000.nii.gz")))).any()
    with pytest.raises(UserError, match=r"^d: image contains NaN \(1 voxel\)$"):
        check_case_images({"d": [tmp_path / "d_0000.nii.gz"]}, Reader)
    (tmp_path / "e_0000.nii.gz").write_bytes(b"not an image")
    with pytest.raises(UserError, match=r"^e: cannot read e_0000.nii.gz: "):
        check_case_images({"e": [tmp_path / "e_0000.nii.gz"]}, Reader)


# ---------------------------------------------------------------- 1. unknown dataset ids

@pytest.mark.parametrize("command", ["refine", "sdg-predict", "finetune-sam"])
def test_unknown_dataset_id(cli_here, tiny, tmp_path, command):
    args = {"refine": ["refine", "-d", "999", "-f", "all", "-tr", "nnUNetTrainerDFG_Source_test"],
            "sdg-predict": ["sdg-predict", "-i", str(tiny.raw / TARGET / "imagesTr"), "-o", str(tmp_path / "out"),
                            "-d", "999", "-f", "all"],
            "finetune-sam": ["finetune-sam", "-d", "999", "-o", str(tmp_path / "ft.pth")]}[command]
    _refused(cli_here, tiny, args, "unknown dataset id 999: no Dataset999_* in", tmp_path)


# ---------------------------------------------------------------- 2. bad SAM checkpoints

@pytest.fixture(scope="module")
def bad_checkpoints(tmp_path_factory) -> dict[str, tuple[Path, str]]:
    """Missing, random bytes, and a fine-tuned decoder whose base file changed since fine-tuning: the CLI's way to
    state an expected sha256 is the one a finetune-sam checkpoint stores for its base."""
    from nnunet_dfg.sam.finetuned import FORMAT, base_identity
    folder = tmp_path_factory.mktemp("bad_sam")
    corrupt = folder / "sam_vit_b_corrupt.pth"
    corrupt.write_bytes(np.random.default_rng(0).bytes(4096))
    base = folder / "sam_vit_b_base.pth"
    base.write_bytes(b"the weights the decoder was fine-tuned on")
    decoder = folder / "decoder_ft.pth"
    torch.save({"format": FORMAT, **base_identity(f"vit_b:{base}", "sam"), "mask_decoder": {}, "meta": {}}, decoder)
    base.write_bytes(b"other weights under the same name")
    return {"missing": (folder / "sam_vit_b_missing.pth", "checkpoint not found"),
            "corrupt": (corrupt, "cannot read checkpoint"),
            "sha256": (decoder, f"checkpoint {base} has sha256")}


@pytest.mark.parametrize("problem", ["missing", "corrupt", "sha256"])
@pytest.mark.parametrize("command", ["refine", "sdg-predict"])
def test_bad_sam_checkpoint(cli_here, tiny, tmp_path, bad_checkpoints, command, problem):
    path, fragment = bad_checkpoints[problem]
    if command == "refine":
        args = tiny.refine_args("--out-id", "830", "--sam", str(path))
    else:
        args = ["sdg-predict", "-i", str(tiny.raw / TARGET / "imagesTr"), "-o", str(tmp_path / "out"), "-m",
                str(tiny.model_dir), "-f", "all", "--sam", str(path), "--disable-tta", "--no-progress"]
    line = _refused(cli_here, tiny, args, fragment, tmp_path, path.parent)
    assert line.startswith(f"ERROR: cannot load segmenter '{path}'")


# ---------------------------------------------------------------- 3. target incompatible with the model

@pytest.mark.parametrize("problem, fragment", [
    ("channels", "channel mismatch: target has 2 channel(s), the source model expects 1"),
    ("ending", "file ending mismatch: target uses '.mha', the source model '.nii.gz'")])
def test_refine_refuses_target_incompatible_with_the_model(cli_here, tiny, problem, fragment):
    image = _image(tiny)
    if problem == "channels":
        _write_target(tiny, 720, "TwoChannels", {"case_0000": [image, image]})
    else:
        _write_target(tiny, 721, "Mha", {"case_0000": [image]}, ending=".mha")
    dataset = {"channels": 720, "ending": 721}[problem]
    _refused(cli_here, tiny, tiny.refine_args("--out-id", "831", dataset=dataset), fragment)


# ---------------------------------------------------------------- 4. NaN / constant images

@pytest.fixture(scope="module")
def defective(tiny) -> dict[str, int]:
    """Two targets whose case_0001 is defective (case_0000 is fine, so the check must look past it)."""
    good = _image(tiny)

    def nan(a):
        a[3, 10, 10] = np.nan

    def constant(a):
        a[...] = 0.0
    for dataset_id, edit in ((722, nan), (723, constant)):
        _write_target(tiny, dataset_id, edit.__name__.capitalize(),
                      {"case_0000": [good], "case_0001": [_with_values(_image(tiny, "case_0001"), edit)]})
    return {"nan": 722, "constant": 723}


@pytest.mark.parametrize("defect, fragment", [
    ("nan", "ERROR: case_0001: image contains NaN (1 voxel)"),
    ("constant", "ERROR: case_0001: image is constant (value 0.0): nothing to segment")])
@pytest.mark.parametrize("command", ["refine", "prepare-target", "sdg-predict"])
def test_defective_image_is_refused_before_anything_is_written(cli_here, tiny, defective, command, defect, fragment):
    dataset = defective[defect]
    if command == "refine":
        args = tiny.refine_args("--out-id", "832", dataset=dataset)
    elif command == "sdg-predict":
        images = tiny.raw / f"Dataset{dataset}_{defect.capitalize()}" / "imagesTr"
        args = ["sdg-predict", "-i", str(images), "-o", str(tiny.root / "sdg_out"), "-m", str(tiny.model_dir),
                "-f", "all", "--disable-tta", "--no-progress"]
    else:
        args = ["prepare-target", "-d", str(dataset), "-m", str(tiny.model_dir), "-c", "2d"]
    assert _refused(cli_here, tiny, args, "case_0001") == fragment


@pytest.mark.parametrize("defect, fragment", [
    ("nan", "ERROR: case_0001: image contains NaN (1 voxel)"),
    ("constant", "ERROR: case_0001: image is constant (value 0.0): nothing to segment")])
def test_finetune_sam_refuses_a_defective_source_image(cli_here, tiny, defect, fragment):
    """A labelled source whose case_0001 image is defective: no checkpoint is written."""
    source = tiny.raw / "Dataset701_DFGSynthSource"
    dataset_id = {"nan": 726, "constant": 727}[defect]
    folder = tiny.raw / f"Dataset{dataset_id}_Source{defect.capitalize()}"
    shutil.copytree(source, folder)
    image_file = folder / "imagesTr" / "case_0001_0000.nii.gz"
    array = sitk.GetArrayFromImage(sitk.ReadImage(str(image_file)))
    if defect == "nan":
        array[0, 0, 0] = np.nan
    else:
        array[...] = 0.0
    edited = sitk.GetImageFromArray(array)
    edited.CopyInformation(sitk.ReadImage(str(image_file)))
    sitk.WriteImage(edited, str(image_file))
    args = ["finetune-sam", "-d", str(dataset_id), "-o", str(tiny.root / "ft.pth"), "--boxes", "gt", "-c", "none",
            "--epochs", "1", "--no-progress"]
    assert _refused(cli_here, tiny, args, "case_0001") == fragment


# ---------------------------------------------------------------- 7. empty image folder; empty predictions

def test_refine_on_an_empty_image_folder(cli_here, tiny):
    folder = _write_target(tiny, 724, "NoImages", {})
    _refused(cli_here, tiny, tiny.refine_args("--out-id", "833", dataset=724),
             f"no .nii.gz images in {folder / 'imagesTr'}")


def test_evaluate_with_an_empty_prediction_folder(cli_here, tiny, tmp_path):
    (tmp_path / "pred").mkdir()
    shutil.copy(tiny.raw / TARGET / "dataset.json", tmp_path / "pred")  # as nnUNetv2_predict leaves it
    refs = tiny.raw / "_hidden_labels" / TARGET / "labelsTr"
    _refused(cli_here, tiny, ["evaluate", "-pred", str(tmp_path / "pred"), "-ref", str(refs)],
             f"no *.nii.gz predictions in {tmp_path / 'pred'}", tmp_path)
