"""What a policy may know at step ``t``: the typed :class:`Observation` and its gym encoding.

Information structure (non-anticipative): at step ``t`` (the interval
``[t dt, (t + 1) dt)`` about to be dispatched) a policy sees

* the clock (step, time of day, step length);
* the *nowcast* of step ``t``: realized loads, PV and wind availability of the step
  about to be dispatched (nowcast = realized: the env treats the short-term
  forecast of the current interval as exact; all later steps are uncertain and
  known only through ``forecast``);
* the state: EV station bounds at ``t`` (:class:`env.evcs.EVCSBounds`), storage
  energy, thermal setpoints of the previous step;
* the last step's physics: voltages (full vectors and min/max per feeder),
  transmission line loadings, and the TSO's boundary call of step ``t - 1``
  (the call of step ``t`` is revealed only after dispatch: it is what the cleared
  boundary reserves must cover);
* prices now and for the rest of the day (the tariff is known);
* ``forecast``: the scenario layer's non-anticipative forecast at ``t`` (point
  forecast and ``sample(n, rng)`` of the future), ``None`` when unavailable.

:class:`ObservationEncoder` flattens an observation into the gymnasium ``Dict`` of
named float32 ``Box`` arrays that Stable-Baselines3's ``MultiInputPolicy`` accepts.
Keys whose array would be empty on a grid (e.g. ``"pv"`` on a case without PV) are
left out of the space.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from gymnasium import spaces

from env.evcs import EVCSBounds

__all__ = ["Observation", "ObservationEncoder", "ObservationSpec"]


@dataclass(frozen=True)
class Observation:
    """Typed view of what a policy may know at step ``t`` (see the module docstring).

    Attributes:
        step: ``t``, 0-based; ``n_steps`` steps per day.
        time_h: clock time at the start of the step (h); ``dt_h`` the step length (h).
        load_p_mw, load_q_mvar: (n_load,) realized demand of step ``t`` in ``Layout`` order.
        pv_pu, wind_pu: (n_pv,), (n_wind,) availability of step ``t`` (fraction of rating),
            ``Layout`` order.
        der_avail_mw: (n_der,) available output of every DER in dispatch order
            (feeders in order, then transmission wind farms).
        ev: station bounds at ``t`` (kW / kWh per station, dispatch order).
        storage_e_mwh: (n_storage,) energy at the start of the step.
        thermal_p_last_mw: (n_gen,) setpoints of step ``t - 1`` (the initial state at ``t = 0``).
        v_pu: per feeder, |V| of every bus after the last step (an initial power flow at ``t = 0``).
        v_min_pu, v_max_pu: (n_feeder,) extreme voltages of ``v_pu``.
        line_loading: (n_line,) |flow| / rating of the transmission lines after the last step.
        price_buy_per_mwh: purchase price now; ``price_ahead_per_mwh`` (n_steps - t,) the
            purchase price of every remaining step (now included); ``price_sell_per_mwh``.
        tso_requirement_last_mw: (n_boundary,) the TSO's call of step ``t - 1`` (0 at ``t = 0``).
        net_load_forecast_mw: (n_rows, h) point forecast of net load (load - renewable
            availability) per feeder (+ one transmission row on T-D cases) for steps
            ``t .. t + h - 1`` (step ``t`` = nowcast; past the day's end: repeated last step).
        q_comp_last_mvar: (n_comp,) compensator setpoints applied in step ``t - 1`` (0 at ``t = 0``).
        forecast: the scenario layer's ``Forecast`` for steps ``t .. T-1``, conditioned on steps
            ``< t`` (``None`` at the day's end). Returned by ``forecast_fn`` (the simulator's
            builds it on first call and keeps it: it costs ~0.2 ms, so the gym loop does not pay
            for it unless a policy asks).
    """

    step: int
    n_steps: int
    time_h: float
    dt_h: float
    load_p_mw: np.ndarray
    load_q_mvar: np.ndarray
    pv_pu: np.ndarray
    wind_pu: np.ndarray
    der_avail_mw: np.ndarray
    ev: EVCSBounds | None
    storage_e_mwh: np.ndarray
    thermal_p_last_mw: np.ndarray
    v_pu: tuple[np.ndarray, ...]
    v_min_pu: np.ndarray
    v_max_pu: np.ndarray
    line_loading: np.ndarray
    price_buy_per_mwh: float
    price_ahead_per_mwh: np.ndarray
    price_sell_per_mwh: float
    tso_requirement_last_mw: np.ndarray
    net_load_forecast_mw: np.ndarray
    q_comp_last_mvar: np.ndarray = field(default_factory=lambda: np.zeros(0))
    forecast_fn: Callable[[], Any] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not 0 <= self.step <= self.n_steps:
            raise ValueError(f"Observation.step: {self.step} outside 0..{self.n_steps}")
        if len(self.v_pu) != self.v_min_pu.shape[0]:
            raise ValueError("Observation.v_pu: one voltage vector per feeder required")
        for name in ("load_p_mw", "load_q_mvar", "pv_pu", "wind_pu", "der_avail_mw", "storage_e_mwh",
                     "thermal_p_last_mw", "v_min_pu", "v_max_pu", "line_loading", "price_ahead_per_mwh",
                     "tso_requirement_last_mw", "net_load_forecast_mw"):
            arr = getattr(self, name)
            if not isinstance(arr, np.ndarray):
                raise ValueError(f"Observation.{name}: expected a numpy array, got {type(arr).__name__}")
            if arr.flags.writeable:
                arr = arr.view()
                arr.flags.writeable = False
                object.__setattr__(self, name, arr)

    @property
    def forecast(self) -> Any:
        """The scenario layer's ``Forecast`` (``forecast_fn()``; None if unavailable)."""
        return self.forecast_fn() if self.forecast_fn is not None else None

    @property
    def is_terminal(self) -> bool:
        """True once the day is over (``step == n_steps``); then ``ev`` is ``None``."""
        return self.step >= self.n_steps


@dataclass(frozen=True)
class ObservationSpec:
    """Sizes and normalizers of a grid's gym observation (constant over episodes).

    Attributes:
        n_steps, dt_h: steps per day and step length.
        load_peak_mw: (n_load,) peak load (normalizer of ``"load"``).
        n_pv, n_wind: units per kind.
        evcs_cap_kw: (n_evcs,) ports x charger rating; ``evcs_ports`` ports;
            ``evcs_energy_kwh``: ports x battery capacity (normalizer of the energy still needed).
        storage_e_max_mwh: (n_storage,).
        thermal_p_max_mw: (n_gen,).
        n_bus_feeders: total feeder buses (length of ``"voltage"``).
        n_line: transmission lines (T-D only).
        boundary_cap_mw: (n_boundary,) rated EV power per feeder (normalizer of ``"boundary"``).
        forecast_rows_peak_mw: (n_rows,) peak load per forecast row (normalizer of ``"forecast"``).
        forecast_steps: columns of ``"forecast"``.
        price_hourly_per_mwh: (24,) purchase price by hour; ``price_max`` its maximum.
    """

    n_steps: int
    dt_h: float
    load_peak_mw: np.ndarray
    n_pv: int
    n_wind: int
    evcs_cap_kw: np.ndarray
    evcs_ports: np.ndarray
    evcs_energy_kwh: np.ndarray
    storage_e_max_mwh: np.ndarray
    thermal_p_max_mw: np.ndarray
    n_bus_feeders: int
    n_line: int
    boundary_cap_mw: np.ndarray
    forecast_rows_peak_mw: np.ndarray
    forecast_steps: int
    price_hourly_per_mwh: np.ndarray

    def __post_init__(self) -> None:
        if self.n_steps < 1 or not self.dt_h > 0 or self.forecast_steps < 1:
            raise ValueError("ObservationSpec: need n_steps >= 1, dt_h > 0, forecast_steps >= 1")
        if self.price_hourly_per_mwh.shape != (24,):
            raise ValueError("ObservationSpec.price_hourly_per_mwh: expected 24 hourly prices")


# (key, low, high): value ranges of the normalized arrays (values are clipped into them)
_VOLTAGE_BAND = 0.05  # "voltage" = (|V| - 1) / 0.05: +-1 at the usual +-5 % limits
_ZERO = np.zeros(())  # 0-d zero: ufuncs take it faster than a Python float
_RANGES = {
    "time": (-1.0, 1.0), "load": (0.0, 5.0), "pv": (0.0, 1.0), "wind": (0.0, 1.0), "ev": (0.0, 1.0),
    "storage_soc": (0.0, 1.0), "voltage": (-20.0, 20.0), "price": (0.0, 1.0), "forecast": (-10.0, 10.0),
    "thermal": (0.0, 1.0), "line_loading": (0.0, 10.0), "boundary": (-10.0, 10.0),
}


class ObservationEncoder:
    """Flatten :class:`Observation` into a ``gymnasium.spaces.Dict`` of float32 boxes.

    Keys (present when non-empty):

    * ``"time"`` (3,): ``sin(2 pi h/24)``, ``cos(2 pi h/24)``, ``t / n_steps``.
    * ``"load"`` (n_load,): realized load / peak load.
    * ``"pv"`` (n_pv,), ``"wind"`` (n_wind,): availability (fraction of rating).
    * ``"ev"`` (n_evcs, 4): per station ``p_min / cap``, ``p_max / cap``,
      ``n_connected / ports``, ``max(0, e_target - e) / (ports x battery)`` with
      ``cap = ports x charger kW``.
    * ``"storage_soc"`` (n_storage,): ``e / e_max``.
    * ``"voltage"`` (n_bus_feeders,): ``(|V| - 1) / 0.05`` of every feeder bus after the last step.
    * ``"price"`` (24,): purchase price of the next 24 clock hours (this hour first) / max price.
    * ``"forecast"`` (n_rows, h): point forecast of net load per feeder (+ transmission row on
      T-D cases) for the next ``h`` steps / that row's peak load.
    * T-D only: ``"thermal"`` (n_gen,) last setpoint / p_max; ``"line_loading"`` (n_line,);
      ``"boundary"`` (n_boundary,) last TSO call / the feeder's rated EV power.

    All values are clipped into the boxes' bounds (so every observation lies in the space).
    """

    def __init__(self, spec: ObservationSpec) -> None:
        self.spec = spec
        shapes = self._shapes(spec)
        self.keys: tuple[str, ...] = tuple(k for k, shape in shapes.items() if int(np.prod(shape)) > 0)
        self.space = spaces.Dict({
            k: spaces.Box(low=np.float32(_RANGES[k][0]), high=np.float32(_RANGES[k][1]),
                          shape=shapes[k], dtype=np.float32)
            for k in self.keys
        })
        self._slices: list[tuple[str, slice, tuple[int, ...]]] = []
        lo, hi, start = [], [], 0
        for k in self.keys:
            n = int(np.prod(shapes[k]))
            self._slices.append((k, slice(start, start + n), shapes[k]))
            lo.append(np.full(n, _RANGES[k][0]))
            hi.append(np.full(n, _RANGES[k][1]))
            start += n
        self._flat_lo, self._flat_hi = np.concatenate(lo), np.concatenate(hi)
        self._n_flat = start
        ports = np.maximum(spec.evcs_ports.astype(float), 1.0)
        self._ev_scale = np.stack([1.0 / np.maximum(spec.evcs_cap_kw, 1e-9),
                                   1.0 / np.maximum(spec.evcs_cap_kw, 1e-9),
                                   1.0 / ports, 1.0 / np.maximum(spec.evcs_energy_kwh, 1e-9)], axis=1)
        price = spec.price_hourly_per_mwh / max(float(spec.price_hourly_per_mwh.max()), 1e-9)
        self._price_from_hour = np.stack([np.roll(price, -h) for h in range(24)])  # row h: hours h, h+1, ...
        self._inv_load = 1.0 / np.maximum(spec.load_peak_mw, 1e-9)
        self._inv_rows = 1.0 / np.maximum(spec.forecast_rows_peak_mw, 1e-9)
        self._inv_soc = 1.0 / np.maximum(spec.storage_e_max_mwh, 1e-12)
        self._inv_gen = 1.0 / np.maximum(spec.thermal_p_max_mw, 1e-9)
        self._inv_boundary = 1.0 / np.maximum(spec.boundary_cap_mw, 1e-9)
        self._fc_shape = shapes["forecast"]
        self._build_fast(shapes)

    def _build_fast(self, shapes: dict[str, tuple[int, ...]]) -> None:
        """Index data of :meth:`encode`'s fast path.

        The raw values are concatenated key by key (the ``"ev"`` columns one after the other),
        shifted (``"voltage"``: - 1) and scaled by one vector, so each value gets the same
        arithmetic as in :meth:`_fill`; a permutation interleaves the ``"ev"`` columns.
        """
        scale, pieces = [], {}
        for k in self.keys:
            n = int(np.prod(shapes[k]))
            if k == "ev":
                sc = self._ev_scale.T.ravel()            # column blocks: p_min, p_max, n, need
            elif k == "load":
                sc = self._inv_load
            elif k == "storage_soc":
                sc = self._inv_soc
            elif k == "voltage":
                sc = np.full(n, 1.0 / _VOLTAGE_BAND)
            elif k == "forecast":
                sc = np.repeat(self._inv_rows, shapes[k][1])
            elif k == "thermal":
                sc = self._inv_gen
            elif k == "boundary":
                sc = self._inv_boundary
            else:                                        # time, pv, wind, price, line_loading: as is
                sc = np.ones(n)
            scale.append(np.asarray(sc, dtype=float).reshape(n))
            pieces[k] = n
        self._scale = np.concatenate(scale)
        self._shift = np.zeros(self._n_flat)             # "voltage": |V| - 1 (x - 0 = x elsewhere)
        perm = np.arange(self._n_flat)
        if "ev" in pieces:
            sl = dict((k, s) for k, s, _ in self._slices)["ev"]
            n_evcs = (sl.stop - sl.start) // 4
            block = np.arange(sl.start, sl.stop).reshape(4, n_evcs)   # raw index of column c, station i
            perm[sl] = block.T.ravel()
            self._ev_zeros = np.zeros(4 * n_evcs)
        self._perm = perm if "ev" in pieces else None
        volt_sl = dict((k, s) for k, s, _ in self._slices).get("voltage")
        if volt_sl is not None:
            self._shift[volt_sl] = 1.0
        self._out_slices = tuple((k, sl, shape if len(shape) > 1 else None) for k, sl, shape in self._slices)
        self._time_cache: dict[tuple[float, int], tuple[np.ndarray, np.ndarray]] = {}

    @staticmethod
    def _shapes(spec: ObservationSpec) -> dict[str, tuple[int, ...]]:
        n_evcs = spec.evcs_cap_kw.shape[0]
        td = spec.n_line > 0
        return {
            "time": (3,), "load": (spec.load_peak_mw.shape[0],), "pv": (spec.n_pv,), "wind": (spec.n_wind,),
            "ev": (n_evcs, 4), "storage_soc": (spec.storage_e_max_mwh.shape[0],),
            "voltage": (spec.n_bus_feeders,), "price": (24,),
            "forecast": (spec.forecast_rows_peak_mw.shape[0], spec.forecast_steps),
            "thermal": (spec.thermal_p_max_mw.shape[0] if td else 0,),
            "line_loading": (spec.n_line,),
            "boundary": (spec.boundary_cap_mw.shape[0] if td else 0,),
        }

    def encode(self, obs: Observation) -> dict[str, np.ndarray]:
        """The gym observation of ``obs`` (fresh float32 arrays, clipped into the space).

        All keys are written into one flat float64 buffer (clipped and cast once) and
        returned as views of the float32 copy.
        """
        flat = self._raw(obs)
        if flat is None:                                 # an observation of another shape
            flat = np.empty(self._n_flat)
            self._fill(obs, {k: flat[sl] for k, sl, _ in self._slices})
        np.minimum(flat, self._flat_hi, out=flat)
        np.maximum(flat, self._flat_lo, out=flat)
        buf = flat.astype(np.float32)
        return {k: buf[sl] if shape is None else buf[sl].reshape(shape) for k, sl, shape in self._out_slices}

    def _time_and_price(self, time_h: float, step: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``"time"`` and ``"price"`` values of a step (cached)."""
        time_key = (time_h, step)
        fixed = self._time_cache.get(time_key)
        if fixed is None:
            angle = 2.0 * np.pi * time_h / 24.0
            fixed = (np.array((np.sin(angle), np.cos(angle), step / self.spec.n_steps)),
                     self._price_from_hour[int(np.floor(time_h + 1e-9)) % 24])
            if len(self._time_cache) < 4096:
                self._time_cache[time_key] = fixed
        return fixed

    def encode_batch(self, time_h: float, step: int, parts: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """:meth:`encode` of ``B`` observations of one step at once (the batched simulator's):
        ``parts`` maps every key but ``"time"`` and ``"price"`` to its raw values (batch axis
        first; ``"ev"`` as the four column blocks ``p_min, p_max, n_connected, need``); the
        same shift, scale and clipping, so each row equals :meth:`encode` of that day."""
        fixed = self._time_and_price(time_h, step)
        n = next(iter(parts.values())).shape[0]
        cols = []
        for k in self.keys:
            if k == "time":
                cols.append(np.broadcast_to(fixed[0], (n, 3)))
            elif k == "price":
                cols.append(np.broadcast_to(fixed[1], (n, 24)))
            else:
                cols.append(parts[k].reshape(n, -1))
        raw = np.concatenate(cols, axis=1, dtype=float)
        raw -= self._shift
        raw *= self._scale
        if self._perm is not None:
            raw = raw[:, self._perm]
        np.minimum(raw, self._flat_hi, out=raw)
        np.maximum(raw, self._flat_lo, out=raw)
        buf = raw.astype(np.float32)
        return {k: buf[:, sl] if shape is None else buf[:, sl].reshape((n,) + shape)
                for k, sl, shape in self._out_slices}

    def _raw(self, obs: Observation) -> np.ndarray | None:
        """The normalized values in the flat layout (as :meth:`_fill`, before clipping), or None
        when ``obs`` does not have the spec's sizes."""
        fixed = self._time_and_price(obs.time_h, obs.step)
        parts: list[np.ndarray] = []
        add = parts.append
        for k in self.keys:
            if k == "time":
                add(fixed[0])
            elif k == "load":
                add(obs.load_p_mw)
            elif k == "pv":
                add(obs.pv_pu)
            elif k == "wind":
                add(obs.wind_pu)
            elif k == "ev":
                ev = obs.ev
                if ev is None:
                    add(self._ev_zeros)
                else:
                    need = np.subtract(ev.e_target_kwh, ev.e_kwh, out=np.empty(ev.e_kwh.shape[0]))
                    np.maximum(need, _ZERO, out=need)
                    parts.extend((ev.p_min_kw, ev.p_max_kw, ev.n_connected, need))
            elif k == "storage_soc":
                add(obs.storage_e_mwh)
            elif k == "voltage":
                parts.extend(obs.v_pu)
            elif k == "price":
                add(fixed[1])
            elif k == "forecast":
                add(obs.net_load_forecast_mw.reshape(-1))
            elif k == "thermal":
                add(obs.thermal_p_last_mw)
            elif k == "line_loading":
                add(obs.line_loading)
            elif k == "boundary":
                add(obs.tso_requirement_last_mw)
        try:
            raw = np.concatenate(parts, dtype=float, casting="same_kind")
        except (ValueError, TypeError):
            return None
        if raw.shape[0] != self._n_flat or obs.net_load_forecast_mw.shape != self._fc_shape:
            return None
        raw -= self._shift
        raw *= self._scale
        return raw if self._perm is None else raw[self._perm]

    def _fill(self, obs: Observation, out: dict[str, np.ndarray]) -> None:
        spec = self.spec
        angle = 2.0 * np.pi * obs.time_h / 24.0
        out["time"][:] = (np.sin(angle), np.cos(angle), obs.step / spec.n_steps)
        np.multiply(obs.load_p_mw, self._inv_load, out=out["load"])
        if "pv" in out:
            out["pv"][:] = obs.pv_pu
        if "wind" in out:
            out["wind"][:] = obs.wind_pu
        if "storage_soc" in out:
            np.multiply(obs.storage_e_mwh, self._inv_soc, out=out["storage_soc"])
        volt = out["voltage"]
        start = 0
        for v in obs.v_pu:
            np.subtract(v, 1.0, out=volt[start:start + v.shape[0]])
            start += v.shape[0]
        volt *= 1.0 / _VOLTAGE_BAND
        out["price"][:] = self._price_from_hour[int(np.floor(obs.time_h + 1e-9)) % 24]
        np.multiply(obs.net_load_forecast_mw, self._inv_rows[:, None],
                    out=out["forecast"].reshape(obs.net_load_forecast_mw.shape))
        if "thermal" in out:
            np.multiply(obs.thermal_p_last_mw, self._inv_gen, out=out["thermal"])
        if "line_loading" in out:
            out["line_loading"][:] = obs.line_loading
        if "boundary" in out:
            np.multiply(obs.tso_requirement_last_mw, self._inv_boundary, out=out["boundary"])
        if "ev" in out:
            ev_out = out["ev"].reshape(-1, 4)
            ev = obs.ev
            if ev is None:
                ev_out[:] = 0.0
            else:
                scale = self._ev_scale
                np.multiply(ev.p_min_kw, scale[:, 0], out=ev_out[:, 0])
                np.multiply(ev.p_max_kw, scale[:, 1], out=ev_out[:, 1])
                np.multiply(ev.n_connected, scale[:, 2], out=ev_out[:, 2])
                np.subtract(ev.e_target_kwh, ev.e_kwh, out=ev_out[:, 3])
                np.maximum(ev_out[:, 3], 0.0, out=ev_out[:, 3])
                ev_out[:, 3] *= scale[:, 3]
