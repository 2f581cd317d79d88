"""Session-wide fixtures: the tiny trained nnU-Net model is built once and copied into each test module's folder."""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # helper modules (cli_env, _tiny_model) import by plain name

from _tiny_model import TinyModel, build_tiny_model  # noqa: E402
from cli_env import cli_main  # noqa: E402

_PARTS = ("raw/Dataset701_DFGSynthSource", "raw/Dataset702_DFGSynthTarget", "raw/_hidden_labels",
          "pre/Dataset701_DFGSynthSource", "res")


def pytest_collection_modifyitems(items) -> None:
    """Every test that needs the trained tiny model is ``slow`` (building it takes minutes), marked or not."""
    for item in items:
        if "tiny_model_root" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def tiny_model_root(tmp_path_factory) -> Path:
    """``NNUNET_DFG_TINY_MODEL`` (a folder built earlier) or a fresh build, once per session (minutes on 2 cores)."""
    prebuilt = os.environ.get("NNUNET_DFG_TINY_MODEL")
    if prebuilt:
        return Path(prebuilt)
    return build_tiny_model(tmp_path_factory.mktemp("tiny_model_shared")).root


def tiny_copy(tmp_path_factory, tiny_model_root: Path, name: str):
    """A private copy of the tiny model for one module (tests move and write files in it), env vars set."""
    root = tmp_path_factory.mktemp(name)
    for part in _PARTS:
        shutil.copytree(tiny_model_root / part, root / part, symlinks=True)
    model = TinyModel(root)
    with pytest.MonkeyPatch.context() as mp:
        for key, value in model.env.items():
            mp.setenv(key, value)
        yield model


@pytest.fixture
def cli_here(monkeypatch, capsys):
    """``cli_env.cli`` without the subprocess (``cli_env.cli_main``): ``cli_here(args, root, **env)``."""
    return lambda args, root, **env: cli_main(args, root, monkeypatch, capsys, **env)
