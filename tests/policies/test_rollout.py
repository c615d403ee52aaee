"""Rollout (docs/math.md §7) and its day model: cost improvement on an exactly solvable instance,
determinism, candidates, the surrogate against the env, and a closed-loop day."""

from __future__ import annotations

import itertools
from functools import lru_cache

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import env  # noqa: F401  (registers the envs)
from controller.loop import LoopSettings, RollingController
from policies.heuristic import HeuristicPolicy
from policies.rollout import RolloutPolicy, RolloutSettings, StepLimits, candidate_values, choose, improve
from policies.day_inputs import ActionBatch, DayPaths, SurrogateState
from policies.ev_knowledge import ConnectedEVs, EVTracker
from policies.surrogate import DaySurrogate, SurrogateSettings


def _env(case: str = "d33", seed: int = 1):  # noqa: ANN202
    e = gym.make("gridroll/TDGrid-v0", case=case, regime="cloudy")
    e.reset(seed=seed, options={"scenario_seed": seed})
    return e.unwrapped


@lru_cache(maxsize=None)
def _surrogate(case: str = "d33", no_exchange: bool = False) -> DaySurrogate:
    return DaySurrogate(env.load_case(case), SurrogateSettings(no_exchange=no_exchange))


# ============================================================================ (a) exact instance


class _Instance:
    """A 4-step day of d33 with two equally likely outcomes per step (load and renewables low or
    high, independent across steps): every future is enumerated with its probability, so
    expectations are exact. EVs are connected from the start; none arrives later."""

    T, DT = 4, 0.25

    def __init__(self, prices: np.ndarray, scale: tuple[float, float], e0_mwh: float, seed: int) -> None:
        self.sur = _surrogate()
        m, lay = self.sur.model, self.sur.grid.layout
        self.prices = np.asarray(prices, dtype=float)
        self.load = np.stack([lay.load_p_mw * s for s in scale])                    # (2, n_load)
        self.load_q = np.stack([m.load_q_base * s for s in scale])
        der_peak = np.concatenate([f.der.p_max_mw for f in self.sur.grid.feeders])
        self.der = np.stack([der_peak * 0.2, der_peak * 0.7])                        # (2, n_der)
        rng = np.random.default_rng(seed)
        n_ev = 8
        station = rng.integers(0, self.sur.n_station, n_ev)
        cap = np.full(n_ev, 66.0)
        e = rng.uniform(10.0, 40.0, n_ev)
        req = np.minimum(cap, e + rng.uniform(1.0, 6.0, n_ev))
        self.ev = ConnectedEVs(station, e, cap, req, np.full(n_ev, 6.6), np.full(n_ev, 0.9),
                               rng.integers(2, self.T + 1, n_ev))
        self.state0 = SurrogateState(0, np.array([e0_mwh]), self.ev, np.zeros(0))

    def paths(self, t: int, w_now: int) -> DayPaths:
        """Row 0 = the realized outcome ``w_now``; rows 1.. = every future outcome sequence."""
        futures = list(itertools.product((0, 1), repeat=self.T - 1 - t))
        H, M = self.T - t, len(futures)
        idx = np.array([(w_now,) + f for f in futures]).T                             # (H, M)
        prob = np.full(M, 1.0 / M)
        return DayPaths(start_step=t, n_steps=self.T, dt_h=self.DT, probabilities=prob, load_p_mw=self.load[idx],
                        load_q_mvar=self.load_q[idx], der_avail_mw=self.der[idx],
                        price_buy_per_mwh=self.prices[t:], ev_future_mw=np.zeros((H, M, self.sur.n_station)),
                        ev_future_unmet_kwh=np.zeros((H, M)), tso_requirement_mw=np.zeros((H, M, 0)))

    def rollout_action(self, state: SurrogateState, paths: DayPaths, multistep: bool = True) -> ActionBatch:
        base = self.sur.base_action(state, paths)
        look = self.sur.lookahead(state, paths, base)
        settings = RolloutSettings() if multistep else RolloutSettings(storage_hold_steps=(1,))
        prices = paths.price_buy_per_mwh if multistep else None
        cands = candidate_values(StepLimits.from_state(self.sur, state, paths), base, settings, prices)
        return improve(look, base, cands, z=0.0)[0]

    def cost(self, policy: str, t: int = 0, state: SurrogateState | None = None, w: int | None = None) -> float:
        """Exact expected cost from step ``t`` (``w`` None: before the outcome of ``t`` is known)."""
        state = state if state is not None else self.state0
        if w is None:
            return 0.5 * (self.cost(policy, t, state, 0) + self.cost(policy, t, state, 1))
        paths = self.paths(t, w)
        action = (self.sur.base_action(state, paths) if policy == "base"
                  else self.rollout_action(state, paths, multistep=policy == "rollout"))
        stages, nxt = self.sur.step(state, paths, action)
        stage = float(stages[0])                                  # row 0 is the same on every path
        return stage if t == self.T - 1 else stage + self.cost(policy, t + 1, nxt)


def test_exact_base_cost_matches_the_lookahead_and_rollout_strictly_improves() -> None:
    """Peak price now, valley after: delaying EV charging pays, so the rollout must gain."""
    inst = _Instance(prices=np.array([1000.0, 300.0, 300.0, 300.0]), scale=(0.8, 1.0), e0_mwh=0.2, seed=0)
    j_base = inst.cost("base")
    # the rollout's own simulation of the base policy (enumerated paths) is the exact cost-to-go
    for w in (0, 1):
        paths = inst.paths(0, w)
        look = inst.sur.lookahead(inst.state0, paths, inst.sur.base_action(inst.state0, paths))
        assert look.reference_cost @ paths.probabilities == pytest.approx(inst.cost("base", 0, inst.state0, w),
                                                                          rel=1e-7)
    j_roll = inst.cost("rollout")
    assert j_roll < j_base - 1e-3 * abs(j_base), (j_roll, j_base)


def test_multistep_storage_candidate_finds_arbitrage_a_one_step_candidate_cannot() -> None:
    """Valley now, peak later, an empty store: charging now pays only if the energy is kept for the
    peak, but the base rule discharges into the next (valley) step's demand. One-step candidates
    find only the EV deferral; the time-of-use profile candidate also finds the arbitrage (§7)."""
    inst = _Instance(prices=np.array([300.0, 300.0, 1000.0, 1000.0]), scale=(0.3, 0.5), e0_mwh=0.0, seed=2)
    j_base = inst.cost("base")
    j_one = inst.cost("rollout_one_step")
    j_multi = inst.cost("rollout")
    assert j_one <= j_base + 1e-7 * abs(j_base)
    assert j_multi <= j_one + 1e-7 * abs(j_one)
    assert j_base - j_multi > 20.0, (j_base, j_one, j_multi)          # CNY: the arbitrage is found
    assert j_one - j_multi > 20.0                                       # ... and only by the multi-step candidate


@settings(max_examples=4, deadline=None)
@given(prices=st.lists(st.sampled_from([300.0, 600.0, 1000.0]), min_size=4, max_size=4),
       low=st.floats(0.5, 0.9), e0=st.floats(0.0, 1.2), seed=st.integers(0, 1000))
def test_cost_improvement_property_with_exact_expectations(prices: list[float], low: float, e0: float,
                                                           seed: int) -> None:
    """J_rollout <= J_base when Q is the exact expectation (docs/math.md §7)."""
    inst = _Instance(prices=np.array(prices), scale=(low, 1.0), e0_mwh=e0, seed=seed)
    j_base, j_roll = inst.cost("base"), inst.cost("rollout")
    assert j_roll <= j_base + 1e-7 * abs(j_base)


def test_choose_uses_paired_differences_and_the_z_threshold() -> None:
    w = np.full(4, 0.25)
    q_cur = np.array([10.0, 20.0, 30.0, 40.0])
    q = np.stack([q_cur - np.array([1.0, -0.5, 1.0, 0.5]), q_cur + 1.0])   # mean diff -0.5, SE 0.35
    best, mean, se = choose(q, q_cur, w, z=0.0)
    assert best == 0 and mean[0] == pytest.approx(-0.5)
    assert se[0] == pytest.approx(np.std([-1.0, 0.5, -1.0, -0.5], ddof=1) / 2.0)
    assert choose(q, q_cur, w, z=2.0)[0] == -1                               # not significant at z = 2
    # M = 1: no standard error, any strict gain switches; no gain never does
    assert choose(np.array([[4.9]]), np.array([5.0]), np.ones(1), z=3.0)[0] == 0
    assert choose(np.array([[5.0]]), np.array([5.0]), np.ones(1), z=0.0)[0] == -1


# ============================================================================ (b) determinism


def _play(policy: RolloutPolicy, case: str, seed: int, n_steps: int, start: int = 0) -> list[np.ndarray]:
    base = _env(case, seed)
    heur = HeuristicPolicy(base.grid)
    policy.reset(seed)
    out = []
    for t in range(start + n_steps):
        obs = base.observation_typed
        d = policy.act(obs, obs.forecast) if t >= start else heur.act(obs)
        if t >= start:
            out.append(d.to_flat())
        base.step_dispatch(d)
    return out


def test_rollout_is_deterministic_on_common_random_numbers() -> None:
    grid = env.load_case("d33")
    first = _play(RolloutPolicy(grid, n_sims=4, seed=7), "d33", 2, 5, start=36)
    again = _play(RolloutPolicy(grid, n_sims=4, seed=7), "d33", 2, 5, start=36)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)


def test_same_step_twice_gives_the_same_decision() -> None:
    base = _env("d33", 3)
    pol = RolloutPolicy(base.grid, n_sims=4)
    pol.reset(3)
    heur = HeuristicPolicy(base.grid)
    while base.observation_typed.step < 44:
        base.step_dispatch(heur.act(base.observation_typed))
    obs = base.observation_typed
    a, b = pol.act(obs, obs.forecast), pol.act(obs, obs.forecast)
    np.testing.assert_array_equal(a.to_flat(), b.to_flat())


# ============================================================================ (c) candidates


@pytest.mark.parametrize("case,n_steps", [("d33", 6), ("t30d2", 2)])
def test_base_action_is_a_candidate_and_candidates_respect_the_limits(case: str, n_steps: int) -> None:
    base_env = _env(case, 4)
    grid = base_env.grid
    pol = RolloutPolicy(grid, n_sims=2, n_levels=3, delta=0.4, ev_defer_steps=(4,))
    pol.reset(4)
    heur = HeuristicPolicy(grid)
    m = base_env.model
    checked = 0
    for t in range(40 + n_steps):
        obs = base_env.observation_typed
        if t < 40:
            base_env.step_dispatch(heur.act(obs))
            continue
        d = pol.act(obs, obs.forecast)
        dec = pol.last_decision
        base = dec.base
        np.testing.assert_array_equal(base.to_flat(), heur.act(obs).to_flat())
        lim = StepLimits.from_observation(pol.surrogate, obs)
        cands = candidate_values(lim, ActionBatch.from_dispatch(base), pol.settings)
        kinds = {k for k, _, _, _ in cands}
        assert {"ev", "curtail"} <= kinds
        assert ("storage" in kinds) == (m.sizes.n_storage > 0)
        assert ("thermal" in kinds) == (case == "t30d2")
        field = {"ev": "ev_p_mw", "storage": "storage_p_mw", "curtail": "der_curtail_frac",
                 "thermal": "thermal_p_mw"}
        for kind, i, vals, extra in cands:
            assert vals[0] == getattr(base, field[kind])[i]                  # base value first
            lo, hi, _ = lim.of(kind)
            assert (vals >= lo[i] - 1e-12).all() and (vals <= hi[i] + 1e-12).all()
            if kind == "storage":
                plans = extra["storage_plan_mw"]
                assert plans.shape[0] == len(vals) and np.isnan(plans[0]).all()   # base: one step only
            elif kind == "ev":
                defer = extra["ev_defer_steps"]
                assert defer.shape == (len(vals), m.sizes.n_evcs) and (defer[0] == 0).all()
                assert (vals[defer[:, i] > 0] == lo[i]).all()                # deferred: must-run power
            else:
                assert extra == {} and len(vals) <= 1 + 2 * pol.settings.n_levels
        for r in dec.rounds:                                                  # every round starts at base
            assert r.values[0] == getattr(base, field[r.kind])[r.index]
        base_env.step_dispatch(d)
        proj = base_env.last_outcome.projection
        for name in ("ev_p_mw", "storage_p_mw", "der_curtail_frac", "thermal_p_mw"):
            np.testing.assert_allclose(proj[name], 0.0, atol=1e-9)            # nothing projected
        checked += len(cands)
    assert checked > 0
    if case == "t30d2":
        assert any(r.kind == "thermal" for r in pol.last_decision.rounds), "thermal setpoints are candidates"


def test_no_exchange_rollout_never_lets_a_node_export() -> None:
    """Seed 003's third case: the candidates keep the no-exchange rule (DER used <= own demand)."""
    base_env = _env("d33", 6)
    grid, m = base_env.grid, base_env.model
    pol = RolloutPolicy(grid, n_sims=2, no_exchange=True)
    pol.reset(6)
    heur = HeuristicPolicy(grid, no_exchange=True)
    while base_env.observation_typed.step < 48:
        base_env.step_dispatch(heur.act(base_env.observation_typed))
    for _ in range(3):
        obs = base_env.observation_typed
        d = pol.act(obs, obs.forecast)
        assert (d.der_curtail_frac >= pol.last_decision.base.der_curtail_frac - 1e-12).all()
        base_env.step_dispatch(d)
        out = base_env.last_outcome
        demand = m.m_load @ out.load_p_mw[:m.n_load_f] + m.m_ctrl[:, :m.sizes.n_evcs] @ out.ev_p_mw
        used = -m.m_ctrl[:, m.sizes.n_evcs + m.sizes.n_storage:] @ out.der_used_mw[:m.n_der_f]
        assert (used <= demand + 1e-9).all()
    assert obs.der_avail_mw.sum() > 0


def test_settings_reject_unknown_keys_and_bad_values() -> None:
    grid = env.load_case("d33")
    with pytest.raises(ValueError, match="unknown keys.*valid keys"):
        RolloutPolicy(grid, n_simz=3)
    with pytest.raises(ValueError, match="n_sims"):
        RolloutPolicy(grid, n_sims=0)
    with pytest.raises(ValueError, match="components"):
        RolloutPolicy(grid, components=("ev", "hvdc"))
    with pytest.raises(ValueError, match="unknown keys"):
        SurrogateSettings.from_kwargs(no_exchnge=True)


# ============================================================================ (d) surrogate vs env


@pytest.mark.parametrize("case,no_exchange", [("d33", False), ("d33", True), ("t30d2", False), ("t14d2", False)])
def test_surrogate_prices_the_realized_day_like_the_env(case: str, no_exchange: bool) -> None:
    """The base rule on the realized day as one path: cost breakdown within 1e-6 of the env's
    (t14d2: the deep-peak fuel terms and hydro spillage too)."""
    e = gym.make("gridroll/TDGrid-v0", case=case, regime="cloudy")
    ctl = RollingController(e, HeuristicPolicy(e.unwrapped.grid, no_exchange=no_exchange),
                            settings=LoopSettings(reactive=False))
    summary = ctl.run_day(seed=1).summary
    sur = _surrogate(case, no_exchange)
    paths, state = sur.paths_from_scenario(e.unwrapped.simulator.scenario)
    costs = sur.simulate(state, paths)
    assert costs["total"][0, 0] == pytest.approx(summary["total_cost"], rel=1e-6)
    for key in ("energy_bought", "ev_revenue", "voltage_violation", "ev_unmet", "thermal_fuel", "water_spillage",
                "load_shed", "curtailment", "boundary_energy"):
        assert costs[key][0, 0] == pytest.approx(summary[f"cost_{key}"], rel=1e-6, abs=1e-6)


def test_ev_tracker_rebuilds_the_env_fleet() -> None:
    """Replaying the setpoints through the split reproduces every known EV's energy."""
    base = _env("d33", 5)
    tracker = EVTracker(11, base.n_steps, 0.25, base.grid.layout.ev_efficiency)
    rng = np.random.default_rng(0)
    sc = base.simulator.scenario
    for t in range(70):
        obs = base.observation_typed
        ev = (obs.ev.p_min_kw + rng.random(11) * (obs.ev.p_max_kw - obs.ev.p_min_kw)) * 1e-3
        known = sc.ev.select(sc.ev.arrival_step <= t - 1)
        st_ = tracker.state(t, known, obs.ev, 8.0)
        tracker.record(t, ev)
        fleet = base.simulator.fleet
        conn = fleet.connected(t)
        old = sc.ev.arrival_step[conn] <= t - 1
        np.testing.assert_allclose(np.sort(tracker.known_state(t, known).e_kwh), np.sort(fleet.e_kwh[conn][old]),
                                   atol=1e-9)
        # station totals including the pseudo-EVs of this step's arrivals match the env's bounds
        onehot = np.eye(11)[st_.station]
        np.testing.assert_allclose(st_.e_kwh @ onehot, obs.ev.e_kwh, atol=1e-6)
        np.testing.assert_allclose(st_.p_max_kw @ onehot, obs.ev.p_rated_kw, atol=1e-6)
        base.step_dispatch(HeuristicPolicy(base.grid).act(obs).replace(ev_p_mw=ev))


def extra_defers(cand) -> bool:  # noqa: ANN001
    return bool(np.any(cand[3].get("ev_defer_steps", np.zeros(1)) > 0))


def _lookahead_at(case: str, seed: int, step: int, **kw):  # noqa: ANN202
    """A Rollout (z = 0) and its lookahead at ``step`` of a day played by the heuristic:
    (policy, observation, lookahead, base action, candidates)."""
    base_env = _env(case, seed)
    pol = RolloutPolicy(base_env.grid, z=0.0, **kw)
    pol.reset(seed)
    heur = HeuristicPolicy(base_env.grid)
    while base_env.observation_typed.step < step:
        base_env.step_dispatch(heur.act(base_env.observation_typed))
    obs = base_env.observation_typed
    base = heur.act(obs)
    look = pol.lookahead(obs, obs.forecast, base)
    b = ActionBatch.from_dispatch(base)
    return pol, obs, look, b, candidate_values(StepLimits.from_observation(pol.surrogate, obs), b, pol.settings)


def test_lookahead_prices_candidates_like_a_full_simulation() -> None:
    """Re-solving only the changed points (and committing) gives the exact surrogate Q."""
    pol, obs, look, b, cands = _lookahead_at("d33", 4, 52, n_sims=4, ev_defer_steps=(4, 16))
    _, i, vals, extra = next(c for c in cands if c[0] == "storage")
    batch = b.vary("storage_p_mw", i, vals, **extra)                          # multi-step candidates too
    q = look.evaluate(batch)
    exact = pol.surrogate.simulate(look.state, look.paths, batch)["total"]
    np.testing.assert_allclose(q, exact, rtol=1e-7)
    _, i, vals, extra = next(c for c in cands if c[0] == "ev" and extra_defers(c))
    batch = b.vary("ev_p_mw", i, vals, **extra)                              # EV deferrals
    q = look.evaluate(batch)
    exact = pol.surrogate.simulate(look.state, look.paths, batch)["total"]
    np.testing.assert_allclose(q, exact, rtol=1e-7)
    np.testing.assert_allclose(q[0], look.reference_cost, rtol=1e-12)       # the base value itself
    chosen, rounds, q_chosen = improve(look, b, cands, z=0.0)
    np.testing.assert_allclose(q_chosen, pol.surrogate.simulate(look.state, look.paths, chosen)["total"][0],
                               rtol=1e-7)
    assert q_chosen @ look.paths.probabilities <= look.reference_cost @ look.paths.probabilities
    assert any(r.chosen > 0 for r in rounds)


def test_lookahead_reusing_reference_rows_prices_td_candidates_like_a_full_simulation() -> None:
    """On a T-D case, thermal and EV candidates priced by the lookahead (the reference's feeder
    and thermal rows reused where their inputs match) have the Q of a full simulation of each,
    before and after the reference moves to a chosen candidate."""
    pol, obs, look, b, cands = _lookahead_at("t30d2", 5, 44, n_sims=3)
    reserves = pol._reserves(obs, look, b)
    kinds = set()
    for kind, i, vals, extra in cands:
        if kind not in ("thermal", "ev") or kind in kinds:
            continue
        kinds.add(kind)
        also = dict(extra)
        if kind == "thermal":
            p = np.repeat(b.thermal_p_mw, vals.size, axis=0)
            p[:, i] = vals
            also["thermal_r_up_mw"], also["thermal_r_dn_mw"] = reserves(p)
        batch = b.vary({"thermal": "thermal_p_mw", "ev": "ev_p_mw"}[kind], i, vals, **also)
        q = look.evaluate(batch)
        np.testing.assert_allclose(q, pol.surrogate.simulate(look.state, look.paths, batch)["total"], rtol=1e-9)
    assert kinds == {"thermal", "ev"}
    chosen, rounds, q_chosen = improve(look, b, cands, z=0.0, reserves=reserves)
    assert {r.kind for r in rounds if r.chosen > 0} & {"thermal", "ev"}
    np.testing.assert_allclose(q_chosen, pol.surrogate.simulate(look.state, look.paths, chosen)["total"][0],
                               rtol=1e-9)


def test_committed_reference_holds_the_committed_trajectorys_ac_solution() -> None:
    """After a commit, the reference's feeder voltages (the warm starts of later re-solves and
    the first-order expansion's operating points) are the AC solution of the committed
    candidate's trajectory, phasors included, as a lookahead built on that candidate has them."""
    pol, obs, look, b, cands = _lookahead_at("d33", 4, 52, n_sims=2)
    _, i, vals, extra = next(c for c in cands if c[0] == "ev")
    batch = b.vary("ev_p_mw", i, vals, **extra)
    look.evaluate(batch)
    look.commit_last(1)
    fresh = pol.surrogate.lookahead(look.state, look.paths, batch.take([1]))
    for mine, want in zip(look._ref.feeders, fresh._ref.feeders):
        np.testing.assert_allclose(mine["v"], want["v"], atol=1e-7)


def test_first_order_fallback_is_close_for_one_step_changes() -> None:
    """Beyond the re-solve budget, the expansion of the sweep's fixed point prices a curtailment
    change (row 0 only) within 3 % of the exact Q difference."""
    base_env = _env("d33", 4)
    heur = HeuristicPolicy(base_env.grid)
    while base_env.observation_typed.step < 50:                     # midday: PV output to curtail
        base_env.step_dispatch(heur.act(base_env.observation_typed))
    obs = base_env.observation_typed
    pol = RolloutPolicy(base_env.grid, n_sims=4)
    pol.reset(4)
    exact_look = pol.lookahead(obs, obs.forecast, heur.act(obs))
    b = ActionBatch.from_dispatch(heur.act(obs))
    batch = b.vary("der_curtail_frac", 0, [0.5, 1.0])
    lin_look = pol.surrogate.lookahead(exact_look.state, exact_look.paths, b, max_columns=0)
    d_exact = exact_look.evaluate(batch) - exact_look.reference_cost
    d_lin = lin_look.evaluate(batch) - lin_look.reference_cost
    assert np.abs(d_exact).min() > 1.0
    np.testing.assert_allclose(d_lin, d_exact, rtol=0.03)


# ============================================================================ (e) closed loop


def _day_cost(policy, case: str = "d33", seed: int = 1) -> float:  # noqa: ANN001
    e = gym.make("gridroll/TDGrid-v0", case=case, regime="cloudy")
    return RollingController(e, policy, settings=LoopSettings(reactive=False)).run_day(seed).summary["total_cost"]


def test_rollout_beats_the_heuristic_on_a_d33_day() -> None:
    grid = env.load_case("d33")
    heur = _day_cost(HeuristicPolicy(grid))
    roll = _day_cost(RolloutPolicy(grid, n_sims=8))
    assert roll < heur, (roll, heur)


@pytest.mark.slow
@pytest.mark.parametrize("kw", [{"n_sims": 1}, {"n_sims": 32}, {"n_sims": 8, "no_exchange": True}])
def test_rollout_variants_beat_their_base_on_a_d33_day(kw: dict) -> None:
    grid = env.load_case("d33")
    heur = _day_cost(HeuristicPolicy(grid, no_exchange=kw.get("no_exchange", False)), seed=2)
    assert _day_cost(RolloutPolicy(grid, **kw), seed=2) < heur


@pytest.mark.slow
def test_rollout_beats_the_heuristic_on_a_t30d2_day() -> None:
    grid = env.load_case("t30d2")
    assert _day_cost(RolloutPolicy(grid, n_sims=4), "t30d2") < _day_cost(HeuristicPolicy(grid), "t30d2")


def test_ev_deferral_is_must_run_then_asap_step_by_step() -> None:
    """``ev_asap`` with a deferral equals stepping the EVs one step at a time: each EV takes its
    must-run power (the env's rule) for the deferred steps, then its full headroom."""
    from policies.ev_knowledge import ev_asap, ev_limits

    rng = np.random.default_rng(3)
    n_ev, n_station, dt, t0, rows = 12, 3, 0.25, 10, 30
    e0 = rng.uniform(5.0, 40.0, n_ev)
    ev = ConnectedEVs(rng.integers(0, n_station, n_ev), e0, np.full(n_ev, 66.0),
                      np.minimum(66.0, e0 + rng.uniform(5.0, 30.0, n_ev)), np.full(n_ev, 6.6), np.full(n_ev, 0.9),
                      t0 + rng.integers(3, 40, n_ev))
    defer = np.array([[0.0, 9.0, 3.0]])
    power, unmet = ev_asap(ev, e0[None], t0, rows, dt, n_station, defer)
    e = e0.copy()
    for k in range(rows):
        lo, head = ev_limits(ev, e, t0 + k, dt)
        deferred = k < defer[0, ev.station] - 1
        here = ev.deadline_step > t0 + k
        p = np.where(here, np.where(deferred, lo, head), 0.0)
        np.testing.assert_allclose(power[k, 0], np.bincount(ev.station, p, n_station) * 1e-3, atol=1e-9)
        e = e + 0.9 * p * dt
    left = ev.deadline_step <= t0 + rows
    np.testing.assert_allclose(unmet.sum(), np.maximum(ev.e_request_kwh - e, 0.0)[left].sum(), atol=1e-6)


# ============================================================================ (f) decisions pinned


def test_rollout_decisions_equal_the_recorded_ones_on_common_random_numbers() -> None:
    """The Rollout's closed-loop decisions on day 8140 (M = 8, reactive off) equal those recorded
    by the code before its day model moved onto the env's and the base rule's functions
    (``tests/policies/data/rollout_decisions_8140.npz``: commit d8cfb09's code, played by
    ``play`` of ``benchmarks/rollout_decisions.py`` for 24 and 6 steps, keys
    ``{case}_dispatch`` / ``{case}_cost``): d33's first 8 steps and t30d2's first 2 (the file
    holds 24 and 6)."""
    from pathlib import Path

    rec = np.load(Path(__file__).parent / "data" / "rollout_decisions_8140.npz")
    keys = ("ev_p_mw", "storage_p_mw", "der_curtail_frac", "thermal_p_mw", "thermal_r_up_mw", "thermal_r_dn_mw")
    for case, n in (("d33", 8), ("t30d2", 2)):
        e = gym.make("gridroll/TDGrid-v0", case=case, regime="cloudy").unwrapped
        e.reset(seed=8140, options={"scenario_seed": 8140})
        policy = RolloutPolicy(e.grid, n_sims=8)
        policy.reset(8140)
        for t in range(n):
            obs = e.observation_typed
            d = policy.act(obs, obs.forecast)
            flat = np.concatenate([np.ravel(np.asarray(getattr(d, k), dtype=float)) for k in keys])
            np.testing.assert_allclose(flat, rec[f"{case}_dispatch"][t], rtol=0, atol=1e-9,
                                       err_msg=f"{case} step {t}")
            e.step_dispatch(d)
            assert e.last_outcome.cost["total"] == pytest.approx(rec[f"{case}_cost"][t], rel=1e-9)
