"""Checks of the shipped IEEE 69-bus radial feeder data (Baran & Wu 1989 / MATPOWER case69).

The known base-case answer of this feeder (12.66 kV, 10 MVA, slack at 1.0 p.u.) is a
minimum voltage of about 0.9092 p.u. at bus 65 and about 224.9-225 kW / 102 kvar losses.
"""

from collections import deque
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import env

DATA_DIR = Path(env.__file__).parent / "cases" / "data"
BRANCHES_CSV = DATA_DIR / "ieee69_branches.csv"
LOADS_CSV = DATA_DIR / "ieee69_loads.csv"

N_BUS = 69
VN_KV = 12.66
SN_MVA = 10.0


@pytest.fixture(scope="module")
def branches() -> pd.DataFrame:
    return pd.read_csv(BRANCHES_CSV, comment="#")


@pytest.fixture(scope="module")
def loads() -> pd.DataFrame:
    return pd.read_csv(LOADS_CSV, comment="#")


@pytest.fixture(scope="module")
def solved_net(branches, loads):
    pp = pytest.importorskip("pandapower")
    net = pp.create_empty_network(sn_mva=SN_MVA)
    # pandapower index i <-> 1-based bus label i + 1
    for label in range(1, N_BUS + 1):
        pp.create_bus(net, vn_kv=VN_KV, name=str(label), index=label - 1)
    pp.create_ext_grid(net, bus=0, vm_pu=1.0, va_degree=0.0)
    for row in branches.itertuples(index=False):
        pp.create_line_from_parameters(
            net,
            from_bus=int(row.from_bus) - 1,
            to_bus=int(row.to_bus) - 1,
            length_km=1.0,
            r_ohm_per_km=float(row.r_ohm),
            x_ohm_per_km=float(row.x_ohm),
            c_nf_per_km=0.0,
            max_i_ka=1e3,
        )
    for row in loads.itertuples(index=False):
        pp.create_load(net, bus=int(row.bus) - 1, p_mw=row.p_kw / 1e3, q_mvar=row.q_kvar / 1e3)
    pp.runpp(net, tolerance_mva=1e-9, numba=False)
    assert net.converged
    return net


def test_columns_and_types(branches, loads):
    assert list(branches.columns) == ["from_bus", "to_bus", "r_ohm", "x_ohm"]
    assert list(loads.columns) == ["bus", "p_kw", "q_kvar"]
    assert branches[["from_bus", "to_bus"]].dtypes.map(pd.api.types.is_integer_dtype).all()
    assert pd.api.types.is_integer_dtype(loads["bus"])
    assert not branches.isna().any().any()
    assert not loads.isna().any().any()
    assert (branches[["r_ohm", "x_ohm"]] > 0).all().all()


def test_topology_69_buses_68_branches_radial(branches):
    assert len(branches) == N_BUS - 1
    labels = set(branches["from_bus"]) | set(branches["to_bus"])
    assert labels == set(range(1, N_BUS + 1))
    edges = set()
    for f, t in zip(branches["from_bus"], branches["to_bus"]):
        assert f != t
        edges.add(frozenset((int(f), int(t))))
    assert len(edges) == N_BUS - 1  # no parallel branches
    adj = {b: [] for b in labels}
    for f, t in zip(branches["from_bus"], branches["to_bus"]):
        adj[int(f)].append(int(t))
        adj[int(t)].append(int(f))
    seen, queue = {1}, deque([1])
    while queue:
        u = queue.popleft()
        for v in adj[u]:
            if v not in seen:
                seen.add(v)
                queue.append(v)
    # connected with n-1 edges  <=>  spanning tree (radial)
    assert seen == labels


def test_load_rows_and_totals(loads):
    assert loads["bus"].is_unique
    assert loads["bus"].between(2, N_BUS).all()  # no load at the substation bus
    assert ((loads["p_kw"] != 0) | (loads["q_kvar"] != 0)).all()
    assert (loads[["p_kw", "q_kvar"]] >= 0).all().all()
    assert loads["p_kw"].sum() == pytest.approx(3802.2, abs=0.5)
    assert loads["q_kvar"].sum() == pytest.approx(2694.6, abs=0.5)


def test_base_case_min_voltage_at_bus_65(solved_net):
    vm = solved_net.res_bus.vm_pu
    assert int(vm.idxmin()) + 1 == 65
    assert vm.min() == pytest.approx(0.9092, abs=5e-4)
    assert vm.iloc[0] == pytest.approx(1.0)
    assert np.all(vm.to_numpy() <= 1.0 + 1e-12)


def test_base_case_losses(solved_net):
    p_loss_kw = solved_net.res_line.pl_mw.sum() * 1e3
    q_loss_kvar = solved_net.res_line.ql_mvar.sum() * 1e3
    assert p_loss_kw == pytest.approx(224.9, abs=1.0)
    assert q_loss_kvar == pytest.approx(102.1, abs=1.0)
    # power balance at the slack: load + losses
    p_slack_kw = solved_net.res_ext_grid.p_mw.sum() * 1e3
    assert p_slack_kw == pytest.approx(solved_net.load.p_mw.sum() * 1e3 + p_loss_kw, abs=1e-3)
