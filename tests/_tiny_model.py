"""A tiny trained nnU-Net (synthetic Dataset701 source, 2d, fold all, 2 epochs) and a cheap box segmenter, for the
refine tests. Building the model takes a few minutes on 2 CPU cores, so it is built once per test session."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cli_env import nnunet_env, run

TRAINER = "nnUNetTrainerDFG_Source_test"
SOURCE_ID, TARGET_ID = 701, 702
# The 2-epoch model is rarely confident and its features barely cluster: lower the presence test and the stage-1
# similarity so that the search runs on every case and reaches stages 2 and 3. The pixel constants are plain pixels
# of the 48 px slices (reference_side 0): scaled from 256 px, their sub-pixel tolerances would make every search run
# to its step budget, which costs minutes in the SAM tests and tests nothing more.
TINY_DFG = '{"presence_prob": 0.5, "presence_min_pixels": 20, "stage1_cos_threshold": 0.8, "reference_side": 0}'


@dataclass(frozen=True)
class TinyModel:
    root: Path

    @property
    def raw(self) -> Path:
        return self.root / "raw"

    @property
    def model_dir(self) -> Path:
        return self.root / "res" / "Dataset701_DFGSynthSource" / f"{TRAINER}__nnUNetPlans__2d"

    @property
    def env(self) -> dict[str, str]:
        return nnunet_env(self.root)

    def refine_options(self, **kw):
        """``refine`` on the target's imagesTr with this model (fold all, no mirroring, no progress bar)."""
        from nnunet_dfg.refine import RefineOptions
        base = dict(dataset=str(TARGET_ID), model=self.model_dir, fold="all", disable_tta=True, progress=False)
        return RefineOptions(**{**base, **kw})

    def refine_args(self, *extra: str, dataset: int | str = TARGET_ID, model: Path | None = None) -> list[str]:
        """``refine_options`` as ``nnunet_dfg refine`` arguments, for subprocess runs."""
        return ["refine", "-d", str(dataset), "-m", str(model or self.model_dir), "-f", "all", "--disable-tta",
                "--no-progress", *extra]


def build_tiny_model(root: Path) -> TinyModel:
    """synthetic (4 source, 3 target, 12x48x48) -> plan_and_preprocess 2d -> train fold ``all`` (4 cases are too
    few for nnU-Net's 5-fold split, so fold 0 does not exist)."""
    model = TinyModel(root)
    env = model.env
    run(["nnunet_dfg", "synthetic", "--n-source", "4", "--n-target", "3", "--n-test", "1",
         "--shape", "12", "48", "48"], env)
    run(["nnUNetv2_plan_and_preprocess", "-d", str(SOURCE_ID), "-c", "2d", "-np", "1", "-npfp", "1"],
        {**env, "nnUNet_n_proc_DA": "1"})
    # one thread: test_determinism compares a retraining (one thread, seed 0 given) with this default-seed model
    run(["nnUNetv2_train", str(SOURCE_ID), "2d", "all", "-tr", TRAINER, "-device", "cpu"], {**env, "OMP_NUM_THREADS": "1"})
    assert (model.model_dir / "fold_all" / "checkpoint_final.pth").is_file()
    return model


class _Embedding:
    def __init__(self, image: np.ndarray) -> None:
        self.image = image

    def features(self) -> np.ndarray:
        """Two smooth channels on the slice grid (intensity and a constant), like SAM's upsampled embedding."""
        scaled = (self.image - self.image.min()) / (np.ptp(self.image) + 1e-6)
        return np.stack([scaled, np.ones_like(scaled)]).astype(np.float32)


class ThresholdSegmenter:
    """Deterministic stand-in for SAM: the mask of a box is the part of it brighter than the box's median."""

    def __init__(self) -> None:
        self.embed_calls = 0
        self.boxes = 0

    def embed(self, image2d: np.ndarray) -> _Embedding:
        self.embed_calls += 1
        return _Embedding(np.asarray(image2d, dtype=np.float32))

    def segment(self, embedding: _Embedding, boxes: np.ndarray) -> np.ndarray:
        image = embedding.image
        out = np.zeros((len(boxes),) + image.shape, dtype=bool)
        for i, (x0, y0, x1, y1) in enumerate(np.asarray(boxes, dtype=int)):
            window = image[y0:y1 + 1, x0:x1 + 1]
            out[i, y0:y1 + 1, x0:x1 + 1] = window > np.median(window)
        self.boxes += len(boxes)
        return out
