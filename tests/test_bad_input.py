"""Bad input to the package's commands: one ERROR line, exit status 2, nothing written. The checks run
``nnunet_dfg.cli.main`` in this process (``cli_here``); prepare-target's first check and
``test_argument_errors_through_the_entry_point`` run the real ``python -m nnunet_dfg.cli`` in a subprocess, where
nothing imported may print before the one line."""
from __future__ import annotations

import json

import pytest

from cli_env import assert_one_error_line, cli, snapshot

SOURCE_DATASET = {"channel_names": {"0": "MRI"}, "labels": {"background": 0, "liver": 1}, "numTraining": 1,
                  "file_ending": ".nii.gz"}


@pytest.fixture
def root(tmp_path):
    model = tmp_path / "res/Dataset701_Src/nnUNetTrainerDFG_Source__nnUNetPlans__2d"
    model.mkdir(parents=True)
    (model / "plans.json").write_text(json.dumps({"plans_name": "nnUNetPlans", "configurations": {"2d": {}}}))
    (model / "dataset.json").write_text(json.dumps(SOURCE_DATASET))
    target = tmp_path / "raw/Dataset702_Tgt"
    (target / "imagesTr").mkdir(parents=True)
    (target / "imagesTr/case_0000_0000.nii.gz").write_bytes(b"not read before the checks")
    (target / "dataset.json").write_text(json.dumps({**SOURCE_DATASET, "channel_names": {"0": "CT"}}))
    (tmp_path / "pre").mkdir()
    return tmp_path


def test_unknown_target_dataset_id(root):
    before = snapshot(root)
    assert_one_error_line(cli(["prepare-target", "-d", "999", "-s", "701"], root), "unknown dataset id 999")
    assert snapshot(root) == before


def test_unknown_source_dataset_id(root, cli_here):
    assert_one_error_line(cli_here(["prepare-target", "-d", "702", "-s", "705"], root), "unknown dataset id 705")


def test_channel_mismatch(root, cli_here):
    ds = root / "raw/Dataset702_Tgt/dataset.json"
    ds.write_text(json.dumps({**SOURCE_DATASET, "channel_names": {"0": "CT", "1": "PET"}}))
    before = snapshot(root)
    assert_one_error_line(cli_here(["prepare-target", "-d", "702", "-s", "701", "-c", "2d"], root),
                          "channel mismatch")
    assert snapshot(root) == before


def test_file_ending_mismatch(root, cli_here):
    ds = root / "raw/Dataset702_Tgt/dataset.json"
    ds.write_text(json.dumps({**SOURCE_DATASET, "file_ending": ".mha"}))
    assert_one_error_line(cli_here(["prepare-target", "-d", "702", "-s", "701"], root), "file ending mismatch")


def test_empty_image_folder(root, cli_here):
    (root / "raw/Dataset702_Tgt/imagesTr/case_0000_0000.nii.gz").unlink()
    before = snapshot(root)
    assert_one_error_line(cli_here(["prepare-target", "-d", "702", "-s", "701"], root), "no .nii.gz images")
    assert snapshot(root) == before


def test_case_missing_a_channel(root, cli_here):
    (root / "raw/Dataset702_Tgt/imagesTr/case_0001_0001.nii.gz").write_bytes(b"x")
    assert_one_error_line(cli_here(["prepare-target", "-d", "702", "-s", "701"], root),
                          "case_0001 has channels [1]")


def test_missing_model_folder(root, cli_here):
    assert_one_error_line(cli_here(["prepare-target", "-d", "702", "-s", "701", "-tr", "Nope", "-c", "2d"], root),
                          "no trained model at")
    assert_one_error_line(cli_here(["prepare-target", "-d", "702", "-s", "701", "-tr", "Nope"], root),
                          "0 trained Nope__nnUNetPlans models")


def test_evaluate_missing_folder(root, cli_here):
    assert_one_error_line(cli_here(["evaluate", "-pred", str(root / "nope"), "-ref", str(root)], root),
                          "folder not found")


def test_synthetic_refuses_to_overwrite(root, cli_here):
    (root / "raw/Dataset701_Src").mkdir()
    proc = cli_here(["synthetic", "--source-id", "701", "--shape", "8", "32", "32", "--n-source", "1",
                     "--n-target", "1", "--n-test", "1"], root)
    assert proc.returncode == 2 and proc.stderr.startswith("ERROR: ")


def test_folder_of_images_becomes_its_own_dataset(tmp_path, monkeypatch):
    """prepare-target -i: a plain folder is registered as a NEW raw dataset of symlinks; the folder is untouched."""
    from nnunet_dfg.errors import UserError
    from nnunet_dfg.prepare_target import link_folder_as_dataset
    images = tmp_path / "my_ct"
    images.mkdir()
    for case in ("a", "b"):
        (images / f"{case}_0000.nii.gz").write_bytes(b"img")
    before = snapshot(images)
    raw = tmp_path / "raw"
    out = link_folder_as_dataset(images, 650, "MyCT", ".nii.gz", 1, raw_root=raw)
    assert out == raw / "Dataset650_MyCT" and snapshot(images) == before
    assert sorted(p.name for p in (out / "imagesTr").iterdir()) == ["a_0000.nii.gz", "b_0000.nii.gz"]
    assert (out / "imagesTr" / "a_0000.nii.gz").resolve() == images / "a_0000.nii.gz"
    assert json.loads((out / "dataset.json").read_text())["numTraining"] == 2
    with pytest.raises(UserError, match="already used"):
        link_folder_as_dataset(images, 650, "Other", ".nii.gz", 1, raw_root=raw)
    with pytest.raises(UserError, match="source model expects 2"):
        link_folder_as_dataset(images, 651, "TwoChannels", ".nii.gz", 2, raw_root=raw)
    assert not list(raw.glob("Dataset651_*"))


@pytest.mark.parametrize("args, fragment", [
    (["demo", "-o", "{root}/demo", "--seed", "zero"], "--seed: a seed must be a non-negative integer, got 'zero'"),
    (["demo", "-o", "{root}/demo", "--seed", "-1"], "--seed: a seed must be a non-negative integer"),
    (["demo", "-o", "{root}/demo", "-p", "nnUNetPlansTiny"], "-p nnUNetPlansTiny: no such plans"),
    (["pipeline", "-s", "701", "-t", "702", "-o", "{root}/work", "--seed", "1.5"], "--seed: a seed must be"),
    (["pipeline", "-s", "701", "-t", "702", "-o", "{root}/work", "-p", "nnUNetPlansTiny"],
     "-p nnUNetPlansTiny: no such plans"),
])
def test_bad_seed_or_plans_identifier(root, cli_here, args, fragment):
    (root / "pre" / "Dataset701_Src").mkdir()
    before = snapshot(root)
    assert_one_error_line(cli_here([a.format(root=root) for a in args], root), fragment)
    assert snapshot(root) == before


@pytest.mark.slow  # four interpreter starts
def test_argument_errors_through_the_entry_point(root):
    """The same rule through ``python -m nnunet_dfg.cli``, for the commands whose error path imports the most (a
    warning printed by an import reaches a user's terminal, not pytest's capture). refine's: test_refine.py."""
    (root / "pre" / "Dataset701_Src").mkdir()
    before = snapshot(root)
    assert_one_error_line(cli(["demo", "-o", f"{root}/demo", "--seed", "zero"], root),
                          "--seed: a seed must be a non-negative integer, got 'zero'")
    assert_one_error_line(cli(["pipeline", "-s", "701", "-t", "702", "-o", f"{root}/work", "-p", "nnUNetPlansTiny"],
                              root), "-p nnUNetPlansTiny: no such plans")
    assert_one_error_line(cli(["finetune-sam", "-d", "701", "-o", f"{root}/ft.pth", "--tile", "3"], root),
                          "--tile must be 1, 2 or auto, got 3")
    assert_one_error_line(cli(["sdg-predict", "-i", str(root), "-o", f"{root}/out", "-d", "701", "--tile", "x"],
                              root), "--tile must be 1, 2 or auto, got x")
    assert snapshot(root) == before
