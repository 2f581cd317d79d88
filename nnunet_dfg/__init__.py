"""nnunet_dfg: SAM-assisted domain adaptation (DFG) and generalisation (SDG) for nnU-Net v2.

Kept import-free on purpose: the site-packages hook and the CLI must start without pulling in torch.
"""

__version__ = "0.1.0"
