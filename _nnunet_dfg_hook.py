"""Registers nnunet_dfg's trainers with nnU-Net at interpreter start-up (run from ``nnunet_dfg.pth``).

nnU-Net finds external trainers through the ``nnUNet_extTrainer`` folder list. We append a folder that holds only
a re-export module, so the classes keep their real module path and stay picklable. This runs in every Python
process, so it must import nothing heavy: ``find_spec`` locates the package without executing it.
"""
import importlib.util
import os

EXPORT_FOLDER = os.path.join("trainers", "nnunet_export")


def trainer_folder():
    """The folder to add to ``nnUNet_extTrainer``, or None if nnunet_dfg is not importable."""
    try:
        spec = importlib.util.find_spec("nnunet_dfg")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = os.path.join(list(spec.submodule_search_locations)[0], EXPORT_FOLDER)
    return folder if os.path.isdir(folder) else None


def register():
    folder = trainer_folder()
    if folder is None:
        return
    parts = [p for p in os.environ.get("nnUNet_extTrainer", "").split(os.pathsep) if p]
    if folder not in parts:
        os.environ["nnUNet_extTrainer"] = os.pathsep.join(parts + [folder])


register()
