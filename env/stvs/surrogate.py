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

from env.stvs.indices import EPS_DEVIATION
from env.stvs.operating_point import StvsOperatingPoint

WEIGHTS_FILE = "surrogate_t14d2.npz"
BAND_WEIGHTS_FILE = "surrogate_band_t14d2.npz"   # the stress case's band VDSI (docs/stvs.md "Stress case")


def feature_vector(grid, op: StvsOperatingPoint, der_per_bus: bool = False) -> np.ndarray:  # noqa: ANN001
    """The surrogate's inputs for ``op`` on ``grid`` (buses from the grid's units and loads;
    the T renewables summed, or per renewable bus with ``der_per_bus``)."""
    t = grid.transmission
    return op.features(np.unique(t.gen.bus), np.unique(t.load.bus), np.unique(t.der.bus) if der_per_bus else None)


def _expand(z: np.ndarray) -> np.ndarray:
    """[1, z, z_i z_j (i <= j)] of standardized features."""
    z = np.atleast_2d(z)
    iu = np.triu_indices(z.shape[1])
    quad = (z[:, :, None] * z[:, None, :])[:, iu[0], iu[1]]
    return np.hstack([np.ones((z.shape[0], 1)), z, quad])


@dataclass(frozen=True)
class StvsSurrogate:
    """Standardization, logistic weights (TVCI) and ridge weights (VDSI; row c for TVCI class c).

    ``der_per_bus``: the T renewables are features per bus (else summed); ``eps``: the deviation
    threshold of the VDSI it was trained on (0.2, the seed's; 0.05, the band of the stress case)."""

    mean: np.ndarray
    scale: np.ndarray
    w_tvci: np.ndarray
    w_vdsi: np.ndarray
    der_per_bus: bool = False
    eps: float = EPS_DEVIATION

    def __post_init__(self) -> None:
        n = self.mean.shape[0]
        n_exp = 1 + n + n * (n + 1) // 2
        if self.scale.shape != (n,) or self.w_tvci.shape != (n_exp,) or self.w_vdsi.shape != (2, n_exp):
            raise ValueError("StvsSurrogate: weight shapes do not match the feature count")
        if np.any(self.scale <= 0):
            raise ValueError("StvsSurrogate: scales must be positive")

    def features(self, grid, op: StvsOperatingPoint) -> np.ndarray:  # noqa: ANN001
        """This surrogate's inputs for ``op`` (:func:`feature_vector` in its layout)."""
        return feature_vector(grid, op, self.der_per_bus)

    def _phi(self, x: np.ndarray) -> np.ndarray:
        return _expand((np.atleast_2d(x) - self.mean) / self.scale)

    def p_stable(self, x: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-np.clip(self._phi(x) @ self.w_tvci, -50, 50)))

    def recovered_vdsi(self, x: np.ndarray) -> np.ndarray:
        """The stable class's VDSI regressor per row: the post-fault deviation if the system recovers
        (smooth in ``x``; a collapse is the instability risk's part)."""
        return np.maximum(self._phi(x) @ self.w_vdsi[1], 0.0)

    def risk(self, x: np.ndarray, quantity: str) -> np.ndarray:
        """``"instability"``: ``1 - p_stable``; ``"vdsi"``: :meth:`recovered_vdsi`; per row of ``x``."""
        if quantity == "instability":
            return 1.0 - self.p_stable(x)
        if quantity == "vdsi":
            return self.recovered_vdsi(x)
        raise ValueError(f"StvsSurrogate.risk: quantity must be 'instability' or 'vdsi', got {quantity!r}")

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(TVCI in {0, 1}, VDSI >= 0) per row of ``x``."""
        phi = self._phi(x)
        tv = (1.0 / (1.0 + np.exp(-np.clip(phi @ self.w_tvci, -50, 50))) >= 0.5).astype(int)
        return tv, np.maximum(np.einsum("ij,ij->i", phi, self.w_vdsi[tv]), 0.0)

    @classmethod
    def fit(cls, x: np.ndarray, tvci: np.ndarray, vdsi: np.ndarray, l2: float = 1.0,
            iters: int = 50, der_per_bus: bool = False, eps: float = EPS_DEVIATION) -> "StvsSurrogate":
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
        return cls(mean, scale, w, w_v, der_per_bus, eps)

    def save(self, path: str, case: str) -> None:
        np.savez(path, mean=self.mean, scale=self.scale, w_tvci=self.w_tvci, w_vdsi=self.w_vdsi, case=case,
                 der_per_bus=self.der_per_bus, eps=self.eps)

    @classmethod
    def load(cls, path: str | None = None, band: bool = False) -> "StvsSurrogate":
        """The shipped weights (default; ``band``: the stress case's band-VDSI surrogate) or a saved file."""
        src = path if path is not None else resources.files("env.stvs").joinpath(
            "data", BAND_WEIGHTS_FILE if band else WEIGHTS_FILE)
        with np.load(src) as d:
            extra = {k: t(d[k]) for k, t in (("der_per_bus", bool), ("eps", float)) if k in d}
            return cls(d["mean"], d["scale"], d["w_tvci"], d["w_vdsi"], **extra)


def surrogate_for(grid, band: bool = False) -> StvsSurrogate | None:  # noqa: ANN001
    """The shipped surrogate (``band``: the band-VDSI one) if it was trained on ``grid``'s case, else None."""
    src = resources.files("env.stvs").joinpath("data", BAND_WEIGHTS_FILE if band else WEIGHTS_FILE)
    if grid.transmission is None or not src.is_file():
        return None
    with np.load(src) as d:
        if str(d["case"]) != grid.name:
            return None
    return StvsSurrogate.load(band=band)


def assess(grid, surrogate: StvsSurrogate, outcome, model) -> tuple[int, float]:  # noqa: ANN001
    """The surrogate's (TVCI, VDSI) at one played step of ``grid``."""
    from env.stvs.operating_point import operating_point_from_outcome

    tv, vd = surrogate.predict(surrogate.features(grid, operating_point_from_outcome(grid, model, outcome)))
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


def _feature_layout(grid, surrogate: StvsSurrogate, op: StvsOperatingPoint) -> tuple[np.ndarray, np.ndarray]:  # noqa: ANN001
    """Feature columns of each unit's bus (per ``grid.transmission.gen``), each PCC P and each T
    renewable's bus (per ``grid.transmission.der``; the summed column when not per bus)."""
    t = grid.transmission
    gen_buses, der_buses = np.unique(t.gen.bus), np.unique(t.der.bus)
    der0 = len(gen_buses) + 2 * np.unique(t.load.bus).size
    pcc0 = der0 + (der_buses.size if surrogate.der_per_bus else 1)
    unit_col = np.searchsorted(gen_buses, t.gen.bus)
    der_col = der0 + (np.searchsorted(der_buses, t.der.bus) if surrogate.der_per_bus else np.zeros(len(t.der), int))
    return unit_col, pcc0 + np.arange(len(op.pcc_bus)), der_col


def risk_gradient(grid, surrogate: StvsSurrogate, op: StvsOperatingPoint, quantity: str = "instability"  # noqa: ANN001
                  ) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """The surrogate's risk at ``op`` and its gradient (central differences, 1 MW) with respect to
    what a schedule sets: each unit's P (per unit of ``grid.transmission.gen``), each feeder's PCC P
    and each transmission renewable's P (per unit of ``grid.transmission.der``; a summed feature
    gives every unit the same gradient). ``quantity``: ``"instability"`` = ``1 - p_stable``,
    ``"vdsi"`` = the VDSI if it recovers (:meth:`StvsSurrogate.risk`). The linear STVS risk of
    ``flex_coordinated`` (docs/stvs.md)."""
    if quantity not in ("instability", "vdsi"):
        raise ValueError(f"risk_gradient: quantity must be 'instability' or 'vdsi', got {quantity!r}")
    unit_col, pcc_col, der_col = _feature_layout(grid, surrogate, op)
    x0 = surrogate.features(grid, op)
    idx = np.unique(np.r_[unit_col, pcc_col, der_col])
    h = 1.0
    xs = np.repeat(x0[None, :], 2 * idx.size + 1, axis=0)
    xs[np.arange(idx.size), idx] += h
    xs[idx.size + np.arange(idx.size), idx] -= h
    r = surrogate.risk(xs, quantity)
    g = dict(zip(idx.tolist(), (r[:idx.size] - r[idx.size:2 * idx.size]) / (2 * h)))
    pick = lambda cols: np.array([g[int(c)] for c in cols])  # noqa: E731
    return float(r[-1]), pick(unit_col), pick(pcc_col), pick(der_col)


def lower_convex_tangents(p: np.ndarray, r: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Intercepts and slopes ``(a, b)`` (``n`` each) of the lower convex envelope of the points
    ``(p_i, r_i)`` (``p`` increasing): ``max_j a_j + b_j p`` is the largest convex function below
    them (segments repeated to fill ``n``; ``n >= len(p) - 1``)."""
    hull: list[int] = []
    for i in range(len(p)):                       # Andrew's monotone chain, lower hull
        while len(hull) >= 2 and ((p[hull[-1]] - p[hull[-2]]) * (r[i] - r[hull[-2]])
                                  - (r[hull[-1]] - r[hull[-2]]) * (p[i] - p[hull[-2]])) <= 0:
            hull.pop()
        hull.append(i)
    b = np.diff(r[hull]) / np.diff(p[hull])
    a = r[hull[:-1]] - b * p[hull[:-1]]
    reps = -(-n // len(b))
    return np.tile(a, reps)[:n], np.tile(b, reps)[:n]


def der_risk_tangents(grid, surrogate: StvsSurrogate, op: StvsOperatingPoint, prices: dict[str, float],  # noqa: ANN001
                      p_max_mw: np.ndarray, n_points: int = 9) -> tuple[np.ndarray, np.ndarray]:
    """The monetized risk ``sum_q price_q * risk_q`` as a convex piecewise-linear function of each
    transmission renewable's output, the rest of ``op`` fixed: the surrogate evaluated at
    ``n_points`` outputs in ``[0, p_max_mw]`` per renewable, and the lower convex envelope's
    tangents ``(a, b)``, each (n_der, n_points - 1), per unit of ``grid.transmission.der``
    (docs/stvs.md "Stress case"). A linear gradient gives a schedule a vertex (all output at the
    site of lower marginal risk); the envelope keeps the risk's curvature along each site."""
    _, _, der_col = _feature_layout(grid, surrogate, op)
    x0 = surrogate.features(grid, op)
    der_now = op.der_p_mw[grid.transmission.der.bus]
    a = np.zeros((len(der_col), n_points - 1))
    b = np.zeros_like(a)
    for d, col in enumerate(der_col):
        p = np.linspace(0.0, max(float(p_max_mw[d]), 1.0), n_points)
        xs = np.repeat(x0[None, :], n_points, axis=0)
        xs[:, col] += p - der_now[d]              # this unit moves, the rest of op stays
        r = sum(price * surrogate.risk(xs, q) for q, price in prices.items() if price > 0)
        a[d], b[d] = lower_convex_tangents(p, np.asarray(r, dtype=float) + np.zeros(n_points), n_points - 1)
    return a, b
