"""Figures with a target and a verdict, for ``make bench`` (see ``bench/all.py``).

Every benchmark computes its own figures and calls :func:`record` for the ones that have a
target: it prints a ``VERDICT`` line and, when ``BENCH_SUMMARY`` names a file, appends the
figure to it as one JSON line for the table ``bench/all.py`` prints.
"""

from __future__ import annotations

import json
import os
import statistics
from collections.abc import Sequence


def record(bench: str, figure: str, best: float, median: float, unit: str, target: str,
           met: bool) -> None:
    """Print and store one figure (``best``/``median`` of the runs; verdict on ``median``)."""
    verdict = "met" if met else "NOT met"
    print(f"VERDICT {figure}: best {show(best, unit)}, median {show(median, unit)}; "
          f"target {target}: {verdict}")
    path = os.environ.get("BENCH_SUMMARY")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"bench": bench, "figure": figure, "best": best,
                                "median": median, "unit": unit, "target": target,
                                "met": met}) + "\n")


def show(value: float, unit: str) -> str:
    """``0.0733 s``, ``2.1x``."""
    return f"{value:.3g}{unit}" if unit == "x" else f"{value:.3g} {unit}"


def best_median(values: Sequence[float]) -> tuple[float, float]:
    """Smallest and median value."""
    return min(values), statistics.median(values)
