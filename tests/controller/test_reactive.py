"""The two-stage scenario SOCP for reactive compensation (seed 003, stage 2), with the proxy
objective (losses + voltage deviation) kept for comparison; the env-cost objective is tested in
``test_reactive_cost.py``."""

from __future__ import annotations

import cvxpy as cp
import numpy as np
import pandapower as pp
import pytest

import env
from controller.reactive import (
    FeederReactiveSOCP,
    ReactiveCompensator,
    ReactiveResult,
    ReactiveSettings,
)
from env.interop import base_injection, feeder_to_pandapower
from env.network import Network

Load = tuple[np.ndarray, np.ndarray]


@pytest.fixture(scope="module")
def d33() -> Network:
    return env.load_case("d33").feeders[0]


@pytest.fixture(scope="module")
def base_load(d33: Network) -> Load:
    return base_injection(d33)


@pytest.fixture(scope="module")
def model_s1(d33: Network) -> FeederReactiveSOCP:
    return FeederReactiveSOCP(d33, ReactiveSettings(objective="proxy", n_scenarios=1))


@pytest.fixture(scope="module")
def model_s2(d33: Network) -> FeederReactiveSOCP:
    return FeederReactiveSOCP(d33, ReactiveSettings(objective="proxy", n_scenarios=2))


def _scenarios(p: np.ndarray, q: np.ndarray, scales: list[float]) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scales)[:, None]
    return p[None, :] * s, q[None, :] * s


def _ac_vmin(net: Network, p_mw: np.ndarray, q_mvar: np.ndarray, q_comp_mvar: np.ndarray) -> tuple[float, np.ndarray]:
    """AC power flow (pandapower) with the compensators injecting ``q_comp_mvar``."""
    q = q_mvar.copy()
    np.add.at(q, net.compensator.bus, -q_comp_mvar)
    pnet = feeder_to_pandapower(net, p_mw, q)
    pp.runpp(pnet, tolerance_mva=1e-11, numba=False)
    vm = pnet.res_bus.vm_pu.to_numpy()
    return float(vm.min()), vm


def test_heavy_load_compensators_inject_and_raise_vmin(d33: Network, base_load: Load,
                                                       model_s1: FeederReactiveSOCP) -> None:
    p, q = _scenarios(*base_load, [1.3])
    res = model_s1.solve(p, q, np.array([1.0]))
    assert res.status == cp.OPTIMAL and res.solver_used == "ECOS" and res.fallback is None
    assert res.q_mvar.shape == (3,)
    assert np.all(res.q_mvar > 0.1)
    assert np.all(res.q_mvar <= d33.compensator.q_max_mvar + 1e-9)
    vmin_0, _ = _ac_vmin(d33, p[0], q[0], np.zeros(3))
    vmin_c, vm_c = _ac_vmin(d33, p[0], q[0], res.q_mvar)
    assert vmin_c > vmin_0 + 0.005
    # loss-increasing objective at under-voltage: the relaxation is exact and its voltages are AC voltages
    assert res.relaxation_gap_pu < 1e-6
    np.testing.assert_allclose(res.v_pred_pu[0], vm_c, atol=1e-4)
    assert res.solver_ms > 0 and res.solve_ms >= res.solver_ms


def _midday(net: Network, p: np.ndarray, q: np.ndarray, load: float, der: float) -> tuple[np.ndarray, np.ndarray]:
    """(1, n_bus) net consumption: scaled loads minus every DER at ``der`` x p_max."""
    p_mw = p * load
    np.add.at(p_mw, net.der.bus, -net.der.p_max_mw * der)
    return p_mw[None, :], q[None, :] * load


def test_midday_pv_absorbs_and_stays_exact_with_lin_upper_side(d33: Network, base_load: Load,
                                                               model_s1: FeederReactiveSOCP) -> None:
    """Reverse flow and voltages above 1: the compensators absorb; with the LinDistFlow upper side
    (default) the relaxation stays exact and its voltages are the AC voltages."""
    for load, der in [(0.2, 1.0), (0.3, 2.0), (0.2, 5.0)]:
        p, q = _midday(d33, *base_load, load, der)
        res = model_s1.solve(p, q, np.array([1.0]))
        assert res.status == cp.OPTIMAL
        assert np.all(res.q_mvar < 0)
        assert res.relaxation_gap_pu < 1e-6
        _, vm = _ac_vmin(d33, p[0], q[0], res.q_mvar)
        np.testing.assert_allclose(res.v_pred_pu[0], vm, atol=1e-4)


def test_relaxed_upper_side_is_inexact_under_reverse_flow(d33: Network, base_load: Load) -> None:
    """docs/math.md §1 literally (upper limit and over-voltage deviation on the relaxed v): the solver invents
    losses to pull voltages down; the reported gap must show it and the voltages miss the AC flow."""
    model = FeederReactiveSOCP(d33, ReactiveSettings(objective="proxy", n_scenarios=1, upper_voltage="soc"))
    p, q = _midday(d33, *base_load, 0.3, 2.0)
    res = model.solve(p, q, np.array([1.0]))
    assert res.status == cp.OPTIMAL
    assert res.relaxation_gap_pu > 1e-2 and res.relaxation_gap_rel > 0.5
    _, vm = _ac_vmin(d33, p[0], q[0], res.q_mvar)
    assert np.max(np.abs(res.v_pred_pu[0] - vm)) > 1e-2


def test_identical_scenarios_give_the_single_scenario_answer(d33: Network, base_load: Load,
                                                             model_s1: FeederReactiveSOCP) -> None:
    p1, q1 = _scenarios(*base_load, [1.1])
    ref = model_s1.solve(p1, q1, np.array([1.0]))
    model5 = FeederReactiveSOCP(d33, ReactiveSettings(objective="proxy", n_scenarios=5))
    p5, q5 = np.repeat(p1, 5, axis=0), np.repeat(q1, 5, axis=0)
    res = model5.solve(p5, q5, np.full(5, 0.2))
    np.testing.assert_allclose(res.q_mvar, ref.q_mvar, atol=1e-5)
    assert res.objective == pytest.approx(ref.objective, rel=1e-6)
    np.testing.assert_allclose(res.v_pred_pu, np.repeat(ref.v_pred_pu, 5, axis=0), atol=1e-6)


def test_fewer_scenarios_are_padded_with_zero_probability(d33: Network, base_load: Load) -> None:
    p, q = _scenarios(*base_load, [0.6, 1.0, 1.25])
    pi = np.array([0.2, 0.5, 0.3])
    exact = FeederReactiveSOCP(d33, ReactiveSettings(objective="proxy", n_scenarios=3, w_voltage=1.0)).solve(p, q, pi)
    padded = FeederReactiveSOCP(d33, ReactiveSettings(objective="proxy", n_scenarios=8, w_voltage=1.0)).solve(p, q, pi)
    assert padded.v_pred_pu.shape == (3, d33.n_bus)
    np.testing.assert_allclose(padded.q_mvar, exact.q_mvar, atol=1e-5)
    assert padded.objective == pytest.approx(exact.objective, rel=1e-6)
    assert np.all(np.isfinite(padded.v_pred_pu))


def test_zero_probability_scenarios_do_not_matter(d33: Network, base_load: Load) -> None:
    model = FeederReactiveSOCP(d33, ReactiveSettings(objective="proxy", n_scenarios=2, w_voltage=1.0))
    p, q = _scenarios(*base_load, [0.3, 1.0])
    p[0, d33.der.bus] -= 1.0
    with_zero = model.solve(p, q, np.array([0.0, 1.0]))
    alone = model.solve(p[1:], q[1:], np.array([1.0]))
    np.testing.assert_allclose(with_zero.q_mvar, alone.q_mvar, atol=1e-5)
    assert np.all(np.isnan(with_zero.v_pred_pu[0]))


def test_scenarios_change_the_here_and_now_decision(d33: Network, base_load: Load) -> None:
    """A likely over-voltage scenario pulls the shared setpoint down versus the load-only case."""
    model = FeederReactiveSOCP(d33, ReactiveSettings(objective="proxy", n_scenarios=2, w_voltage=1.0))
    p, q = _scenarios(*base_load, [0.5, 0.5])
    p[1, d33.der.bus] -= 1.0
    load_only = model.solve(p[:1], q[:1], np.array([1.0]))
    mixed = model.solve(p, q, np.array([0.3, 0.7]))
    assert mixed.q_mvar.sum() < load_only.q_mvar.sum() - 0.05


def test_resolving_does_not_recompile(d33: Network, base_load: Load, monkeypatch: pytest.MonkeyPatch) -> None:
    model = FeederReactiveSOCP(d33, ReactiveSettings(objective="proxy", n_scenarios=4))
    problem = model._problems["ECOS"]
    param_prog = problem._cache.param_prog
    assert param_prog is not None  # compiled in __init__
    calls: list[int] = []
    original = cp.Problem._construct_chain

    def counting(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(cp.Problem, "_construct_chain", counting)
    answers = []
    for scale in (0.6, 0.9, 1.2, 1.5):
        p, q = _scenarios(*base_load, [scale] * 4)
        res = model.solve(p, q, np.full(4, 0.25))
        answers.append(res.v_pred_pu.min())
    assert calls == []
    assert problem._cache.param_prog is param_prog
    assert np.all(np.diff(answers) < -1e-3)  # the new loads really reached the solver


def _no_compile(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
    raise AssertionError("cvxpy recompiled the problem")


def _failing_solve(problem: cp.Problem, fail: set[str]):  # noqa: ANN202
    original = problem.solve

    def solve(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        if kwargs.get("solver") in fail:
            raise cp.error.SolverError(f"forced failure of {kwargs.get('solver')}")
        return original(*args, **kwargs)

    return solve


def _force_failures(model: FeederReactiveSOCP, monkeypatch: pytest.MonkeyPatch, fail: set[str]) -> None:
    for solver in ("ECOS", "CLARABEL"):
        problem = model._problem_for(solver)
        monkeypatch.setattr(problem, "solve", _failing_solve(problem, fail))


def test_ecos_failure_falls_back_to_clarabel(d33: Network, base_load: Load, monkeypatch: pytest.MonkeyPatch) -> None:
    model = FeederReactiveSOCP(d33, ReactiveSettings(objective="proxy", n_scenarios=2))
    p, q = _scenarios(*base_load, [0.8, 1.1])
    ref = model.solve(p, q, np.array([0.5, 0.5]))
    _force_failures(model, monkeypatch, {"ECOS"})
    monkeypatch.setattr(cp.Problem, "_construct_chain", _no_compile)
    res = model.solve(p, q, np.array([0.5, 0.5]))
    assert res.solver_used == "CLARABEL" and res.status == cp.OPTIMAL  # the fallback was compiled in __init__
    assert "ECOS failed" in res.fallback and "forced failure" in res.fallback
    np.testing.assert_allclose(res.q_mvar, ref.q_mvar, atol=1e-4)


@pytest.mark.filterwarnings("ignore:Solution may be inaccurate")
def test_non_optimal_status_falls_back(d33: Network, base_load: Load, monkeypatch: pytest.MonkeyPatch) -> None:
    """ECOS stopped after 2 iterations returns a non-optimal status: that is a failure too."""
    model = FeederReactiveSOCP(d33, ReactiveSettings(objective="proxy", n_scenarios=1))
    problem = model._problem_for("ECOS")
    original = problem.solve
    monkeypatch.setattr(problem, "solve", lambda *a, **k: original(*a, max_iters=2, **k))
    p, q = _scenarios(*base_load, [1.0])
    res = model.solve(p, q, np.array([1.0]))
    assert res.solver_used == "CLARABEL"
    assert "ECOS failed (status" in res.fallback


def test_both_solvers_failing_uses_last_good_then_default(d33: Network, base_load: Load,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    model = FeederReactiveSOCP(d33, ReactiveSettings(objective="proxy", n_scenarios=1))
    p, q = _scenarios(*base_load, [1.2])
    good = model.solve(p, q, np.array([1.0]))
    _force_failures(model, monkeypatch, {"ECOS", "CLARABEL"})
    res = model.solve(p * 0.5, q * 0.5, np.array([1.0]))
    assert res.solver_used == "last_good" and res.status == "solver_failed"
    assert "ECOS failed" in res.fallback and "CLARABEL failed" in res.fallback and "last good" in res.fallback
    np.testing.assert_array_equal(res.q_mvar, good.q_mvar)
    assert np.isnan(res.objective) and np.all(np.isnan(res.v_pred_pu))
    model.reset()
    res = model.solve(p, q, np.array([1.0]))
    assert res.solver_used == "default" and "no previous solution" in res.fallback
    np.testing.assert_array_equal(res.q_mvar, np.zeros(3))


@pytest.mark.parametrize(
    ("field", "p_shape", "q_shape", "pi", "nan"),
    [
        ("p_net_mw", (1, 32), (1, 32), [1.0], None),
        ("p_net_mw", (3, 33), (3, 33), [0.2, 0.3, 0.5], None),  # more scenarios than compiled
        ("p_net_mw", (33,), (33,), [1.0], None),
        ("q_net_mvar", (2, 33), (1, 33), [0.5, 0.5], None),
        ("probabilities", (2, 33), (2, 33), [1.0], None),
        ("probabilities", (2, 33), (2, 33), [0.5, 0.6], None),
        ("probabilities", (2, 33), (2, 33), [1.5, -0.5], None),
        ("p_net_mw", (2, 33), (2, 33), [0.5, 0.5], "p"),
        ("q_net_mvar", (2, 33), (2, 33), [0.5, 0.5], "q"),
    ],
)
def test_bad_input_raises_naming_the_field(model_s2: FeederReactiveSOCP, field: str, p_shape: tuple,
                                           q_shape: tuple, pi: list[float], nan: str | None) -> None:
    model = model_s2
    p, q = np.full(p_shape, 0.1), np.full(q_shape, 0.05)
    if nan == "p":
        p[1, 5] = np.nan
    if nan == "q":
        q[0, 3] = np.inf
    with pytest.raises(ValueError, match=field):
        model.solve(p, q, np.array(pi))


def test_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="unknown keys"):
        ReactiveSettings.from_dict({"n_scenarios": 3, "solvr": "ECOS"})
    assert ReactiveSettings.from_dict({"solver": "clarabel"}).solver == "CLARABEL"
    for bad in ({"solver": "GUROBI"}, {"n_scenarios": 0}, {"formulation": "acp"}, {"c_loss": -1.0},
                {"slack_penalty": 0.0}, {"w_voltage": float("nan")}, {"upper_voltage": "ac"},
                {"objective": "losses"}, {"q_regularizer": -1.0}, {"inaccurate_tol_pu": 0.0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            ReactiveSettings(**bad)
    with pytest.raises(TypeError):
        ReactiveSettings(n_scenario=3)  # type: ignore[call-arg]


def test_clarabel_and_ecos_agree_and_lin_runs(d33: Network, base_load: Load) -> None:
    p, q = _scenarios(*base_load, [0.7, 1.0, 1.2])
    pi = np.array([0.3, 0.4, 0.3])
    kw = dict(n_scenarios=3, w_voltage=1.0)
    ecos = FeederReactiveSOCP(d33, ReactiveSettings(objective="proxy", solver="ECOS", **kw)).solve(p, q, pi)
    clar = FeederReactiveSOCP(d33, ReactiveSettings(objective="proxy", solver="CLARABEL", **kw)).solve(p, q, pi)
    assert clar.solver_used == "CLARABEL" and clar.fallback is None
    np.testing.assert_allclose(clar.q_mvar, ecos.q_mvar, atol=1e-3)
    lin = FeederReactiveSOCP(d33, ReactiveSettings(objective="proxy", formulation="lin", **kw)).solve(p, q, pi)
    assert lin.status == cp.OPTIMAL and np.isnan(lin.relaxation_gap_pu)
    assert np.all(lin.v_pred_pu >= ecos.v_pred_pu - 1e-6)  # LinDistFlow is optimistic about voltages


def test_loss_only_objective_is_exact(d33: Network, base_load: Load) -> None:
    model = FeederReactiveSOCP(d33, ReactiveSettings(objective="proxy", n_scenarios=2, w_voltage=0.0))
    p, q = _scenarios(*base_load, [0.5, 1.0])
    res = model.solve(p, q, np.array([0.5, 0.5]))
    assert res.status == cp.OPTIMAL and res.relaxation_gap_pu < 1e-6
    assert 0 < res.expected_loss_mw < 0.2


def test_compensator_solves_every_feeder(d33: Network, base_load: Load) -> None:
    d69 = env.load_case("d69").feeders[0]
    comp = ReactiveCompensator([d33, d69], ReactiveSettings(objective="proxy", n_scenarios=2))
    p69, q69 = base_injection(d69)
    inputs = [(*_scenarios(*base_load, [1.0, 1.2]), np.array([0.5, 0.5])),
              (*_scenarios(p69, q69, [1.0]), np.array([1.0]))]
    results = comp.solve(inputs)
    assert [type(r) for r in results] == [ReactiveResult, ReactiveResult]
    assert results[0].v_pred_pu.shape == (2, 33) and results[1].v_pred_pu.shape == (1, 69)
    assert all(r.status == cp.OPTIMAL and r.relaxation_gap_pu < 1e-6 for r in results)
    with pytest.raises(ValueError, match="inputs"):
        comp.solve(inputs[:1])
    comp.reset()
    assert all(m._last_good_mvar is None for m in comp.models)


@pytest.mark.parametrize("method", ["socp", "fast"])
def test_a_feeder_without_compensators_solves_nothing(d33: Network, base_load: Load, method: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing to decide, nothing solved (SimBench feeders have no compensators): the result says
    so and the other feeders are solved as before."""
    import dataclasses

    from env.network import CompensatorTable

    bare = dataclasses.replace(d33, compensator=CompensatorTable(bus=np.zeros(0, dtype=int), q_min_mvar=np.zeros(0),
                                                                 q_max_mvar=np.zeros(0)))
    comp = ReactiveCompensator([bare, d33], ReactiveSettings(n_scenarios=2), method=method)
    called = []
    original = type(comp.models[0]).solve
    monkeypatch.setattr(type(comp.models[0]), "solve",
                        lambda self, *a, **k: called.append(self.net is bare) or original(self, *a, **k))
    p, q = _scenarios(*base_load, [1.0, 1.1])
    from env.pricing import StepPrices

    prices = StepPrices(buy_per_mwh=600.0, sell_per_mwh=400.0, voltage_per_puh=1e5, dt_h=0.25)
    none, solved = comp.solve([(p, q, np.array([0.5, 0.5]))] * 2, prices)
    assert called == [False]                                  # only the feeder with compensators
    assert none.status == "no_compensators" and none.q_mvar.shape == (0,) and none.fallback is None
    assert none.v_pred_pu.shape == p.shape and np.isnan(none.v_pred_pu).all()
    assert solved.q_mvar.shape == (len(d33.compensator),) and solved.status in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE)
    with pytest.raises(ValueError, match="inconsistent"):
        ReactiveResult(q_mvar=np.zeros(1), status="no_compensators", solver_used="none", fallback=None,
                       v_pred_pu=np.zeros((1, 1)), relaxation_gap_pu=0.0, relaxation_gap_rel=0.0, objective=0.0,
                       expected_loss_mw=0.0, max_violation_pu=0.0, solve_ms=0.0, solver_ms=0.0)
