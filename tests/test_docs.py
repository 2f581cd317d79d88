"""The README and docs/USAGE.md against the code, in one process: every ``nnunet_dfg`` command they show parses with
the real argument parser, every sub-command answers ``--help``, USAGE's option tables list exactly the parser's
options with its defaults, every stage key is described, and every local link points at a file. (What the
commands do is tested where they run: tests/test_demo_cli.py, test_stock_cli.py.)"""
from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

import pytest

from nnunet_dfg.cli import build_parser
from nnunet_dfg.pipeline.stage_table import STAGES

ROOT = Path(__file__).resolve().parents[1]
README, USAGE = ROOT / "README.md", ROOT / "docs" / "USAGE.md"
# the README's placeholders for dataset ids, where the parser wants a number
PLACEHOLDERS = {"SRC": "601", "TGT": "602", "PSEUDO": "702"}
# pictures and pages other people produce (the lead renders the stage figure from a demo run; the test tier's
# engineer writes TESTING.md): checked once they exist
PENDING = {"docs/benchmarks/stage_figure.png", "docs/TESTING.md"}


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def _commands(text: str) -> list[str]:
    """``nnunet_dfg ...`` commands in backticks and in code blocks, without comments and the setup prefix."""
    found = []
    for line in text.splitlines():
        if line.startswith("#"):  # a heading names a command without its arguments
            continue
        spans = re.findall(r"`([^`]+)`", line) if not line.startswith(("nnunet_dfg", "bash ")) else [line]
        for span in spans:
            for part in span.split("&&"):
                part = part.split("  #")[0].strip()
                part = re.sub(r"^\.venv/bin/", "", part)
                if part.startswith("nnunet_dfg ") and part != "nnunet_dfg COMMAND --help":
                    found.append(part)
    return found


@pytest.mark.parametrize("doc", [README, USAGE], ids=lambda p: p.name)
def test_every_command_shown_parses(doc):
    commands = _commands(doc.read_text())
    assert len(commands) >= 5
    parser = build_parser()
    for command in commands:
        words = [PLACEHOLDERS.get(w, w) for w in shlex.split(command)[1:]]
        try:
            parser.parse_args(words)
        except SystemExit:
            pytest.fail(f"{doc.name}: `{command}` does not parse")


def test_every_subcommand_answers_help(capsys):
    for name in _subparsers():
        with pytest.raises(SystemExit) as stop:
            build_parser().parse_args([name, "--help"])
        assert stop.value.code == 0 and f"usage: nnunet_dfg {name}" in capsys.readouterr().out


def _usage_tables() -> dict[str, dict[str, str]]:
    """Sub-command -> option -> its Default cell, from USAGE's ``### `nnunet_dfg NAME` `` sections."""
    tables, current = {}, None
    for line in USAGE.read_text().splitlines():
        heading = re.match(r"#{2,3} `nnunet_dfg ([a-z-]+)`", line)
        if heading:
            current = tables.setdefault(heading[1], {})
        elif line.startswith("## "):
            current = None
        elif current is not None and line.startswith("| `-"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            current[cells[0].strip("`").split()[0]] = cells[1]
    return tables


def _default_cell(action: argparse.Action) -> str:
    if action.required:
        return "required"
    value = action.default
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)) or value in (None, ""):
        return "—"
    return "`" + (" ".join(map(str, value)) if isinstance(value, list) else str(value)) + "`"


def test_usage_lists_every_option_with_its_default():
    tables = _usage_tables()
    parsers = _subparsers()
    assert set(tables) == set(parsers), "one USAGE section per sub-command"
    for name, parser in parsers.items():
        options = {a.option_strings[0]: a for a in parser._actions if a.option_strings and a.dest != "help"}
        assert set(tables[name]) == set(options), f"nnunet_dfg {name}: USAGE's table differs from the parser"
        for option, action in options.items():
            assert tables[name][option] == _default_cell(action), f"nnunet_dfg {name} {option}"


def test_usage_describes_every_stage():
    text = USAGE.read_text()
    assert [s for s in STAGES if f"`{s}`" not in text] == []


@pytest.mark.parametrize("doc", [README, USAGE, *sorted((ROOT / "docs").glob("*.md")), ROOT / "benchmarks/README.md"],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_local_links_point_at_files(doc):
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", doc.read_text()):
        if "://" in target:
            continue
        path = (doc.parent / target).resolve()
        if str(path.relative_to(ROOT)) in PENDING:
            continue
        assert path.exists(), f"{doc.name} links {target}, which does not exist"


def test_readme_stays_short_and_keeps_the_ci_command():
    lines = README.read_text().splitlines()
    assert lines.index("## Documentation") <= 150  # what it is, commands, quick start, table, results: then links
    ci = (ROOT / ".ci/run").read_text().splitlines()[-1]
    assert any(line.split("  #")[0].strip() == ci for line in lines[:20])  # CI runs exactly the README's command


def test_the_nnunet_commands_shown_exist():
    """The nnU-Net commands the docs pair with this package's are installed entry points of nnU-Net 2.8.1."""
    import sys

    names = set(re.findall(r"\bnnUNetv2_[a-z_]+", README.read_text() + USAGE.read_text()))
    assert {"nnUNetv2_train", "nnUNetv2_predict", "nnUNetv2_plan_and_preprocess"} <= names
    assert sorted(n for n in names if not (Path(sys.executable).parent / n).exists()) == []
