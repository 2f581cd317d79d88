"""Does the synthetic shift look like what it claims? One patient in the source and the target domain, pictured.

Why: the shift has to look like what it claims (every organ visible against its surroundings in the T2-SPIR-like
source and in the portal-venous CT target), which a table of means cannot show. The anatomy is drawn first from
the generator, so one seed gives the same patient in both domains; the target (at the given severity, default 1:
the CT) is shown through the CT soft-tissue window SAM is fed ([-125, 275] HU), the source through the 0.5-99.5
percentiles of its non-zero voxels (SAM's MR window), each with the organs' outlines, from the liver's dome
(top row's left) to the kidneys' lower poles.

    .venv/bin/python benchmarks/analyses/synthetic_figure.py [--severity 1] [--seed 0] [-o docs/benchmarks/synthetic_domains.png]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from nnunet_dfg.sam.intensity import DEFAULT_CT_WINDOW, sam_image  # noqa: E402
from nnunet_dfg.synthetic import DEFAULT_SHAPE, LABELS, make_case  # noqa: E402

SHAPE = DEFAULT_SHAPE  # the demo's and the benchmark's volumes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--severity", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("-o", type=Path, default=Path("docs/benchmarks/synthetic_domains.png"))
    args = parser.parse_args()
    slices = (32, 26, 20, 14, 8)  # +z is cranial: from the liver's dome down to the kidneys' lower poles
    rows = [("source", 0.0), ("target", args.severity)] + ([("target", 1.0)] if args.severity != 1.0 else [])
    fig, axes = plt.subplots(len(rows), len(slices), figsize=(3.2 * len(slices), 3.3 * len(rows)))
    for row, (domain, severity) in enumerate(rows):
        image, label, _ = make_case(np.random.default_rng(args.seed), domain, severity, SHAPE)
        shown = sam_image(image, "ct" if domain == "target" else "mr")  # what SAM is fed
        for ax, z in zip(axes[row], slices):
            ax.imshow(shown[z], cmap="gray", vmin=0, vmax=1)
            for i, (name, value) in enumerate((k, v) for k, v in LABELS.items() if v):
                if (label[z] == value).any():
                    ax.contour(label[z] == value, levels=[0.5], colors=[f"C{i}"], linewidths=0.8)
            ax.set_title(f"{domain}{f' (severity {severity:g})' if domain == 'target' else ''}, slice {z}",
                         fontsize=9)
            ax.axis("off")
    handles = [plt.Line2D([], [], color=f"C{i}", label=name) for i, name in enumerate(k for k, v in LABELS.items() if v)]
    fig.legend(handles=handles, loc="lower center", ncol=4, fontsize=8)
    fig.suptitle(f"synthetic benchmark, seed {args.seed}: source (T2-SPIR-like MRI, percentile window), target (CT, "
                 f"window {DEFAULT_CT_WINDOW[0]:g}..{DEFAULT_CT_WINDOW[1]:g} HU)", fontsize=9)
    fig.tight_layout(rect=(0, 0.04, 1, 0.96))
    args.o.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.o, dpi=110)
    print(f"written {args.o}")


if __name__ == "__main__":
    main()
