"""The volume engine: any prompt mode over a whole volume, between the pure searches and the commands.

``engine.refine_volume`` runs the DFG search or the box prompts (SDG / plain, tiled or not) slice by slice over a
network-grid volume; ``result`` holds its result type and slice budget; ``predictor`` is nnU-Net's predictor
giving a case's softmax (and decoder features) on that grid and exporting labels back to the image grid. Imports
``prompt_search`` and ``sam``, and nothing of the commands (``refine``, ``sdg``, ``pipeline``).
"""
from .engine import refine_volume
from .result import PROMPTS, VolumeResult, default_config, select_slices

__all__ = ["PROMPTS", "VolumeResult", "default_config", "refine_volume", "select_slices"]
