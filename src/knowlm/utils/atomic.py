"""Atomic writes: results appear under their final name only when complete.

An interrupted job leaves at most a ``.tmp-*`` sibling behind, never a file or directory
that looks finished. Interruptions arrive as exceptions (Ctrl-C as ``KeyboardInterrupt``, SIGTERM
as :class:`Terminated`, raised by the CLI's handler), so the ``except BaseException`` cleanups
below remove the temporary output; while a result is being put in place or a temporary one
removed, SIGINT/SIGTERM are held back so that the step is never cut in half.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
from pathlib import Path
from typing import IO, Iterator


class Terminated(BaseException):
    """SIGTERM, raised in the main thread (like ``KeyboardInterrupt`` for SIGINT) so that cleanups run."""


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Defer SIGINT/SIGTERM (delivered on exit) around a rename or a cleanup that must not be interrupted."""
    held = {signal.SIGINT, signal.SIGTERM}
    try:
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    except (AttributeError, ValueError, OSError):  # pragma: no cover - no POSIX signal masks here
        yield
        return
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Open a temp file beside ``path``; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        kwargs = {} if "b" in mode else {"encoding": encoding}
        with open(tmp, mode, **kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with _signals_held(), contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp file name beside ``path`` for a writer that opens files itself (GGUF, checkpoints);
    rename it onto ``path`` only if the block succeeds, remove it otherwise."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.name}.{os.getpid()}")
    try:
        yield tmp
        with _signals_held():
            os.replace(tmp, path)
    except BaseException:
        with _signals_held(), contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temp directory beside ``path``; move it into place only if the block succeeds.

    With ``overwrite`` an existing ``path`` is replaced (after the new one is complete).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{path.name}.", dir=path.parent))
    try:
        yield tmp
        with _signals_held():  # the swap below is two renames: never leave only one of them done
            if path.exists():
                if not overwrite:
                    raise FileExistsError(f"{path} already exists")
                old = path.with_name(f".old-{path.name}.{os.getpid()}")
                os.replace(path, old)
                os.replace(tmp, path)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, path)
    except BaseException:
        with _signals_held():
            shutil.rmtree(tmp, ignore_errors=True)
        raise
