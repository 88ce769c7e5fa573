"""The one output policy of every ``knowlm`` command that writes.

1. An output that exists and is not empty is refused unless the command was given ``--overwrite``.
2. With ``--overwrite`` only what the command itself writes is replaced: files beside it in an
   output directory (a user's ``notes.txt``) survive (see :func:`knowlm.utils.atomic.atomic_dir`).
3. An output never takes the place of one of the command's inputs, nor a directory holding one.
4. An output path that cannot be one (a file where a directory is needed, a directory where a file
   is, a file among its parents) is a one-line error before any work starts.

Commands call :func:`check_outputs` first, so a long job is not run only to be refused at the end;
the atomic writers then put the results in place.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from knowlm.errors import KnowlmError
from knowlm.utils.atomic import atomic_dir, is_nonempty

# What a model directory writer owns: weights, index, config, tokenizer, manifest. A re-run with
# --overwrite replaces these (also shards the new output no longer has) and nothing else.
MODEL_FILES = (
    "*.safetensors", "*.safetensors.index.json", "pytorch_model*.bin", "pytorch_model.bin.index.json",
    "adapter_config.json", "config.json", "generation_config.json", "tokenizer*", "special_tokens_map.json",
    "added_tokens.json", "chat_template.jinja", "chat_template.json", "knowlm.json",
)

OVERWRITE_HELP = "Replace an existing output (only the files this command writes; other files there are kept)."


def _same(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def _inside(child: Path, parent: Path) -> bool:
    try:
        child.resolve().relative_to(parent.resolve())
        return True
    except ValueError:
        return False


def check_output(
    path: str | os.PathLike | None,
    *,
    overwrite: bool = False,
    inputs: Iterable[str | os.PathLike | None] = (),
    kind: str = "file",
    flag: str = "--output",
) -> Path | None:
    """Apply the policy to one output (``kind`` "file" or "dir"); returns it as a Path.

    ``inputs`` are the command's input paths (None and hub ids that do not exist are ignored).
    """
    if path is None:
        return None
    path = Path(path)
    for raw in inputs:
        if raw is None or str(raw) == "":
            continue
        source = Path(raw)
        try:
            if not source.exists():
                continue
        except OSError:  # not a path at all (an inline JSON schema longer than a file name may be)
            continue
        if _same(path, source):
            raise KnowlmError(f"{flag} {path} is also an input of this command; write the result somewhere else")
        if kind == "dir" and source.is_file() and _inside(source, path):
            raise KnowlmError(f"{flag} {path} holds the input {source}; write the result to another directory")
    for ancestor in reversed(path.parents):
        if ancestor.exists() and not ancestor.is_dir():
            raise KnowlmError(f"cannot write {flag} {path}: {ancestor} is a file, not a directory")
    if kind == "dir":
        if path.exists() and not path.is_dir():
            raise KnowlmError(f"{flag} {path} is a file; give a directory for this output")
    elif path.is_dir():
        raise KnowlmError(f"{flag} {path} is a directory; give a file name for this output")
    if not overwrite and is_nonempty(path):
        what = "directory" if kind == "dir" else "file"
        raise KnowlmError(f"{flag} {path}: the {what} already exists and is not empty; pass --overwrite to replace it")
    return path


def check_outputs(
    outputs: Sequence[tuple[str | os.PathLike | None, str]],
    *,
    overwrite: bool = False,
    inputs: Iterable[str | os.PathLike | None] = (),
    kind: str = "file",
) -> None:
    """:func:`check_output` for several ``(path, flag)`` pairs; two outputs may not be the same path either."""
    inputs = list(inputs)
    seen: dict[Path, str] = {}
    for path, flag in outputs:
        checked = check_output(path, overwrite=overwrite, inputs=inputs, kind=kind, flag=flag)
        if checked is None:
            continue
        key = checked.resolve()
        if key in seen:
            raise KnowlmError(f"{seen[key]} and {flag} name the same file {checked}; give each output its own path")
        seen[key] = flag


def check_prefix(prefix: str | os.PathLike, suffixes: Sequence[str], *, overwrite: bool = False,
                 inputs: Iterable[str | os.PathLike | None] = (), flag: str = "--output-prefix") -> None:
    """The policy for an output named by a prefix (``PREFIX.bin``, ``PREFIX.idx``, ``PREFIX.json``)."""
    inputs = list(inputs)
    for suffix in suffixes:
        check_output(f"{prefix}{suffix}", overwrite=overwrite, inputs=inputs, flag=flag)


@contextlib.contextmanager
def save_model_dir(output: str | os.PathLike, overwrite: bool = True, owned: Sequence[str] = MODEL_FILES) -> Iterator[Path]:
    """A temporary directory to write a model into; moved into ``output`` when the block succeeds.

    The one way train, edit and the weight tools write a model directory: ``knowlm.json`` goes in
    last (its presence means the directory is complete); in an existing directory the model files
    of an earlier output are replaced and anything else there (checkpoints, metrics, notes) is kept.
    """
    with atomic_dir(output, overwrite=overwrite, owned=owned) as tmp:
        yield tmp
