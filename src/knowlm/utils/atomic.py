"""Atomic writes: results appear under their final name only when complete.

An interrupted job leaves at most a ``.tmp-*`` sibling behind, never a file or directory
that looks finished. Interruptions arrive as exceptions (Ctrl-C as ``KeyboardInterrupt``, SIGTERM
as :class:`Terminated`, raised by the CLI's handler), so the ``except BaseException`` cleanups
below remove the temporary output; while a result is being put in place or a temporary one
removed, SIGINT/SIGTERM are held back so that the step is never cut in half.

Results get the permissions any new file gets (0644 / 0755 under the usual umask 022), not the
0600 / 0700 of :mod:`tempfile`: on a shared filesystem other users must be able to read them.
A directory result never wipes what it replaces: it takes the place of its namesakes only
(see :func:`atomic_dir`), so a user's own files beside them survive ``--overwrite``.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import shutil
import signal
import tempfile
from pathlib import Path
from typing import IO, Iterable, Iterator

from knowlm.errors import KnowlmError

# Written last when a directory result is put in place, removed first when one is replaced:
# a model directory whose manifest is present is complete.
MANIFEST_NAMES = ("knowlm.json",)


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


def current_umask() -> int:
    """The process umask, read without changing it where Linux allows (``/proc``), else set back at once."""
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _as_created(path: str | os.PathLike, directory: bool) -> None:
    """Give a mkstemp/mkdtemp result (0600/0700) the mode open()/mkdir() would have given it."""
    os.chmod(path, (0o777 if directory else 0o666) & ~current_umask())


def writable_parent(path: str | os.PathLike) -> Path:
    """Create ``path``'s parent directories; a one-line error when one of them is a file."""
    path = Path(path)
    for ancestor in reversed(path.parents):
        if ancestor.exists() and not ancestor.is_dir():
            raise KnowlmError(f"cannot write {path}: {ancestor} is a file, not a directory")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except PermissionError as exc:
        raise KnowlmError(f"cannot write {path}: permission denied ({exc.filename})") from None
    return path.parent


def _file_target(path: Path) -> None:
    writable_parent(path)
    if path.is_dir():
        raise KnowlmError(f"{path} is a directory; give a file name for this output")


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Open a temp file beside ``path``; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    _file_target(path)
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        _as_created(tmp, directory=False)
        kwargs = {} if "b" in mode else {"encoding": encoding}
        with open(tmp, mode, **kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        with _signals_held():
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
    _file_target(path)
    tmp = path.with_name(f".tmp-{path.name}.{os.getpid()}")
    try:
        yield tmp
        with _signals_held():
            os.replace(tmp, path)
    except BaseException:
        with _signals_held(), contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _matches(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _remove(entry: Path) -> None:
    if entry.is_dir() and not entry.is_symlink():
        shutil.rmtree(entry)
    else:
        entry.unlink()


def _merge_into(tmp: Path, path: Path, owned: Iterable[str]) -> None:
    """Move the entries of ``tmp`` into the existing directory ``path``.

    Replaced: entries of ``path`` with the same name as a new one, and entries matching ``owned``
    (what an earlier run of the same command wrote: e.g. a shard ``model-00003-of-00003.safetensors``
    that the new, smaller output no longer has). Everything else in ``path`` stays. The manifest
    goes first and comes back last, so a crash part-way never leaves a directory that looks complete.
    """
    new = sorted(tmp.iterdir(), key=lambda e: e.name in MANIFEST_NAMES)
    names = {e.name for e in new}
    stale = [e for e in path.iterdir() if e.name in names or _matches(e.name, owned)]
    stale.sort(key=lambda e: e.name not in MANIFEST_NAMES)
    for entry in stale:
        _remove(entry)
    for entry in new:
        os.replace(entry, path / entry.name)


def is_nonempty(path: str | os.PathLike) -> bool:
    """An existing file with bytes in it, or a directory with entries (leftover ``.tmp-*`` ones aside)."""
    path = Path(path)
    if path.is_dir():
        return any(not e.name.startswith(".tmp-") for e in path.iterdir())
    return path.exists() and path.stat().st_size > 0


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, overwrite: bool = True, owned: Iterable[str] = ()) -> Iterator[Path]:
    """Yield a temp directory beside ``path``; move its contents into place only if the block succeeds.

    A missing or empty ``path`` is simply replaced by the new directory (one rename). A non-empty
    one is refused unless ``overwrite``; then only the new entries' namesakes and entries matching
    the ``owned`` glob patterns are replaced, other files in it are left alone (no wholesale delete).
    """
    path = Path(path)
    writable_parent(path)
    if path.exists() and not path.is_dir():
        raise KnowlmError(f"{path} exists and is not a directory")
    owned = tuple(owned)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{path.name}.", dir=path.parent))
    try:
        _as_created(tmp, directory=True)
        yield tmp
        with _signals_held():
            if path.is_dir() and is_nonempty(path):
                if not overwrite:
                    raise KnowlmError(f"{path} already exists and is not empty; pass --overwrite to replace what this command writes there")
                _merge_into(tmp, path, owned)
                shutil.rmtree(tmp)
            else:
                if path.is_dir():
                    shutil.rmtree(path)  # empty but for leftovers of an interrupted run
                os.replace(tmp, path)
    except BaseException:
        with _signals_held():
            shutil.rmtree(tmp, ignore_errors=True)
        raise
