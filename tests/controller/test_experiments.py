"""The comparison sweep: common random numbers, atomic per-run files, resume, workers, Ray."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from controller.experiments import RunSpec, RunStore, SweepConfig, run_sweep, without_timing
from policies import make_policy

POLICIES = ("heuristic", "heuristic_no_exchange")
CONFIG = SweepConfig(case="d33", policies=POLICIES, regimes=("sunny",), days=3, seed=5, reactive=False)


def _same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(without_timing(a), without_timing(b), check_exact=True)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted serial sweep."""
    out = tmp_path_factory.mktemp("ref")
    result = run_sweep(CONFIG, out, progress=False)
    assert (result.n_ran, result.n_reused) == (6, 0)
    return out


def _summary(out: Path) -> pd.DataFrame:
    return run_sweep(CONFIG, out, progress=False).summary


def _steps(out: Path) -> pd.DataFrame:
    return RunStore(out).steps(CONFIG.specs())


def test_summary_has_one_row_per_run_on_common_random_numbers(reference: Path) -> None:
    summary = _summary(reference)
    assert summary[["policy", "day", "seed"]].values.tolist() == [
        [p, d, 5 + d] for p in POLICIES for d in range(3)]
    needed = {"policy", "regime", "day", "seed", "total_cost", "cost_energy_bought", "curtailment_mwh",
              "load_shed_mwh", "ev_unmet_mwh", "voltage_violation_puh", "losses_mwh", "max_line_loading",
              "boundary_violation_mw", "decision_ms_mean", "executed_cost", "run_wall_s"}
    assert needed <= set(summary)
    assert (summary.total_cost == summary.executed_cost).all() and (summary.bound_model == "").all()
    steps = _steps(reference)
    system = steps[steps.area == "system"]
    # the same days for both policies: the exogenous load is step by step identical
    a, b = (system[system.policy == p].load_mw.to_numpy() for p in POLICIES)
    assert (a == b).all()
    for (policy, day), rows in system.groupby(["policy", "day"]):
        row = summary[(summary.policy == policy) & (summary.day == day)].iloc[0]
        assert rows.cost_total.sum() == pytest.approx(row.total_cost)


def test_killed_sweep_resumes_identically(reference: Path, tmp_path: Path) -> None:
    out = tmp_path / "killed"
    done: list[RunSpec] = []

    def kill_after_three(spec: RunSpec) -> None:
        done.append(spec)
        if len(done) == 3:
            raise KeyboardInterrupt("simulated kill")

    with pytest.raises(KeyboardInterrupt):
        run_sweep(CONFIG, out, progress=False, on_run=kill_after_three)
    store = RunStore(out)
    assert [s for s in CONFIG.specs() if store.load(s) is not None] == done
    # a run killed mid-write: a stale temporary file and an orphan step table, no summary
    victim = CONFIG.specs()[4]
    summary_path, steps_path = store.paths(victim)
    summary_path.parent.mkdir(parents=True, exist_ok=True)
    (summary_path.parent / f".{summary_path.name}.99999.tmp").write_bytes(b"PAR1 half a file")
    steps_path.write_bytes(b"garbage from a killed writer")
    result = run_sweep(CONFIG, out, progress=False)
    assert (result.n_ran, result.n_reused) == (3, 3)
    _same(result.summary, _summary(reference))
    _same(_steps(out), _steps(reference))


def test_killed_parallel_sweep_resumes_identically(reference: Path, tmp_path: Path) -> None:
    def kill_after_two(spec: RunSpec) -> None:
        if sum(RunStore(tmp_path).load(s) is not None for s in CONFIG.specs()) == 2:
            raise KeyboardInterrupt("simulated kill")

    with pytest.raises(KeyboardInterrupt):
        run_sweep(CONFIG, tmp_path, workers=2, progress=False, on_run=kill_after_two)
    result = run_sweep(CONFIG, tmp_path, progress=False)
    assert (result.n_ran, result.n_reused) == (4, 2)
    _same(result.summary, _summary(reference))


def test_deleted_run_is_run_again(reference: Path, tmp_path: Path) -> None:
    out = tmp_path / "copy"
    shutil.copytree(reference, out)
    RunStore(out).paths(CONFIG.specs()[1])[0].unlink()
    result = run_sweep(CONFIG, out, progress=False)
    assert (result.n_ran, result.n_reused) == (1, 5)
    _same(result.summary, _summary(reference))


def test_more_days_reuse_the_runs_on_disk(tmp_path: Path) -> None:
    two = SweepConfig(case="d33", policies=("heuristic",), regimes=("cloudy",), days=2, seed=5, reactive=False)
    run_sweep(two, tmp_path, progress=False)
    three = SweepConfig(case="d33", policies=("heuristic",), regimes=("cloudy",), days=3, seed=5, reactive=False)
    result = run_sweep(three, tmp_path, progress=False)
    assert (result.n_ran, result.n_reused) == (1, 2) and result.summary.seed.tolist() == [5, 6, 7]


def test_two_workers_give_the_same_results(reference: Path, tmp_path: Path) -> None:
    result = run_sweep(CONFIG, tmp_path, workers=2, progress=False)
    assert result.n_ran == 6
    _same(result.summary, _summary(reference))
    _same(_steps(tmp_path), _steps(reference))


def test_reactive_day_does_not_depend_on_the_days_before(tmp_path: Path) -> None:
    """A day run after another on the same controller equals the day run fresh (resume, workers)."""
    config = SweepConfig(case="d33", policies=("heuristic",), regimes=("cloudy",), days=2, seed=3, n_scenarios=2,
                         dt_minutes=60)
    first = run_sweep(config, tmp_path, progress=False).summary
    assert first.socp_fallbacks.notna().all()
    RunStore(tmp_path).paths(config.specs()[1])[0].unlink()
    again = run_sweep(config, tmp_path, progress=False)
    assert again.n_ran == 1
    _same(again.summary, first)


def test_config_mismatch_is_a_clear_error(reference: Path) -> None:
    other_seed = SweepConfig(case="d33", policies=POLICIES, regimes=("sunny",), days=3, seed=6, reactive=False)
    with pytest.raises(ValueError, match=r"another config \(seed: 5 on disk, 6 now\)"):
        run_sweep(other_seed, reference, progress=False)
    other_case = SweepConfig(case="d69", policies=POLICIES, regimes=("sunny",), days=3, seed=5, reactive=False)
    with pytest.raises(ValueError, match="case: 'd33' on disk, 'd69' now"):
        run_sweep(other_case, reference, progress=False)


def test_runs_without_config_are_refused(reference: Path, tmp_path: Path) -> None:
    out = tmp_path / "noconfig"
    shutil.copytree(reference, out)
    (out / "config.json").unlink()
    with pytest.raises(ValueError, match="holds runs but no config.json"):
        run_sweep(CONFIG, out, progress=False)


def test_two_sweeps_cannot_share_an_out(reference: Path) -> None:
    with RunStore(reference).lock(), pytest.raises(ValueError, match="another sweep is writing"):
        run_sweep(CONFIG, reference, progress=False)


class _Clairvoyant:
    """A stand-in for perfect information: the heuristic, plus a made-up 'bound' per day."""

    model_name = "test-model"

    def __init__(self, grid: Any, fail: bool = False) -> None:
        self.inner = make_policy("heuristic", grid)
        self.name = "perfect_information"
        self.fail = fail
        self.bound: float | None = None

    def reset(self, seed: int | None = None) -> None:
        self.inner.reset(seed)
        self.bound = None if self.fail else 1000.0 + float(seed or 0)

    def act(self, obs: Any, forecast: Any) -> Any:
        return self.inner.act(obs, forecast)


class _Crash:
    name = "crash"

    def reset(self, seed: int | None = None) -> None:
        pass

    def act(self, obs: Any, forecast: Any) -> Any:
        raise ArithmeticError("boom")


def _factory(name: str, grid: Any) -> Any:
    if name == "crash":
        return _Crash()
    if name == "perfect_information":
        return _Clairvoyant(grid)
    if name == "broken_bound":
        return _Clairvoyant(grid, fail=True)
    return make_policy(name, grid)


def test_bound_is_the_total_cost_of_a_clairvoyant_policy(tmp_path: Path) -> None:
    config = SweepConfig(case="d33", policies=("heuristic", "perfect_information"), regimes=("sunny",), days=2,
                         seed=5, reactive=False)
    summary = run_sweep(config, tmp_path, progress=False, policy_factory=_factory).summary
    pi = summary[summary.policy == "perfect_information"]
    heur = summary[summary.policy == "heuristic"]
    assert pi.total_cost.tolist() == [1005.0, 1006.0] and (pi.bound_model == "test-model").all()
    assert pi.executed_cost.tolist() == heur.total_cost.tolist()  # it executed the heuristic's plan


def test_missing_bound_is_an_error(tmp_path: Path) -> None:
    config = SweepConfig(case="d33", policies=("broken_bound",), regimes=("sunny",), days=1, reactive=False)
    with pytest.raises(RuntimeError, match="no bound after the day"):
        run_sweep(config, tmp_path, progress=False, policy_factory=_factory)


def test_a_failing_policy_stops_the_sweep_and_keeps_finished_runs(tmp_path: Path) -> None:
    config = SweepConfig(case="d33", policies=("heuristic", "crash"), regimes=("sunny",), days=1, seed=5,
                         reactive=False)
    with pytest.raises(RuntimeError, match=r"run crash/sunny/day0 \(seed 5\) failed: ArithmeticError: boom"):
        run_sweep(config, tmp_path, progress=False, policy_factory=_factory)
    assert [RunStore(tmp_path).load(s) is not None for s in config.specs()] == [True, False]


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"policies": ()}, "policies is empty"),
    ({"policies": ("heuristic", "heuristic")}, "duplicates"),
    ({"policies": ("../x",)}, "names must match"),
    ({"days": 0}, "days must be an int >= 1"),
    ({"seed": -1}, "seed must be an int >= 0"),
])
def test_bad_config_is_a_clear_error(kwargs: dict[str, Any], match: str) -> None:
    base = {"case": "d33", "policies": ("heuristic",), "regimes": ("sunny",), "days": 1}
    with pytest.raises(ValueError, match=match):
        SweepConfig(**{**base, **kwargs})


def test_unknown_names_backend_and_workers_are_clear_errors(tmp_path: Path) -> None:
    for field, name in (("policies", ("greedy",)), ("regimes", ("foggy",)), ("case", "ieee13")):
        config = SweepConfig(**{"case": "d33", "policies": ("heuristic",), "regimes": ("sunny",), "days": 1,
                                field: name})
        with pytest.raises(ValueError, match="unknown (policy|regime|case)"):
            run_sweep(config, tmp_path, progress=False)
    with pytest.raises(ValueError, match="unknown backend 'dask'"):
        run_sweep(CONFIG, tmp_path, backend="dask", progress=False)
    with pytest.raises(ValueError, match="workers must be"):
        run_sweep(CONFIG, tmp_path, workers=0, progress=False)
    assert not (tmp_path / "runs").exists()


def test_ray_backend_gives_the_same_files(reference: Path, tmp_path: Path) -> None:
    pytest.importorskip("ray")
    result = run_sweep(CONFIG, tmp_path, workers=2, backend="ray", progress=False)
    assert result.n_ran == 6
    _same(result.summary, _summary(reference))
    _same(_steps(tmp_path), _steps(reference))
