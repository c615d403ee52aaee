"""The public flat action layout (env.action_codec) and the one speed shim (env.fastpath)."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import env
from env.action_codec import FIELDS, ActionCodec, DispatchSizes
from env.dispatch import Dispatch
from env.fastpath import unchecked

ROOT = Path(env.__file__).resolve().parent.parent


def test_layout_of_a_td_case_known_counts() -> None:
    sizes = DispatchSizes(n_evcs=3, n_storage=1, n_der=4, n_gen=2, n_ev_reserve=3, n_comp=2, reactive=True)
    codec = sizes.codec
    assert [name for name, _ in codec.layout] == list(FIELDS)
    counts = [sl.stop - sl.start for _, sl in codec.layout]
    assert counts == [3, 1, 4, 2, 2, 2, 3, 3, 0, 2]                      # no tie lines
    assert codec.n_action == 22 and sizes.n_action == 22
    assert codec.field_slice("der_curtail_frac") == slice(4, 8)
    assert codec.sign.tolist() == [1.0] * 4 + [-1.0] * 4 + [1.0] * 14
    assert codec.where(8) == "thermal_p_mw[0]"
    assert sizes.codec is DispatchSizes(3, 1, 4, 2, 3, 2, True).codec     # one instance per sizes


def test_without_reactive_q_is_absent() -> None:
    codec = DispatchSizes(n_evcs=2, n_storage=0, n_der=1, n_gen=0, n_ev_reserve=0, n_comp=5).codec
    assert [name for name, _ in codec.layout][-1] == "tie_p_mw"
    assert codec.n_action == 3
    with pytest.raises(ValueError, match="absent field 'q_comp_mvar'"):
        codec.field_slice("q_comp_mvar")


def test_split_join_round_trip_and_dispatch_views() -> None:
    sizes = DispatchSizes.from_grid(env.load_case("t30d2"))
    codec = sizes.codec
    flat = np.random.default_rng(8002).uniform(-1, 1, codec.n_action)
    parts = codec.split(flat)
    assert np.array_equal(codec.join(parts), flat)
    d = Dispatch.of_flat(flat.copy(), sizes)
    assert d.sizes is sizes and np.array_equal(d.to_flat(), flat)
    assert all(np.shares_memory(getattr(d, name), d.flat) for name, sl in codec.layout if sl.stop > sl.start)
    validated = Dispatch(**parts)
    assert validated.flat is None and validated.sizes is None
    assert all(np.array_equal(getattr(validated, n), getattr(d, n)) for n, _ in codec.layout)


@pytest.mark.parametrize("bad", [{"n_evcs": -1}, {"n_gen": 1.5}, {"reactive": 1}, {"n_ev_reserve": 2}])
def test_bad_sizes_raise(bad: dict) -> None:
    kwargs = dict(n_evcs=3, n_storage=1, n_der=4, n_gen=2, n_ev_reserve=3, n_comp=2, reactive=False)
    kwargs.update(bad)
    with pytest.raises(ValueError, match="DispatchSizes"):
        DispatchSizes(**kwargs)


def test_codec_rejects_a_wrong_length() -> None:
    codec = DispatchSizes.from_grid(env.load_case("d33")).codec
    with pytest.raises(ValueError, match="expected shape"):
        codec.split(np.zeros(codec.n_action + 1))
    with pytest.raises(ValueError, match="missing fields"):
        codec.join({"ev_p_mw": np.zeros(1)})


def test_unchecked_takes_exactly_the_declared_fields() -> None:
    if not __debug__:
        pytest.skip("the field check is an assert (python -O strips it)")
    sizes = DispatchSizes.from_grid(env.load_case("d33"))
    with pytest.raises(AssertionError):
        unchecked(ActionCodec, {"sizes": sizes, "layout": (), "n_action": 0, "sign": None, "extra": 1})


def test_only_the_fastpath_module_writes_a_frozen_records_dict() -> None:
    """No ``__dict__`` side channel: the package writes an object's ``__dict__`` in one place."""
    pattern = re.compile(r"__dict__\s*\[|__setattr__\([^,]+,\s*[\"']__dict__|__dict__\.(update|setdefault)")
    offenders = []
    for folder in ("env", "policies", "controller", "scenarios"):
        for path in (ROOT / folder).rglob("*.py"):
            if path.name == "fastpath.py":
                continue
            if pattern.search(path.read_text()):
                offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []
