"""Streamed (memory-mapped, chunked) prediction gives the in-memory path's values and labels byte for byte."""
from __future__ import annotations

import numpy as np
import pytest

from _tiny_model import TINY_DFG, ThresholdSegmenter, TinyModel
from conftest import tiny_copy
from nnunet_dfg.volume.stream import Float32Slices, chunks, should_stream


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tiny_model_root) -> TinyModel:
    yield from tiny_copy(tmp_path_factory, tiny_model_root, "stream")


def test_chunks_and_budget():
    assert chunks(5, 2) == [slice(0, 2), slice(2, 4), slice(4, 5)] and chunks(0, 3) == []
    assert should_stream(37, (120, 512, 512), above_mb=1024) and not should_stream(37, (16, 64, 64), above_mb=1024)
    assert should_stream(1, (1, 1), above_mb=0)
    view = Float32Slices(np.arange(24, dtype=np.float16).reshape(2, 3, 4))
    assert view.shape == (2, 3, 4) and view[:, 1].dtype == np.float32 and np.asarray(view).dtype == np.float32


def test_streamed_prediction_and_labels_equal_in_memory(tiny, tmp_path, monkeypatch):
    from nnunet_dfg.refine.command import parse_search_config
    from nnunet_dfg.volume import refine_volume
    from nnunet_dfg.volume.predictor import FeaturePredictor

    files = [tiny.raw / "Dataset702_DFGSynthTarget" / "imagesTr" / "case_0001_0000.nii.gz"]
    fp = FeaturePredictor(tiny.model_dir, "all", use_mirroring=False)
    whole = fp.predict_case(files)
    monkeypatch.setenv("NNUNET_DFG_STREAM_ABOVE_MB", "0")
    streamed = fp.predict_case(files, store=tmp_path / "work", chunk_slices=3)
    assert isinstance(streamed.probs, np.memmap) and isinstance(streamed.features, Float32Slices)
    assert (tmp_path / "work" / "probs.npy").is_file() and (tmp_path / "work" / "features.npy").is_file()
    assert np.asarray(streamed.probs).tobytes() == whole.probs.tobytes()
    assert np.asarray(streamed.features).tobytes() == whole.features.tobytes()
    config, _ = parse_search_config("dfg", TINY_DFG)
    a = refine_volume(whole.image, whole.probs, whole.features, ThresholdSegmenter(), "dfg", config)
    b = refine_volume(streamed.image, streamed.probs, streamed.features, ThresholdSegmenter(), "dfg", config)
    assert a.total("decoder_calls") > 0 and a.label.tobytes() == b.label.tobytes()
