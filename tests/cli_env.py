"""Runs commands the way a user does: in a subprocess, with nnU-Net's environment variables and nothing else set;
and the checks of the bad-input rule (one ``ERROR:`` line, exit status 2, nothing written)."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent


def nnunet_env(root: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("nnUNet")}
    env.update(nnUNet_raw=str(root / "raw"), nnUNet_preprocessed=str(root / "pre"), nnUNet_results=str(root / "res"),
               nnUNet_def_n_proc="2", nnUNet_n_proc_DA="0", nnUNet_compile="f", PYTHONUNBUFFERED="1")
    env.update({k: str(v) for k, v in extra.items()})
    return env


def run(cmd: list[str], env: dict, check: bool = True, timeout: int = 900) -> subprocess.CompletedProcess:
    exe = cmd[0] if os.path.isabs(cmd[0]) else str(BIN / cmd[0])
    proc = subprocess.run([exe, *cmd[1:]], env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def cli_command(args: list[str], stub_sam: bool = False) -> list[str]:
    """``python -m nnunet_dfg.cli ARGS``; ``stub_sam``: the same CLI with SAM replaced by the test double
    (``stub_sam_cli.py``), for runs whose subject is not SAM and that must stay fast."""
    entry = [str(Path(__file__).with_name("stub_sam_cli.py"))] if stub_sam else ["-m", "nnunet_dfg.cli"]
    return [sys.executable, *entry, *args]


def cli(args: list[str], root: Path, timeout: int = 300, stub_sam: bool = False,
        **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(cli_command(args, stub_sam), env=nnunet_env(root, **env), capture_output=True, text=True,
                          timeout=timeout)


def cli_main(args: list[str], root: Path, monkeypatch, capsys, **env: str) -> subprocess.CompletedProcess:
    """``cli`` in this process: ``nnunet_dfg.cli.main(args)`` with the same nnU-Net variables, stdout and stderr
    captured, the exit status from its return value or argparse's ``SystemExit``. For checks of argument and input
    errors, where a subprocess adds seconds of imports and tests nothing more (test_bad_input.py and test_refine.py
    keep subprocess checks of the real entry point)."""
    from nnunet_dfg.cli import main
    wanted = {k: v for k, v in nnunet_env(root, **env).items() if k.startswith("nnUNet") or k in env}
    for key in [k for k in os.environ if k.startswith("nnUNet") and k not in wanted and k != "nnUNet_extTrainer"]:
        monkeypatch.delenv(key)  # nnUNet_extTrainer: this process's install hook set it, as it does in a subprocess
    for key, value in wanted.items():
        monkeypatch.setenv(key, value)
    capsys.readouterr()
    try:
        code = main(list(args))
    except SystemExit as e:  # argparse's usage errors
        code = e.code
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(["nnunet_dfg", *args], code, out, err)


def snapshot(*roots: Path) -> list[str]:
    """Every path under ``roots`` (files and folders): equal before and after means nothing was created."""
    return sorted(str(p) for root in roots for p in Path(root).rglob("*"))


def assert_one_error_line(proc: subprocess.CompletedProcess, fragment: str) -> str:
    """Exit status 2 and stderr exactly one ``ERROR: `` line containing ``fragment``; returns that line."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ERROR: ") and fragment in lines[0], proc.stderr[-3000:]
    return lines[0]


def tree_hashes(*folders: Path) -> dict[str, str]:
    """sha256 of every file (a mark for every folder) below ``folders``, by path relative to its folder: equal
    before and after means nothing was changed, added or removed."""
    return {f"{i}/{p.relative_to(folder)}": hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "folder"
            for i, folder in enumerate(folders) for p in sorted(Path(folder).rglob("*"))}


def kill_midway(proc: subprocess.Popen, labels: Path, total: int, timeout: float) -> int:
    """SIGKILL ``proc`` (a refine) as soon as 1 to ``total - 1`` of its label files exist in ``labels``; returns
    how many were written before the kill."""
    import signal
    import time
    deadline = time.monotonic() + timeout
    try:
        while True:
            done = len(list(labels.glob("*.nii.gz"))) if labels.is_dir() else 0
            if 1 <= done < total:
                proc.send_signal(signal.SIGKILL)
                break
            assert proc.poll() is None, f"refine ended before it could be killed ({done} done)"
            assert time.monotonic() < deadline, f"no case finished in {timeout:.0f} s"
            time.sleep(0.02)
    finally:
        proc.kill()
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    done = len(list(labels.glob("*.nii.gz")))
    assert 1 <= done < total
    return done
