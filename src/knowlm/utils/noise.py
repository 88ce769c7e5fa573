"""One clean voice on stderr: library chatter off by default, on with ``knowlm --verbose``.

Without ``--verbose``: deprecation and future warnings (transformers, peft, torch say them on every
step) are hidden, other warnings are shown once per message, transformers' "Loading weights" and
"Writing model shards" bars are off, and a DeepSpeed op that compiles on first use is announced
instead of stalling silently for minutes. The settings also reach worker processes (torchrun
ranks, data workers) through environment variables.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import logging
import os
import sys
import time
import warnings
from typing import Callable

VERBOSE_ENV = "KNOWLM_VERBOSE"
QUIET_CATEGORIES = (DeprecationWarning, PendingDeprecationWarning, FutureWarning, ResourceWarning, ImportWarning)
# Library messages that say nothing a knowlm user can act on (knowlm sets these things itself).
QUIET_MESSAGES = (
    r".*`is_gradient_checkpointing` is deprecated.*",
    r"Setting `save_embedding_layers` to `True`.*",
    r".*does not have many workers which is the bottleneck.*",
    r".*TypedStorage is deprecated.*",
)
QUIET_LOGGERS = ("accelerate", "torch.distributed.elastic", "httpx", "DeepSpeed")


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV) == "1"


def configure(be_verbose: bool | None = None) -> None:
    """Apply the policy to this process (and, by environment, to the processes it starts)."""
    if be_verbose is None:
        be_verbose = verbose()
    if be_verbose:
        os.environ[VERBOSE_ENV] = "1"
        warnings.simplefilter("default")
        return
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("PYTHONWARNINGS", "ignore::DeprecationWarning,ignore::FutureWarning")
    warnings.simplefilter("once")  # after "once" so the ignores below win
    for category in QUIET_CATEGORIES:
        warnings.filterwarnings("ignore", category=category)
    for message in QUIET_MESSAGES:
        warnings.filterwarnings("ignore", message=message)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    after_import("transformers.utils.logging", _quiet_transformers)
    # transformers' GGUF reader draws its own tqdm bar, outside its logging switch
    after_import("transformers.modeling_gguf_pytorch_utils", _no_bar)


def _no_bar(module) -> None:
    import functools

    if getattr(module, "tqdm", None) is not None and not isinstance(module.tqdm, functools.partial):
        module.tqdm = functools.partial(module.tqdm, disable=True)


class _NoDeprecations(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        text = str(record.msg)
        return not ("deprecated" in text or "will be removed" in text)


def _quiet_transformers(module) -> None:
    """No per-load progress bars and no deprecation notices; transformers' other warnings (missing weights...) stay."""
    module.disable_progress_bar()
    module.get_logger("transformers")  # creates the library's stderr handler
    for handler in logging.getLogger("transformers").handlers:
        if not any(isinstance(f, _NoDeprecations) for f in handler.filters):
            handler.addFilter(_NoDeprecations())


class _AfterImport(importlib.abc.MetaPathFinder):
    """Run ``callback(module)`` right after ``name`` is first imported (one shot)."""

    def __init__(self, name: str, callback: Callable) -> None:
        self.name, self.callback = name, callback

    def find_spec(self, fullname, path, target=None):
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        run, callback = spec.loader.exec_module, self.callback

        def exec_module(module):
            run(module)
            callback(module)

        spec.loader.exec_module = exec_module
        return spec


def after_import(name: str, callback: Callable) -> None:
    """``callback(module)`` once ``name`` is imported: now if it already is, else right after its import.

    Used to switch off transformers' progress bars without importing transformers (2-3 s) in every
    command, ``--help`` included; its own warnings (missing weights...) stay.
    """
    if name in sys.modules:
        callback(sys.modules[name])
    elif not any(isinstance(f, _AfterImport) and f.name == name for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterImport(name, callback))


def announce_deepspeed_builds(echo=None) -> None:
    """Say so when DeepSpeed compiles an op on first use (45-60 s each on CPU), and how long it took.

    Hooks ``OpBuilder.jit_load`` once per process; an op already in the torch extensions cache
    loads silently.
    """
    if os.environ.get("RANK", "0") != "0":  # the other ranks wait for rank 0's build
        return
    try:
        from deepspeed.ops.op_builder.builder import OpBuilder
    except Exception:  # no DeepSpeed, or a build of it without JIT ops
        return
    if getattr(OpBuilder.jit_load, "_knowlm_announced", False):
        return
    original = OpBuilder.jit_load
    say = echo or (lambda text: print(text, file=sys.stderr, flush=True))

    def jit_load(self, verbose=True):
        name = self.name
        cached = _op_cached(self.name)
        if not cached:
            where = os.environ.get("TORCH_EXTENSIONS_DIR", "~/.cache/torch_extensions")
            say(f"building DeepSpeed op {name} (first use only, about a minute; cached in {where})...")
        start = time.perf_counter()
        result = original(self, verbose=False if not cached else verbose)
        if not cached:
            say(f"built DeepSpeed op {name} in {time.perf_counter() - start:.0f}s")
        return result

    jit_load._knowlm_announced = True
    OpBuilder.jit_load = jit_load


def _op_cached(name: str) -> bool:
    try:
        from torch.utils.cpp_extension import _get_build_directory

        directory = _get_build_directory(name, verbose=False)
    except Exception:
        return False
    return os.path.isfile(os.path.join(directory, f"{name}.so"))
