"""Shared helpers for the benchmark scripts: one BLAS thread, median-of-runs timing."""

from __future__ import annotations

import os
import sys
from pathlib import Path

# Scripts here are run as ``python benchmarks/x.py``, which puts this folder first on
# sys.path, where ``benchmarks/scenarios.py`` would shadow the ``scenarios`` package.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

import numpy as np  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

threadpool_limits(1)


def median_time(fn: Callable[[], object], runs: int = 7, inner: int = 1) -> float:
    """Median wall time of ``fn`` in seconds over ``runs`` runs of ``inner`` calls each."""
    fn()  # warm-up
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        times.append((time.perf_counter() - t0) / inner)
    return float(np.median(times))


def report(label: str, seconds: float, unit: str = "ms", note: str = "") -> None:
    """Print one benchmark line: ``label  value unit  note``."""
    scale = {"s": 1.0, "ms": 1e3, "us": 1e6}[unit]
    print(f"{label:<52s} {seconds * scale:12.3f} {unit:<3s} {note}")
