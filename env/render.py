"""``render_mode="rgb_array"`` of :class:`env.gym_env.TDGridEnv`: the day so far as an image.

:class:`DayHistory` keeps the played steps' outcomes (a reference per step: cheap enough to
record while training); :func:`render_day` draws them with matplotlib's Agg canvas
(no display needed) and returns an ``(height, width, 3)`` ``uint8`` array, as Gymnasium's
``rgb_array`` convention asks. Two panels share the time axis (hours):

* top: each feeder's voltage envelope (min and max bus voltage, p.u.) and the grid's voltage
  limits (the loosest ``vmin_pu`` / ``vmax_pu`` of its buses; docs/math.md §10 prices beyond them);
* bottom: the dispatch (MW): grid import, EV charging, storage (+ = charging), renewables used.

The image is of the steps played since the last ``reset``; before the first step the axes
are empty.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["DayHistory", "render_day"]

_SIZE_IN = (8.0, 5.0)
_DPI = 80


@dataclass
class DayHistory:
    """The step outcomes of the day so far (references only: recording costs one list append
    per step; the numbers are read when drawing)."""

    outcomes: list = field(default_factory=list)

    def record(self, outcome: object) -> None:
        """Append a :class:`env.simulator.StepOutcome`."""
        self.outcomes.append(outcome)

    def __len__(self) -> int:
        return len(self.outcomes)


def render_day(history: DayHistory, title: str, v_limits_pu: tuple[float, float]) -> np.ndarray:
    """The day so far as an ``(H, W, 3)`` ``uint8`` RGB image (see the module docstring)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=_SIZE_IN, dpi=_DPI)
    canvas = FigureCanvasAgg(fig)
    ax_v, ax_p = fig.subplots(2, 1, sharex=True)
    steps = history.outcomes
    if steps:
        t = np.array([o.time_h + o.dt_h for o in steps])      # time at each step's end
        v_lo, v_hi = np.vstack([o.v_min_pu for o in steps]), np.vstack([o.v_max_pu for o in steps])
        for k in range(v_lo.shape[1]):
            line, = ax_v.plot(t, v_lo[:, k], lw=1.0, label=f"feeder {k}" if v_lo.shape[1] > 1 else "min / max")
            ax_v.plot(t, v_hi[:, k], lw=1.0, color=line.get_color())
        for name, values in (("import", [o.import_mw for o in steps]), ("EV", [o.ev_p_mw.sum() for o in steps]),
                             ("storage", [o.storage_p_mw.sum() for o in steps]),
                             ("renewables used", [o.der_used_mw.sum() for o in steps])):
            ax_p.plot(t, values, lw=1.0, label=name)
        ax_v.legend(fontsize=7, loc="lower left")
        ax_p.legend(fontsize=7, loc="upper left", ncol=4)
    for v in v_limits_pu:
        ax_v.axhline(v, color="k", lw=0.6, ls="--")
    ax_v.set_ylabel("voltage (p.u.)")
    ax_p.set_ylabel("MW")
    ax_p.set_xlabel("time (h)")
    ax_p.set_xlim(0, 24)
    ax_v.set_title(title, fontsize=9)
    fig.tight_layout()
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()
