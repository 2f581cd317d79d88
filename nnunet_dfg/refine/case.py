"""One case of a refinement: the search of one prompt mode (run once), then every output dataset it feeds.

``search_case`` runs the search over the volume, exports the merged labels to the image grid, post-processes them
and, for each ``--pseudo-ignore`` rule asked of this prompt, computes the reliability map; ``write_case`` writes one
output dataset's files from that, so the reference dataset and a rule's dataset come from the same search.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..prompt_search import largest_component_per_class
from ..prompt_search.reliability import RULES, volume_reasons, with_ignore
from ..volume import VolumeResult, refine_volume, select_slices
from .ignore import MAP_POSTPROCESSING, NO_RULE, ignore_value, reliability_report
from .layout import OutputDataset
from .report import case_report, voxel_counts


@dataclass
class SearchedCase:
    """A case's search and what every output of its prompt shares (network grid: ``model``, ``reasons``)."""

    volume: VolumeResult
    model: np.ndarray                  # the FA model's argmax (uint8), where the search started
    raw: np.ndarray                    # merged labels on the image grid
    final: np.ndarray                  # after the largest-component post-processing
    reasons: dict[str, np.ndarray] = field(default_factory=dict)     # rule -> reason bits (network grid)
    unreliable: dict[str, np.ndarray] = field(default_factory=dict)  # rule -> bool map (image grid)
    timings: dict[str, float] = field(default_factory=dict)


def search_case(case: str, pred, predictor, segmenter, prompt: str, config: Any, opts, labels: dict[str, int],
                rules: list[str], figures: Path | None, figure_out: OutputDataset, bar=None,
                sam_input: np.ndarray | None = None) -> SearchedCase:
    """Search one case with one prompt mode; ``rules`` are the ``--pseudo-ignore`` rules whose maps are needed.
    ``sam_input`` is what SAM sees (``ModelOptions.sam_volume``; the network's input if None)."""
    t1 = time.perf_counter()
    slices = select_slices(pred.probs, opts.max_slices)
    on_slice = None
    if bar is not None:
        on_slice = lambda z, r: bar.set_postfix_str(f"{case} {prompt} slice {z + 1}/{pred.probs.shape[1]}")  # noqa
    image = pred.image if sam_input is None else sam_input
    volume = refine_volume(image, pred.probs, pred.features, segmenter, prompt, config, slices, on_slice,
                           tile=opts.tile)
    t2 = time.perf_counter()
    raw = predictor.to_original_grid(volume.label, pred.properties)
    foreground = [v for v in labels.values() if v != 0]
    final = largest_component_per_class(raw, foreground).astype(np.uint8)
    t3 = time.perf_counter()
    searched = SearchedCase(volume, np.argmax(pred.probs, 0).astype(np.uint8), raw, final)
    for rule in rules:
        reasons = volume_reasons(volume.slices, pred.probs, RULES[rule])
        searched.reasons[rule] = reasons
        exported = predictor.to_original_grid((reasons != 0).astype(np.uint8), pred.properties)
        searched.unreliable[rule] = exported.astype(bool)
    t4 = time.perf_counter()
    if figures is not None:
        write_figures(figures, case, image, pred.probs, volume, figure_out,
                      next(iter(searched.reasons.values()), None))
    searched.timings = {"search": t2 - t1, "export_postprocess": t3 - t2, "reliability": t4 - t3,
                        "figures": time.perf_counter() - t4}
    return searched


def write_case(case: str, files: list[Path], searched: SearchedCase, predict_s: float, predictor, output,
               opts, labels: dict[str, int], properties: dict, grid: dict) -> dict:
    """One output dataset's files for a searched case; the label file is renamed into place last (the resume
    marker). ``output`` is the command's record of the dataset (``out``, ``rule``, ``metadata``); ``grid`` the
    network-grid facts for the report."""
    out, rule = output.out, output.rule
    t0 = time.perf_counter()
    writer = predictor.plans_manager.image_reader_writer_class()
    out.add_images(files, opts.copy_images)
    out.write_segmentation(writer, searched.raw, out.raw_label_file(case), properties)
    out.write_segmentation(writer, predictor.to_original_grid(searched.model, properties),
                           out.model_label_file(case), properties)
    label = searched.final
    section = None
    if rule != NO_RULE:
        unreliable = searched.unreliable[rule]
        reliability_map = unreliable.astype(np.uint8)
        reliability_map[searched.raw != searched.final] = MAP_POSTPROCESSING
        label = with_ignore(searched.final, searched.raw, unreliable, ignore_value(labels))
        out.write_segmentation(writer, reliability_map, out.reliability_file(case), properties)
        section = {"rule": rule, **reliability_report(searched.reasons[rule], searched.volume.label, labels,
                                                      reliability_map)}
    voxels = {"model_network_grid": voxel_counts(searched.model, labels),
              "refined_network_grid": voxel_counts(searched.volume.label, labels),
              "before_postprocessing": voxel_counts(searched.raw, labels),
              "after_postprocessing": voxel_counts(searched.final, labels)}
    if section is not None:
        voxels["kept_after_ignore"] = voxel_counts(label, labels)
    timings = {"predict": predict_s, **searched.timings, "write": time.perf_counter() - t0}
    report = case_report(case, searched.volume, labels, voxels, timings, output.metadata)
    report.update(grid)
    if section is not None:
        report["reliability"] = section
    out.write_bytes(json.dumps(report, indent=1).encode(), out.report_file(case))
    out.write_segmentation(writer, label, out.label_file(case), properties)
    return report


def write_figures(root: Path, case: str, image: np.ndarray, probs: np.ndarray, volume, out: OutputDataset,
                  reasons: np.ndarray | None = None) -> None:
    """One PNG per searched slice and class that has decoded steps: ``root/CASE/CASE_zNNN_cK.png``; with
    ``reasons`` (a rule's network-grid reason bits) the pixels that rule ignores are shaded."""
    from .figures import render_search_png

    model = np.argmax(probs, axis=0)
    for z, result in sorted(volume.slices.items()):
        for cls, trace in sorted(result.traces.items()):
            if not trace.steps:
                continue
            ignored = None if reasons is None else reasons[z] != 0
            png = render_search_png(image[z], trace, model[z] == cls, result.label == cls,
                                    title=f"{case} slice {z} class {cls}", ignored=ignored)
            out.write_bytes(png, root / case / f"{case}_z{z:03d}_c{cls}.png")
