"""The ``classwise`` Typer app: the root options (--version, --verbose), the commands (one module each
in :mod:`classwise.cli`) and :func:`run_cli`, which turns every way a command can end into an exit status
and at most one line on stderr."""

from __future__ import annotations

import logging
import sys
from typing import Annotated, Any

import typer

from classwise import __version__
from classwise.cli._print import console, err_console, print_error
from classwise.cli.claims import claims
from classwise.cli.compare import compare
from classwise.cli.defend import defend
from classwise.cli.demo import demo
from classwise.cli.evaluate import evaluate
from classwise.cli.export import export
from classwise.cli.intensity import intensity
from classwise.cli.leaderboard import leaderboard
from classwise.cli.list_cmd import list_cmd
from classwise.cli.remove_class import remove_class_cmd
from classwise.cli.report import report
from classwise.cli.study import study
from classwise.cli.tpgd import tpgd_cmd
from classwise.cli.train import train
from classwise.errors import ClasswiseError

app = typer.Typer(
    name="classwise",
    help="Class-wise robustness analysis of image classifiers: which classes are robust, which are not, and why.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        console.print(f"classwise {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    version: Annotated[bool | None, typer.Option("--version", callback=_version, is_eager=True,
                                                    help="Print the version and exit.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log library messages.")] = False,
) -> None:
    from classwise.runlock import release_all

    ctx.call_on_close(release_all)  # every run directory lock, however it ends
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


# the order of `classwise --help`
app.command("list")(list_cmd)
app.command()(demo)
app.command()(evaluate)
app.command("tpgd")(tpgd_cmd)
app.command()(train)
app.command()(study)
app.command("remove-class")(remove_class_cmd)
app.command()(report)
app.command()(compare)
app.command()(defend)
app.command("claims")(claims)
app.command()(intensity)
app.command()(export)
app.command()(leaderboard)


def _on_sigterm(signum: int, frame: Any) -> None:
    from classwise.errors import Terminated

    raise Terminated()


def _click() -> Any:
    """The Click that Typer runs on (vendored by Typer >= 0.2x, else the click package)."""
    import importlib

    try:
        return importlib.import_module("typer._click")
    except ImportError:  # pragma: no cover - older Typer on the click package
        return importlib.import_module("click")


def run_cli(argv: list[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``) as a user sees it and return the exit
    status: user mistakes (a :class:`ClasswiseError` or a usage error such as ``--limit 0`` or an unknown
    option) become one ``error: ...`` line on stderr and status 2, never a traceback or a boxed message.
    Ctrl-C exits 130 and SIGTERM (what schedulers send; handled like Ctrl-C, checkpoints saved) 143.
    ``main()`` runs this; in-process tests call it directly."""
    from classwise.cli._common import usage_error_message

    click = _click()
    try:
        rv = app(args=argv, prog_name="classwise", standalone_mode=False)
        return rv if isinstance(rv, int) and not isinstance(rv, bool) else 0
    except click.exceptions.NoArgsIsHelpError as e:  # `classwise` / `classwise CMD` with no arguments
        text = e.format_message()  # the help; Typer's rich help printed itself when the error was made
        if text:
            console.print(text, markup=False, highlight=False, soft_wrap=True)
        return int(e.exit_code)
    except click.exceptions.UsageError as e:  # BadParameter, NoSuchOption, MissingParameter, ...
        print_error(usage_error_message(e))
        return 2
    except click.exceptions.ClickException as e:  # e.g. FileError: one line as well
        print_error(e.format_message())
        return int(e.exit_code)
    except ClasswiseError as e:
        print_error(str(e))
        return int(getattr(e, "exit_code", 2))
    except OSError as e:  # outside classwise.io's writers (which raise WriteError): still one line
        where = f": {e.filename}" if e.filename else ""
        print_error(f"{e.strerror or e}{where} (errno {e.errno})")
        return 2
    except (KeyboardInterrupt, typer.Abort) as e:  # Click turns KeyboardInterrupt into Abort
        return _interrupted(e)


def _interrupted(e: BaseException) -> int:
    """Ctrl-C: 130, SIGTERM: 143 (a Terminated, a KeyboardInterrupt); a bare Abort: 1."""
    cause = e if isinstance(e, KeyboardInterrupt) else (e.__cause__ or e.__context__)
    if not isinstance(cause, KeyboardInterrupt):
        err_console.print("aborted", markup=False, highlight=False)
        return 1
    term = getattr(cause, "exit_code", None) == 143
    err_console.print("terminated (SIGTERM)" if term else "interrupted", markup=False, highlight=False)
    return 143 if term else 130


def main() -> None:
    """Console entry point: one-line errors, no tracebacks for user mistakes."""
    import signal

    from classwise.cli import _startup

    try:
        _startup.tune_allocator()  # before torch is imported (classwise.cli._startup)
    except ClasswiseError as e:
        print_error(str(e))
        sys.exit(2)
    _startup.pause()  # the cyclic collector off while the command imports (classwise.cli._startup)
    signal.signal(signal.SIGTERM, _on_sigterm)
    rc = run_cli()
    _startup.before_exit()
    sys.exit(rc)
