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


@app.callback()
def _root() -> None:
    """Knowledgeable LLMs for knowledge extraction."""


def _register_all() -> None:
    for name in COMMAND_MODULES:
        if importlib.util.find_spec(name) is None:  # pragma: no cover - only while a group is being built
            continue
        importlib.import_module(name).register(app)


_register_all()


def _on_sigterm(signum, frame) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second TERM must not interrupt the cleanup of the first
    raise Terminated()


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not os.path.exists("/dev/nvidiactl"):
        # DeepSpeed (imported by transformers when installed) otherwise warns on every command of a CPU machine.
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        app(args=argv, prog_name="knowlm")
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
