"""The ``loadwise`` app itself (flows/cli/__init__.py): ``--version``, shell completion, and help texts
a terminal shows as written (issue 19).

Before: no ``--version``; ``add_completion=False`` (no ``--install-completion`` /
``--show-completion``, nothing to complete with); ``run`` / ``serve`` help showed the docstrings'
reStructuredText ````double backticks````.
"""

from __future__ import annotations

from importlib.metadata import version
from typing import Any

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from flows.cli import app

runner = CliRunner()


def _commands(command: Any, path: tuple[str, ...] = ("loadwise",)) -> list[tuple[str, Any]]:
    """Every command of the app, groups included, with its full name."""
    found = [(" ".join(path), command)]
    for name, sub in getattr(command, "commands", {}).items():
        found += _commands(sub, (*path, name))
    return found


COMMANDS = _commands(get_command(app))


def test_version_prints_the_installed_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.output == f"loadwise {version('loadwise')}\n"


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_show_completion_prints_a_script_for_the_shell(shell: str, monkeypatch: pytest.MonkeyPatch):
    # without this typer detects the shell from the parent processes (and finds none under a daemon):
    # with it, --show-completion takes the shell's name, whatever runs the tests
    monkeypatch.setenv("_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION", "1")
    result = runner.invoke(app, ["--show-completion", shell], prog_name="loadwise")
    assert result.exit_code == 0, result.output
    assert "_LOADWISE_COMPLETE" in result.output


def test_completion_offers_commands_and_options():
    def complete(line: str) -> list[str]:
        words = line.split(" ")
        result = runner.invoke(
            app,
            [],
            prog_name="loadwise",
            env={
                "_LOADWISE_COMPLETE": "complete_bash",
                "COMP_WORDS": line,
                "COMP_CWORD": str(len(words) - 1),
            },
        )
        assert result.exit_code == 0, result.output
        return result.output.split()

    assert complete("loadwise train-") == ["train-predictor", "train-router"]
    assert complete("loadwise bench r") == ["replay", "router"]
    assert "--queue-policy" in complete("loadwise compare --q")


@pytest.mark.parametrize(("name", "command"), COMMANDS, ids=[name for name, _ in COMMANDS])
def test_help_has_no_double_backticks(name: str, command: Any):
    """The help a terminal shows is plain text: single backticks for code at most."""
    texts = [command.help or "", *(getattr(p, "help", None) or "" for p in command.params)]
    assert not [t for t in texts if "``" in t], f"{name}: help with ``double backticks``"
    result = runner.invoke(app, [*name.split()[1:], "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "``" not in result.output
