"""The one-command DFG pipeline (``nnunet_dfg pipeline`` / ``nnunet_dfg demo``)."""
