# Re-export for nnU-Net's trainer search (nnUNet_extTrainer). This folder must hold nothing else and no __init__.py:
# nnU-Net imports every module here by file name, and the classes must keep their real module path for pickling.
from nnunet_dfg.trainers import *  # noqa: F401,F403
