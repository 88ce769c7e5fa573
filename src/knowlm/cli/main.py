"""Entry point of the `knowlm` command.

Each module in ``COMMAND_MODULES`` defines ``register(app)`` which adds its command or
command group. Errors the user can fix (:class:`KnowlmError`) become one line on stderr and
exit status 2. SIGTERM (``timeout``, ``docker stop``, Slurm) is handled like Ctrl-C: it is raised
as an exception in the main thread, so every atomic writer removes its temporary output, and the
command exits 143 (128 + SIGTERM), as a process killed by the signal would report.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
import threading

import typer

from knowlm.errors import KnowlmError
from knowlm.utils.atomic import Terminated

COMMAND_MODULES = [
    "knowlm.cli.demo",
    "knowlm.cli.data",
    "knowlm.cli.kg2instruct",
    "knowlm.cli.train",
    "knowlm.cli.weights",
    "knowlm.cli.generate",
    "knowlm.cli.extract",
    "knowlm.cli.eval",
    "knowlm.cli.convert",
    "knowlm.cli.serve",
    "knowlm.cli.webui",
    "knowlm.cli.edit",
    "knowlm.cli.instruct",
    "knowlm.cli.bench",
    "knowlm.cli.env",
]

app = typer.Typer(
    name="knowlm",
    help="Knowledgeable LLMs: prepare corpora, train, extract entities/relations/events, edit and serve.\n\n"
    "Example: knowlm demo --workdir demo-work",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _show_version(value: bool) -> None:
    if value:
        import knowlm

        print(f"knowlm {knowlm.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", "-V", callback=_show_version, is_eager=True, help="Print the version and exit."),
    verbose: bool = typer.Option(False, "--verbose", help="Also show library warnings, deprecations and progress bars (hidden by default)."),
) -> None:
    """Knowledgeable LLMs for knowledge extraction."""
    from knowlm.utils import noise

    noise.configure(verbose or None)


def _register_all() -> None:
    for name in COMMAND_MODULES:
        if importlib.util.find_spec(name) is None:  # pragma: no cover - only while a group is being built
            continue
        importlib.import_module(name).register(app)


_register_all()


def _on_sigterm(signum, frame) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second TERM must not interrupt the cleanup of the first
    raise Terminated()


def _run(argv: list[str] | None) -> None:
    """The app, with usage errors (unknown option, a value of the wrong type, a missing argument) as one
    ``error:`` line and exit 2 like every other bad input, instead of click's usage box."""
    from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError  # typer vendors click
    from typer.exceptions import Abort

    try:
        code = app(args=argv, prog_name="knowlm", standalone_mode=False)
    except NoArgsIsHelpError:
        app(args=argv, prog_name="knowlm")  # a bare group: its help, as typer formats it (exit 2)
        return
    except UsageError as exc:
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
        print(f"error: {' '.join(exc.format_message().split())}{hint}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except ClickException as exc:
        print(f"error: {' '.join(exc.format_message().split())}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except Abort:
        print("aborted", file=sys.stderr)
        sys.exit(1)
    if isinstance(code, int) and not isinstance(code, bool) and code:
        sys.exit(code)  # typer.Exit(n) from a command (e.g. a benchmark's own status)


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not os.path.exists("/dev/nvidiactl"):
        # DeepSpeed (imported by transformers when installed) otherwise warns on every command of a CPU machine.
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        _run(argv)
    except KnowlmError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except Terminated:
        print("terminated (SIGTERM); temporary outputs removed", file=sys.stderr)
        sys.exit(143)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    main()
