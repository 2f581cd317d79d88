"""The start-up hook that registers the trainers with nnU-Net, for editable and regular installs."""
from __future__ import annotations

import os
import pickle
import subprocess
import sys
import sysconfig
from pathlib import Path

import _nnunet_dfg_hook
import pytest

REPO = Path(__file__).resolve().parents[1]


def _python(code: str, env=None, exe=sys.executable) -> str:
    """Runs outside the checkout, so ``-c``'s current-directory entry cannot shadow the installed package."""
    env = {k: v for k, v in (env or os.environ).items() if k != "nnUNet_extTrainer"}
    return subprocess.run([exe, "-c", code], env=env, capture_output=True, text=True, check=True,
                          cwd="/").stdout.strip()


def test_export_folder_holds_only_the_reexport_module():
    folder = Path(_nnunet_dfg_hook.trainer_folder())
    assert sorted(p.name for p in folder.iterdir() if p.name != "__pycache__") == ["nnunet_dfg_trainers.py"]


def test_hook_sets_variable_at_startup_without_heavy_imports():
    out = _python("import os, sys; print(os.environ.get('nnUNet_extTrainer')); "
                  "print(sorted(m for m in ('torch', 'numpy', 'nnunetv2', 'nnunet_dfg') if m in sys.modules))")
    variable, heavy = out.splitlines()
    assert variable == _nnunet_dfg_hook.trainer_folder()
    assert heavy == "[]"


def test_hook_appends_to_a_user_value_once():
    env = dict(os.environ, nnUNet_extTrainer="/my/trainers")
    out = subprocess.run([sys.executable, "-c", "import os; print(os.environ['nnUNet_extTrainer'])"], env=env,
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out.split(os.pathsep) == ["/my/trainers", _nnunet_dfg_hook.trainer_folder()]


def test_nnunet_finds_picklable_trainers():
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name
    for name in ("nnUNetTrainerDFG_Source", "nnUNetTrainerDFG_FA", "nnUNetTrainerDFG_FA_test"):
        cls = recursive_find_trainer_class_by_name(name)
        assert cls.__name__ == name and cls.__module__.startswith("nnunet_dfg.trainers.")
        assert pickle.loads(pickle.dumps(cls)) is cls


@pytest.mark.slow  # a venv and a pip install
def test_regular_install_and_uninstall_in_a_fresh_venv(tmp_path):
    """``pip install .`` (a wheel, not editable) ships the hook; uninstalling removes it and nothing else stays."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = str(venv / "bin" / "python")
    site = _python("import sysconfig; print(sysconfig.get_paths()['purelib'])", exe=py)
    # Borrow torch/nnunetv2 from the test venv by plain path (no .pth processing there, so its editable
    # nnunet_dfg stays invisible) and install this repo as a regular wheel without dependencies.
    Path(site, "zz_borrowed.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([py, "-m", "pip", "install", "-q", "--no-deps", str(REPO)], check=True, capture_output=True)
    assert Path(site, "nnunet_dfg.pth").is_file() and Path(site, "_nnunet_dfg_hook.py").is_file()
    folder = _python("import os; print(os.environ['nnUNet_extTrainer'])", exe=py)
    assert folder == str(Path(site, "nnunet_dfg", "trainers", "nnunet_export"))
    found = _python("from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name as f; "
                    "c = f('nnUNetTrainerDFG_FA'); import nnunet_dfg; print(c.__module__, nnunet_dfg.__file__)",
                    exe=py).splitlines()[-1]
    assert found.startswith("nnunet_dfg.trainers.feature_aggregation " + site)
    subprocess.run([py, "-m", "pip", "uninstall", "-y", "-q", "nnunet_dfg"], check=True, capture_output=True)
    left = sorted(p.name for p in Path(site).iterdir() if "dfg" in p.name.lower())
    assert left == []
    nnunet_dir = Path(_python("import nnunetv2, os; print(os.path.dirname(nnunetv2.__file__))", exe=py))
    assert not [p for p in nnunet_dir.rglob("*") if "dfg" in p.name.lower()]
    assert _python("import os; print(os.environ.get('nnUNet_extTrainer'))", exe=py) == "None"
