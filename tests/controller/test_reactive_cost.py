"""The reactive SOCP priced as the env prices the step (docs/math.md §10), its robustness, and the
loop building it from the dispatch the env will actually play."""

from __future__ import annotations

import cvxpy as cp
import numpy as np
import pytest

import env
from controller.loop import LoopSettings, RollingController
from controller.reactive import FeederReactiveSOCP, ReactiveSettings
from controller.reactive_inputs import ReactiveScenarioBuilder
from controller.wrappers import ReactiveCompensationWrapper
from env.dispatch import Dispatch
from env.physics.grid_flow import GridPhysics
from env.pricing import StepPrices, step_prices
from policies import make_policy


def _env_at(case: str, regime: str, seed: int, step: int) -> tuple[env.TDGridEnv, object]:
    """An env at ``step`` of day ``seed``, played so far by the heuristic with compensators at 0."""
    e = env.TDGridEnv(case=case, regime=regime)
    e.reset(seed=seed, options={"scenario_seed": seed})
    pol = make_policy("heuristic", e.grid)
    pol.reset(seed)
    for _ in range(step):
        obs = e.observation_typed
        e.step_dispatch(pol.act(obs, obs.forecast))
    return e, pol


@pytest.mark.parametrize(("regime", "step"), [("cloudy", 40), ("cloudy", 76), ("sunny", 50), ("sunny", 4)])
def test_objective_equals_the_env_cost_of_the_step(regime: str, step: int) -> None:
    """One scenario = the realized step (the nowcast): the SOCP's optimal value is what the env then
    charges for head energy and voltage at the SOCP's setpoints, to solver/relaxation tolerance."""
    e, pol = _env_at("d33", regime, 3, step)
    obs = e.observation_typed
    applied = e.project_dispatch(pol.act(obs, obs.forecast))
    inputs = ReactiveScenarioBuilder(e.model, 1, 1, source="nowcast").build(obs, applied, np.random.default_rng(0))
    model = FeederReactiveSOCP(e.grid.feeders[0], ReactiveSettings(n_scenarios=1, q_regularizer=0.0))
    res = model.solve(*inputs.per_feeder[0], prices=inputs.prices)
    assert res.status == cp.OPTIMAL and res.relaxation_gap_pu < 1e-6
    e.set_reactive(res.q_mvar)
    e.step_dispatch(applied)
    c = e.last_outcome.cost
    env_cost = c["energy_bought"] + c["energy_sold"] + c["voltage_violation"]
    # the voltage pieces are tangents of sqrt at the limits: exact when no bus is beyond a limit
    # by more than ~1e-3 p.u. (second-order term)
    assert res.objective == pytest.approx(env_cost, rel=1e-6, abs=0.05)


def _expected_env_cost(net: env.Network, physics: GridPhysics, p: np.ndarray, q: np.ndarray, pi: np.ndarray,
                       q_comp: np.ndarray, prices: StepPrices) -> float:
    """``sum_s pi_s`` (head energy + voltage penalty) of the AC sweep at setpoints ``q_comp``."""
    q_bus = np.zeros(net.n_bus)
    np.add.at(q_bus, net.compensator.bus, q_comp)
    flow = physics.solve_feeder(0, p.T, (q - q_bus).T)
    head = flow.head_p_mw
    energy = prices.dt_h * (prices.buy_per_mwh * np.maximum(head, 0) - prices.sell_per_mwh * np.maximum(-head, 0))
    v = flow.v_pu.T
    viol = np.maximum(np.maximum(net.bus.vmin_pu - v, v - net.bus.vmax_pu), 0.0).sum(axis=1)
    return float(pi @ (energy + prices.dt_h * prices.voltage_per_puh * viol))


@pytest.mark.parametrize("regime", ["cloudy", "sunny", "high_penetration"])
def test_never_costs_more_than_compensators_at_zero(regime: str) -> None:
    """On sampled steps, the setpoints' expected env cost over the SOCP's own scenarios, evaluated by
    the AC sweep (not by the relaxation), is no more than with the compensators held at 0 — and
    the proxy objective is no better than the env-cost one."""
    e = env.TDGridEnv(case="d33", regime=regime)
    net = e.grid.feeders[0]
    physics = GridPhysics(e.grid)
    model = FeederReactiveSOCP(net, ReactiveSettings(n_scenarios=5))
    proxy = FeederReactiveSOCP(net, ReactiveSettings(n_scenarios=5, objective="proxy"))
    builder = ReactiveScenarioBuilder(e.model, 20, 5)
    e.reset(seed=11, options={"scenario_seed": 11})
    pol = make_policy("heuristic", e.grid)
    pol.reset(11)
    rng = np.random.default_rng(5)
    gains = []
    for t in range(e.n_steps):
        obs = e.observation_typed
        d = pol.act(obs, obs.forecast)
        if t % 12 == 5:
            inputs = builder.build(obs, e.project_dispatch(d), rng)
            p, q, pi = inputs.per_feeder[0]
            res = model.solve(p, q, pi, prices=inputs.prices)
            assert res.status == cp.OPTIMAL
            at_opt = _expected_env_cost(net, physics, p, q, pi, res.q_mvar, inputs.prices)
            at_zero = _expected_env_cost(net, physics, p, q, pi, np.zeros(3), inputs.prices)
            at_proxy = _expected_env_cost(net, physics, p, q, pi, proxy.solve(p, q, pi).q_mvar, inputs.prices)
            assert at_opt <= at_zero + 1e-3
            assert at_opt <= at_proxy + 1e-3
            gains.append(at_zero - at_opt)
        e.step_dispatch(d)
    assert max(gains) > 0.5  # the compensators are worth something on some step (CNY)


def test_t30d2_prices_losses_at_the_reference_units_marginal_cost() -> None:
    e, pol = _env_at("t30d2", "cloudy", 2, 30)
    obs = e.observation_typed
    prices = step_prices(e.model, obs)
    m = e.model
    p_ref = obs.thermal_p_last_mw[m.ref_unit]
    assert prices.buy_per_mwh == prices.sell_per_mwh == pytest.approx(m.g_c1[m.ref_unit] + 2 * m.g_c2[m.ref_unit] * p_ref)
    assert prices.voltage_per_puh == e.grid.tariff.penalty_voltage_per_puh and prices.dt_h == 0.25


def test_valley_price_below_feed_in_settles_each_scenario_on_its_side() -> None:
    """Buy 300 < sell 350 (d33's night tariff): the head cost is concave, priced per scenario by
    the side its net consumption settles on; an exporting scenario is paid at the sell price."""
    net = env.load_case("d33").feeders[0]
    model = FeederReactiveSOCP(net, ReactiveSettings(n_scenarios=2, q_regularizer=0.0))
    p = np.zeros((2, net.n_bus))
    np.add.at(p[0], net.load.bus, net.load.p_mw * 0.5)
    np.add.at(p[1], net.der.bus, -net.der.p_max_mw * 3.0)        # DER exceeding the load: reverse flow
    np.add.at(p[1], net.load.bus, net.load.p_mw * 0.3)
    q = np.zeros_like(p)
    np.add.at(q[0], net.load.bus, net.load.q_mvar * 0.5)
    np.add.at(q[1], net.load.bus, net.load.q_mvar * 0.3)
    prices = StepPrices(300.0, 350.0, 20000.0, 0.25)
    res = model.solve(p, q, np.array([0.5, 0.5]), prices=prices)
    physics = GridPhysics(env.load_case("d33"))
    assert res.objective == pytest.approx(
        _expected_env_cost(net, physics, p, q, np.array([0.5, 0.5]), res.q_mvar, prices), rel=1e-5, abs=0.05)


def test_env_cost_needs_prices() -> None:
    net = env.load_case("d33").feeders[0]
    model = FeederReactiveSOCP(net, ReactiveSettings(n_scenarios=1))
    with pytest.raises(ValueError, match="prices"):
        model.solve(np.zeros((1, net.n_bus)), np.zeros((1, net.n_bus)), np.ones(1))


# ---------------------------------------------------------------- robustness (issue: inaccurate, exceptions)

def _base_step(net: env.Network) -> tuple[np.ndarray, np.ndarray]:
    p, q = np.zeros((1, net.n_bus)), np.zeros((1, net.n_bus))
    np.add.at(p[0], net.load.bus, net.load.p_mw)
    np.add.at(q[0], net.load.bus, net.load.q_mvar)
    return p, q


_PRICES = StepPrices(600.0, 350.0, 20000.0, 0.25)


def _patch(model: FeederReactiveSOCP, monkeypatch: pytest.MonkeyPatch, solver: str, after) -> None:  # noqa: ANN001
    problem = model._problem_for(solver)
    original = problem.solve

    def solve(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        out = original(*args, **kwargs)
        after(problem)
        return out

    monkeypatch.setattr(problem, "solve", solve)


def test_inaccurate_solution_close_to_the_ac_flow_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    net = env.load_case("d33").feeders[0]
    model = FeederReactiveSOCP(net, ReactiveSettings(n_scenarios=1))
    p, q = _base_step(net)
    ref = model.solve(p, q, np.ones(1), prices=_PRICES)
    _patch(model, monkeypatch, "ECOS", lambda pr: setattr(pr, "_status", cp.OPTIMAL_INACCURATE))
    res = model.solve(p, q, np.ones(1), prices=_PRICES)
    assert res.status == cp.OPTIMAL_INACCURATE and res.solver_used == "ECOS" and res.fallback is None
    np.testing.assert_allclose(res.q_mvar, ref.q_mvar, atol=1e-6)


def test_inaccurate_solution_off_the_ac_flow_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    net = env.load_case("d33").feeders[0]
    model = FeederReactiveSOCP(net, ReactiveSettings(n_scenarios=1))
    p, q = _base_step(net)

    def spoil(pr: cp.Problem) -> None:
        pr._status = cp.OPTIMAL_INACCURATE
        model.vars.v.value = model.vars.v.value * 0.98      # voltages ~1 % off the AC flow

    _patch(model, monkeypatch, "ECOS", spoil)
    res = model.solve(p, q, np.ones(1), prices=_PRICES)
    assert res.solver_used == "CLARABEL" and res.status == cp.OPTIMAL
    assert "ECOS failed (status optimal_inaccurate, voltages" in res.fallback


def test_any_solver_exception_falls_back_and_is_recorded(monkeypatch: pytest.MonkeyPatch) -> None:
    net = env.load_case("d33").feeders[0]
    model = FeederReactiveSOCP(net, ReactiveSettings(n_scenarios=1))
    p, q = _base_step(net)

    def boom(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise np.linalg.LinAlgError("singular KKT system")

    monkeypatch.setattr(model._problem_for("ECOS"), "solve", boom)
    res = model.solve(p, q, np.ones(1), prices=_PRICES)
    assert res.solver_used == "CLARABEL" and "LinAlgError: singular KKT system" in res.fallback


# ---------------------------------------------------------------- the loop builds on the applied dispatch

class _Greedy:
    """Asks for far more storage and EV power than any limit (the env clips it)."""

    name = "greedy"

    def __init__(self, grid: env.Grid) -> None:
        self.base = make_policy("heuristic", grid)

    def reset(self, seed: int | None = None) -> None:
        self.base.reset(seed)

    def act(self, obs, forecast):  # noqa: ANN001, ANN201
        d = self.base.act(obs, forecast)
        return d.replace(storage_p_mw=np.full_like(d.storage_p_mw, 50.0), ev_p_mw=d.ev_p_mw + 40.0)


def test_loop_runs_a_day_of_out_of_range_dispatch_on_the_projection() -> None:
    e = env.TDGridEnv(case="d33", regime="cloudy")
    day = RollingController(e, _Greedy(e.grid), settings=LoopSettings(n_samples=6, n_scenarios=3)).run_day(4)
    feeders = day.steps[day.steps.area != "system"]
    assert (feeders.socp_fallback == "").all() and (feeders.socp_status == cp.OPTIMAL).all()
    sys_rows = day.steps[day.steps.area == "system"]
    assert sys_rows.storage_p_mw.max() <= e.grid.feeders[0].storage.p_max_mw.sum() + 1e-9
    assert np.isfinite(day.summary["total_cost"])


def test_project_dispatch_is_what_the_env_plays() -> None:
    e = env.TDGridEnv(case="d33", regime="cloudy")
    e.reset(seed=1)
    d = Dispatch.zeros(e.grid).replace(storage_p_mw=np.array([50.0]), der_curtail_frac=np.full(6, 3.0))
    applied = e.project_dispatch(d)
    _, _, _, _, info = e.step_dispatch(d)
    assert applied.storage_p_mw[0] == pytest.approx(e.last_outcome.storage_p_mw[0])
    np.testing.assert_array_equal(applied.der_curtail_frac, np.ones(6))
    np.testing.assert_allclose(info["projection"]["storage_p_mw"], applied.storage_p_mw - 50.0)


def test_wrapper_solves_on_the_projected_action() -> None:
    e = ReactiveCompensationWrapper(env.TDGridEnv(case="d33", regime="cloudy"), n_samples=6, n_scenarios=3)
    e.reset(seed=2)
    for _ in range(3):
        _, reward, _, _, info = e.step(np.full(e.action_space.shape, 5.0, dtype=np.float32))
        assert info["reactive"]["status"] == [cp.OPTIMAL] and info["reactive"]["fallback"] == [None]
        assert np.isfinite(reward)


def test_loop_reports_no_line_loading_without_rated_lines_and_rejects_non_dispatch() -> None:
    e = env.TDGridEnv(case="d33", regime="cloudy")
    day = RollingController(e, make_policy("heuristic", e.grid), settings=LoopSettings(reactive=False)).run_day(1)
    assert day.steps[day.steps.area == "system"].max_line_loading.isna().all()

    class Bad:
        name = "bad"

        def reset(self, seed=None):  # noqa: ANN001, ANN202
            pass

        def act(self, obs, forecast):  # noqa: ANN001, ANN202
            return np.zeros(3)

    with pytest.raises(TypeError, match="'bad' returned ndarray at step 0"):
        RollingController(e, Bad(), settings=LoopSettings(reactive=False)).run_day(1)
    with pytest.raises(ValueError, match="scenarios"):
        LoopSettings(scenarios="somewhere")
