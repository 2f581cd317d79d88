"""The package's import floors (docs/USAGE.md, "Package layout"): pure algorithms (prompt_search) <- segmenters
(sam) <- the volume engine <- the commands <- cli. Every import counts, also those inside functions; none may go up
a floor."""
from __future__ import annotations

import ast
from pathlib import Path

import nnunet_dfg

ROOT = Path(nnunet_dfg.__file__).parent
COMMAND_PACKAGES = ("refine", "sdg", "pipeline")  # run one another only as subprocesses, never by import
FLOORS = {
    0: ("errors", "seed", "nnunet_io", "statistics", "cpu_plans", "image_checks", "evaluation", "synthetic",
        "synthetic_contrast"),
    1: ("prompt_search", "trainers"),  # independent of each other: the search is numpy, the trainers are nnU-Net's
    2: ("sam",),
    3: ("volume",),
    4: ("command_base", "prepare_target", "target_normalization") + COMMAND_PACKAGES,
    5: ("cli",),
}
FLOOR_OF = {part: floor for floor, parts in FLOORS.items() for part in parts}


def _part(module: str) -> str:
    """The top-level component of ``nnunet_dfg.X.Y``: ``X``."""
    return module.split(".")[1]


def _imports(path: Path) -> set[str]:
    """The nnunet_dfg components a file imports (absolute or relative, at any depth)."""
    package = ("nnunet_dfg",) + path.relative_to(ROOT).with_suffix("").parts[:-1]  # also right for __init__.py
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = list(package[: len(package) - (node.level - 1)])
                base = ".".join(anchor + ([base] if base else []))
            names = [f"{base}.{a.name}" for a in node.names] if base == "nnunet_dfg" else [base]
        else:
            continue
        found |= {_part(n) for n in names if n.startswith("nnunet_dfg.")}
    return found


def _files() -> list[Path]:
    return sorted(p for p in ROOT.rglob("*.py") if "__pycache__" not in p.parts and p != ROOT / "__init__.py")


def test_every_module_has_a_floor():
    parts = {p.relative_to(ROOT).with_suffix("").parts[0] for p in _files()}
    assert parts - set(FLOOR_OF) == set(), "give new top-level modules a floor in FLOORS"


def test_no_import_goes_up_a_floor_or_across_commands():
    wrong = []
    for path in _files():
        me = path.relative_to(ROOT).with_suffix("").parts[0]
        for other in _imports(path) - {me}:
            floor, mine = FLOOR_OF.get(other, 99), FLOOR_OF[me]
            across = floor == mine and mine not in (0, 4) or me in COMMAND_PACKAGES and other in COMMAND_PACKAGES
            if floor > mine or across:
                wrong.append(f"{path.relative_to(ROOT.parent)} imports nnunet_dfg.{other} (floor {floor} > {mine})"
                             if floor > mine else f"{path.relative_to(ROOT.parent)} imports nnunet_dfg.{other}")
    assert wrong == []


def test_the_floor_test_sees_relative_and_deferred_imports():
    """The parser itself: a deferred relative import two levels up is found (else the test above is vacuous)."""
    found = _imports(ROOT / "command_base.py")
    assert {"sam", "volume", "errors", "nnunet_io"} <= found
    assert "volume" in _imports(ROOT / "refine" / "command.py") and "prompt_search" in _imports(
        ROOT / "volume" / "engine.py")
    assert "trainers" in _imports(ROOT / "trainers" / "nnunet_export" / "nnunet_dfg_trainers.py")
