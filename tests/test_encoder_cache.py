"""The encoder graph cache (``sam.runtimes.encoder_onnx``): a second segmenter start reads the graph its first one
exported, byte for byte, a module with other weights or another input shape gets its own entry, and an unusable
cache folder only costs the export."""
from __future__ import annotations

import torch
from torch import nn

from nnunet_dfg.sam import runtimes


def _encoder(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU()).eval()


def test_second_start_reads_the_first_export(tmp_path, monkeypatch):
    monkeypatch.setenv(runtimes.CACHE_ENV, str(tmp_path / "cache"))
    example = torch.rand(1, 3, 16, 16)
    exported = []
    real_export = runtimes.export_onnx
    monkeypatch.setattr(runtimes, "export_onnx", lambda *a, **k: exported.append(1) or real_export(*a, **k))
    first = runtimes.encoder_onnx(_encoder(0), example)
    again = runtimes.encoder_onnx(_encoder(0), example)
    assert first == again and len(exported) == 1
    assert [p.suffix for p in (tmp_path / "cache").iterdir()] == [".onnx"]  # no partial file left
    runtimes.encoder_onnx(_encoder(1), example)  # other weights
    runtimes.encoder_onnx(_encoder(0), torch.rand(1, 3, 32, 32))  # another input shape
    assert len(exported) == 3 and len(list((tmp_path / "cache").iterdir())) == 3
    # the cached graph runs and gives the module's output
    encoder = runtimes.OnnxEncoder(_encoder(0), example)
    assert len(exported) == 3
    with torch.no_grad():
        assert torch.allclose(encoder(example), _encoder(0)(example), atol=1e-5)


def test_cache_off_or_unwritable_still_exports(tmp_path, monkeypatch):
    example = torch.rand(1, 3, 16, 16)
    monkeypatch.setenv(runtimes.CACHE_ENV, "off")
    assert runtimes.cache_folder() is None
    graph = runtimes.encoder_onnx(_encoder(0), example)
    blocked = tmp_path / "a_file"
    blocked.write_text("not a folder")
    monkeypatch.setenv(runtimes.CACHE_ENV, str(blocked / "cache"))
    assert runtimes.encoder_onnx(_encoder(0), example) == graph
    monkeypatch.delenv(runtimes.CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert runtimes.cache_folder() == tmp_path / "xdg" / "nnunet_dfg"
