"""The stage table: one row of per-class Dice and ASSD per pipeline stage, as JSON and as printed text."""
from __future__ import annotations

from pathlib import Path

from ..nnunet_io import read_json

STAGES = {
    "source_in_domain": "source model on its own held-out validation fold (source domain)",
    "source_only": "source model on the target test images",
    "fa": "after feature aggregation",
    "pseudo_fa": "pseudo-labels (target train), the FA model's own labels (no search)",
    "pseudo_box": "pseudo-labels (target train), plain box prompt",
    "pseudo_sdg": "pseudo-labels (target train), SDG refined box",
    "pseudo_dfg_raw": "pseudo-labels (target train), DFG search",
    "pseudo_dfg_post": "pseudo-labels (target train), DFG + 3D post-processing",
    "self_trained": "after self-training",
    "sdg": "SDG: source model boxes -> SAM",
    "sdg_finetuned": "SDG: source model boxes -> SAM with fine-tuned decoder",
    "oracle": "target-supervised oracle, fine-tuned from the source model (reference)",
}


def stage_table(eval_dir: Path) -> dict:
    """stage key -> {mean_dice, mean_assd, per_class: {name: {dice, assd}}, description} for evaluated stages."""
    table = {}
    for stage, description in STAGES.items():
        path = eval_dir / f"{stage}.json"
        if path.is_file():
            result = read_json(path)
            table[stage] = {"mean_dice": result["mean_dice"], "mean_assd": result["mean_assd"],
                            "per_class": result["per_class"], "description": description}
    return table


def format_stage_table(table: dict) -> str:
    if not table:
        return "(no stage evaluated yet)"
    classes = list(next(iter(table.values()))["per_class"])
    head = f"{'stage':<16}" + "".join(f"{c[:12]:>13}" for c in classes) + f"{'mean Dice':>11}{'ASSD mm':>9}"
    lines = [head, "-" * len(head)]
    for stage, row in table.items():
        lines.append(f"{stage:<16}" + "".join(f"{row['per_class'][c]['dice']:>13.3f}" for c in classes)
                     + f"{row['mean_dice']:>11.3f}{row['mean_assd']:>9.2f}")
    lines.append("(Dice per class; source_in_domain is on the source's validation fold, pseudo_* rows on the "
                 "unlabelled target training images, the others on the held-out target test images)")
    return "\n".join(lines)
