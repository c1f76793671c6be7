"""The ``loadwise`` command line.

Each area registers its commands from its own module (``flows/cli_*.py``) so this file stays a
table of contents. Heavy imports (Prefect, MLflow, torch) happen inside the commands that need
them, never at import time: ``loadwise sql`` must start in well under a second.
"""

from __future__ import annotations

import typer

from flows.env import apply_run_env

apply_run_env()

app = typer.Typer(
    name="loadwise",
    help="Learn where and when to route LLM requests across instances, from production traces.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
bench_app = typer.Typer(help="Benchmarks: each prints its figure next to a same-run baseline (a ratio).")
app.add_typer(bench_app, name="bench")


def _register() -> None:
    from flows import cli_models, cli_pipeline, cli_replay, cli_warehouse

    for module in (cli_warehouse, cli_replay, cli_models, cli_pipeline):
        module.register(app, bench_app)


_register()

if __name__ == "__main__":
    app()
