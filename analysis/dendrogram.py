"""Dendrograms of class prototypes (VCA paper, Figure 4): pairwise distances, agglomerative clustering
with scipy, and a figure whose leaf labels tell training and test unknowns apart by colour; the
distance matrix is saved beside it as CSV."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy.cluster import hierarchy  # noqa: E402
from scipy.spatial.distance import pdist, squareform  # noqa: E402

from analysis.prototypes import Prototypes  # noqa: E402
from vca_data.io import atomic_path, atomic_write_text  # noqa: E402

METRICS = ("euclidean", "cosine")
METHODS = ("average", "single", "complete", "weighted", "ward")
SPLIT_COLORS = {"train": "#1f5fbf", "test": "#d62728", "known": "#555555"}
FIGURE_FORMATS = (".png", ".svg", ".pdf")


def distance_matrix(vectors: np.ndarray, metric: str = "euclidean") -> np.ndarray:
    """Square matrix of pairwise distances between prototypes (rows of `vectors`)."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    vectors = np.asarray(vectors, dtype=np.float64)
    if vectors.ndim != 2 or len(vectors) < 2:
        raise ValueError(f"need at least two prototypes as a (K, C) array, got shape {vectors.shape}")
    return squareform(pdist(vectors, metric=metric), checks=False)


def cluster(distances: np.ndarray, method: str = "average") -> np.ndarray:
    """scipy linkage matrix of a square distance matrix. Ward is only defined for euclidean distances."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    condensed = squareform(np.asarray(distances, dtype=np.float64), checks=False)
    return hierarchy.linkage(condensed, method=method)


def write_distance_csv(path: str | Path, names: list[str], distances: np.ndarray) -> Path:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["class", *names])
    for name, row in zip(names, distances):
        writer.writerow([name, *(f"{d:.6g}" for d in row)])
    atomic_write_text(path, buf.getvalue())
    return Path(path)


def plot_dendrogram(protos: Prototypes, out: str | Path, metric: str = "euclidean", method: str = "average",
                    title: str | None = None) -> tuple[Path, Path, np.ndarray]:
    """Draw the dendrogram of `protos` to `out` (.png, .svg or .pdf) and the distance matrix to
    `out` with suffix .csv. Returns both paths and the linkage matrix."""
    out = Path(out)
    if out.suffix.lower() not in FIGURE_FORMATS:
        raise ValueError(f"{out}: figure format must be one of {FIGURE_FORMATS}")
    distances = distance_matrix(protos.vectors, metric)
    links = cluster(distances, method)
    labels = [f"{n} ({s})" if s != "known" else n for n, s in zip(protos.names, protos.splits)]
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(labels) + 1.6), dpi=120)
    hierarchy.dendrogram(links, labels=labels, orientation="right", ax=ax, color_threshold=0,
                         above_threshold_color="#444444")
    colour_of = {lab: SPLIT_COLORS.get(s, "#000000") for lab, s in zip(labels, protos.splits)}
    for tick in ax.get_yticklabels():
        tick.set_color(colour_of.get(tick.get_text(), "#000000"))
    ax.set_xlabel(f"{metric} distance ({method} linkage)")
    ax.set_title(title or "Dendrogram of unknown-object prototypes")
    handles = [plt.Line2D([], [], color=c, lw=6, label=s) for s, c in SPLIT_COLORS.items() if s in protos.splits]
    ax.legend(handles=handles, loc="lower right", fontsize=8, title="split")
    fig.tight_layout()
    with atomic_path(out, suffix=out.suffix) as tmp:
        fig.savefig(tmp, format=out.suffix[1:].lower())
    plt.close(fig)
    csv_path = write_distance_csv(out.with_suffix(".csv"), protos.names, distances)
    return out, csv_path, links
