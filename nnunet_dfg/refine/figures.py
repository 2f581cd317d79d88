"""Fig. 1-style pictures of one class's box search on one slice: the boxes over the image, and the changed-pixel
curve whose stability tests picked the final box. Rendered to PNG bytes (the caller writes them atomically)."""
from __future__ import annotations

import io

import numpy as np

from ..prompt_search import ClassTrace

STAGE_COLOURS = {1: "tab:orange", 2: "tab:cyan", 3: "tab:pink"}


def _outline(ax, mask: np.ndarray, colour: str, label: str) -> None:
    if mask is not None and np.any(mask):
        ax.contour(mask.astype(float), levels=[0.5], colors=[colour], linewidths=1.2)
        ax.plot([], [], color=colour, label=label)  # legend entry (contour sets have none)


IGNORED_RGBA = (1.0, 0.0, 0.0, 0.45)  # pixels a --pseudo-ignore rule leaves out of self-training


def render_search_png(image2d: np.ndarray, trace: ClassTrace, model_mask: np.ndarray | None = None,
                      final_mask: np.ndarray | None = None, title: str = "", dpi: int = 100,
                      ignored: np.ndarray | None = None) -> bytes:
    """Left: image, every searched box (stage colour, later steps more opaque), the model's mask (yellow), the
    kept mask (green) and, with ``ignored``, the slice's pixels that a ``--pseudo-ignore`` rule marks unreliable
    (shaded red). Right: pixels changed vs 1/2/3 masks back, per decoded step, in search order."""
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    fig = Figure(figsize=(9.0, 4.2), dpi=dpi)
    ax_img, ax_curve = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.0, 1.2]})
    ax_img.imshow(np.asarray(image2d, dtype=np.float32), cmap="gray", interpolation="nearest")
    if ignored is not None and np.any(ignored):
        overlay = np.zeros(np.shape(ignored) + (4,), dtype=np.float32)
        overlay[np.asarray(ignored, dtype=bool)] = IGNORED_RGBA
        ax_img.imshow(overlay, interpolation="nearest")
        ax_img.plot([], [], color=IGNORED_RGBA[:3], linewidth=6, alpha=IGNORED_RGBA[3], label="ignored")
    n = max(1, len(trace.steps))
    for i, step in enumerate(trace.steps):
        x0, y0, x1, y1 = step.box
        ax_img.add_patch(_rectangle((x0 - 0.5, y0 - 0.5), x1 - x0 + 1, y1 - y0 + 1,
                                    STAGE_COLOURS.get(step.stage, "white"), 0.25 + 0.75 * (i + 1) / n))
    _outline(ax_img, model_mask, "yellow", "model")
    if trace.refined:  # otherwise the kept mask is the model's
        _outline(ax_img, final_mask, "lime", "kept")
    for stage, colour in STAGE_COLOURS.items():
        if any(s.stage == stage for s in trace.steps):
            ax_img.plot([], [], color=colour, label=f"stage {stage} boxes")
    if ax_img.get_legend_handles_labels()[0]:
        ax_img.legend(loc="lower right", fontsize=6, framealpha=0.6)
    ax_img.set_axis_off()
    ax_img.set_title(title or f"class {trace.cls}", fontsize=9)

    xs = np.arange(len(trace.steps))
    for attr, style, name in (("changed_1", "o-", "vs 1 back"), ("changed_2", "s-", "vs 2 back"),
                              ("changed_3", "^-", "vs 3 back")):
        ys = np.array([np.nan if getattr(s, attr) is None else getattr(s, attr) for s in trace.steps], float)
        if np.isfinite(ys).any():
            ax_curve.plot(xs, ys, style, markersize=3, linewidth=1, label=name)
    for i in range(1, len(trace.steps)):
        if trace.steps[i].stage != trace.steps[i - 1].stage:
            ax_curve.axvline(i - 0.5, color="grey", linestyle=":", linewidth=1)
    ax_curve.set_xlabel("decoded step")
    ax_curve.set_ylabel("changed pixels")
    ax_curve.set_title(f"stage kept: {trace.stage} - {trace.reason}"[:80], fontsize=8)
    if ax_curve.get_legend_handles_labels()[0]:
        ax_curve.legend(fontsize=7)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def _rectangle(xy, width, height, colour, alpha):
    from matplotlib.patches import Rectangle
    return Rectangle(xy, width, height, fill=False, edgecolor=colour, alpha=alpha, linewidth=1.5)
