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
    "pseudo_dfg_reliable": "pseudo-labels (target train), DFG + post-processing with nnU-Net's ignore label on "
                           "unreliable voxels (--pseudo-ignore): Dice over the kept voxels, and the kept fraction",
    "self_trained": "after self-training",
    "self_trained_reliable": "after self-training on the reliable pseudo-labels (ignored voxels out of the loss)",
    "sdg": "SDG: source model boxes -> SAM with its mask decoder fine-tuned on the source",
    "sdg_no_finetune": "SDG ablation: source model boxes -> SAM as shipped (no fine-tuning)",
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
            if "kept_fraction" in result:  # an ignore-labelled dataset (evaluation.py): share of voxels kept
                table[stage]["kept_fraction"] = result["kept_fraction"]
    return table


def format_stage_table(table: dict) -> str:
    if not table:
        return "(no stage evaluated yet)"
    classes = list(next(iter(table.values()))["per_class"])
    width = max(16, *(len(stage) + 1 for stage in table))
    head = f"{'stage':<{width}}" + "".join(f"{c[:12]:>13}" for c in classes) + f"{'mean Dice':>11}{'ASSD mm':>9}"
    lines = [head, "-" * len(head)]
    for stage, row in table.items():
        lines.append(f"{stage:<{width}}" + "".join(f"{row['per_class'][c]['dice']:>13.3f}" for c in classes)
                     + f"{row['mean_dice']:>11.3f}{row['mean_assd']:>9.2f}")
        kept = [row["per_class"][c].get("kept") for c in classes]
        if row.get("kept_fraction", 1.0) < 1.0:  # ignored voxels: the share of each class (and of all) kept
            lines.append(f"{'  kept':<{width}}" + "".join("            -" if k is None else f"{k:>13.3f}"
                                                          for k in kept) + f"{row['kept_fraction']:>11.3f}")
    lines.append("(Dice per class; source_in_domain is on the source's validation fold, pseudo_* rows on the "
                 "unlabelled target training images, the others on the held-out target test images)")
    return "\n".join(lines)
