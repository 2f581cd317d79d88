"""The FA and self-training trainers with the network compiled, as nnU-Net does by default on GPUs.

nnU-Net 2.8.1 compiles in ``nnUNetTrainer.initialize`` (``torch.compile(self.network)``, default backend) when
``_do_i_compile()`` says so: ``nnUNet_compile`` unset or true, except on CPU, where it refuses because inductor
crashes on 2d networks. These tests take nnU-Net's own path with that CPU refusal lifted and the backend set to
``aot_eager`` (dynamo's graph capture and AOT autograd, no code generation), and check that the FA feature capture
(a forward hook added and removed around every step) neither changes the loss nor makes dynamo recompile.
"""
from __future__ import annotations

import functools
import os

import numpy as np
import pytest
import torch
from torch._dynamo import OptimizedModule
from torch._dynamo.testing import CompileCounterWithBackend

from nnunet_dfg.trainers.fa_loss import fa_loss, flatten_features
from nnunet_dfg.trainers.feature_aggregation import nnUNetTrainerDFG_FA_test
from nnunet_dfg.trainers.network_parts import capture_features, classifier, prototypes, unwrap
from nnunet_dfg.trainers.self_training import nnUNetTrainerDFG_ST_test

N_CLASSES, PATCH, BATCH, STEPS, EPOCHS = 3, (32, 32), 2, 3, 2
DATASET = "Dataset799_Compile"
PLANS = {
    "dataset_name": DATASET, "plans_name": "nnUNetPlans", "original_median_spacing_after_transp": [1.0, 1.0, 1.0],
    "original_median_shape_after_transp": [4, *PATCH], "image_reader_writer": "SimpleITKIO",
    "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2], "experiment_planner_used": "ExperimentPlanner",
    "label_manager": "LabelManager", "foreground_intensity_properties_per_channel": {},
    "configurations": {"2d": {
        "data_identifier": "nnUNetPlans_2d", "preprocessor_name": "DefaultPreprocessor", "batch_size": BATCH,
        "patch_size": list(PATCH), "median_image_size_in_voxels": list(PATCH), "spacing": [1.0, 1.0],
        "normalization_schemes": ["ZScoreNormalization"], "use_mask_for_norm": [False], "batch_dice": True,
        "architecture": {
            "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
            "arch_kwargs": {"n_stages": 3, "features_per_stage": [8, 16, 32], "conv_op": "torch.nn.modules.conv.Conv2d",
                            "kernel_sizes": [[3, 3]] * 3, "strides": [[1, 1], [2, 2], [2, 2]],
                            "n_conv_per_stage": [2, 2, 2], "n_conv_per_stage_decoder": [2, 2], "conv_bias": True,
                            "norm_op": "torch.nn.modules.instancenorm.InstanceNorm2d",
                            "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "dropout_op": None,
                            "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU",
                            "nonlin_kwargs": {"inplace": True}},
            "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]}}},
}
DATASET_JSON = {"channel_names": {"0": "MRI"}, "labels": {"background": 0, "a": 1, "b": 2}, "numTraining": 1,
                "file_ending": ".nii.gz"}


@pytest.fixture
def nnunet_folders(tmp_path, monkeypatch):
    """nnU-Net's folders for an in-process trainer: one preprocessed case (``initialize`` infers the dataset format
    from the preprocessed folder) and an empty results folder. Restores torch's global determinism switch, which
    the DFG trainers turn on."""
    from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetNumpy
    folder = tmp_path / "pre" / DATASET / "nnUNetPlans_2d"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    nnUNetDatasetNumpy.save_case(rng.normal(size=(1, 4, *PATCH)).astype(np.float32),
                                 rng.integers(0, N_CLASSES, (1, 4, *PATCH)).astype(np.int8), {}, str(folder / "c0"))
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "pre"))
    monkeypatch.setenv("nnUNet_results", str(tmp_path / "res"))
    monkeypatch.setenv("nnUNet_compile", "true")
    deterministic = torch.are_deterministic_algorithms_enabled()
    yield tmp_path
    torch.use_deterministic_algorithms(deterministic)


def _compiling(base: type) -> type:
    """``base`` with nnU-Net's compile decision minus its CPU refusal (``nnUNet_compile`` unset or true)."""

    def _do_i_compile(self) -> bool:
        return os.environ.get("nnUNet_compile", "true").lower() in ("true", "1", "t")

    return type(f"{base.__name__}Compiled", (base,), {"_do_i_compile": _do_i_compile})


def _trainer(cls: type, counter: CompileCounterWithBackend | None = None):
    """An initialised trainer on the CPU; with ``counter``, nnU-Net's ``torch.compile(self.network)`` compiles
    through it (``aot_eager``, counting every graph dynamo hands to the backend)."""
    trainer = cls({**PLANS, "continue_training": False}, "2d", 0, dict(DATASET_JSON), torch.device("cpu"))
    with pytest.MonkeyPatch.context() as mp:
        if counter is not None:
            mp.setattr(torch, "compile", functools.partial(torch.compile, backend=counter))
        trainer.initialize()
    assert isinstance(trainer.network, OptimizedModule) == (counter is not None)
    return trainer


def _batches() -> list[dict]:
    g = torch.Generator().manual_seed(1)
    return [{"data": torch.randn(BATCH, 1, *PATCH, generator=g),
             "target": torch.randint(0, N_CLASSES, (BATCH, 1, *PATCH), generator=g).float()} for _ in range(STEPS)]


def _run(trainer, batches: list[dict], counter: CompileCounterWithBackend | None) -> tuple[list[float], list[int]]:
    """EPOCHS epochs of nnU-Net's loop body (train steps, then a validation step under no_grad); returns the losses
    and, after each epoch, how many graphs had been compiled."""
    losses, compiled = [], []
    for _ in range(EPOCHS):
        trainer.network.train()
        losses += [float(trainer.train_step(b)["loss"]) for b in batches]
        trainer.network.eval()
        with torch.no_grad():
            losses.append(float(trainer.validation_step(batches[0])["loss"]))
        compiled.append(counter.frame_count if counter is not None else 0)
    return losses, compiled


@pytest.mark.parametrize("base", [nnUNetTrainerDFG_FA_test, nnUNetTrainerDFG_ST_test], ids=["FA", "ST"])
def test_compiled_training_matches_eager_and_compiles_once_per_mode(base, nnunet_folders):
    eager = _trainer(base)
    counter = CompileCounterWithBackend("aot_eager")
    compiled = _trainer(_compiling(base), counter)
    unwrap(compiled.network).load_state_dict(eager.network.state_dict())  # the same start (as -pretrained_weights)
    batches = _batches()

    eager_losses, _ = _run(eager, batches, None)
    compiled_losses, graphs = _run(compiled, batches, counter)

    assert len(set(eager_losses)) > 1  # the steps trained: the loss moved
    np.testing.assert_allclose(compiled_losses, eager_losses, rtol=1e-4, atol=1e-6)
    # one graph for training and one for validation (eval mode, no grad), all captured in the first epoch: no
    # recompilation per step (the FA hook is added and removed around every forward) and no graph break
    assert graphs == [2, 2], graphs
    for trainer in (eager, compiled):  # no hook left behind on the feature layer
        assert not unwrap(trainer.network).decoder.stages[-1]._forward_hooks


def test_compiled_fa_captures_the_last_decoder_stage(nnunet_folders):
    counter = CompileCounterWithBackend("aot_eager")
    trainer = _trainer(_compiling(nnUNetTrainerDFG_FA_test), counter)
    data = _batches()[0]["data"]
    trainer.network.eval()
    with torch.no_grad(), capture_features(trainer.network) as store:
        logits = trainer.network(data)
    assert counter.frame_count == 1 and len(store) == 1
    features = store[0]
    head = classifier(trainer.network)
    assert features.shape == (BATCH, head.in_channels, *PATCH)  # full resolution, the classifier's input width
    # bias-free heads: the logits are the prototypes applied to exactly these features
    torch.testing.assert_close(head(features), logits)
    # and they are what the uncompiled decoder's last stage puts out, replayed stage by stage without hooks
    plain = unwrap(trainer.network)
    with torch.no_grad():
        skips = plain.encoder(data)
        x = skips[-1]
        for s, stage in enumerate(plain.decoder.stages):
            x = stage(torch.cat((plain.decoder.transpconvs[s](x), skips[-(s + 2)]), 1))
    torch.testing.assert_close(features, x)
    with torch.no_grad():
        loss, _, _ = trainer._fa_step(data)
    assert float(loss) == pytest.approx(float(fa_loss(flatten_features(features), prototypes(trainer.network),
                                                      trainer.fa_config)), rel=1e-5)
