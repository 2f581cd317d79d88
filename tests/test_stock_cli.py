"""End to end through nnU-Net's stock commands, in subprocesses, with no nnUNet_extTrainer set by hand.

source plan+preprocess -> nnUNetv2_train DFG_Source (2d: the session's tiny model) -> prepare-target ->
nnUNetv2_train DFG_FA -pretrained_weights -> nnUNetv2_predict -tr DFG_FA -> nnunet_dfg evaluate, for the 2d and
the 3d_fullres configuration, then refine (real LiteMedSAM) on the FA model; in 2d also prepare-target --labels ->
nnUNetv2_train DFG_ST -> nnUNetv2_predict -tr DFG_ST.
The source raw and preprocessed data are moved out of reach before adaptation starts, so any source read fails.
"""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from cli_env import nnunet_env, run, tree_hashes

pytestmark = pytest.mark.slow  # trains a source, an FA and a self-training model per configuration: minutes

def _source_steps(request, root, config: str, env: dict, raw: list) -> tuple[str, dict]:
    """synthetic -> nnUNetv2_plan_and_preprocess -> nnUNetv2_train DFG_Source; returns the fold trained and the
    raw datasets' hashes before anything read them. In 2d these steps are the session's tiny model (built by the
    same stock commands, fold ``all``), copied; in 3d_fullres they run here, on fold 0 of nnU-Net's 5-fold split."""
    if config == "2d":
        tiny = request.getfixturevalue("tiny_model_root")
        for part in ("raw", "pre/Dataset701_DFGSynthSource", "res/Dataset701_DFGSynthSource"):
            shutil.copytree(tiny / part, root / part, symlinks=True)
        return "all", tree_hashes(*raw)
    run(["nnunet_dfg", "synthetic", "--n-source", "5", "--n-target", "3", "--n-test", "1", "--shape", "12", "48", "48"],
        env)
    raw_before = tree_hashes(*raw)
    run(["nnUNetv2_plan_and_preprocess", "-d", "701", "-c", config, "-np", "1", "-npfp", "1"],
        {**env, "nnUNet_n_proc_DA": "1"})
    run(["nnUNetv2_train", "701", config, "0", "-tr", "nnUNetTrainerDFG_Source_test", "-device", "cpu"], env)
    return "0", raw_before


@pytest.fixture(scope="module", params=["2d", "3d_fullres"])
def chain(request, tmp_path_factory):
    config = request.param
    root = tmp_path_factory.mktemp(f"stock_cli_{config}")
    env = nnunet_env(root)
    raw = [root / "raw" / name for name in ("Dataset701_DFGSynthSource", "Dataset702_DFGSynthTarget", "_hidden_labels")]
    fold, raw_before = _source_steps(request, root, config, env, raw)
    source_model = root / "res/Dataset701_DFGSynthSource" / f"nnUNetTrainerDFG_Source_test__nnUNetPlans__{config}"
    source_ckpt = source_model / f"fold_{fold}/checkpoint_final.pth"
    # Source-free from here on: the source images, labels and preprocessed data are gone.
    hidden = root / "source_data_out_of_reach"
    hidden.mkdir()
    shutil.move(root / "raw/Dataset701_DFGSynthSource", hidden / "raw")
    shutil.move(root / "pre/Dataset701_DFGSynthSource", hidden / "pre")
    prep = run(["nnunet_dfg", "prepare-target", "-d", "702", "-s", "701", "-tr", "nnUNetTrainerDFG_Source_test",
                "-c", config], env)
    fa = run(["nnUNetv2_train", "702", config, "all", "-tr", "nnUNetTrainerDFG_FA_test", "-device", "cpu",
              "-pretrained_weights", str(source_ckpt)], env)
    pred = root / "pred_fa"
    run(["nnUNetv2_predict", "-i", str(root / "raw/Dataset702_DFGSynthTarget/imagesTs"), "-o", str(pred), "-d", "702",
         "-c", config, "-f", "all", "-tr", "nnUNetTrainerDFG_FA_test", "-device", "cpu", "--disable_tta",
         "-npp", "1", "-nps", "1"], env)
    ev = run(["nnunet_dfg", "evaluate", "-pred", str(pred), "-ref",
              str(root / "raw/_hidden_labels/Dataset702_DFGSynthTarget/labelsTs")], env)
    fa_model = root / "res/Dataset702_DFGSynthTarget" / f"nnUNetTrainerDFG_FA_test__nnUNetPlans__{config}"
    raw[0] = hidden / "raw"  # moved, not changed
    return dict(root=root, env=env, source_ckpt=source_ckpt, fa_model=fa_model, pred=pred, prep=prep, fa=fa, ev=ev,
                config=config, raw=raw, raw_before=raw_before)


def test_hook_registered_trainers_without_manual_variable(chain):
    assert "Using trainer 'nnUNetTrainerDFG_FA_test'" in chain["fa"].stdout


def test_prepare_target_uses_source_plans(chain):
    pre = chain["root"] / "pre/Dataset702_DFGSynthTarget"
    plans = json.loads((pre / "nnUNetPlans.json").read_text())
    data_folder = plans["configurations"][chain["config"]]["data_identifier"]
    source_plans = json.loads((chain["source_ckpt"].parent.parent / "plans.json").read_text())
    assert plans["dataset_name"] == "Dataset702_DFGSynthTarget"
    # the CT target of the MRI source: CTNormalization with its own body-voxel statistics, the rest the source's
    config = chain["config"]
    assert source_plans["configurations"][config]["normalization_schemes"] == ["ZScoreNormalization"]
    assert plans["configurations"][config]["normalization_schemes"] == ["CTNormalization"]
    strip = lambda cfgs: {k: {**v, "normalization_schemes": None} for k, v in cfgs.items()}  # noqa: E731
    assert strip(plans["configurations"]) == strip(source_plans["configurations"])
    props = plans["foreground_intensity_properties_per_channel"]["0"]
    assert -500.0 < props["percentile_00_5"] < props["mean"] < props["percentile_99_5"] and props["std"] > 0
    assert props != source_plans["foreground_intensity_properties_per_channel"]["0"]
    assert sorted(p.name for p in (pre / data_folder).glob("*.pkl")) == \
        ["case_0000.pkl", "case_0001.pkl", "case_0002.pkl"]


def test_fa_keeps_prototypes_and_adapts_the_rest(chain):
    src = torch.load(chain["source_ckpt"], map_location="cpu", weights_only=False)
    fa = torch.load(chain["fa_model"] / "fold_all/checkpoint_final.pth", map_location="cpu", weights_only=False)
    key = [k for k in src["network_weights"] if k.startswith("decoder.seg_layers.") and k.endswith("weight")][-1]
    assert not any(k.endswith("bias") and "seg_layers" in k for k in src["network_weights"])
    assert torch.equal(src["network_weights"][key], fa["network_weights"][key])
    # nnU-Net's own loader brought the classifier through its alias (it skips '.seg_layers.' keys)
    assert torch.equal(src["network_weights"]["prototype_head.weight"], src["network_weights"][key])
    assert torch.equal(fa["network_weights"]["prototype_head.weight"], src["network_weights"][key])
    changed = [k for k in src["network_weights"] if k.startswith("encoder.")
               and not torch.equal(src["network_weights"][k], fa["network_weights"][k])]
    assert changed, "FA did not update the encoder"
    log = fa["logging"]
    assert len(log["fa_forward"]) == len(log["train_losses"]) == 2
    assert "Loading pretrained weights from file" in chain["fa"].stdout
    assert "started from the loaded network, classifier included" in chain["fa"].stdout
    assert (chain["fa_model"] / "fold_all/progress.png").is_file()
    assert "FA loss" in (next((chain["fa_model"] / "fold_all").glob("training_log_*.txt"))).read_text()


def test_predict_and_evaluate(chain):
    assert (chain["pred"] / "case_0003.nii.gz").is_file()
    result = json.loads((chain["pred"] / "dfg_evaluation.json").read_text())
    assert set(result["per_class"]) == {"spleen", "right_kidney", "left_kidney", "liver"}
    dice = [c["dice"] for c in result["per_class"].values()]
    assert all(0.0 <= d <= 1.0 for d in dice) and result["mean_dice"] == pytest.approx(np.mean(dice))
    assert result["mean_assd"] >= 0.0 and list(result["per_case"]) == ["case_0003"]
    assert "mean" in chain["ev"].stdout.lower()


def _configuration_independent(chain) -> None:
    """nnU-Net's checkpoint loader and the trainers' start check are the same code in every configuration: each
    such failure runs once, on the 2d chain (an nnUNetv2_train start costs 10-15 s)."""
    if chain["config"] != "2d":
        pytest.skip("configuration-independent: checked on the 2d chain")


@pytest.mark.parametrize("content", [None, b"not a checkpoint"])
def test_bad_checkpoint_fails_in_nnunets_loader(chain, content):
    """A missing or unreadable -pretrained_weights file stops nnU-Net's own loader before any training step."""
    _configuration_independent(chain)
    ckpt = chain["root"] / "bad.pth"
    ckpt.unlink(missing_ok=True)
    if content is not None:
        ckpt.write_bytes(content)
    proc = run(["nnUNetv2_train", "702", chain["config"], "all", "-tr", "nnUNetTrainerDFG_FA_demo", "-device", "cpu",
                "-pretrained_weights", str(ckpt)], chain["env"], check=False)
    assert proc.returncode != 0
    assert "load_pretrained_weights" in proc.stderr  # the traceback ends in nnU-Net's loader
    assert not list((chain["root"] / "res/Dataset702_DFGSynthTarget").glob("nnUNetTrainerDFG_FA_demo__*/*/*.pth"))


def test_fa_without_source_weights_refuses(chain):
    _configuration_independent(chain)
    proc = run(["nnUNetv2_train", "702", chain["config"], "all", "-tr", "nnUNetTrainerDFG_FA_tau01", "-device",
                "cpu"], chain["env"], check=False)
    assert proc.returncode != 0
    assert "pass -pretrained_weights" in proc.stderr


def test_refine_and_what_follows(chain):
    """DFG step 3 on each configuration's FA model with the real LiteMedSAM; in 2d the chain goes on to
    self-training (it runs once: the trainer is the same in 3d)."""
    {"2d": _refine_then_self_training, "3d_fullres": _refine_in_3d_fullres}[chain["config"]](chain)


def _refine_then_self_training(chain):
    """DFG steps 3-5 in 2d: pseudo-labels from the FA model with the real LiteMedSAM, preprocessed with the FA
    model's plans, self-training from the full FA checkpoint, stock prediction with the ST trainer."""
    root, env = chain["root"], chain["env"]
    run(["nnunet_dfg", "refine", "-d", "702", "-c", "2d", "-f", "all", "-tr", "nnUNetTrainerDFG_FA_test",
         "--prompt", "dfg", "--out-id", "802", "--max-slices", "2", "--disable-tta", "--no-progress", "--search-config",
         '{"presence_prob": 0.5, "presence_min_pixels": 20}'], env)
    pseudo = root / "raw/Dataset802_DFGSynthTargetPseudoDFG"
    assert sorted(p.name for p in (pseudo / "labelsTr").iterdir()) == [f"case_000{i}.nii.gz" for i in range(3)]
    run(["nnunet_dfg", "prepare-target", "-d", "802", "-m", str(chain["fa_model"]), "-c", "2d", "--labels"], env)
    fa_ckpt = chain["fa_model"] / "fold_all/checkpoint_final.pth"
    st = run(["nnUNetv2_train", "802", "2d", "all", "-tr", "nnUNetTrainerDFG_ST_test", "-device", "cpu",
              "-pretrained_weights", str(fa_ckpt)], env)
    assert "started from the loaded network, classifier included" in st.stdout
    # self-training counts its epochs in passes over the pseudo-labelled slices (the reference's unit)
    plans = json.loads((root / "pre/Dataset802_DFGSynthTargetPseudoDFG/nnUNetPlans.json").read_text())
    slices = sum(sitk.ReadImage(str(f)).GetSize()[2] for f in (pseudo / "labelsTr").iterdir())
    full = -(-slices // plans["configurations"]["2d"]["batch_size"])
    assert f"one pass over the pseudo-labelled data: {full} iterations" in st.stdout
    st_model = root / "res/Dataset802_DFGSynthTargetPseudoDFG/nnUNetTrainerDFG_ST_test__nnUNetPlans__2d"
    before = torch.load(fa_ckpt, map_location="cpu", weights_only=False)["network_weights"]
    after = torch.load(st_model / "fold_all/checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert any(not torch.equal(before[k], after["network_weights"][k]) for k in before)
    assert "MemoryEfficientSoftDiceLoss" in (st_model / "fold_all/debug.json").read_text()
    pred = root / "pred_st"
    run(["nnUNetv2_predict", "-i", str(root / "raw/Dataset702_DFGSynthTarget/imagesTs"), "-o", str(pred), "-d", "802",
         "-c", "2d", "-f", "all", "-tr", "nnUNetTrainerDFG_ST_test", "-device", "cpu", "--disable_tta",
         "-npp", "1", "-nps", "1"], env)
    assert (pred / "case_0003.nii.gz").is_file()
    # the whole chain, source training to self-trained prediction, left every raw dataset as it was
    assert tree_hashes(*chain["raw"]) == chain["raw_before"]


def _refine_in_3d_fullres(chain):
    """DFG step 3 on a 3D model: softmax and features from nnU-Net's 3D sliding window, searched slice by slice
    along axis 0 with the real LiteMedSAM, labels exported back to the image grid and post-processed in 3D."""
    root, env = chain["root"], chain["env"]
    run(["nnunet_dfg", "refine", "-d", "702", "-c", "3d_fullres", "-f", "all", "-tr", "nnUNetTrainerDFG_FA_test",
         "--prompt", "dfg", "--out-id", "802", "--max-slices", "2", "--disable-tta", "--no-progress",
         "--search-config", '{"presence_prob": 0.5, "presence_min_pixels": 20}'], env)
    pseudo = root / "raw/Dataset802_DFGSynthTargetPseudoDFG"
    for i in range(3):
        label = sitk.ReadImage(str(pseudo / "labelsTr" / f"case_000{i}.nii.gz"))
        image = sitk.ReadImage(str(root / "raw/Dataset702_DFGSynthTarget/imagesTr" / f"case_000{i}_0000.nii.gz"))
        assert label.GetSize() == image.GetSize() and np.allclose(label.GetSpacing(), image.GetSpacing())
        assert set(np.unique(sitk.GetArrayFromImage(label))) <= {0, 1, 2, 3, 4}
        report = json.loads((pseudo / "dfg_refine/reports" / f"case_000{i}.json").read_text())
        # SAM ran on both searched slices (one encoder pass each) and decoded boxes there
        assert len(report["slices_searched"]) == 2 and report["calls"]["encoder"] == 2
        assert report["calls"]["decoder"] >= 2
        assert all(set(s["classes"]) == {"1", "2", "3", "4"} for s in report["slices"].values())
        after, before = report["voxels"]["after_postprocessing"], report["voxels"]["before_postprocessing"]
        assert all(after[k] <= before[k] for k in after)
    assert tree_hashes(*chain["raw"]) == chain["raw_before"]
