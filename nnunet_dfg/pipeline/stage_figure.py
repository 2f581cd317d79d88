"""``stage_figure.png`` beside ``stage_table.json``: each stage's mean Dice with its 95% interval, and one slice of
each stage's labels beside the image and its ground truth, so a user sees what every stage did to the same slice.

It reads only what the pipeline already wrote (the evaluations and the label files they scored) and draws what is
there: a stage whose files are missing keeps its bar, or loses its panel, or both, and the rest is drawn.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Optional

import numpy as np

from ..nnunet_io import atomic_path, read_json
from ..statistics import bootstrap_interval, case_dice
from .stage_table import STAGES


class StageFiles(NamedTuple):
    """Where an evaluated stage's files are: its labels, the labels it was scored against, and their images."""

    predictions: Path  # CASE<ending>
    reference: Path  # CASE<ending>
    images: Path  # CASE_0000<ending> (channel 0 is drawn)


@dataclass
class Panel:
    title: str
    image: np.ndarray  # one 2D slice
    labels: Optional[np.ndarray]  # integer labels on the same slice; None: image only


@dataclass
class Row:
    """One image set (e.g. the target test images): its chosen slice with ground truth, then each stage's labels."""

    name: str
    panels: list[Panel]
    stages: list[str]


def stage_intervals(evaluations: dict[str, dict]) -> dict[str, tuple[float, float, float]]:
    """stage -> (mean, low, high): the mean over cases of each case's mean Dice, with a 95% bootstrap interval over
    the cases (the goals printed with the table pair stages; this is each stage on its own)."""
    order = [s for s in STAGES if s in evaluations] + sorted(set(evaluations) - set(STAGES))
    return {s: bootstrap_interval(np.array(list(case_dice(evaluations[s]).values()))) for s in order}


def pick_slice(volumes: dict[str, np.ndarray]) -> tuple[str, int]:
    """(case, index along axis 0) of the slice with the most foreground; ties go to the first case in name order
    and the lowest index, so the same files always give the same slice."""
    best: tuple[int, str, int] = (-1, "", 0)
    for case in sorted(volumes):
        counts = (volumes[case].reshape(volumes[case].shape[0], -1) > 0).sum(axis=1)
        z = int(np.argmax(counts))
        if int(counts[z]) > best[0]:
            best = (int(counts[z]), case, z)
    return best[1], best[2]


def _read(path: Path) -> np.ndarray:
    import SimpleITK as sitk
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def _rows(sources: dict[str, StageFiles], file_ending: str) -> list[Row]:
    """One row per (images, reference) pair, its stages in ``STAGES`` order; a stage without a folder is left out."""
    groups: dict[tuple[Path, Path], list[str]] = {}
    for stage, files in sources.items():
        if Path(files.predictions).is_dir():
            groups.setdefault((Path(files.images), Path(files.reference)), []).append(stage)
    rows = []
    for (images, reference), stages in groups.items():
        predicted = {s: {p.name[: -len(file_ending)] for p in Path(sources[s].predictions).glob(f"*{file_ending}")}
                     for s in stages}
        cases = sorted(set.union(*predicted.values()))
        in_all = [c for c in cases if all(c in found for found in predicted.values())]
        cases = [c for c in (in_all or cases) if (images / f"{c}_0000{file_ending}").is_file()]
        truth = {c: _read(reference / f"{c}{file_ending}") for c in cases if (reference / f"{c}{file_ending}").is_file()}
        if not truth:  # no ground truth to choose by: the first stage's own labels choose
            first = Path(sources[stages[0]].predictions)
            truth = {c: _read(first / f"{c}{file_ending}") for c in cases if c in predicted[stages[0]]}
            known = False
        else:
            known = True
        if not truth:
            continue
        case, z = pick_slice(truth)
        image = _read(images / f"{case}_0000{file_ending}")[z]
        name = f"{images.parent.name}/{images.name}"
        panels = [Panel(f"{name}\n{case}, slice {z}" + (", ground truth" if known else ""), image,
                        truth[case][z] if known else None)]
        drawn = []
        for stage in stages:
            path = Path(sources[stage].predictions) / f"{case}{file_ending}"
            if path.is_file():
                labels = _read(path)
                if labels.shape[1:] == image.shape and labels.shape[0] > z:
                    panels.append(Panel(stage, image, labels[z]))
                    drawn.append(stage)
        rows.append(Row(name, panels, drawn))
    return rows


def render_stage_figure(intervals: dict[str, tuple[float, float, float]], rows: list[Row],
                        class_names: Optional[dict[int, str]] = None, dpi: int = 100) -> bytes:
    """PNG bytes: the bars (stage colour = the row of images it was measured on) above one row of slices per image
    set. Pure: arrays and numbers in, bytes out."""
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend
    from matplotlib.patches import Patch

    ncols = max([len(r.panels) for r in rows] + [1])
    fig = Figure(figsize=(max(9.0, 2.0 * ncols), 3.4 + 2.3 * len(rows)), dpi=dpi)
    grid = fig.add_gridspec(1 + len(rows), ncols, height_ratios=[1.5] + [1.0] * len(rows), hspace=0.8)
    ax = fig.add_subplot(grid[0, :])
    row_colour = {s: f"C{i}" for i, r in enumerate(rows) for s in r.stages}
    stages = list(intervals)
    means = np.array([intervals[s][0] for s in stages], dtype=float)
    err = np.array([[intervals[s][0] - intervals[s][1] for s in stages],
                    [intervals[s][2] - intervals[s][0] for s in stages]], dtype=float)
    ax.bar(range(len(stages)), means, yerr=err, capsize=3, color=[row_colour.get(s, "0.6") for s in stages])
    for x, (m, high) in enumerate(zip(means, means + err[1])):
        ax.text(x, min(high, 0.9) + 0.02, f"{m:.2f}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(stages)), stages, rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("mean Dice")
    ax.set_title("Mean Dice per stage (95% bootstrap interval over cases)", fontsize=10)
    ax.legend(handles=[Patch(color=f"C{i}", label=r.name) for i, r in enumerate(rows)], fontsize=7, loc="upper right")

    values = sorted({int(v) for r in rows for p in r.panels if p.labels is not None for v in np.unique(p.labels)} - {0})
    top = max(values + [1])
    colours = ListedColormap([f"C{(v + 1) % 10}" for v in range(1, top + 1)])
    for i, row in enumerate(rows):
        for j, panel in enumerate(row.panels):
            pax = fig.add_subplot(grid[1 + i, j])
            image = np.asarray(panel.image, dtype=np.float32)
            low, high = np.percentile(image, [0.5, 99.5]) if image.size else (0.0, 1.0)
            pax.imshow(image, cmap="gray", vmin=low, vmax=high if high > low else low + 1, interpolation="nearest")
            if panel.labels is not None:
                labels = np.ma.masked_equal(np.asarray(panel.labels, dtype=np.int32), 0)
                pax.imshow(labels, cmap=colours, vmin=0.5, vmax=top + 0.5, alpha=0.55, interpolation="nearest")
            pax.set_title(panel.title, fontsize=7)
            pax.set_axis_off()
    if values:
        names = class_names or {}
        fig.legend(handles=[Patch(color=f"C{(v + 1) % 10}", label=names.get(v, f"label {v}")) for v in values],
                   loc="lower center", ncol=len(values), fontsize=8, frameon=False)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    return buffer.getvalue()


def write_stage_figure(path: Path, evaluations: dict[str, dict], sources: dict[str, StageFiles],
                       labels: Optional[dict[str, int]] = None, file_ending: str = ".nii.gz") -> Path:
    """Renders the figure from the evaluations (``eval/*.json``) and the stages' files, written atomically."""
    names = _label_names(sources)
    names.update({int(v): k for k, v in (labels or {}).items() if int(v) != 0})
    png = render_stage_figure(stage_intervals(evaluations), _rows(sources, file_ending), names)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(Path(path), suffix=".png") as tmp:
        tmp.write_bytes(png)
    return Path(path)


def _label_names(sources: dict[str, StageFiles]) -> dict[int, str]:
    """Label names from the dataset.json beside each stage's labels (nnUNetv2_predict writes one into its output
    folder; a pseudo-label dataset has one above labelsTr), so that a reliable pseudo-label set's ``ignore`` value
    is named as such."""
    names: dict[int, str] = {}
    for files in sources.values():
        for folder in (Path(files.predictions), Path(files.predictions).parent):
            if (folder / "dataset.json").is_file():
                labels = read_json(folder / "dataset.json").get("labels", {})
                names.update({v: k for k, v in labels.items() if isinstance(v, int) and v != 0})
                break
    return names
