"""``loadwise predict`` and the ``--predictor`` option of the replay and training commands.

Who calls this: the ``loadwise`` app (``flows/cli/__init__.py``) merges ``app`` into its top level;
``replay.py`` and ``models.py`` use ``PredictorOpt`` / ``predictor_choice``. Only typer is imported at
module level; MLflow, DuckDB and torch are imported when a command runs.

``--predictor``: ``task-mean`` (mean output length per task over the workload's training pool),
``registered`` (the ``length-predictor`` champion), ``registered:VERSION``, ``oracle`` (true lengths:
an upper bound, every router labelled ORACLE) or a predictor folder (``TrainedLengthPredictor.save``).
Default: the registered champion when there is one, else task mean. A registered version answers
from ``marts.length_predictions`` of the default warehouse (``loadwise predict`` fills it; a replay
that finds rows of its workload missing predicts them in one batch and writes them first).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from flows.cli.shared import JsonOpt, WarehouseOpt, echo_json, fail

if TYPE_CHECKING:
    from training.length.stored import PredictorChoice

app = typer.Typer()

PredictorOpt = Annotated[
    str | None,
    typer.Option(
        "--predictor",
        help="length predictor of the non-oracle routers: task-mean, registered (the length-predictor "
        "champion), registered:VERSION, oracle (true lengths, labelled ORACLE) or a predictor folder "
        "(default: the registered champion when there is one, else task-mean)",
    ),
]


def predictor_choice(
    text: str | None, *, warehouse: Path | None = None, allow_oracle: bool = True
) -> PredictorChoice:
    """``--predictor`` resolved (``flows.models.predictions.resolve_predictor``): a bad form is a
    usage error (exit 2), a registry that cannot answer one line (exit 1)."""
    from flows.models.predictions import resolve_predictor
    from flows.registry import RegistryError

    try:
        return resolve_predictor(text, warehouse=warehouse, allow_oracle=allow_oracle)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    except RegistryError as exc:
        raise fail(str(exc)) from None


@app.command("predict")
def predict_cmd(
    predictor: Annotated[
        str,
        typer.Option("--predictor", help="registered (the length-predictor champion) or registered:VERSION"),
    ] = "registered",
    warehouse: WarehouseOpt = None,
    where: Annotated[
        str,
        typer.Option(help="SQL filter over marts.requests: the warehouse rows the replays use ('' for none)"),
    ] = "format = 'azure'",
    workload: Annotated[
        list[str] | None,
        typer.Option(
            "--workload", "-w", help="also the rows a named workload replays (e.g. main); repeatable"
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Write a registered length predictor's predictions of every request the replays use to
    marts.length_predictions (batched; rows already stored for that version are skipped)."""
    from warehouse.errors import WarehouseError

    if not predictor.startswith("registered"):
        raise typer.BadParameter("--predictor must be registered or registered:VERSION")
    where_sql = where.strip() or None
    if where_sql is not None:
        from warehouse.filters import check_where

        try:
            check_where(where_sql)
        except ValueError as exc:
            raise typer.BadParameter(f"--where: {exc}") from None
    choice = predictor_choice(predictor, warehouse=warehouse)
    from flows.models.predictions import predict_lengths_job

    say = None if as_json else (lambda msg: typer.echo(f"· {msg}", err=True))
    try:
        result = predict_lengths_job(choice, where=where_sql, workloads=tuple(workload or ()), progress=say)
    except (ValueError, FileNotFoundError, WarehouseError) as exc:
        raise fail(str(exc)) from None
    if as_json:
        echo_json(result)
        return
    typer.echo(f"{result['predictor']} -> {result['warehouse']} ({result['wall_s']:.1f} s)")
