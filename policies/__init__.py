"""Dispatch policies behind one protocol (:class:`Policy`), and a registry by name."""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from typing import Any, Callable

from env.network import Grid
from policies.aro_dro import ARO_VARIANTS, AroDroPolicy, AroDroSettings, make_variant
from policies.base import FeederIndex, Policy
from policies.flex_coordinated import FlexCoordinatedPolicy, FlexSettings
from policies.heuristic import HeuristicPolicy
from policies.planning.calibration import CalibrationSettings
from policies.mpc import MPCPolicy
from policies.p2p.policy import P2PPolicy
from policies.perfect_information import ClairvoyantDispatch, PerfectInformation, PerfectInformationSettings
from policies.rollout import RolloutPolicy
from policies.sb3 import AGENT_PREFIX


def _named(policy: Any, name: str) -> Any:
    """Give a configured variant its registry name (results are keyed by ``policy.name``)."""
    policy.name = name
    return policy


def _perfect_information(grid: Grid, compensators: bool = True, **kw: Any) -> PerfectInformation:
    return PerfectInformation(grid, PerfectInformationSettings(compensators=compensators), **kw)


def _clairvoyant_dispatch(grid: Grid, compensators: bool = True, **kw: Any) -> ClairvoyantDispatch:
    return ClairvoyantDispatch(grid, PerfectInformationSettings(compensators=compensators), **kw)


def _flex_ed(grid: Grid, flex: FlexSettings | None = None, **kw: Any) -> FlexCoordinatedPolicy:
    """``flex_coordinated`` without the flexibility balance: economic dispatch only."""
    return FlexCoordinatedPolicy(grid, flex=replace(flex or FlexSettings(), flex_balance=False), **kw)


def _aro_dro_hard_band(grid: Grid, settings: AroDroSettings | None = None, **kw: Any) -> AroDroPolicy:
    """``aro_dro`` with the cleared band as the only recourse: planned once, thermal setpoints
    inside the band (``redispatch_price_per_mwh=None``, ``replan_every_h=None`` whatever
    ``settings`` says; its other fields are kept)."""
    settings = replace(settings or AroDroSettings(), redispatch_price_per_mwh=None, replan_every_h=None)
    return _named(make_variant("aro_dro", grid, settings, **kw), "aro_dro_hard_band")


def _aro_dro_calibrated(grid: Grid, settings: AroDroSettings | None = None, **kw: Any) -> AroDroPolicy:
    """``aro_dro`` whose N and TSO radius are chosen each day by the out-of-sample reserve check
    at risk level :data:`CALIBRATION_RISK` (``settings.calibration`` when given)."""
    settings = settings or AroDroSettings()
    if settings.calibration is None:
        settings = replace(settings, calibration=CalibrationSettings(risk=CALIBRATION_RISK))
    return _named(make_variant("aro_dro", grid, settings, **kw), "aro_dro_calibrated")


#: Risk level of ``aro_dro_calibrated``: the share of hours whose wind deviation may exceed the
#: cleared reserves (seed 000 gives no level; 10 % is a common reserve-adequacy target).
CALIBRATION_RISK = 0.1


# Builders take ``(grid, **kwargs)``. The loop context (see :func:`make_policy`) reaches only the
# builders listed in ``_CONTEXT``.
_REGISTRY: dict[str, Callable[..., Policy]] = {
    "heuristic": HeuristicPolicy,
    "heuristic_no_exchange": lambda grid, **kw: HeuristicPolicy(grid, no_exchange=True, **kw),
    # seed 003's three cases: multi-simulation, single simulation, no power exchange
    "rollout": RolloutPolicy,
    "rollout_m1": lambda grid, **kw: _named(RolloutPolicy(grid, n_sims=1, **kw), "rollout_m1"),
    "rollout_no_exchange": lambda grid, **kw: RolloutPolicy(grid, no_exchange=True, **kw),
    # the yardsticks (docs/math.md §9): certainty-equivalent MPC and the clairvoyant lower bound
    "mpc": MPCPolicy,
    "perfect_information": _perfect_information,
    # its active dispatch under the loop's reactive controller (splits regret into dispatch and Q)
    "perfect_information_dispatch": _clairvoyant_dispatch,
    # seed 000: day-ahead DRO-ARO TSO-DSO plan + per-step recourse LP (T-D grids only), by variant
    **{name: partial(make_variant, name) for name in ARO_VARIANTS},
    # the same without the intraday stage: planned once, the cleared band as the only recourse
    "aro_dro_hard_band": _aro_dro_hard_band,
    # the same with the ambiguity set's N and radius calibrated each day (out-of-sample check)
    "aro_dro_calibrated": _aro_dro_calibrated,
    # seed 002: T-D schedule with the p-box flexibility balance, and its economic-dispatch-only variant
    "flex_coordinated": FlexCoordinatedPolicy,
    "flex_coordinated_ed": _flex_ed,
    # seed 001: the P2P market's schedule (DSO-led bilevel KKT MISOCP; TSO-led yardstick) + recourse
    "p2p_dso_led": lambda grid, **kw: P2PPolicy(grid, scheme="dso_led", **kw),
    "p2p_tso_led": lambda grid, **kw: P2PPolicy(grid, scheme="tso_led", **kw),
}
_CONTEXT: dict[str, tuple[str, ...]] = {
    "mpc": ("simulator_settings",),
    "perfect_information": ("simulator_settings", "compensators"),
    "perfect_information_dispatch": ("simulator_settings", "compensators"),
    **{name: ("simulator_settings",) for name in (*ARO_VARIANTS, "aro_dro_hard_band", "aro_dro_calibrated",
                                                  "flex_coordinated", "flex_coordinated_ed")},
}

#: The P2P market policies (seed 001), T-D grids only.
P2P_POLICIES: tuple[str, ...] = ("p2p_dso_led", "p2p_tso_led")
#: Registry names that need a T-D grid (transmission + feeders); they raise ValueError on a single feeder.
TD_ONLY_POLICIES: tuple[str, ...] = (*ARO_VARIANTS, "aro_dro_hard_band", "aro_dro_calibrated", "flex_coordinated",
                                     "flex_coordinated_ed", *P2P_POLICIES)


def policy_supports(name: str, grid: Grid) -> bool:
    """Whether registry policy ``name`` can run on ``grid`` (T-D-only policies need a T-D grid;
    an agent, ``sb3:FOLDER``, is checked against the env's spaces when the loop attaches it).

    Raises:
        ValueError: unknown name.
    """
    if name.startswith(AGENT_PREFIX):
        return True
    if name not in _REGISTRY:
        raise ValueError(f"unknown policy {name!r}; known policies: {', '.join(_REGISTRY)}")
    return bool(grid.is_td) or name not in TD_ONLY_POLICIES


def policy_names() -> tuple[str, ...]:
    """Names :func:`make_policy` accepts."""
    return tuple(_REGISTRY)


def make_policy(name: str, grid: Grid, *, simulator_settings: Any = None, compensators: bool = True,
                **kwargs: Any) -> Policy:
    """Build a registered policy for ``grid``, or load a trained agent.

    Args:
        name: registry name (:func:`policy_names`), or ``sb3:FOLDER``: the agent folder written by
            :func:`policies.sb3.save_agent` (an SB3 model and its ``VecNormalize`` statistics;
            docs/rl.md), named :func:`policies.sb3.agent_label` in results.
        grid: the grid.
        simulator_settings: context: the env's ``SimulatorSettings`` (V2G, EV reserve price),
            handed to the policies that model the env (``mpc``, ``perfect_information``, the DRO-ARO variants).
        compensators: context: whether the loop runs the reactive SOCP; the perfect-information
            bound fixes the compensators at 0 when it does not.
        **kwargs: options of the policy's constructor (unknown ones raise there).

    Raises:
        ValueError: unknown name (the message lists the known ones), or a bad agent folder.
    """
    if name.startswith(AGENT_PREFIX):
        from policies.sb3 import load_agent

        if kwargs:
            raise ValueError(f"make_policy: an {AGENT_PREFIX} agent takes no options, got {sorted(kwargs)}")
        return load_agent(name[len(AGENT_PREFIX):])
    if name not in _REGISTRY:
        raise ValueError(f"unknown policy {name!r}; known policies: {', '.join(_REGISTRY)}")
    context = {"simulator_settings": simulator_settings, "compensators": compensators}
    for key in _CONTEXT.get(name, ()):
        if context[key] is not None:
            kwargs.setdefault(key, context[key])
    return _REGISTRY[name](grid, **kwargs)


__all__ = ["AGENT_PREFIX", "AroDroPolicy", "AroDroSettings", "ClairvoyantDispatch", "FeederIndex", "FlexCoordinatedPolicy",
           "FlexSettings", "HeuristicPolicy", "MPCPolicy", "P2PPolicy", "P2P_POLICIES", "PerfectInformation",
           "Policy", "RolloutPolicy", "TD_ONLY_POLICIES", "make_policy", "policy_names", "policy_supports"]
