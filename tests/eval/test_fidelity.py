"""Fidelity (issue 18): measured vLLM static batches vs the simulator, the calibration's bar, and the
``loadwise fidelity`` command on a small fixture."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from eval.fidelity import (
    FidelityError,
    calibrate,
    default_measurement_files,
    fit_calibration,
    read_measurements,
    replay_rows,
    run_fidelity,
    summary,
)
from flows.cli import app
from tests.flows.cli.results import clean_exit, one_json
from training.simulator.roofline import calibrated_efficiency

runner = CliRunner()
MEASURED = default_measurement_files()
HAS_MEASUREMENTS = all(p.exists() for p in MEASURED)
needs_data = pytest.mark.skipif(not HAS_MEASUREMENTS, reason="needs ../shared/data/serving_measurements")

STATIC_HEADER = (
    "hardware,num_gpus,framework,model,input_output_tokens,batch_size,latency_s,throughput_tok_s\n"
)


def _fixture(tmp_path: Path) -> tuple[Path, Path]:
    """Three static batches and one TTFT row (values as in LLM-Inference-Bench's vLLM rows)."""
    static = tmp_path / "static.csv"
    static.write_text(
        STATIC_HEADER
        + "Nvidia H100 GPU,1,vLLM,meta-llama/Llama-2-7b-hf,128,1,0.9326,274.5\n"
        + "Nvidia H100 GPU,1,vLLM,meta-llama/Llama-2-7b-hf,512,16,5.4464,3008.2\n"
        + "Nvidia A100 GPU,1,vLLM,mistralai/Mistral-7B-v0.1,256,32,5.3303,3073.7\n"
    )
    ttft = tmp_path / "ttft.csv"
    ttft.write_text(
        "hardware,num_gpus,framework,model,input_tokens,output_tokens,batch_size,ttft_s,end_latency_s\n"
        "Nvidia H100 GPU,1,vLLM,meta-llama/Meta-Llama-3-8B,1024,1,16,0.4257,11.02\n"
    )
    return static, ttft


def test_fidelity_command_on_a_fixture(tmp_path):
    static, ttft = _fixture(tmp_path)
    plot = tmp_path / "out" / "fidelity.png"
    args = ["fidelity", "--measurements", str(static), "--measurements", str(ttft), "--plot", str(plot)]
    data = one_json(runner.invoke(app, [*args, "--json"]))
    assert data["runs"] == ["calibrated", "held_out"]
    assert [r["kind"] for r in data["rows"]] == ["latency"] * 3 + ["ttft"]
    assert data["rows"][0]["pair"] == "h100-llama2-7b"
    assert data["rows"][2]["pair"] == "a100-40gb-mistral-7b"
    for row in data["rows"]:
        for run in data["runs"]:
            assert row[run]["simulated_s"] > 0
            assert abs(row[run]["error"]) < 0.2, row
    assert data["summary"]["held_out"]["h100-llama2-7b"]["latency"]["rows"] == 2
    assert data["summary"]["held_out"]["h100-llama3-8b"]["ttft"]["rows"] == 1
    assert Path(data["plot"]) == plot
    assert plot.stat().st_size > 1000
    text = runner.invoke(app, args, terminal_width=200)
    assert text.exit_code == 0, text.output
    assert "median / max |error|" in text.output
    assert f"plot: {plot}" in text.output.replace("\n", "")


def test_fidelity_refuses_bad_input_in_one_line(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("hardware,model,latency_s\nx,y,1\n")
    out = runner.invoke(app, ["fidelity", "--measurements", str(bad), "--plot", str(tmp_path / "p.png")])
    clean_exit(out)
    assert out.exit_code == 1
    assert "expected the columns" in out.output
    assert len(out.output.strip().splitlines()) == 1
    assert not (tmp_path / "p.png").exists()
    unknown = tmp_path / "unknown.csv"
    unknown.write_text(STATIC_HEADER + "TPU v9,1,vLLM,meta-llama/Llama-2-7b-hf,128,1,1.0,1.0\n")
    out = runner.invoke(app, ["fidelity", "--measurements", str(unknown)])
    assert out.exit_code == 1
    assert "unknown.csv:2: unknown hardware 'TPU v9'" in out.output
    static, _ = _fixture(tmp_path)
    out = runner.invoke(app, ["fidelity", "--measurements", str(static), "--profile", "tpu-gpt5"])
    assert out.exit_code == 2
    out = runner.invoke(app, ["fidelity", "--measurements", str(static), "--profile", "l40s-llama3-8b"])
    assert out.exit_code == 1
    assert "no measured rows for profile 'l40s-llama3-8b'" in out.output


def test_a_gpu_key_is_accepted_as_hardware(tmp_path):
    f = tmp_path / "m.csv"
    f.write_text(STATIC_HEADER + "l40s,1,vLLM,llama3-8b,128,4,1.0,1.0\n")
    (row,) = read_measurements(f)
    assert row.pair == "l40s-llama3-8b"
    f.write_text(STATIC_HEADER + "l40s,1,vLLM,gpt-5,128,4,1.0,1.0\n")
    with pytest.raises(FidelityError, match=r"m\.csv:2: unknown model"):
        read_measurements(f)


@needs_data
def test_leave_one_pair_out_meets_the_bar():
    """Each pair predicted by the fit on the other two: median |error| <= 8 %, max <= 20 % (issue 18).
    Measured: median 3.0 / 3.4 / 1.9 %, max 7.0 / 7.1 / 5.7 % (A100-Mistral / H100-Llama-2 / H100-Llama-3)."""
    rows = [r for p in MEASURED for r in read_measurements(p)]
    report = run_fidelity(rows)
    assert len(report["summary"]["held_out"]) == 3
    for pair, kinds in report["summary"]["held_out"].items():
        assert kinds["latency"]["rows"] == 20
        assert kinds["latency"]["median_abs_error"] <= 0.08, pair
        assert kinds["latency"]["max_abs_error"] <= 0.20, pair


@needs_data
def test_the_vidur_profile_is_checked_against_its_rows():
    rows = [r for p in MEASURED for r in read_measurements(p)]
    report = run_fidelity(rows, "h100-llama2-7b")
    lat = report["summary"]["h100-llama2-7b"]["h100-llama2-7b"]["latency"]
    assert lat["rows"] == 20
    assert lat["median_abs_error"] < 0.05
    assert lat["max_abs_error"] < 0.1


@needs_data
def test_the_a100_rows_are_a_40gb_card():
    """With the same calibrated efficiencies, the 80 GB card (2,039 GB/s, room for 64 x 4k tokens)
    misses the batch-1 rows by ~19 % and the 2,048 x 64 row by ~21 %; the 40 GB card (1,555 GB/s,
    preemption at 2,048 x 64) fits every row within 8 %."""
    rows = [r for r in read_measurements(MEASURED[0]) if r.gpu == "a100-40gb"]
    eff = calibrated_efficiency("a100-40gb-mistral-7b")  # the fit that never saw these rows
    as_40 = summary(replay_rows(rows, eff))
    as_80 = summary(replay_rows([replace(r, gpu="a100-80gb") for r in rows], eff))
    assert as_40["median_abs_error"] < 0.05
    assert as_40["max_abs_error"] < 0.08
    assert as_80["median_abs_error"] > 0.12


@needs_data
def test_a_leave_one_pair_out_fit_reproduces_the_stored_one():
    rows = [r for p in MEASURED for r in read_measurements(p)]
    fitted = calibrate(
        [r for r in rows if r.pair != "h100-llama3-8b"],
        calibrated_efficiency().__class__(0.8, 0.6, 0.003, 1e-5, 0.1),
    )
    stored = calibrated_efficiency("h100-llama3-8b")
    for key, value in stored.as_dict().items():
        assert getattr(fitted, key) == pytest.approx(value, rel=1e-3), key


@pytest.mark.slow
@needs_data
def test_the_stored_calibration_is_what_the_fit_gives():
    rows = [r for p in MEASURED for r in read_measurements(p)]
    fitted = fit_calibration(rows)
    stored = json.loads((Path(__file__).parents[2] / "training/simulator/specs/calibration.json").read_text())
    for name, fit in [("all_pairs", fitted["all_pairs"]), *fitted["leave_one_pair_out"].items()]:
        expect = stored["all_pairs"] if name == "all_pairs" else stored["leave_one_pair_out"][name]
        for key, value in expect["efficiency"].items():
            assert fit["efficiency"][key] == pytest.approx(value, rel=1e-3), (name, key)
