"""Analytics views: workload classes under the latency profile, percentiles, per-minute, daily, comments."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from tests.warehouse.samples import write_text
from warehouse.analytics import summary_tables
from warehouse.ingest import ingest
from warehouse.store import connect_readonly
from warehouse.synthetic import SERVICES, SyntheticConfig, write_azure_like

# prompt 2000 -> prefill 0.02 + 0.64 s (heavy); prompt 100 -> 0.052 s (light).
# Default profile (grad2 per decode token in the batch): output 300 -> 300 * (0.02 + 3.3e-5) = 6.01 s
# (heavy); output 10 -> 0.2 s (light). Per-context profile: output 300, prompt 100 ->
# 300 * 0.02 + 3.3e-5 * (300 * 100 + 300 * 299 / 2) = 8.47 s (heavy); output 10, prompt 2000 -> 0.86 s.
# (The definition and its agreement with the evaluation: test_workload_class.py.)
CLASSES = (
    "request_id,arrival_s,prompt_tokens,output_tokens,task\n"
    "ll,0,100,10,a\nlh,1,100,300,a\nhl,2,2000,10,a\nhh,3,2000,300,a\n"
)


def test_workload_classes_follow_the_paper_profile_and_profile_is_changeable(
    tmp_path: Path, wh: Path
) -> None:
    ingest([write_text(tmp_path / "c.csv", CLASSES)], warehouse=wh)
    con = connect_readonly(wh)
    got = dict(con.execute("SELECT request_id, workload_class FROM marts.request_classes").fetchall())
    decode = con.execute("SELECT decode_s FROM marts.request_classes WHERE request_id = 'lh'").fetchone()[0]
    con.close()
    assert got == {"ll": "LL", "lh": "LH", "hl": "HL", "hh": "HH"}
    assert decode == pytest.approx(300 * (0.02 + 3.3e-5))
    rw = duckdb.connect(str(wh))
    # The per-context reading of the paper's grad2, one flag away.
    rw.execute("UPDATE marts.latency_profile SET active = (name = 'v100-llama2-7b-paper-context')")
    decode = rw.execute("SELECT decode_s FROM marts.request_classes WHERE request_id = 'lh'").fetchone()[0]
    assert decode == pytest.approx(sum(0.02 + 3.3e-5 * (100 + k) for k in range(300)))  # contexts 100..399
    # A faster GPU profile: nothing is heavy any more (analysts change the table, the view follows).
    rw.execute("UPDATE marts.latency_profile SET active = false")
    rw.execute(
        "INSERT INTO marts.latency_profile (name, prefill_s_per_token, decode_base_s, "
        "decode_s_per_context_token, heavy_prefill_s, heavy_decode_s, active, note, decode_s_per_seq) "
        "VALUES ('fast', 1e-5, 0.001, 1e-7, 0.5, 5.0, true, 'test', 0.0)"
    )
    assert {c for (c,) in rw.execute("SELECT workload_class FROM marts.request_classes").fetchall()} == {"LL"}
    rw.close()


def test_views_and_comments_on_synthetic_azure(tmp_path: Path, wh: Path) -> None:
    ingest(
        write_azure_like(tmp_path / "syn", SyntheticConfig(rows=3000, seed=1)),
        warehouse=wh,
        source="synthetic",
    )
    con = connect_readonly(wh)
    pct = dict(
        (task, (p50, o50))
        for task, p50, o50 in con.execute(
            "SELECT task, prompt_p50, output_p50 FROM marts.token_percentiles"
        ).fetchall()
    )
    per_minute = con.execute("SELECT sum(requests), min(minute) FROM marts.requests_per_minute").fetchone()
    daily = con.execute("SELECT sum(requests) FROM marts.daily_summary WHERE day IS NOT NULL").fetchone()
    comments = con.execute(
        "SELECT count(*) FROM duckdb_columns() WHERE schema_name = 'marts' AND comment IS NOT NULL"
    ).fetchone()[0]
    tables = summary_tables(con)
    con.close()
    for task, (p_med, o_med) in ((t, (s[1], s[3])) for t, s in SERVICES.items()):
        assert pct[task][0] == pytest.approx(p_med, rel=0.25)
        assert pct[task][1] == pytest.approx(o_med, rel=0.35)
    assert per_minute == (3000, 0)
    assert daily == (3000,)
    assert comments >= 30
    assert [t.title.split(" ")[0] for t in tables][:3] == ["Requests", "Requests", "Token"]
    classes = {c for t in tables if t.title.startswith("Workload") for c in t.columns}
    assert {"LL", "LH", "HL", "HH"} <= classes


def test_synthetic_is_deterministic(tmp_path: Path) -> None:
    a = write_azure_like(tmp_path / "a", SyntheticConfig(rows=500, seed=3))
    b = write_azure_like(tmp_path / "b", SyntheticConfig(rows=500, seed=3))
    c = write_azure_like(tmp_path / "c", SyntheticConfig(rows=500, seed=4))
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]
    assert [p.read_bytes() for p in a] != [p.read_bytes() for p in c]
    assert sum(len(p.read_text().splitlines()) - 1 for p in a) == 500
