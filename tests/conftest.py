"""Session-wide fixtures: the tiny trained nnU-Net model is built once and copied into each test module's folder."""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest
from filelock import FileLock

sys.path.insert(0, str(Path(__file__).parent))  # helper modules (cli_env, _tiny_model) import by plain name

from _tiny_model import TinyModel, build_tiny_model  # noqa: E402
from cli_env import cli_main  # noqa: E402

if os.environ.get("PYTEST_XDIST_WORKER"):
    # under -n every worker takes a core: one thread each (torch, OpenVINO and ONNX Runtime follow torch's count),
    # waiting passively, inherited by every subprocess; spinning thread pools of two workers on 2 cores made steps
    # several times slower
    for _key, _value in {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}.items():
        os.environ.setdefault(_key, _value)

_PARTS = ("raw/Dataset701_DFGSynthSource", "raw/Dataset702_DFGSynthTarget", "raw/_hidden_labels",
          "pre/Dataset701_DFGSynthSource", "res")


# The files that take the longest (docs/TESTING.md), longest first: under -n they start first, so that no worker
# is left with a 10-minute file while the other has finished.
LONGEST_FIRST = ("test_demo_cli.py", "test_stock_cli.py", "test_determinism.py", "test_sdg.py", "test_refine.py",
                 "test_sam.py", "test_robustness_runs.py")


def pytest_collection_modifyitems(items) -> None:
    """Every test that needs the trained tiny model is ``slow`` (building it takes minutes), marked or not; the
    longest files run first (a stable sort: the order within a file and among the rest is kept)."""
    for item in items:
        if "tiny_model_root" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@pytest.fixture(scope="session")
def tiny_model_root(tmp_path_factory) -> Path:
    """``NNUNET_DFG_TINY_MODEL`` (a folder built earlier) or a fresh build, once per session (minutes on 2 cores).

    Under pytest-xdist (``-n``) every worker is a session of its own; the first to get here builds the model in the
    folder the workers' temporary folders share, under a file lock, and the others wait for it and reuse it."""
    prebuilt = os.environ.get("NNUNET_DFG_TINY_MODEL")
    if prebuilt:
        return Path(prebuilt)
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return build_tiny_model(tmp_path_factory.mktemp("tiny_model_shared")).root
    shared = tmp_path_factory.getbasetemp().parent  # this run's folder, one per pytest invocation
    root = shared / "tiny_model_shared"
    with FileLock(str(shared / "tiny_model.lock")):
        if not (root / ".built").is_file():
            shutil.rmtree(root, ignore_errors=True)  # a build that failed in another worker is started over
            root.mkdir()
            build_tiny_model(root)
            (root / ".built").touch()
    return root


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
