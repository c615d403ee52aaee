"""Policy comparisons: a sweep of policies x regimes x days on common random numbers.

Day ``k`` of every regime is ``sample_day(grid, regime, seed + k)`` for *every*
policy, so differences between policies are paired by day.

Resume design (a killed sweep loses nothing):

* ``out/config.json`` holds the sweep's identity (case, seed base, step length,
  reactive settings). A later sweep into the same ``out`` must agree on it
  (policies, regimes and days may change: runs already on disk are reused).
* Each run (policy x regime x day) is written by the driver process as soon as
  it finishes, to ``out/runs/<regime>/<policy>/dayNNN.steps.parquet`` and then
  ``dayNNN.summary.parquet``, each through a temporary file and an atomic
  rename. The summary file is the commit marker: a run is finished iff it
  exists, so a run killed half-way is simply run again and a stale temporary
  file (``.dayNNN....tmp``) is never read.
* Workers only compute and return their results (they never write), so the
  same layout works for local processes and for Ray on a cluster.
* A lock on ``out/.sweep.lock`` (the ``filelock`` package: ``flock`` on POSIX,
  ``msvcrt`` locking on Windows) stops two sweeps writing to one ``out``; the
  operating system drops it when the process dies, so a killed sweep never
  blocks its own restart.
* On resume a run counts as finished only if both its files read back: a
  corrupted or missing ``steps.parquet`` next to an intact summary is named in
  a warning and the run is run again.
"""

from __future__ import annotations

import functools
import json
import multiprocessing
import os
import re
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from filelock import FileLock, Timeout

from controller.io import write_parquet_atomic

PolicyFactory = Callable[..., Any]
"""``factory(name, grid) -> Policy``; :func:`policies.make_policy` by default."""

TIMING_COLUMNS: tuple[str, ...] = ("decision_ms_mean", "socp_ms_mean", "run_wall_s")
"""Summary columns that measure time: they differ between runs of the same day."""

STEP_TIMING_COLUMNS: tuple[str, ...] = ("decision_ms", "socp_ms", "socp_solver_ms")
"""Step-table columns that measure time."""

BACKENDS: tuple[str, ...] = ("local", "ray")
CONFIG_FILE = "config.json"
RUNS_DIR = "runs"
_LOCK_FILE = ".sweep.lock"
_NAME = re.compile(r"[A-Za-z0-9_.\-]+")
_BLAS_ENV = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
_CACHE_SIZE = 4


@dataclass(frozen=True)
class SweepConfig:
    """What a comparison runs.

    Attributes:
        case: grid case name (``gridroll cases``).
        policies: policy names, in report order.
        regimes: regime names, in report order.
        days: days per regime; day ``k`` uses seed ``seed + k``.
        seed: seed of day 0 (>= 0).
        dt_minutes: step length.
        reactive: run the reactive SOCP each step (else compensators stay at 0).
        n_scenarios: SOCP scenarios after reduction.
        solver: SOCP solver.
        reactive_method: ``"socp"`` (the scenario SOCP) or ``"fast"`` (the same objective on the
            AC flow by sequential QPs, ``controller/reactive_fast.py``).
        agents: ``(name, folder)`` of the trained agents among ``policies`` (docs/rl.md): the
            name is :func:`policies.sb3.agent_label` of the folder (it hashes the agent's files,
            so a retrained agent is a new policy, never a resumed one).
        profiles, profile_date: measured days (docs/data.md): day ``k`` is the date
            ``profile_date + k`` of the profile file (or of the case's own profiles, SimBench cases,
            with ``profile_date`` alone), with the forecast errors of seed ``seed + k``.
        ev_sessions: measured EV sessions (CSV / parquet) replacing the sampled EVs on those days.
    """

    case: str
    policies: tuple[str, ...]
    regimes: tuple[str, ...]
    days: int
    seed: int = 1
    dt_minutes: int = 15
    reactive: bool = True
    n_scenarios: int = 10
    solver: str = "ECOS"
    reactive_method: str = "socp"
    agents: tuple[tuple[str, str], ...] = ()
    profiles: str | None = None
    profile_date: str | None = None
    ev_sessions: str | None = None

    def __post_init__(self) -> None:
        """Check the fields by type (:func:`env.settings.check_field_types`) and the names,
        ``days >= 1``, ``seed >= 0``, ``n_scenarios >= 1``."""
        from env.settings import check_field_types

        if isinstance(self.policies, (list, tuple)):
            object.__setattr__(self, "policies", tuple(self.policies))
        if isinstance(self.regimes, (list, tuple)):
            object.__setattr__(self, "regimes", tuple(self.regimes))
        if isinstance(self.agents, (list, tuple)):
            object.__setattr__(self, "agents", tuple(tuple(a) for a in self.agents))
        check_field_types(self)
        for field, names in (("policies", self.policies), ("regimes", self.regimes)):
            if not names:
                raise ValueError(f"SweepConfig: {field} is empty")
            if len(set(names)) != len(names):
                raise ValueError(f"SweepConfig: {field} has duplicates: {', '.join(names)}")
            bad = [n for n in names if not isinstance(n, str) or not _NAME.fullmatch(n)]
            if bad:
                raise ValueError(f"SweepConfig: {field} names must match {_NAME.pattern}, got {bad}")
        if isinstance(self.days, bool) or not isinstance(self.days, int) or self.days < 1:
            raise ValueError(f"SweepConfig: days must be an int >= 1, got {self.days!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"SweepConfig: seed must be an int >= 0, got {self.seed!r}")
        if self.n_scenarios < 1:
            raise ValueError(f"SweepConfig: n_scenarios must be >= 1, got {self.n_scenarios}")
        if self.profiles is not None and self.profile_date is None:
            raise ValueError("SweepConfig: profiles need a profile_date")
        if self.profile_date is not None and self.profiles is None:
            from env.simbench import has_profiles

            if not has_profiles(self.case):
                raise ValueError(f"SweepConfig: profile_date needs profiles: case {self.case!r} has none of its own")
        if self.ev_sessions is not None and self.profile_date is None:
            raise ValueError("SweepConfig: ev_sessions need measured days (profile_date)")
        if self.reactive_method not in ("socp", "fast"):
            raise ValueError(f"SweepConfig: reactive_method must be 'socp' or 'fast', got {self.reactive_method!r}")
        stray = [name for name, _ in self.agents if name not in self.policies]
        if stray:
            raise ValueError(f"SweepConfig: agents {stray} are not among the policies")

    def identity(self) -> dict[str, Any]:
        """The fields every run in one ``out`` folder must share (stored in ``config.json``)."""
        return {"case": self.case, "seed": self.seed, "dt_minutes": self.dt_minutes, "reactive": self.reactive,
                "n_scenarios": self.n_scenarios, "solver": self.solver,
                **({"reactive_method": self.reactive_method} if self.reactive_method != "socp" else {}),
                **({"profiles": self.profiles} if self.profiles else {}),
                **({"profile_date": self.profile_date} if self.profile_date else {}),
                **({"ev_sessions": self.ev_sessions} if self.ev_sessions else {})}

    def specs(self) -> list[RunSpec]:
        """Every run, ordered by (policy, regime, day) so a worker reuses its env and policy."""
        return [RunSpec(p, r, d, self.seed + d) for p in self.policies for r in self.regimes
                for d in range(self.days)]

    def validate_names(self) -> None:
        """Check the case, regimes and (registered) policies exist, and every policy runs on the case.

        Raises:
            ValueError: an unknown name (the message lists the known ones), or a T-D-only policy
                on a single feeder.
        """
        from env import case_names
        from policies import policy_names
        from scenarios.regimes import regime_names

        agents = dict(self.agents)
        from env.cases import is_grid_file

        cases = () if is_grid_file(self.case) else (self.case,)     # a grid file is checked by loading it
        for kind, names, known in (("case", cases, case_names()), ("regime", self.regimes, regime_names()),
                                   ("policy", [p for p in self.policies if p not in agents], policy_names())):
            unknown = [n for n in names if n not in known]
            if unknown:
                raise ValueError(f"unknown {kind} {', '.join(map(repr, unknown))}; known: {', '.join(known)}")
        from env import load_case
        from policies import policy_supports

        from policies.sb3 import agent_label

        for name, folder in agents.items():
            if agent_label(folder) != name:
                raise ValueError(f"agent {name!r}: the files in {folder} changed (now {agent_label(folder)!r})")
        grid = load_case(self.case)
        unsupported = [n for n in self.policies if n not in agents and not policy_supports(n, grid)]
        if unsupported:
            raise ValueError(f"policy {', '.join(map(repr, unsupported))} needs a T-D case (t30d2, t118d10); "
                             f"{self.case} is a single feeder")


@dataclass(frozen=True)
class RunSpec:
    """One closed-loop day of one policy in one regime."""

    policy: str
    regime: str
    day: int
    seed: int

    @property
    def label(self) -> str:
        return f"{self.policy}/{self.regime}/day{self.day}"


@dataclass(frozen=True)
class RunOutput:
    """What a worker returns: the day's summary row and its tidy step table."""

    summary: dict[str, Any]
    steps: pd.DataFrame


@dataclass(frozen=True)
class SweepResult:
    """A finished sweep: the summary table (one row per run) and what was done."""

    summary: pd.DataFrame
    n_ran: int
    n_reused: int
    wall_s: float
    out: Path


# --------------------------------------------------------------------------- running one day


class _Runner:
    """An env, a policy and their controller for one (policy, regime), reused across days."""

    def __init__(self, config: SweepConfig, policy: str, regime: str, factory: PolicyFactory) -> None:
        import gymnasium as gym

        import env  # noqa: F401  (registers the envs)
        from controller.loop import LoopSettings, RollingController
        from controller.reactive import ReactiveSettings

        measured = ({**({"profiles": config.profiles} if config.profiles else {}),
                     "profile_date": config.profile_date, "profile_first_seed": config.seed,
                     **({"ev_sessions": config.ev_sessions} if config.ev_sessions else {})}
                    if config.profile_date else {})
        self.env = gym.make("gridroll/TDGrid-v0", case=config.case, regime=regime, dt_minutes=config.dt_minutes,
                            **measured)
        self.policy = factory(policy, self.env.unwrapped.grid)
        settings = LoopSettings(reactive=config.reactive, n_scenarios=config.n_scenarios,
                                n_samples=max(30, config.n_scenarios), reactive_method=config.reactive_method,
                                socp=ReactiveSettings(solver=config.solver, n_scenarios=config.n_scenarios))
        self.controller = RollingController(self.env, self.policy, settings=settings)

    def run(self, config: SweepConfig, spec: RunSpec) -> RunOutput:
        t0 = time.perf_counter()
        try:
            result = self.controller.run_day(spec.seed)
        except Exception as exc:
            raise RuntimeError(f"run {spec.label} (seed {spec.seed}) failed: {type(exc).__name__}: {exc}") from exc
        row = {"case": config.case, "policy": spec.policy, "regime": spec.regime, "day": spec.day,
               "seed": spec.seed, **result.summary}
        row.update(bound_columns(self.policy, spec.label, row["total_cost"]))
        row["run_wall_s"] = time.perf_counter() - t0
        steps = result.steps.assign(policy=spec.policy, regime=spec.regime, day=spec.day, seed=spec.seed)
        return RunOutput(row, steps)

    def close(self) -> None:
        self.env.close()


def bound_columns(policy: Any, label: str, executed_cost: float) -> dict[str, Any]:
    """``executed_cost`` (the env's realized cost) and, for a clairvoyant yardstick, its bound.

    A policy with a ``bound`` attribute (perfect information) reports its optimal
    cost of the day as ``total_cost``, the lower bound regret is measured against;
    ``bound_model`` names the model behind it (the bound is valid only if that
    model relaxes the env's physics).
    """
    if not hasattr(policy, "bound"):
        return {"executed_cost": executed_cost, "total_cost": executed_cost, "bound_model": ""}
    bound = policy.bound
    if bound is None or not pd.notna(bound):
        raise RuntimeError(f"{label}: policy {getattr(policy, 'name', type(policy).__name__)!r} has a 'bound' "
                           f"attribute but no bound after the day (got {bound!r})")
    model = str(getattr(policy, "model_name", "") or "unnamed")
    return {"executed_cost": executed_cost, "total_cost": float(bound), "bound_model": model}


class RunnerCache:
    """Built runners by (policy, regime), least recently used dropped beyond ``size``.

    Results do not depend on the cache: ``run_day`` resets the env, the policy and
    the compensator from the day's seed.
    """

    def __init__(self, config: SweepConfig, factory: PolicyFactory | None = None, size: int = _CACHE_SIZE) -> None:
        self.config = config
        self.factory = factory if factory is not None else _default_factory(config)
        self.size = size
        self._runners: OrderedDict[tuple[str, str], _Runner] = OrderedDict()

    def run(self, spec: RunSpec) -> RunOutput:
        key = (spec.policy, spec.regime)
        if key in self._runners:
            self._runners.move_to_end(key)
        else:
            self._runners[key] = _Runner(self.config, spec.policy, spec.regime, self.factory)
            while len(self._runners) > self.size:
                self._runners.popitem(last=False)[1].close()
        return self._runners[key].run(self.config, spec)

    def close(self) -> None:
        for runner in self._runners.values():
            runner.close()
        self._runners.clear()


def _default_factory(config: SweepConfig) -> PolicyFactory:
    """:func:`policies.make_policy` told whether the loop runs the reactive SOCP; the agents'
    names load their folders (``sb3:FOLDER``)."""
    return functools.partial(_make_sweep_policy, compensators=config.reactive, agents=config.agents)


def _make_sweep_policy(name: str, grid: Any, *, compensators: bool, agents: tuple[tuple[str, str], ...]) -> Any:
    """A sweep's policy: an agent's folder by its name, else :func:`policies.make_policy`."""
    from policies import AGENT_PREFIX, make_policy

    folder = dict(agents).get(name)
    if folder is not None:
        return make_policy(AGENT_PREFIX + folder, grid)
    return make_policy(name, grid, compensators=compensators)


def pin_blas_threads() -> Any:
    """Limit BLAS/OpenMP to one thread in this process (workers share the CPUs).

    Returns the threadpoolctl limiter (keep it alive for the limit to hold).
    """
    from threadpoolctl import threadpool_limits

    for var in _BLAS_ENV:
        os.environ[var] = "1"
    return threadpool_limits(limits=1)


# --------------------------------------------------------------------------- backends


def _serial(specs: Sequence[RunSpec], config: SweepConfig, factory: PolicyFactory | None
            ) -> Iterator[tuple[RunSpec, RunOutput]]:
    from threadpoolctl import threadpool_limits

    cache = RunnerCache(config, factory)
    try:
        with threadpool_limits(limits=1):  # the same BLAS threading as in the workers: identical numbers
            for spec in specs:
                yield spec, cache.run(spec)
    finally:
        cache.close()


# A worker process's runners (set by the pool's initializer, in the worker only).
_PROCESS_CACHE: RunnerCache | None = None
_PROCESS_BLAS: Any = None


def _init_process_worker(config: SweepConfig, factory: PolicyFactory | None) -> None:
    global _PROCESS_CACHE, _PROCESS_BLAS
    _PROCESS_BLAS = pin_blas_threads()
    _PROCESS_CACHE = RunnerCache(config, factory)


def _run_in_process(spec: RunSpec) -> RunOutput:
    if _PROCESS_CACHE is None:
        raise RuntimeError("experiments: worker process was not initialized")
    return _PROCESS_CACHE.run(spec)


def _processes(specs: Sequence[RunSpec], config: SweepConfig, factory: PolicyFactory | None, workers: int
               ) -> Iterator[tuple[RunSpec, RunOutput]]:
    """Runs on ``workers`` spawned processes; yields each as it finishes."""
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_init_process_worker, initargs=(config, factory))
    try:
        pending: dict[Future[RunOutput], RunSpec] = {pool.submit(_run_in_process, s): s for s in specs}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                yield pending.pop(future), future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


class _RayWorker:
    """A Ray actor's state: its own runner cache, BLAS pinned to one thread."""

    def __init__(self, config: SweepConfig, factory: PolicyFactory | None) -> None:
        self._blas = pin_blas_threads()
        self.cache = RunnerCache(config, factory)

    def run(self, spec: RunSpec) -> tuple[RunSpec, RunOutput]:
        return spec, self.cache.run(spec)


def _ray(specs: Sequence[RunSpec], config: SweepConfig, factory: PolicyFactory | None, workers: int,
         address: str | None) -> Iterator[tuple[RunSpec, RunOutput]]:
    """Runs on ``workers`` Ray actors: on a local Ray started with ``num_cpus=workers``, unless
    Ray is already initialized or a cluster is named (``address``, else the ``RAY_ADDRESS``
    environment variable that ``ray job submit`` sets). A cluster gets no resource arguments
    and the code in a ``runtime_env`` (:func:`ray_runtime_env`), so its nodes need Ray and
    gridroll's dependencies but not gridroll itself."""
    try:
        import ray
        from ray.util import ActorPool
    except ImportError as exc:
        raise ValueError("backend 'ray' needs Ray: pip install -e '.[ray]'") from exc
    started = not ray.is_initialized()
    if started:
        address = address or os.environ.get("RAY_ADDRESS") or None
        if address:
            ray.init(address=address, runtime_env=ray_runtime_env(ship_code=True), log_to_driver=False)
        else:
            ray.init(num_cpus=workers, runtime_env=ray_runtime_env(ship_code=False), include_dashboard=False,
                     log_to_driver=False)
    try:
        actor = ray.remote(num_cpus=1)(_RayWorker)
        pool = ActorPool([actor.remote(config, factory) for _ in range(workers)])
        for spec in specs:
            pool.submit(lambda a, s: a.run.remote(s), spec)
        while pool.has_next():
            yield pool.get_next_unordered()
    finally:
        if started:
            ray.shutdown()


def ray_runtime_env(ship_code: bool) -> dict[str, Any]:
    """The Ray ``runtime_env`` of a sweep: BLAS pinned to one thread and, for a cluster, gridroll's
    packages (``env``, ``scenarios``, ``policies``, ``controller``, with the case data) as
    ``py_modules``, uploaded from this checkout."""
    runtime: dict[str, Any] = {"env_vars": {var: "1" for var in _BLAS_ENV}}
    if ship_code:
        root = Path(__file__).resolve().parent.parent
        runtime["py_modules"] = [str(root / name) for name in ("env", "scenarios", "policies", "controller")]
        runtime["excludes"] = ["__pycache__", "*.pyc"]
    return runtime


# --------------------------------------------------------------------------- files


class RunStore:
    """The ``out`` folder of a sweep: its config, one summary + step file per finished run."""

    def __init__(self, out: Path | str) -> None:
        self.out = Path(out)
        self.runs = self.out / RUNS_DIR

    def paths(self, spec: RunSpec) -> tuple[Path, Path]:
        """(summary, steps) files of a run."""
        base = self.runs / spec.regime / spec.policy
        return base / f"day{spec.day:03d}.summary.parquet", base / f"day{spec.day:03d}.steps.parquet"

    def check_config(self, config: SweepConfig) -> None:
        """Write ``config.json`` or check the one there matches.

        Raises:
            ValueError: ``out`` holds a sweep with another case, seed base or settings,
                or holds runs without a config.
        """
        path = self.out / CONFIG_FILE
        want = config.identity()
        if not path.exists():
            if self.runs.exists() and any(self.runs.rglob("*.summary.parquet")):
                raise ValueError(f"{self.out} holds runs but no {CONFIG_FILE}; use another --out")
            self.out.mkdir(parents=True, exist_ok=True)
            _write_text_atomic(path, json.dumps(want, indent=2, sort_keys=True) + "\n")
            return
        try:
            have = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path} is not valid JSON ({exc}); use another --out") from exc
        diff = [f"{k}: {have.get(k)!r} on disk, {v!r} now" for k, v in want.items() if have.get(k) != v]
        if diff:
            raise ValueError(f"{self.out} holds a sweep with another config ({'; '.join(diff)}); "
                             "use another --out or delete it")

    def load(self, spec: RunSpec, check_steps: bool = False) -> pd.DataFrame | None:
        """The summary row of a finished run, or ``None`` if it has not finished.

        With ``check_steps`` (on resume) the run's step file must read back too: a missing or
        corrupted one is named in a warning and the run counts as not finished (run again).
        """
        path, steps_path = self.paths(spec)
        if not path.exists():
            return None
        if check_steps:
            try:
                pd.read_parquet(steps_path)
            except Exception as exc:  # noqa: BLE001  (any unreadable file: run it again)
                warnings.warn(f"{steps_path} is missing or unreadable ({type(exc).__name__}: {exc}); "
                              f"running {spec.label} again", stacklevel=2)
                return None
        try:
            row = pd.read_parquet(path)
        except Exception as exc:  # noqa: BLE001  (unreadable: run it again rather than lose the sweep)
            warnings.warn(f"{path} is unreadable ({exc}); running {spec.label} again", stacklevel=2)
            return None
        got = row[["policy", "regime", "day", "seed"]].iloc[0].tolist() if len(row) == 1 else None
        if got != [spec.policy, spec.regime, spec.day, spec.seed]:
            raise ValueError(f"{path} holds run {got}, expected {spec.label} with seed {spec.seed}; "
                             "the out folder is inconsistent")
        return row

    def write(self, spec: RunSpec, output: RunOutput) -> None:
        """Steps first, then the summary (the commit marker), each by atomic rename."""
        summary_path, steps_path = self.paths(spec)
        write_parquet_atomic(output.steps, steps_path)
        write_parquet_atomic(pd.DataFrame([output.summary]), summary_path)

    def steps(self, specs: Sequence[RunSpec]) -> pd.DataFrame:
        """The step tables of these (finished) runs, concatenated.

        Raises:
            ValueError: a step file cannot be read (naming it; rerun the sweep to repair it).
        """
        frames = []
        for s in specs:
            path = self.paths(s)[1]
            try:
                frames.append(pd.read_parquet(path))
            except Exception as exc:  # noqa: BLE001
                raise ValueError(f"{path} is unreadable ({type(exc).__name__}: {exc}); run the sweep again "
                                 "with the same --out to redo that run") from exc
        return pd.concat(frames, ignore_index=True)

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold an exclusive lock on ``out`` (a second sweep into it is a clear error)."""
        self.out.mkdir(parents=True, exist_ok=True)
        lock = FileLock(self.out / _LOCK_FILE)
        try:
            lock.acquire(timeout=0)
        except Timeout as exc:
            raise ValueError(f"another sweep is writing to {self.out}") from exc
        try:
            yield
        finally:
            lock.release()


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# --------------------------------------------------------------------------- the sweep


def run_sweep(config: SweepConfig, out: Path | str, *, workers: int = 1, backend: str = "local",
              progress: bool = True, on_run: Callable[[RunSpec], None] | None = None,
              policy_factory: PolicyFactory | None = None, ray_address: str | None = None) -> SweepResult:
    """Run every (policy, regime, day) not yet on disk under ``out``, then collect them.

    Args:
        config: what to run.
        out: output folder (created; resumable).
        workers: parallel workers (``1`` runs in this process with the local backend).
            Local workers are *spawned* processes: a script calling this with
            ``workers > 1`` needs the usual ``if __name__ == "__main__":`` guard.
        backend: ``"local"`` (processes) or ``"ray"``.
        progress: show a tqdm bar over finished runs.
        on_run: called with each run's spec right after its files are written.
        policy_factory: ``factory(name, grid)``; :func:`policies.make_policy` (and
            a check of the names against its registry) when ``None``. Must be
            importable by name for process or Ray workers.
        ray_address: a Ray cluster to connect to (backend ``"ray"``).

    Returns:
        The summary table, one row per run in ``config.specs()`` order.

    Raises:
        ValueError: bad workers/backend, unknown names, or ``out`` holding another sweep.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; known: {', '.join(BACKENDS)}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an int >= 1, got {workers!r}")
    if policy_factory is None:
        config.validate_names()
    t0 = time.perf_counter()
    store = RunStore(out)
    with store.lock():
        store.check_config(config)
        specs = config.specs()
        todo = [s for s in specs if store.load(s, check_steps=True) is None]
        _execute(store, config, todo, len(specs), workers=workers, backend=backend, progress=progress,
                 on_run=on_run, factory=policy_factory, ray_address=ray_address)
        summary = collect_summary(store, specs)
    return SweepResult(summary, len(todo), len(specs) - len(todo), time.perf_counter() - t0, store.out)


def _execute(store: RunStore, config: SweepConfig, todo: list[RunSpec], total: int, *, workers: int,
             backend: str, progress: bool, on_run: Callable[[RunSpec], None] | None,
             factory: PolicyFactory | None, ray_address: str | None) -> None:
    from tqdm import tqdm

    n = min(workers, max(len(todo), 1))
    if backend == "ray" and todo:
        results = _ray(todo, config, factory, n, ray_address)
    elif n > 1:
        results = _processes(todo, config, factory, n)
    else:
        results = _serial(todo, config, factory)
    with tqdm(total=total, initial=total - len(todo), desc=f"{config.case} sweep", unit="run",
              disable=not progress) as bar:
        try:
            for spec, output in results:
                store.write(spec, output)
                bar.set_postfix_str(spec.label, refresh=False)
                bar.update(1)
                if on_run is not None:
                    on_run(spec)
        finally:
            close = getattr(results, "close", None)
            if close is not None:
                close()  # stop the backend (cancel pending runs) on any error


def collect_summary(store: RunStore, specs: Sequence[RunSpec]) -> pd.DataFrame:
    """The summary rows of these runs, in order.

    Raises:
        ValueError: a run has not finished.
    """
    rows = []
    for spec in specs:
        row = store.load(spec)
        if row is None:
            raise ValueError(f"run {spec.label} has no result under {store.runs}")
        rows.append(row)
    return pd.concat(rows, ignore_index=True)


def without_timing(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame less its timing columns (what must be identical across backends)."""
    drop = [c for c in (*TIMING_COLUMNS, *STEP_TIMING_COLUMNS) if c in frame]
    return frame.drop(columns=drop)

