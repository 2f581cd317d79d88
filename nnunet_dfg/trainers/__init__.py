"""nnU-Net trainers for DFG/SDG. nnU-Net finds them through ``nnUNet_extTrainer`` (set by the install's hook)."""
from .adaptation import *  # noqa: F401,F403
from .feature_aggregation import *  # noqa: F401,F403
from .self_training import *  # noqa: F401,F403
from .source import *  # noqa: F401,F403
