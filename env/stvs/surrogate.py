"""A light STVS surrogate on numpy (no torch): TVCI by logistic regression and VDSI by ridge
regression, one per TVCI class (VDSI is bimodal: near 0 when stable, near 1 after a collapse),
on standardized features with pairwise products (docs/stvs.md "Surrogate").

The features are the seed's Z_I without the critical-bus voltages: synchronous P per unit bus,
transmission load P and Q per load bus, the T renewables, PCC P and Q per feeder.
Weights ship in ``env/stvs/data/surrogate_t14d2.npz``.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

import numpy as np

from env.stvs.operating_point import StvsOperatingPoint

WEIGHTS_FILE = "surrogate_t14d2.npz"


def feature_vector(grid, op: StvsOperatingPoint) -> np.ndarray:  # noqa: ANN001
    """The surrogate's inputs for ``op`` on ``grid`` (buses from the grid's units and loads)."""
    t = grid.transmission
    return op.features(np.unique(t.gen.bus), np.unique(t.load.bus))


def _expand(z: np.ndarray) -> np.ndarray:
    """[1, z, z_i z_j (i <= j)] of standardized features."""
    z = np.atleast_2d(z)
    iu = np.triu_indices(z.shape[1])
    quad = (z[:, :, None] * z[:, None, :])[:, iu[0], iu[1]]
    return np.hstack([np.ones((z.shape[0], 1)), z, quad])


@dataclass(frozen=True)
class StvsSurrogate:
    """Standardization, logistic weights (TVCI) and ridge weights (VDSI; row c for TVCI class c)."""

    mean: np.ndarray
    scale: np.ndarray
    w_tvci: np.ndarray
    w_vdsi: np.ndarray

    def __post_init__(self) -> None:
        n = self.mean.shape[0]
        n_exp = 1 + n + n * (n + 1) // 2
        if self.scale.shape != (n,) or self.w_tvci.shape != (n_exp,) or self.w_vdsi.shape != (2, n_exp):
            raise ValueError("StvsSurrogate: weight shapes do not match the feature count")
        if np.any(self.scale <= 0):
            raise ValueError("StvsSurrogate: scales must be positive")

    def _phi(self, x: np.ndarray) -> np.ndarray:
        return _expand((np.atleast_2d(x) - self.mean) / self.scale)

    def p_stable(self, x: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-np.clip(self._phi(x) @ self.w_tvci, -50, 50)))

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(TVCI in {0, 1}, VDSI >= 0) per row of ``x``."""
        phi = self._phi(x)
        tv = (1.0 / (1.0 + np.exp(-np.clip(phi @ self.w_tvci, -50, 50))) >= 0.5).astype(int)
        return tv, np.maximum(np.einsum("ij,ij->i", phi, self.w_vdsi[tv]), 0.0)

    @classmethod
    def fit(cls, x: np.ndarray, tvci: np.ndarray, vdsi: np.ndarray, l2: float = 1.0,
            iters: int = 50) -> "StvsSurrogate":
        """Logistic regression by Newton (IRLS) with an L2 penalty; ridge least squares for VDSI."""
        mean, scale = x.mean(axis=0), x.std(axis=0)
        scale = np.where(scale > 1e-9, scale, 1.0)
        phi = _expand((x - mean) / scale)
        reg = l2 * np.eye(phi.shape[1])
        reg[0, 0] = 0.0
        w = np.zeros(phi.shape[1])
        for _ in range(iters):
            p = 1.0 / (1.0 + np.exp(-np.clip(phi @ w, -50, 50)))
            grad = phi.T @ (p - tvci) + reg @ w
            hess = (phi * (p * (1 - p))[:, None]).T @ phi + reg
            step = np.linalg.solve(hess, grad)
            w -= step
            if np.abs(step).max() < 1e-8:
                break
        ridge = lambda rows: np.linalg.solve(phi[rows].T @ phi[rows] + reg, phi[rows].T @ vdsi[rows])  # noqa: E731
        every = np.ones(len(vdsi), dtype=bool)
        w_v = np.vstack([ridge(tvci == c) if np.any(tvci == c) else ridge(every) for c in (0, 1)])
        return cls(mean, scale, w, w_v)

    def save(self, path: str, case: str) -> None:
        np.savez(path, mean=self.mean, scale=self.scale, w_tvci=self.w_tvci, w_vdsi=self.w_vdsi, case=case)

    @classmethod
    def load(cls, path: str | None = None) -> "StvsSurrogate":
        """The shipped weights (default) or a saved file."""
        src = path if path is not None else resources.files("env.stvs").joinpath("data", WEIGHTS_FILE)
        with np.load(src) as d:
            return cls(d["mean"], d["scale"], d["w_tvci"], d["w_vdsi"])


def surrogate_for(grid) -> StvsSurrogate | None:  # noqa: ANN001
    """The shipped surrogate if it was trained on ``grid``'s case, else None (no STVS columns)."""
    src = resources.files("env.stvs").joinpath("data", WEIGHTS_FILE)
    if grid.transmission is None or not src.is_file():
        return None
    with np.load(src) as d:
        if str(d["case"]) != grid.name:
            return None
    return StvsSurrogate.load()


def assess(grid, surrogate: StvsSurrogate, outcome, model) -> tuple[int, float]:  # noqa: ANN001
    """The surrogate's (TVCI, VDSI) at one played step of ``grid``."""
    from env.stvs.operating_point import operating_point_from_outcome

    tv, vd = surrogate.predict(feature_vector(grid, operating_point_from_outcome(grid, model, outcome)))
    return int(tv[0]), float(vd[0])


def split_indices(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A 6:2:2 train / validation / test split of ``n`` samples (seed 002 §2.2)."""
    idx = np.random.default_rng(seed).permutation(n)
    a, b = int(0.6 * n), int(0.8 * n)
    return idx[:a], idx[a:b], idx[b:]


def table4(model: StvsSurrogate, x: np.ndarray, tvci_true: np.ndarray, vdsi_true: np.ndarray):  # noqa: ANN201
    """Seed 002 Table 4 on a test set: the time-domain total, the surrogate's absolute error and
    the relative error (aggregated over the scenarios, as the seed does) for TVCI and VDSI."""
    import pandas as pd

    tv, vd = model.predict(x)
    mis = int((tv != tvci_true).sum())
    vd_abs = float(np.abs(vd - vdsi_true).sum())
    vd_tot = float(np.abs(vdsi_true).sum())
    return pd.DataFrame({
        "time_domain_total": [float(len(tvci_true) - tvci_true.sum()), vd_tot],
        "absolute_error": [float(mis), vd_abs],
        "relative_error_pct": [100.0 * mis / len(tvci_true), 100.0 * vd_abs / max(vd_tot, 1e-12)],
        "n_test": [len(tvci_true)] * 2}, index=["TVCI (unstable count; misclassified)", "VDSI"])


def instability_gradient(grid, surrogate: StvsSurrogate, op: StvsOperatingPoint  # noqa: ANN001
                         ) -> tuple[float, np.ndarray, np.ndarray]:
    """The surrogate's probability of instability ``1 - p_stable`` at ``op`` and its gradient
    (central differences, 1 MW) with respect to each unit's P (per unit of ``grid.transmission.gen``)
    and each feeder's PCC P: the linear STVS risk of ``flex_coordinated`` (docs/stvs.md)."""
    t = grid.transmission
    gen_buses = np.unique(t.gen.bus)
    n_load = np.unique(t.load.bus).size
    x0 = feature_vector(grid, op)
    pcc0 = len(gen_buses) + 2 * n_load + 1
    idx = np.r_[np.arange(len(gen_buses)), pcc0 + np.arange(len(op.pcc_bus))]
    h = 1.0
    xs = np.repeat(x0[None, :], 2 * idx.size, axis=0)
    xs[np.arange(idx.size), idx] += h
    xs[idx.size + np.arange(idx.size), idx] -= h
    p = 1.0 - surrogate.p_stable(xs)
    grad = (p[:idx.size] - p[idx.size:]) / (2 * h)
    g_bus = dict(zip(gen_buses.tolist(), grad[:len(gen_buses)]))
    g_unit = np.array([g_bus[int(b)] for b in t.gen.bus])
    return float(1.0 - surrogate.p_stable(x0)[0]), g_unit, grad[len(gen_buses):]
