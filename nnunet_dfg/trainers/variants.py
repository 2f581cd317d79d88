"""Trainer-name variants, nnU-Net's way of passing settings through its stock CLI (``-tr NAME``)."""
from __future__ import annotations

import sys

import torch


def make_variant(base: type, name: str, doc: str, **settings) -> type:
    """A subclass of ``base`` named ``name`` that overrides trainer attributes after ``__init__``.

    The class is bound in the caller's module under ``name`` so pickling and nnU-Net's name search both work.
    The ``__init__`` keeps nnU-Net's exact signature, which the base class inspects to save its init arguments.
    """

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device('cuda')):
        base.__init__(self, plans, configuration, fold, dataset_json, device)
        for key, value in settings.items():
            setattr(self, key, value)

    module = sys._getframe(1).f_globals["__name__"]
    cls = type(name, (base,), {"__init__": __init__, "__doc__": doc, "__module__": module, "__qualname__": name})
    sys.modules[module].__dict__[name] = cls
    return cls
