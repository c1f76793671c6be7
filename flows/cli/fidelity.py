"""``loadwise fidelity``: measured vLLM static batches replayed through the simulator (issue 18).

Who calls this: the ``loadwise`` app (``flows/cli/__init__.py``) and ``make bench``. The work is in
``eval/fidelity.py``; this module parses options and prints. Only typer is imported at module level.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flows.cli.shared import JsonOnlyOpt, echo_json, fail, json_safe

app = typer.Typer()


@app.command("fidelity")
def fidelity(
    measurements: Annotated[
        list[Path] | None,
        typer.Option(
            "--measurements",
            metavar="CSV",
            help="static-batch or TTFT CSV (repeatable; default: ../shared/data/serving_measurements)",
        ),
    ] = None,
    profile: Annotated[
        str | None,
        typer.Option(
            "--profile",
            metavar="PROFILE",
            help="replay the rows of this profile's GPU and model on it (a named profile, or <gpu>-<model>); "
            "default: every row on its pair's roofline, calibrated and held out",
        ),
    ] = None,
    plot: Annotated[
        Path | None,
        typer.Option(
            "--plot", metavar="PNG", help="predicted-vs-measured PNG (default: <loadwise home>/fidelity.png)"
        ),
    ] = None,
    calibrate: Annotated[
        bool,
        typer.Option(
            "--calibrate",
            help="refit the roofline efficiencies on the measurements (all pairs and leave-one-pair-out) "
            "and write training/simulator/specs/calibration.json",
        ),
    ] = False,
    as_json: JsonOnlyOpt = False,
) -> None:
    """Measured vs simulated latency per static batch, median and max |error| per pair, TTFT, a plot."""
    import json

    from eval.fidelity import (
        FidelityError,
        default_measurement_files,
        read_measurements,
        run_fidelity,
        write_plot,
    )
    from training.simulator.profiles import hardware_profile

    if profile is not None:
        try:
            hardware_profile(profile)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--profile") from None
    try:
        rows = [r for path in (measurements or default_measurement_files()) for r in read_measurements(path)]
        if calibrate:
            from eval.fidelity import fit_calibration
            from training.simulator.roofline import CALIBRATION_JSON, calibration_table

            fitted = fit_calibration(rows)
            fitted["source"] = ", ".join(str(p) for p in (measurements or default_measurement_files()))
            fitted["command"] = "loadwise fidelity --calibrate"
            CALIBRATION_JSON.write_text(json.dumps(fitted, indent=2) + "\n")
            calibration_table.cache_clear()  # the report below reads the new fit
            typer.echo(f"wrote {CALIBRATION_JSON}", err=as_json)
        report = run_fidelity(rows, profile)
    except FidelityError as exc:
        raise fail(str(exc)) from None
    if plot is None:
        from warehouse.settings import loadwise_home

        plot = loadwise_home() / "fidelity.png"
    report["plot"] = str(write_plot(report, plot))
    if as_json:
        echo_json(json_safe(report))
        return
    _print(report)


def _print(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if Console().is_terminal else 150)  # piped: keep the columns readable
    runs = report["runs"]
    table = Table(title="measured vs simulated (error = simulated / measured - 1)")
    for column in (
        "pair",
        "kind",
        "in/out",
        "batch",
        "measured s",
        *(f"{r} s" for r in runs),
        *(f"{r} err" for r in runs),
    ):
        table.add_column(column, justify="left" if column in ("pair", "kind") else "right")
    for row in report["rows"]:
        out = "1" if row["kind"] == "ttft" else str(row["output_tokens"])
        table.add_row(
            row["pair"],
            row["kind"],
            f"{row['prompt_tokens']}/{out}",
            str(row["batch_size"]),
            f"{row['measured_s']:.3f}",
            *(f"{row[r]['simulated_s']:.3f}" for r in runs),
            *(f"{row[r]['error']:+.1%}" for r in runs),
        )
    console.print(table)
    summary = Table(title="median / max |error| per pair")
    for column in ("run", "pair", "rows", "median", "max", "TTFT err"):
        summary.add_column(column, justify="left" if column in ("run", "pair") else "right")
    for run in runs:
        for pair, kinds in report["summary"][run].items():
            lat, ttft = kinds["latency"], kinds["ttft"]
            summary.add_row(
                run,
                pair,
                str(lat["rows"]),
                f"{lat['median_abs_error']:.1%}" if lat["rows"] else "-",
                f"{lat['max_abs_error']:.1%}" if lat["rows"] else "-",
                f"{ttft['max_abs_error']:.1%}" if ttft["rows"] else "-",
            )
    console.print(summary)
    console.print(f"plot: {report['plot']}")
