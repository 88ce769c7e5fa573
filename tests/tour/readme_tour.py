"""A new user's first hour, scripted: run every README command and every ``--help`` example on a fresh
demo workdir and check that none prints a traceback or a library warning.

    python tests/tour/readme_tour.py                 # fresh demo (about 2 min) + the tour (a few min), CPU
    python tests/tour/readme_tour.py --demo DIR      # reuse a demo workdir made by `knowlm demo --workdir DIR`

What runs: the ``knowlm``/``curl`` lines of every README (and README.zh) bash block that starts with the
comment ``# after `make demo` ``, then the ``Example:`` line of every command's ``--help``, each as printed,
from a scratch directory that looks like the repository root (``src``, ``examples`` and ``demo-work``).
A line ending in ``&`` starts a server in the background (ready when its port answers); ``kill %1`` stops
it with SIGINT. Exit status 0 is required, except for lines whose comment says ``# exits 2`` (they show an
error message), and stderr may hold only knowlm's own voice: no ``Traceback``, no ``...Warning:``,
no ``[transformers]`` line, no progress-bar residue.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MARKER = "# after `make demo`"
NOISE = [
    re.compile(r"Traceback \(most recent call last\)"),
    re.compile(r"\w+Warning: "),  # python warnings: file:line: FutureWarning: ...
    re.compile(r"^\s*warnings\.warn\("),
    re.compile(r"^\[transformers\]"),
    # a library's progress bar (knowlm's own bars, e.g. "train", are its voice; they are off when stderr is not a terminal,
    # except training's, kept for cluster logs)
    re.compile(r"Loading weights|Writing model shards|Converting and de-quantizing|Fetching \d+ files"),
]
KNOWLM = [sys.executable, "-m", "knowlm"]


@dataclass
class Step:
    source: str
    line: str
    expect: int = 0


@dataclass
class Outcome:
    step: Step
    code: int
    seconds: float
    problems: list[str] = field(default_factory=list)
    stderr: str = ""


def readme_steps(paths: list[Path]) -> list[Step]:
    """The command lines of every marked bash block, in order; README.zh.md repeats README.md's, run once."""
    steps: list[Step] = []
    for path in paths:
        if not path.is_file():
            continue
        block: list[str] | None = None
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.startswith("```"):
                if block is not None:
                    steps += [s for s in _commands(block, path.name)]
                    block = None
                elif line.strip() == "```bash":
                    block = []
                continue
            if block is not None:
                block.append(line)
    unique: dict[str, Step] = {}
    for step in steps:
        unique.setdefault(step.line, step)
    return list(unique.values())


def _commands(block: list[str], source: str) -> list[Step]:
    if not block or not block[0].startswith(MARKER):
        return []
    steps = []
    for line in block[1:]:
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        expect = 2 if re.search(r"#\s*exits 2\b", text) else 0
        steps.append(Step(source, text, expect))
    return steps


def help_examples() -> list[Step]:
    """``Example:`` lines of every command's --help (the first of each, which must run after the demo)."""
    from typer.main import get_command

    from knowlm.cli.main import app

    steps: list[Step] = []
    seen: set[str] = set()

    def walk(command, path):
        sub = getattr(command, "commands", None)
        if sub:
            for name, child in sub.items():
                walk(child, [*path, name])
            return
        for line in (command.help or "").splitlines():
            line = line.strip()
            if line.startswith("Example:") and line not in seen:
                seen.add(line)
                command_line = line.removeprefix("Example:").strip()
                source = "knowlm " + " ".join(path) + " --help"
                if path == ["demo"]:
                    break  # the tour starts from that very demo
                if path[-1] in ("serve", "webui"):  # a server: started in the background, then stopped
                    steps.extend([Step(source, command_line + " &"), Step(source, "kill %1")])
                else:
                    steps.append(Step(source, command_line))
                break

    walk(get_command(app), [])
    return steps


def _port_of(line: str) -> int:
    match = re.search(r"--port\s+(\d+)", line)
    return int(match.group(1)) if match else 8090


def _wait_port(port: int, proc: subprocess.Popen, timeout: float = 180) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            return False
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.5)
    return False


def _check_stderr(stderr: str) -> list[str]:
    return [f"stderr: {line}" for line in stderr.splitlines() if any(p.search(line) for p in NOISE)]


def _env() -> dict:
    env = dict(os.environ)
    bindir = Path(sys.executable).parent
    env["PATH"] = f"{bindir}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("HF_HUB_OFFLINE", "1")
    env["COLUMNS"] = "200"
    env.pop("KNOWLM_VERBOSE", None)
    return env


def _shell(line: str) -> str:
    """``knowlm`` as this interpreter's module, so the tour tests this checkout."""
    prefix = " ".join(shlex.quote(p) for p in KNOWLM)
    return re.sub(r"(^|[;&|(]\s*)knowlm\b", lambda m: m.group(1) + prefix, line)


def run_steps(steps: list[Step], cwd: Path, timeout: float) -> list[Outcome]:
    outcomes: list[Outcome] = []
    background: list[tuple[Step, subprocess.Popen, float]] = []
    try:
        _run(steps, cwd, timeout, outcomes, background)
    finally:
        for step, proc, started in background:  # a server the README forgot to stop, or the tour was interrupted
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.communicate()
            outcomes.append(Outcome(step, 1, time.perf_counter() - started, ["left running: no `kill %1` line"], ""))
    return outcomes


def _run(steps: list[Step], cwd: Path, timeout: float, outcomes: list[Outcome], background: list) -> None:
    env = _env()
    for step in steps:
        print(f"$ {step.line}", flush=True)
        start = time.perf_counter()
        if step.line.rstrip().endswith("&"):
            command = step.line.rstrip()[:-1]
            proc = subprocess.Popen(["bash", "-c", "exec " + _shell(command)], cwd=cwd, env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, start_new_session=True)
            if not _wait_port(_port_of(command), proc):
                proc.kill()
                out, err = proc.communicate()
                outcomes.append(Outcome(step, proc.returncode or 1, time.perf_counter() - start, ["server never answered"], err))
                continue
            background.append((step, proc, start))
            continue
        if step.line.startswith("kill %"):
            step_bg, proc, started = background.pop()
            os.killpg(proc.pid, signal.SIGINT)
            try:
                out, err = proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, err = proc.communicate()
            code = proc.returncode
            problems = _check_stderr(err) + ([] if code in (0, -signal.SIGINT, 130) else [f"server exit {code}"])
            outcomes.append(Outcome(step_bg, 0 if not problems else 1, time.perf_counter() - started, problems, err))
            continue
        try:
            done = subprocess.run(["bash", "-c", _shell(step.line)], cwd=cwd, env=env, capture_output=True, text=True,
                                  timeout=timeout, input="/quit\n")
            code, err = done.returncode, done.stderr
        except subprocess.TimeoutExpired as exc:
            code, err = 124, (exc.stderr or b"").decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        problems = _check_stderr(err)
        if code != step.expect:
            problems.append(f"exit {code}, expected {step.expect}")
        if step.expect == 2 and code == 2 and len(err.strip().splitlines()) != 1:
            problems.append("an error must be one line")
        outcomes.append(Outcome(step, code, time.perf_counter() - start, problems, err))
        print(f"  -> exit {code} in {outcomes[-1].seconds:.1f}s" + (f"  PROBLEMS: {problems}" if problems else ""), flush=True)


def make_root(base: Path, demo: Path | None) -> Path:
    """A scratch "repository root": src/ and examples/ linked, demo-work/ fresh (or a copy of ``demo``)."""
    root = base / "root"
    root.mkdir(parents=True)
    for name in ("src", "examples"):
        (root / name).symlink_to(REPO / name)
    if demo is not None:
        shutil.copytree(demo, root / "demo-work", symlinks=True)
    return root


def tour(demo: Path | None = None, base: Path | None = None, timeout: float = 600, only: str | None = None) -> list[Outcome]:
    base = Path(base or tempfile.mkdtemp(prefix="knowlm-tour-"))
    root = make_root(base, demo)
    steps: list[Step] = []
    if demo is None:
        steps.append(Step("Makefile (make demo)", "knowlm demo --workdir demo-work"))
    steps += readme_steps([REPO / "README.md", REPO / "README.zh.md"])
    steps += help_examples()
    if only:
        steps = [s for s in steps if re.search(only, s.line)]
    return run_steps(steps, root, timeout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", type=Path, help="reuse this demo workdir (copied) instead of running the demo")
    parser.add_argument("--base", type=Path, help="scratch directory (default: a new temp dir)")
    parser.add_argument("--only", help="regex: run only matching lines")
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args()
    outcomes = tour(args.demo, args.base, args.timeout, args.only)
    bad = [o for o in outcomes if o.problems]
    print(f"\n{len(outcomes)} commands, {len(bad)} with problems, {sum(o.seconds for o in outcomes):.0f}s in all")
    for o in bad:
        print(f"- [{o.step.source}] {o.step.line}\n    {o.problems}\n    " + "\n    ".join(o.stderr.strip().splitlines()[-8:]))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
