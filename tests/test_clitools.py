"""spoofsdk.clitools: one error handler for every command line (typed errors -> one line + exit status)."""
from __future__ import annotations

from importlib.metadata import version

import click
import pytest
from click.testing import CliRunner

from spoofsdk.clitools import Group, run_main, version_option
from spoofsdk.errors import ModelError, SpoofSDKError


class _UsageLike(SpoofSDKError):
    exit_code = 2


def _cli(error: BaseException | None):
    @click.group(cls=Group)
    @version_option("spoofsdk")
    def cli():
        pass

    @cli.command()
    def go():
        if error is not None:
            raise error
        click.echo("ok")

    return cli


@pytest.mark.parametrize("error, code, message", [
    (ModelError("model.onnx: not a spoofsdk model\n(export it with spoofsdk-train)"), 1, "Error: model.onnx: not a spoofsdk model (export it with spoofsdk-train)"),
    (_UsageLike("recipe key 'x' unknown"), 2, "Error: recipe key 'x' unknown"),
    (FileNotFoundError(2, "No such file or directory", "runs/best.pt"), 1, "Error: runs/best.pt: No such file or directory"),
    (KeyboardInterrupt(), 130, ""),
])
def test_expected_errors_become_one_line_and_a_status(error, code, message, capsys):
    assert run_main(_cli(error), ["go"]) == code
    err = capsys.readouterr().err.strip()
    assert err == message and "Traceback" not in err
    result = CliRunner().invoke(_cli(error), ["go"])  # standalone mode, as the console script runs it
    assert result.exit_code == code and result.output.strip() == message


def test_bugs_keep_their_traceback():
    with pytest.raises(ZeroDivisionError):
        run_main(_cli(ZeroDivisionError("bug")), ["go"])


def test_usage_errors_and_success(capsys):
    assert run_main(_cli(None), ["go"]) == 0 and capsys.readouterr().out == "ok\n"
    assert run_main(_cli(None), ["nope"]) == 2
    assert "No such command" in capsys.readouterr().err


def test_version_comes_from_the_distribution_metadata(capsys):
    assert run_main(_cli(None), ["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"spoofsdk {version('spoofsdk')}"


def test_a_closed_pipe_is_not_reported_as_an_error():
    """`spoofsdk run --json dir | head -1`: the reader leaves, and the command must not print
    "Error: [Errno 32] Broken pipe" (it did: BrokenPipeError is an OSError, an expected error)."""
    result = CliRunner().invoke(_cli(BrokenPipeError(32, "Broken pipe")), ["go"])
    assert result.exit_code == 1 and "Error" not in result.output and "Broken pipe" not in result.output
    # any other OSError is still one line and status 1
    other = CliRunner().invoke(_cli(PermissionError(13, "Permission denied", "out.json")), ["go"])
    assert other.exit_code == 1 and "Error: out.json: Permission denied" in other.output
