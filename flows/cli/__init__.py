"""The ``loadwise`` command line (``loadwise = "flows.cli:app"``): this module only assembles it.

One module per command group, each with its commands at module level on its own ``app``:

- ``warehouse.py``: ``ingest``, ``export-parquet``, ``sql``
- ``replay.py``: ``replay``, ``compare``
- ``predict.py``: ``predict`` (and the ``--predictor`` option the replay and training commands share)
- ``models.py``: ``train-predictor``, ``fit-estimator``, ``train-router``, ``models``, ``promote``,
  ``rollback``
- ``nightly.py``: ``run``, ``serve``
- ``ui.py``: ``ui`` (the MLflow UI on the model store, stopped with every process it started)
- ``fidelity.py``: ``fidelity`` (measured vLLM batches vs the simulator)
- ``bench.py``: the ``bench`` group (``ingest``, ``replay``, ``env``, ``router``, ``predictor``)
- ``shared.py``: the option types, option checks and output helpers the groups share

Start-up: these modules import only typer and the standard library at module level; Prefect,
MLflow, DuckDB, torch and the project's packages are imported inside the commands that need them,
so ``loadwise --help`` and ``loadwise sql`` start in well under a second.

The app's own options: ``--version`` (the installed package's version) and typer's shell completion
(``--install-completion`` / ``--show-completion``: commands, options and every fixed choice, the
``Literal`` types of ``shared.py``). Help texts are plain text: single backticks for code, never
the docstrings' double ones (tests/flows/cli/test_app.py walks every command's help).
"""

from __future__ import annotations

from typing import Annotated

import typer

from warehouse.run_env import apply_run_env

apply_run_env()  # before any command imports Prefect, MLflow or Hugging Face

from flows.cli import bench, fidelity, models, nightly, predict, replay, ui, warehouse  # noqa: E402

app = typer.Typer(
    name="loadwise",
    help="Learn where and when to route LLM requests across instances, from production traces.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_show_locals=False,
)


def _print_version(value: bool) -> None:
    """``--version``: ``loadwise X.Y.Z`` (the installed distribution's metadata), then exit 0."""
    if not value:
        return
    from importlib.metadata import PackageNotFoundError, version

    try:
        typer.echo(f"loadwise {version('loadwise')}")
    except PackageNotFoundError:  # run from a checkout that was never installed (pip install -e .)
        typer.echo("loadwise (version unknown: the package is not installed)")
    raise typer.Exit()


@app.callback()
def _main(
    show_version: Annotated[
        bool,
        typer.Option("--version", is_eager=True, callback=_print_version, help="Show the version and exit."),
    ] = False,
) -> None:
    """The app's own options (``--version``); the app's help is ``typer.Typer(help=...)`` above."""


for _group in (warehouse, replay, predict, models, nightly, ui, fidelity):  # the order of `loadwise --help`
    app.add_typer(_group.app)  # no name: the group's commands are top-level commands
app.add_typer(bench.app, name="bench")

if __name__ == "__main__":
    app()
