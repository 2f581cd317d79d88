"""Runs commands the way a user does: in a subprocess, with nnU-Net's environment variables and nothing else set."""
from __future__ import annotations

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
