"""The batched simulator equals B single simulators; the native vector env equals N single envs."""

from __future__ import annotations

import dataclasses

import gymnasium as gym
import numpy as np
import pytest

import env  # noqa: F401  (registers the ids)
from env.batched import BatchedSimulator, merge_sessions
from env.cases import case_names, load_case
from env.grid_model import GridModel
from env.registration import ENV_IDS
from env.simulator import GridSimulator
from env.vector_env import TDGridVectorEnv
from scenarios.day import sample_day

# every array field of a step, compared day by day (StepOutcome's names)
_FIELDS = ("load_served_mw", "der_used_mw", "storage_p_mw", "storage_e_mwh", "ev_p_mw", "thermal_p_mw",
           "head_p_mw", "head_q_mvar", "loss_mw", "v_pu", "v_min_pu", "v_max_pu", "line_p_mw", "line_loading",
           "imbalance_mw", "residual_mw", "tso_requirement_mw", "tso_delivered_mw", "import_mw", "load_p_mw")
# steps compared per case (the big T-D cases take longer per step)
_STEPS = {"t118d10": 6, "t30d5": 24}
_DAYS = {"t118d10": 2}


def _assert_step_equal(batch, b: int, single) -> None:
    """Day ``b`` of a batched step equals the single step: every field to rounding (1e-9
    relative; costs 1e-9 relative + 1e-6 currency absolute: a boundary penalty on a difference
    of nearly equal MW amounts keeps only their rounding)."""
    for name in _FIELDS:
        np.testing.assert_allclose(getattr(batch, name)[b], getattr(single, name), rtol=1e-9, atol=1e-9,
                                   err_msg=name)
    for group in ("setpoints", "projection"):
        for key, value in getattr(single, group).items():
            np.testing.assert_allclose(getattr(batch, group)[key][b], value, rtol=1e-9, atol=1e-9,
                                       err_msg=f"{group}.{key}")
    assert set(batch.cost) == set(single.cost)
    for key, value in single.cost.items():
        assert batch.cost[key][b] == pytest.approx(value, rel=1e-9, abs=1e-6), key
    assert set(batch.violations) == set(single.violations)
    for key, value in single.violations.items():
        np.testing.assert_allclose(batch.violations[key][b], value, rtol=1e-9, atol=1e-9, err_msg=key)


@pytest.mark.parametrize("case", case_names())
def test_batched_step_equals_single_steps_on_random_actions(case: str) -> None:
    grid = load_case(case)
    model = GridModel(grid)
    n_days = _DAYS.get(case, 3)
    scenarios = [sample_day(grid, "cloudy", 8130 + b) for b in range(n_days)]
    batch = BatchedSimulator(grid, scenarios, model=model)
    singles = [GridSimulator(grid, sc, model=model) for sc in scenarios]
    rng = np.random.default_rng(8130)
    for _ in range(_STEPS.get(case, 40)):
        a = rng.uniform(-1.3, 1.3, size=(n_days, model.sizes.n_action))   # beyond [-1, 1]: projected
        out = batch.step_action(a)
        for b, sim in enumerate(singles):
            _assert_step_equal(out, b, sim.step_action(a[b].copy()))


def test_batched_day_that_fails_its_sweep_sheds_like_the_single_simulator() -> None:
    grid = load_case("d33")
    model = GridModel(grid)
    normal = sample_day(grid, "cloudy", 8131)
    heavy = dataclasses.replace(normal, load_pu=normal.load_pu * 12.0)   # no AC solution without shedding
    batch = BatchedSimulator(grid, [normal, heavy], model=model)
    singles = [GridSimulator(grid, sc, model=model) for sc in (normal, heavy)]
    a = np.zeros((2, model.sizes.n_action))
    out = batch.step_action(a)
    assert out.violations["load_shed_mwh"][0] == 0.0 < out.violations["load_shed_mwh"][1]
    for b, sim in enumerate(singles):
        _assert_step_equal(out, b, sim.step_action(a[b].copy()))


def test_whole_batched_day_equals_single_days_and_ends() -> None:
    grid = load_case("d33")
    model = GridModel(grid)
    scenarios = [sample_day(grid, "sunny", 8132 + b) for b in range(2)]
    batch = BatchedSimulator(grid, scenarios, model=model)
    singles = [GridSimulator(grid, sc, model=model) for sc in scenarios]
    totals = np.zeros(2)
    single_totals = np.zeros(2)
    while not batch.done:
        a = np.zeros((2, model.sizes.n_action))
        totals += batch.step_action(a).cost["total"]
        single_totals += [s.step_action(a[b].copy()).cost["total"] for b, s in enumerate(singles)]
    assert all(s.done for s in singles)
    np.testing.assert_allclose(totals, single_totals, rtol=1e-12)
    with pytest.raises(RuntimeError, match="over"):
        batch.step_action(np.zeros((2, model.sizes.n_action)))


def test_merged_sessions_keep_each_days_order() -> None:
    grid = load_case("d33")
    days = [sample_day(grid, "cloudy", 8133 + b).ev for b in range(3)]
    ns = len(grid.layout.evcs_names)
    merged = merge_sessions(days, ns)
    assert len(merged) == sum(len(d) for d in days)
    for b, day in enumerate(days):
        mine = (merged.station >= b * ns) & (merged.station < (b + 1) * ns)
        np.testing.assert_array_equal(merged.station[mine] - b * ns, day.station)
        np.testing.assert_array_equal(merged.arrival_step[mine], day.arrival_step)
        np.testing.assert_array_equal(merged.e_request_kwh[mine], day.e_request_kwh)


def test_batched_simulator_rejects_bad_batches() -> None:
    grid = load_case("d33")
    with pytest.raises(ValueError, match="at least one"):
        BatchedSimulator(grid, [])
    with pytest.raises(ValueError, match="same number"):
        BatchedSimulator(grid, [sample_day(grid, "cloudy", 1, 15), sample_day(grid, "cloudy", 1, 60)])


# ----------------------------------------------------------------------------- the vector env


def test_make_vec_returns_the_native_vector_env_for_every_registered_id() -> None:
    for env_id in ENV_IDS:
        v = gym.make_vec(env_id, num_envs=2, vectorization_mode="vector_entry_point")
        assert isinstance(v.unwrapped, TDGridVectorEnv)
        single = gym.make(env_id)
        assert v.single_action_space == single.action_space
        assert v.single_observation_space == single.observation_space
        obs, info = v.reset(seed=3)
        assert v.observation_space.contains(obs)
        np.testing.assert_array_equal(info["scenario_seed"], [3, 4])
    # the sync mode still gives Gymnasium's vector env of single envs
    assert isinstance(gym.make_vec("gridroll/D33-v0", num_envs=2, vectorization_mode="sync"),
                      gym.vector.SyncVectorEnv)


@pytest.mark.parametrize("env_id", ["gridroll/D33-v0", "gridroll/T30D2-v0"])
def test_vector_env_equals_single_envs_across_the_autoreset(env_id: str) -> None:
    """N envs seeded s..s+N-1 give the trajectories of N single envs with those seeds, through a
    day's end: NEXT_STEP autoreset (reward 0, not done), then days drawn from each env's rng."""
    n = 3
    venv = gym.make_vec(env_id, num_envs=n, vectorization_mode="vector_entry_point")
    singles = [gym.make(env_id) for _ in range(n)]
    obs_v, _ = venv.reset(seed=8134)
    firsts = [e.reset(seed=8134 + i)[0] for i, e in enumerate(singles)]
    for i in range(n):
        for k in obs_v:
            np.testing.assert_array_equal(obs_v[k][i], firsts[i][k])
    rng = np.random.default_rng(8134)
    steps = venv.unwrapped.simulator.n_steps
    for t in range(steps + 6):
        a = rng.uniform(-1, 1, size=venv.action_space.shape).astype(np.float32)
        obs_v, rew_v, term_v, trunc_v, info_v = venv.step(a)
        for i, e in enumerate(singles):
            if t == steps:                              # the autoreset step
                o, r, term, info = e.reset()[0], 0.0, False, None
                assert info_v["scenario_seed"][i] == e.unwrapped.scenario_seed
            else:
                o, r, term, _, info = e.step(a[i])
                assert info_v["cost"]["total"][i] == pytest.approx(info["cost"]["total"], rel=1e-9, abs=1e-6)
            assert rew_v[i] == pytest.approx(r, rel=1e-9, abs=1e-6)
            assert term_v[i] == term and not trunc_v[i]
            for k in obs_v:
                np.testing.assert_allclose(obs_v[k][i], o[k], atol=1e-5, err_msg=k)
        assert info_v["_cost"].all() if t != steps else "cost" not in info_v


def test_vector_env_seeding_is_deterministic_and_checks_its_input() -> None:
    def run(seed: int) -> np.ndarray:
        v = TDGridVectorEnv(num_envs=2, case="d33", dt_minutes=60)
        v.reset(seed=seed)
        rng = np.random.default_rng(0)
        out = []
        for _ in range(30):                        # past the 24-step day: autoreset, fresh days
            out.append(v.step(rng.uniform(-1, 1, size=v.action_space.shape))[1])
        return np.array(out)

    np.testing.assert_array_equal(run(5), run(5))
    assert not np.array_equal(run(5), run(6))
    v = TDGridVectorEnv(num_envs=2, case="d33")
    with pytest.raises(RuntimeError, match="reset"):
        v.step(np.zeros(v.action_space.shape))
    v.reset(seed=[7, 9])
    np.testing.assert_array_equal(v.scenario_seeds, [7, 9])
    with pytest.raises(ValueError, match="shape"):
        v.step(np.zeros((3,) + v.single_action_space.shape))
    bad = np.zeros(v.action_space.shape)
    bad[1, 0] = np.nan
    with pytest.raises(ValueError, match="env 1"):
        v.step(bad)
    with pytest.raises(ValueError, match="num_envs"):
        TDGridVectorEnv(num_envs=0)
    with pytest.raises(ValueError, match="unknown case"):
        TDGridVectorEnv(num_envs=2, case="nope")
    with pytest.raises(ValueError, match="intraday"):
        TDGridVectorEnv(num_envs=2, case="d33", forecast_obs="intraday")
    v.reset(options={"scenario_seeds": [11, 12]})
    np.testing.assert_array_equal(v.scenario_seeds, [11, 12])


def test_vector_env_truncates_at_max_episode_steps_and_takes_reactive_setpoints() -> None:
    v = gym.make_vec("gridroll/D33-v0", num_envs=2, vectorization_mode="vector_entry_point", dt_minutes=5)
    v.reset(seed=1)
    for t in range(96):                                 # the id's limit: 96 of the 288 five-minute steps
        _, _, term, trunc, _ = v.step(np.zeros(v.action_space.shape))
    assert trunc.all() and not term.any()
    ve = TDGridVectorEnv(num_envs=2, case="d33")
    ve.reset(seed=2)
    n_comp = ve._proto.model.sizes.n_comp
    q = np.tile(np.linspace(-0.2, 0.2, n_comp), (2, 1))
    ve.set_reactive(q)
    ve.step(np.zeros(ve.action_space.shape))
    model = ve._proto.model
    np.testing.assert_allclose(ve.last_outcome.setpoints["q_comp_mvar"], np.clip(q, model.q_min, model.q_max))
    assert np.abs(ve.last_outcome.setpoints["q_comp_mvar"]).max() > 0     # the setpoints reached the step


def test_balancing_of_many_days_equals_each_day_alone() -> None:
    """env.balancing.balance on B random days gives each day what it gives that day alone
    (deficits, surpluses, reserves too small, shedding, curtailment, back-off)."""
    from env.balancing import balance

    grid = load_case("t30d2")
    m = GridModel(grid)
    rng = np.random.default_rng(8135)
    n = 64
    lay = dict(m.sizes_q.layout())
    x = {name: rng.uniform(0, 5, size=(n, sl.stop - sl.start)) for name, sl in lay.items()}
    x["thermal_p_mw"] = rng.uniform(m.g_p_min, m.g_p_max, size=(n, m.n_gen))
    x["thermal_r_up_mw"][::4] = 0.0                        # some days without reserves
    imbalance = rng.normal(0, 60, size=n)
    imbalance[::7] = 0.0
    dev = rng.normal(0, 0.2, size=(n, x["ev_p_mw"].shape[1]))
    der = rng.uniform(0, 3, size=(n, len(m.der_cost)))
    load_t, load_f = rng.uniform(0, 50, size=n), rng.uniform(0, 20, size=n)
    load_t[::5] = 0.0
    out = balance(m, imbalance, x, dev, der, load_t, load_f)
    assert out["shed_t"].max() > 0 and out["backoff"].max() > 0 and out["feeder_changed"].any()
    for b in range(n):
        one = balance(m, imbalance[b:b + 1], {k: v[b:b + 1] for k, v in x.items()}, dev[b:b + 1], der[b:b + 1],
                      load_t[b:b + 1], load_f[b:b + 1])
        for key, value in one.items():
            np.testing.assert_array_equal(out[key][b], value[0], err_msg=f"day {b} {key}")
