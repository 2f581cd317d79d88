"""nnU-Net folder conventions (raw / preprocessed / results) with clear errors, and atomic writes.

Every writer here goes through a temporary sibling and ``os.replace`` so an interrupted run never leaves a
half-written file where a finished one is expected.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .errors import UserError

CASE_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


def env_folder(name: str) -> Path:
    """``nnUNet_raw`` / ``nnUNet_preprocessed`` / ``nnUNet_results`` from the environment."""
    value = os.environ.get(name)
    if not value:
        raise UserError(f"environment variable {name} is not set (see nnU-Net's setting_up_paths.md)")
    return Path(value)


def datasets_with_id(root: Path, number: int) -> list[Path]:
    """The ``DatasetXXX_*`` folders in ``root`` with this id (more than one makes nnU-Net's id lookup ambiguous)."""
    return sorted(p for p in Path(root).glob(f"Dataset{number:03d}_*") if p.is_dir()) if Path(root).is_dir() else []


def dataset_folder(root: Path, dataset_id: int | str) -> Path:
    """The ``DatasetXXX_Name`` folder for an id (or a full name) inside ``root``.

    Not nnU-Net's ``maybe_convert_to_dataset_name``: that reads this process's nnUNet_* variables, while the
    pipeline and the benchmarks resolve ids in trees of their own (the environment of their subprocesses)."""
    name = str(dataset_id)
    if name.startswith("Dataset"):
        path = root / name
        if not path.is_dir():
            raise UserError(f"dataset {name} not found in {root}")
        return path
    try:
        number = int(name)
    except ValueError:
        raise UserError(f"dataset id must be a number or a DatasetXXX_Name, got {name!r}") from None
    matches = datasets_with_id(root, number)
    if not matches:
        raise UserError(f"unknown dataset id {number}: no Dataset{number:03d}_* in {root}")
    if len(matches) > 1:
        raise UserError(f"dataset id {number} is ambiguous in {root}: {', '.join(p.name for p in matches)}")
    return matches[0]


def resolve_model_folder(model: Path | None, dataset: int | str | None, trainer: str, plans: str,
                         configuration: str) -> Path:
    """``-m MODEL_FOLDER``, or nnU-Net's ``nnUNet_results/<dataset>/<trainer>__<plans>__<configuration>``."""
    if model is not None:
        if not Path(model).is_dir():
            raise UserError(f"model folder not found: {model}")
        return Path(model).resolve()
    if dataset is None:
        raise UserError("need -d DATASET or -m MODEL_FOLDER")
    folder = dataset_folder(env_folder("nnUNet_results"), dataset) / f"{trainer}__{plans}__{configuration}"
    if not folder.is_dir():
        raise UserError(f"no trained model at {folder}")
    return folder.resolve()


def read_json(path: Path) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise UserError(f"missing file: {path}") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{path} is not valid JSON ({e.msg}, line {e.lineno})") from None


def write_json_atomic(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            json.dump(data, f, indent=2, sort_keys=False)


@contextmanager
def atomic_path(path: Path, suffix: str = ".partial", tmp_dir: Path | None = None) -> Iterator[Path]:
    """Yields a temporary path (next to ``path`` unless ``tmp_dir``, same file system); renamed onto ``path``
    only if the block succeeds. ``suffix`` lets writers that choose the format by file ending work on it."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=tmp_dir or path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_segmentation(writer, seg, final: Path, properties: dict, file_ending: str,
                       tmp_dir: Path | None = None) -> None:
    """nnU-Net's ``writer.write_seg`` under a temporary name with the right ending (the writer picks the format
    from it), renamed onto ``final``."""
    with atomic_path(final, suffix=file_ending, tmp_dir=tmp_dir) as tmp:
        writer.write_seg(seg, str(tmp), properties)


@contextmanager
def atomic_folder(path: Path) -> Iterator[Path]:
    """Builds a folder under a temporary name and renames it into place when the block succeeds."""
    path = Path(path)
    if path.exists():
        raise UserError(f"{path} already exists; refusing to overwrite it")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def list_cases(folder: Path, file_ending: str, num_channels: int) -> dict[str, list[Path]]:
    """Case id -> channel files (``CASE_XXXX<ending>``), checking that every case has every channel.

    Not nnU-Net's ``create_lists_from_splitted_dataset_folder``: it lists hidden files (our partial writes), checks
    neither the naming nor the channel count, and starts a 12-process pool for a directory listing."""
    if not folder.is_dir():
        raise UserError(f"image folder not found: {folder}")
    files = sorted(p for p in folder.iterdir() if p.name.endswith(file_ending) and not p.name.startswith("."))
    if not files:
        others = sorted({"".join(p.suffixes) for p in folder.iterdir() if p.is_file()})
        hint = f" (found {', '.join(others)})" if others else ""
        raise UserError(f"no {file_ending} images in {folder}{hint}")
    cases: dict[str, dict[int, Path]] = {}
    for p in files:
        m = CASE_CHANNEL.match(p.name[: -len(file_ending)])
        if m is None:
            raise UserError(f"{p.name} does not follow nnU-Net's CASE_XXXX{file_ending} naming")
        cases.setdefault(m["case"], {})[int(m["channel"])] = p
    result = {}
    for case, channels in sorted(cases.items()):
        if sorted(channels) != list(range(num_channels)):
            raise UserError(f"case {case} has channels {sorted(channels)}, the source model expects "
                            f"{num_channels} (0..{num_channels - 1})")
        result[case] = [channels[c] for c in range(num_channels)]
    return result
