"""``python tests/stub_sam_cli.py ARGS``: ``python -m nnunet_dfg.cli ARGS`` with SAM replaced by the deterministic
``ThresholdSegmenter`` (everything else -- nnU-Net prediction, search, export, files -- is the real command).

For subprocess runs whose subject is process robustness (kill + resume, parallel parts), where LiteMedSAM would
cost ~3 s per slice on 2 CPU cores.
"""
import sys

from _tiny_model import ThresholdSegmenter  # this file's folder is sys.path[0] when run as a script

import nnunet_dfg.command_base as command_base
from nnunet_dfg.cli import main

command_base.open_segmenter = lambda *args, **kwargs: ThresholdSegmenter()

if __name__ == "__main__":
    sys.exit(main())
