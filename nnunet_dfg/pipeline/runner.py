"""Runs pipeline steps as subprocesses of nnU-Net's and nnunet_dfg's own commands, skipping finished ones.

A step is finished when its marker file exists; the marker is written only after the command succeeded, so a
pipeline killed anywhere resumes at the step that was running. Each step's output goes to its own log file.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Union

from ..errors import UserError

BIN = Path(sys.executable).parent


Command = Union[list, Callable[[], list]]


@dataclass
class Step:
    """One resumable unit. ``command`` may be a callable: folders made by earlier steps are resolved late."""

    name: str
    command: Command = field(default_factory=list)
    env: dict = field(default_factory=dict)
    action: Optional[Callable[[], None]] = None  # in-process alternative to a command
    retry_command: Optional[Command] = None  # used when an earlier attempt left a log (e.g. training with --c)


def _executable(name: str) -> str:
    path = BIN / name
    return str(path) if path.exists() else name


class Runner:
    def __init__(self, work: Path, env: dict, quiet: bool = False):
        self.work, self.env, self.quiet = work, env, quiet
        (work / "steps").mkdir(parents=True, exist_ok=True)
        (work / "logs").mkdir(parents=True, exist_ok=True)
        self.timings: dict[str, float] = {}

    def done(self, name: str) -> bool:
        return (self.work / "steps" / f"{name}.done").is_file()

    def run(self, step: Step) -> None:
        marker = self.work / "steps" / f"{step.name}.done"
        if marker.is_file():
            self._say(f"[skip] {step.name} (finished earlier)")
            return
        started = time.time()
        self._say(f"[run ] {step.name}")
        if step.action is not None:
            step.action()
        else:
            log = self.work / "logs" / f"{step.name}.log"
            command = step.retry_command if step.retry_command and log.exists() else step.command
            command = command() if callable(command) else command
            with open(log, "w") as f:
                f.write(" ".join(command) + "\n")
                f.flush()
                proc = subprocess.run([_executable(command[0]), *command[1:]], env={**self.env, **step.env},
                                      stdout=f, stderr=subprocess.STDOUT)
            if proc.returncode != 0:
                tail = log.read_text().strip().splitlines()[-1:] or [""]
                raise UserError(f"step {step.name} failed (exit {proc.returncode}): {tail[0][:200]} -- see {log}")
        self.timings[step.name] = time.time() - started
        marker.write_text(f"{self.timings[step.name]:.1f}\n")
        self._say(f"[done] {step.name} in {self.timings[step.name]:.0f} s")

    def _say(self, text: str) -> None:
        if not self.quiet:
            print(text, flush=True)


def nnunet_environment(root: Path) -> dict:
    """nnU-Net's variables pointing inside ``root`` plus the CPU-friendly settings measured on 2 cores."""
    env = dict(os.environ)
    env.update(nnUNet_raw=str(root / "nnUNet_raw"), nnUNet_preprocessed=str(root / "nnUNet_preprocessed"),
               nnUNet_results=str(root / "nnUNet_results"))
    env.setdefault("nnUNet_def_n_proc", "2")
    env.setdefault("nnUNet_n_proc_DA", "0")
    env.setdefault("nnUNet_compile", "f")
    return env
