"""The PNG charts of maple's reports, drawn with matplotlib (Agg, no display needed).

Every chart has a title, labelled axes and a legend outside the bars; files are
deterministic (no timestamp or version in the PNG), so the same numbers give the same bytes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

SIZE = (7.2, 3.8)  # inches at DPI: 720 x 380 pixels
DPI = 100
COLOURS = {"train": "#4285f4", "validation": "#fbbc05", "test": "#34a853", "bar": "#4285f4", "chance": "#db4437",
           "curve": "#db4437"}


def _figure(title: str, ylabel: str, scale: float = 1.0) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(SIZE[0] * scale, SIZE[1] * scale), dpi=DPI)
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.spines[["top", "right"]].set_visible(False)
    return fig, ax


def _save(fig: Any, path: Path) -> None:
    from matplotlib import pyplot as plt

    fig.tight_layout()
    fig.savefig(path, format="png", metadata={"Software": None})
    plt.close(fig)


def stacked_bars(counts: Mapping[str, Mapping[str, int]], path: Path, title: str, xlabel: str,
                 ylabel: str) -> None:
    """One bar per key of ``counts`` (x), stacked by its inner keys (each a colour of
    :data:`COLOURS`, in the legend right of the plot), the bar's total above it."""
    fig, ax = _figure(title, ylabel)
    names = list(counts)
    parts = list(next(iter(counts.values()), {}))
    bottom = [0] * len(names)
    for part in parts:
        heights = [counts[n].get(part, 0) for n in names]
        ax.bar(names, heights, bottom=bottom, label=part, color=COLOURS.get(part))
        bottom = [b + h for b, h in zip(bottom, heights)]
    for x, total in enumerate(bottom):
        ax.annotate(str(total), (x, total), textcoords="offset points", xytext=(0, 3), ha="center")
    ax.set_xlabel(xlabel)
    ax.set_ylim(0, max(bottom + [1]) * 1.15)
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    _save(fig, path)


def bar_chart(values: Mapping[str, float | None], path: Path, title: str, ylabel: str,
              counts: Mapping[str, int] | None = None, chance: float | None = None) -> None:
    """One bar per name, values in [0, 1]: each bar's value above it (``n/a`` without
    items), its item count under its name, and a dashed chance line named in the legend."""
    fig, ax = _figure(title, ylabel)
    names = list(values)
    labels = [f"{n}\nn={(counts or {}).get(n, 0)}" if counts is not None else n for n in names]
    heights = [v or 0.0 for v in values.values()]
    ax.bar(labels, heights, color=COLOURS["bar"])
    for x, value in enumerate(values.values()):
        ax.annotate("n/a" if value is None else f"{value:.2f}", (x, value or 0.0), textcoords="offset points",
                    xytext=(0, 3), ha="center")
    if chance is not None:
        ax.axhline(chance, linestyle="--", color=COLOURS["chance"], label=f"chance {chance:.2f}")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.set_ylim(0, 1.1)
    _save(fig, path)


def curve(points: Sequence[tuple[float, float]], path: Path, title: str, xlabel: str, ylabel: str,
          ylim: tuple[float, float] | None = (0.0, 1.0)) -> None:
    """A line of ``(x, y)`` points with ticks on both axes."""
    fig, ax = _figure(title, ylabel)
    if points:
        xs, ys = zip(*points)
        ax.plot(xs, ys, color=COLOURS["curve"], marker="." if len(points) < 40 else None)
    ax.set_xlabel(xlabel)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.grid(alpha=0.3)
    _save(fig, path)


def band_curves(series: Mapping[str, Sequence[tuple[float, float, float, float]]], path: Path, title: str,
                xlabel: str, ylabel: str, chance: float | None = None) -> None:
    """One line per name of ``series``, its points ``(x, mean, low, high)`` with the band
    ``low..high`` shaded (an interval over seeds), names and a dashed chance line in the
    legend right of the plot; y from 0 to 1."""
    fig, ax = _figure(title, ylabel, scale=1.25)
    for name, points in series.items():
        xs, means, lows, highs = zip(*points)
        (line,) = ax.plot(xs, means, marker=".", label=name)
        ax.fill_between(xs, lows, highs, color=line.get_color(), alpha=0.15, linewidth=0)
    if chance is not None:
        ax.axhline(chance, linestyle="--", color="#555555", label=f"chance {chance:.2f}")
    ax.set_xlabel(xlabel)
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    _save(fig, path)
