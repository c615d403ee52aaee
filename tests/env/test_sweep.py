"""Backward/forward sweep against pandapower's Newton-Raphson on IEEE 33 (case33bw)."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from env.physics.sweep import PowerFlowError, RadialSweep, SweepResult, fixed_point, fixed_point_blocks

pp = pytest.importorskip("pandapower")
pn = pytest.importorskip("pandapower.networks")

V_BASE_KV = 12.66
S_BASE_MVA = 10.0
Z_BASE_OHM = V_BASE_KV**2 / S_BASE_MVA
N_BUS = 33


def _case33():  # noqa: ANN202 - pandapower net
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = pn.case33bw()
    assert net.sn_mva == S_BASE_MVA
    return net


def _sweep_of(net, name: str = "d33") -> RadialSweep:  # noqa: ANN001
    lines = net.line[net.line.in_service]
    z_ohm = lambda col: (lines[col] * lines.length_km / lines.parallel).to_numpy()  # noqa: E731
    return RadialSweep.build(
        lines.from_bus.to_numpy(), lines.to_bus.to_numpy(),
        z_ohm("r_ohm_per_km") / Z_BASE_OHM, z_ohm("x_ohm_per_km") / Z_BASE_OHM,
        n_bus=len(net.bus), slack_bus=int(net.ext_grid.bus.iloc[0]), name=name,
    )


def _net_load_pu(net) -> np.ndarray:  # noqa: ANN001
    """Net consumption per bus (loads - static generators), p.u. on 10 MVA."""
    s = np.zeros(len(net.bus), dtype=complex)
    loads = net.load[net.load.in_service]
    np.add.at(s, loads.bus.to_numpy(), (loads.p_mw + 1j * loads.q_mvar).to_numpy() * loads.scaling.to_numpy())
    sgen = net.sgen[net.sgen.in_service]
    np.add.at(s, sgen.bus.to_numpy(), -(sgen.p_mw + 1j * sgen.q_mvar).to_numpy() * sgen.scaling.to_numpy())
    return s / S_BASE_MVA


def _runpp(net) -> tuple[np.ndarray, complex]:  # noqa: ANN001
    """pandapower NR voltages (complex, bus order) and total line losses (p.u.)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pp.runpp(net, tolerance_mva=1e-10, numba=False)
    v = net.res_bus.vm_pu.to_numpy() * np.exp(1j * np.deg2rad(net.res_bus.va_degree.to_numpy()))
    loss = (net.res_line.pl_mw.sum() + 1j * net.res_line.ql_mvar.sum()) / S_BASE_MVA
    return v, loss


@pytest.fixture(scope="module")
def net33():  # noqa: ANN201
    return _case33()


@pytest.fixture(scope="module")
def sweep33(net33) -> RadialSweep:  # noqa: ANN001
    return _sweep_of(net33)


def _assert_matches_pandapower(result: SweepResult, net, k: int = 0) -> None:  # noqa: ANN001
    v_ref, loss_ref = _runpp(net)
    assert np.abs(result.v_pu[:, k] - v_ref).max() < 1e-6
    assert abs(result.loss_pu[k].real - loss_ref.real) < 1e-6
    assert abs(result.loss_pu[k].imag - loss_ref.imag) < 1e-6


def test_base_case_matches_pandapower(net33, sweep33: RadialSweep) -> None:  # noqa: ANN001
    result = sweep33.solve(_net_load_pu(net33))
    assert result.v_pu.shape == (N_BUS, 1)
    assert result.i_branch_pu.shape == result.s_from_pu.shape == (N_BUS - 1, 1)
    assert result.loss_pu.shape == result.s_slack_pu.shape == (1,)
    net = copy.deepcopy(net33)
    _assert_matches_pandapower(result, net)
    lines = net.line[net.line.in_service]
    s_from_ref = (net.res_line.p_from_mw + 1j * net.res_line.q_from_mvar)[lines.index].to_numpy() / S_BASE_MVA
    assert np.abs(result.s_from_pu[:, 0] - s_from_ref).max() < 1e-6


def test_known_answer_ieee33(net33, sweep33: RadialSweep) -> None:  # noqa: ANN001
    result = sweep33.solve(_net_load_pu(net33))
    vm = np.abs(result.v_pu[:, 0])
    assert int(np.argmin(vm)) == 17
    assert vm.min() == pytest.approx(0.9131, abs=5e-5)
    assert result.loss_pu[0].real * S_BASE_MVA * 1e3 == pytest.approx(202.7, abs=0.05)
    assert 5 <= result.iterations <= 15


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    scale=st.lists(st.floats(0.0, 1.5), min_size=N_BUS - 1, max_size=N_BUS - 1),
    dg=st.lists(st.tuples(st.integers(1, N_BUS - 1), st.floats(0.0, 1.5), st.floats(-0.3, 0.3)), max_size=4),
)
def test_random_loads_and_dg_match_pandapower(net33, sweep33, scale, dg) -> None:  # noqa: ANN001
    net = copy.deepcopy(net33)
    net.load["scaling"] = np.asarray(scale)[net.load.bus.to_numpy() - 1]
    for bus, p_mw, q_mvar in dg:
        pp.create_sgen(net, bus, p_mw=p_mw, q_mvar=q_mvar)
    s = _net_load_pu(net)
    result = sweep33.solve(s)
    _assert_matches_pandapower(result, net)
    balance = s[1:].sum() + result.loss_pu[0] - result.s_slack_pu[0]
    assert abs(balance) < 1e-9


def test_batch_equals_single_solves_and_balances(net33, sweep33: RadialSweep) -> None:  # noqa: ANN001
    rng = np.random.default_rng(7)
    base = _net_load_pu(net33)
    k = 40
    s = base[:, None] * rng.uniform(0.0, 1.5, (N_BUS, k))
    s[rng.integers(1, N_BUS, 10), rng.integers(0, k, 10)] -= rng.uniform(0.0, 0.15, 10)  # DG
    batch = sweep33.solve(s)
    for j in range(k):
        single = sweep33.solve(s[:, j])
        assert np.abs(batch.v_pu[:, j] - single.v_pu[:, 0]).max() < 1e-9
        assert np.abs(batch.i_branch_pu[:, j] - single.i_branch_pu[:, 0]).max() < 1e-9
        assert abs(batch.loss_pu[j] - single.loss_pu[0]) < 1e-10
    balance = s[1:].sum(axis=0) + batch.loss_pu - batch.s_slack_pu
    assert np.abs(balance).max() < 1e-9
    # the only branch leaving the root carries everything the slack delivers
    root = np.flatnonzero((sweep33.from_bus == 0) | (sweep33.to_bus == 0))
    assert root.size == 1
    assert np.abs(batch.s_from_pu[root[0]] - batch.s_slack_pu).max() < 1e-9


def test_slack_voltage_setpoint(net33, sweep33: RadialSweep) -> None:  # noqa: ANN001
    net = copy.deepcopy(net33)
    net.ext_grid["vm_pu"] = 1.03
    result = sweep33.solve(_net_load_pu(net), v_slack_pu=1.03)
    _assert_matches_pandapower(result, net)
    per_point = sweep33.solve(np.tile(_net_load_pu(net)[:, None], 2), v_slack_pu=np.array([1.0, 1.03]))
    assert np.abs(per_point.v_pu[:, 1] - result.v_pu[:, 0]).max() < 1e-9


def test_branch_order_orientation_and_slack_position_do_not_matter(net33, sweep33) -> None:  # noqa: ANN001
    s = _net_load_pu(net33)
    ref = sweep33.solve(s)
    rng = np.random.default_rng(3)
    perm = rng.permutation(N_BUS - 1)
    flip = rng.random(N_BUS - 1) < 0.5
    f, t = sweep33.from_bus[perm], sweep33.to_bus[perm]
    f, t = np.where(flip, t, f), np.where(flip, f, t)
    relabel = rng.permutation(N_BUS)  # old bus i becomes relabel[i]; the slack moves too
    other = RadialSweep.build(relabel[f], relabel[t], sweep33.r_pu[perm], sweep33.x_pu[perm], N_BUS,
                              slack_bus=int(relabel[0]), name="shuffled")
    s_new = np.empty_like(s)
    s_new[relabel] = s
    res = other.solve(s_new)
    assert np.abs(res.v_pu[relabel, 0] - ref.v_pu[:, 0]).max() < 1e-12
    sign = np.where(flip, -1.0, 1.0)
    assert np.abs(res.i_branch_pu[:, 0] - sign * ref.i_branch_pu[perm, 0]).max() < 1e-12
    assert abs(res.loss_pu[0] - ref.loss_pu[0]) < 1e-12
    assert np.array_equal(other.direction, sign)


def test_overloaded_point_raises_naming_it(net33, sweep33: RadialSweep) -> None:  # noqa: ANN001
    s = np.tile(_net_load_pu(net33)[:, None], 3)
    s[:, 1] *= 25.0
    with pytest.raises(PowerFlowError, match=r"'d33'.*operating point 1") as err:
        sweep33.solve(s)
    assert err.value.point == 1 and err.value.network == "d33"
    s[:, 1] /= 25.0
    assert sweep33.solve(s).v_pu.shape == (N_BUS, 3)


def test_voltage_below_0_3_raises(net33, sweep33: RadialSweep) -> None:  # noqa: ANN001
    s = np.stack([np.zeros(N_BUS), 0.1 * _net_load_pu(net33)], axis=1)
    with pytest.raises(PowerFlowError, match=r"operating point 1: voltage collapse: min \|V\| = 0\.29"):
        sweep33.solve(s, v_slack_pu=0.32)


def test_iteration_limit_raises(net33, sweep33: RadialSweep) -> None:  # noqa: ANN001
    with pytest.raises(PowerFlowError, match="no convergence within 2 iterations"):
        sweep33.solve(_net_load_pu(net33), max_iter=2)


def test_never_returns_nan(sweep33: RadialSweep) -> None:
    s = np.zeros(N_BUS, dtype=complex)
    s[17] = 1e6
    with pytest.raises(PowerFlowError, match="operating point 0"):
        sweep33.solve(s)


def _branches(net) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:  # noqa: ANN001
    sw = _sweep_of(net)
    return sw.from_bus.copy(), sw.to_bus.copy(), sw.r_pu.copy(), sw.x_pu.copy()


def test_loop_is_rejected(net33) -> None:  # noqa: ANN001
    f, t, r, x = _branches(net33)
    f, t, r, x = np.append(f, 20), np.append(t, 7), np.append(r, 0.1), np.append(x, 0.1)
    with pytest.raises(ValueError, match="feeder d33 is not radial: branch .* closes a loop"):
        RadialSweep.build(f, t, r, x, N_BUS, name="d33")


def test_disconnected_bus_is_rejected(net33) -> None:  # noqa: ANN001
    f, t, r, x = _branches(net33)
    i = int(np.flatnonzero(t == 32)[0])  # 31-32 is the last branch of a lateral: bus 32 is a leaf
    f[i], t[i] = 20, 7  # replaced by a tie closing a loop, so the count stays n_bus - 1
    with pytest.raises(ValueError, match="feeder d33 is not radial"):
        RadialSweep.build(f, t, r, x, N_BUS, name="d33")
    with pytest.raises(ValueError, match="bus 32 is disconnected"):
        RadialSweep.build(np.delete(f, i), np.delete(t, i), np.delete(r, i), np.delete(x, i), N_BUS, name="d33")


@pytest.mark.parametrize(("field", "value"), [("r", 0.0), ("r", -0.1), ("x", -0.1), ("r", np.nan), ("x", np.inf)])
def test_bad_impedance_is_rejected(net33, field: str, value: float) -> None:  # noqa: ANN001
    f, t, r, x = _branches(net33)
    (r if field == "r" else x)[5] = value
    with pytest.raises(ValueError, match="branch 5 "):
        RadialSweep.build(f, t, r, x, N_BUS, name="d33")


def test_bad_inputs_are_rejected(net33, sweep33: RadialSweep) -> None:  # noqa: ANN001
    f, t, r, x = _branches(net33)
    with pytest.raises(ValueError, match="to_bus\\[0\\] = 40"):
        RadialSweep.build(f, np.where(np.arange(t.size) == 0, 40, t), r, x, N_BUS)
    with pytest.raises(ValueError, match="slack_bus"):
        RadialSweep.build(f, t, r, x, N_BUS, slack_bus=33)
    with pytest.raises(ValueError, match="s_load_pu must have shape"):
        sweep33.solve(np.zeros(N_BUS - 1))
    s = np.zeros((N_BUS, 3), dtype=complex)
    s[4, 2] = np.nan
    with pytest.raises(ValueError, match="non-finite entry at operating point 2"):
        sweep33.solve(s)
    with pytest.raises(ValueError, match="v_slack_pu"):
        sweep33.solve(s[:, :2], v_slack_pu=np.ones(3))


def test_slack_entry_ignored_and_matrices_read_only(net33, sweep33: RadialSweep) -> None:  # noqa: ANN001
    s = _net_load_pu(net33)
    a = sweep33.solve(s)
    s2 = s.copy()
    s2[0] = 5.0 + 5.0j
    b = sweep33.solve(s2)
    assert np.array_equal(a.v_pu, b.v_pu)
    assert a.v_pu[0, 0] == 1.0
    with pytest.raises(ValueError):
        sweep33.dlf[0, 0] = 1.0


def test_fixed_point_warm_start_reaches_the_flat_start_solution(sweep33: RadialSweep) -> None:
    """The one kernel: from the solution of a nearby point (the simulator's and the surrogate's
    warm start) it reaches the same fixed point as RadialSweep's flat start, in fewer iterations."""
    rng = np.random.default_rng(8001)
    s = (rng.uniform(0.0, 0.04, N_BUS) + 1j * rng.uniform(0.0, 0.02, N_BUS)).astype(complex)
    flat = sweep33.solve(s)
    near = sweep33.solve(0.9 * s)
    s_conj = np.conjugate(s)
    s_conj[sweep33.slack_bus] = 0.0
    v, i_bus, iterations = fixed_point(sweep33.dlf.dot, 1.0 + 0j, s_conj, near.v_pu[:, 0].copy(), 1e-10, 100)
    np.testing.assert_allclose(v, flat.v_pu[:, 0], rtol=0, atol=1e-9)
    np.testing.assert_allclose(i_bus, s_conj / np.conjugate(v), rtol=0, atol=1e-15)
    assert iterations < flat.iterations


def test_fixed_point_names_the_failing_column(sweep33: RadialSweep) -> None:
    s = np.full((N_BUS, 3), 0.01 + 0.005j)
    s[:, 1] *= 60.0                                   # far beyond what the feeder can carry
    s_conj = np.conjugate(s)
    s_conj[sweep33.slack_bus] = 0.0
    with pytest.raises(PowerFlowError) as err:
        fixed_point(sweep33.dlf.dot, 1.0 + 0j, s_conj, np.ones_like(s_conj), 1e-10, 50, "d33")
    assert err.value.point == 1


@pytest.mark.parametrize("n_block", [1, 3])
def test_fixed_point_blocks_stop_each_block_as_if_alone(sweep33: RadialSweep, n_block: int) -> None:
    """The batched simulator's sweep: each block (a day, 2 columns here) returns the iterate at
    which it would stop alone (fixed_point on its columns, same bits), a block with no solution
    is flagged and the others are unaffected; one block runs fixed_point's own loop."""
    rng = np.random.default_rng(8002)
    k = 2
    s = (rng.uniform(0.0, 0.04, (N_BUS, n_block * k)) + 1j * rng.uniform(0.0, 0.02, (N_BUS, n_block * k)))
    bad = n_block - 1 if n_block > 1 else None
    if bad is not None:
        s[:, bad * k:(bad + 1) * k] *= 60.0              # far beyond what the feeder can carry
    s_conj = np.conjugate(s)
    s_conj[sweep33.slack_bus] = 0.0
    start = np.ones_like(s_conj)
    v, i_bus, ok = fixed_point_blocks(sweep33.dlf.dot, 1.0 + 0j, s_conj, start.copy(), 1e-10, 50, k)
    assert ok.tolist() == [b != bad for b in range(n_block)]
    for b in range(n_block):
        cols = slice(b * k, (b + 1) * k)
        if b == bad:
            with pytest.raises(PowerFlowError):
                fixed_point(sweep33.dlf.dot, 1.0 + 0j, s_conj[:, cols].copy(), start[:, cols].copy(), 1e-10, 50)
            continue
        v_alone, i_alone, _ = fixed_point(sweep33.dlf.dot, 1.0 + 0j, s_conj[:, cols].copy(), start[:, cols].copy(),
                                          1e-10, 50)
        np.testing.assert_allclose(v[:, cols], v_alone, rtol=0, atol=1e-14)
        np.testing.assert_allclose(i_bus[:, cols], i_alone, rtol=0, atol=1e-14)
