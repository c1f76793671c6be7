"""One workload-class definition: the warehouse's view and the evaluation harness agree, bit for bit.

The rule and thresholds live in ``warehouse/workload_class.py``; the evaluation applies them to the
simulator's latency model (``eval.harness.workload_classes``), the warehouse to the active row of
``marts.latency_profile`` (``marts.request_classes``, through the macros rendered from that module).
For any linear profile the two must give the same prefill and decode times and the same class.
Top-level (not under tests/warehouse or tests/eval) because it holds two layers to one definition.
"""

from __future__ import annotations

from collections.abc import Iterator

import duckdb
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eval.harness import workload_classes
from training.routing.estimates import isolated_decode_s, prefill_s
from training.simulator.latency import LinearLatencyModel
from training.simulator.profiles import PAPER_CONTEXT_PROFILE, PAPER_PROFILE, load_latency_model
from training.simulator.request import Request
from warehouse import workload_class as wc
from warehouse.store import apply_schema

# Token counts near the shipped profiles' boundaries (prefill 0.5 s at 1,500 prompt tokens; decode
# 5 s at ~250 output tokens), plus anything up to the warehouse's range.
_TOKENS = st.one_of(
    st.integers(1, 20_000),
    st.sampled_from([1, 1499, 1500, 1501, 1562, 1563, 248, 249, 250, 251, 252, 300, 10_000_000]),
)
_COEF = st.one_of(st.just(0.0), st.floats(1e-7, 1e-3, allow_nan=False, allow_infinity=False))


@pytest.fixture(scope="module")
def con() -> Iterator[duckdb.DuckDBPyConnection]:
    """An in-memory warehouse schema (tables, macros, views): no file, no ingest."""
    c = duckdb.connect()
    apply_schema(c)
    yield c
    c.close()


def _view(con: duckdb.DuckDBPyConnection, requests: list[tuple[int, int]], lm: LinearLatencyModel):
    """``marts.request_classes`` rows (prefill_s, decode_s, class) of ``requests`` under ``lm`` as
    the only active profile, in request order."""
    con.execute("DELETE FROM marts.requests_stored")
    con.execute("UPDATE marts.latency_profile SET active = false")
    con.execute("DELETE FROM marts.latency_profile WHERE name = 'under-test'")
    con.execute(
        "INSERT INTO marts.latency_profile (name, prefill_s_per_token, decode_base_s, "
        "decode_s_per_context_token, heavy_prefill_s, heavy_decode_s, active, note, decode_s_per_seq) "
        "VALUES ('under-test', ?, ?, ?, marts.heavy_prefill_s(), marts.heavy_decode_s(), true, '', ?)",
        [lm.grad1, lm.base_s, lm.grad2, lm.per_decode_seq_s],
    )
    rows = pa.table(
        {
            "i": list(range(len(requests))),
            "p": [p for p, _ in requests],
            "o": [o for _, o in requests],
        }
    )
    con.register("_rows", rows)
    con.execute(
        "INSERT INTO marts.requests_stored (request_id, source, trace_id, arrival_s, prompt_tokens, "
        "output_tokens, "
        "task, status) SELECT lpad(i::VARCHAR, 6, '0'), 't', 't', 0.0, p, o, 't', 'ok' FROM _rows"
    )
    con.unregister("_rows")
    return con.execute(
        "SELECT prefill_s, decode_s, workload_class FROM marts.request_classes ORDER BY request_id"
    ).fetchall()


def _check(con: duckdb.DuckDBPyConnection, requests: list[tuple[int, int]], lm: LinearLatencyModel) -> None:
    got = _view(con, requests, lm)
    reqs = [Request(f"r{i}", 0.0, p, o, "t") for i, (p, o) in enumerate(requests)]
    want_classes = workload_classes(reqs, lm)
    for (p, o), (sql_prefill, sql_decode, sql_class), want in zip(requests, got, want_classes, strict=True):
        assert sql_prefill == prefill_s(lm, p), (p, o)  # bit for bit, not approximately
        assert sql_decode == isolated_decode_s(lm, p, o), (p, o)
        assert sql_class == want, (p, o, sql_prefill, sql_decode)


def test_a_prompt_at_the_prefill_boundary_is_heavy_in_both(con: duckdb.DuckDBPyConnection) -> None:
    """1,500 prompt tokens on the paper profile: 0.02 s + 1,500 x 3.2e-4 s = 0.5 s, heavy. The view
    used to leave out the iteration's base cost (0.48 s: light) while the evaluation counted it."""
    lm = load_latency_model(PAPER_PROFILE)
    assert isinstance(lm, LinearLatencyModel)
    got = _view(con, [(1500, 10), (1499, 10)], lm)
    assert [c for *_, c in got] == ["HL", "LL"]
    _check(con, [(1500, 10), (1499, 10), (100, 300)], lm)


@pytest.mark.parametrize("name", [PAPER_PROFILE, PAPER_CONTEXT_PROFILE])
def test_the_shipped_profile_rows_are_the_simulators_profiles(name: str) -> None:
    """The rows ``schema.sql`` ships carry the simulator's coefficients and the module's thresholds."""
    c = duckdb.connect()
    apply_schema(c)
    row = c.execute(
        "SELECT prefill_s_per_token, decode_base_s, decode_s_per_context_token, decode_s_per_seq, "
        "heavy_prefill_s, heavy_decode_s FROM marts.latency_profile WHERE name = ?",
        [name],
    ).fetchone()
    active = c.execute("SELECT name FROM marts.latency_profile WHERE active").fetchall()
    c.close()
    lm = load_latency_model(name)
    assert isinstance(lm, LinearLatencyModel)
    assert row == (lm.grad1, lm.base_s, lm.grad2, lm.per_decode_seq_s, wc.HEAVY_PREFILL_S, wc.HEAVY_DECODE_S)
    assert lm.attention2 == 0.0  # the table has no attention term
    assert active == [(PAPER_PROFILE,)]


def test_the_classes_and_thresholds_are_the_modules() -> None:
    assert wc.CLASSES == ("LL", "LH", "HL", "HH")
    assert [wc.workload_class(p, d) for p, d in ((0.49, 4.9), (0.49, 5.0), (0.5, 4.9), (0.5, 5.0))] == list(
        wc.CLASSES
    )
    import eval.harness as harness

    assert (harness.HEAVY_PREFILL_S, harness.HEAVY_DECODE_S) == (wc.HEAVY_PREFILL_S, wc.HEAVY_DECODE_S)


def _shipped() -> list[LinearLatencyModel]:
    models = [load_latency_model(PAPER_PROFILE), load_latency_model(PAPER_CONTEXT_PROFILE)]
    return [m for m in models if isinstance(m, LinearLatencyModel)]


def _profiles() -> st.SearchStrategy[LinearLatencyModel]:
    """Random linear profiles (each term 0 or positive), and the two shipped ones."""
    return st.builds(
        lambda base, g1, g2, seq: LinearLatencyModel(
            base_s=base,
            grad1_s_per_prefill_token=g1,
            grad2_s_per_decode_context_token=g2,
            per_decode_seq_s=seq,
        ),
        st.floats(1e-4, 0.05, allow_nan=False, allow_infinity=False),
        _COEF,
        _COEF,
        _COEF,
    ) | st.sampled_from(_shipped())


_REQUESTS = st.lists(st.tuples(_TOKENS, _TOKENS), min_size=1, max_size=40)
_FIXTURE = [HealthCheck.function_scoped_fixture]


@settings(derandomize=True, max_examples=60, deadline=None, suppress_health_check=_FIXTURE)
@given(requests=_REQUESTS, lm=_profiles())
def test_view_and_harness_agree_on_random_requests(
    con: duckdb.DuckDBPyConnection, requests: list[tuple[int, int]], lm: LinearLatencyModel
) -> None:
    _check(con, requests, lm)


@pytest.mark.slow
@settings(derandomize=True, max_examples=2000, deadline=None, suppress_health_check=_FIXTURE)
@given(requests=_REQUESTS, lm=_profiles())
def test_view_and_harness_agree_on_many_random_requests(
    con: duckdb.DuckDBPyConnection, requests: list[tuple[int, int]], lm: LinearLatencyModel
) -> None:
    _check(con, requests, lm)
