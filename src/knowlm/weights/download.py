"""Download a model snapshot from the Hugging Face hub and verify it against a checksum list.

KnowLM published MD5 lists per shard, and users kept asking why their sums did not match -- the
usual answer was a truncated or stale file. A list in ``md5sum``/``sha256sum`` format
(``HEX  filename``, or ``HEX *filename``) is checked file by file; the algorithm follows from the
digest length. A mismatch names the file; a file in the list that is missing is an error too.
Markdown fence lines (```` ```shell ```` / ```` ``` ````) are skipped, so the checksum block of a
model card (KnowLM's README lists its MD5s in one) can be saved and used as it is.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from knowlm.errors import KnowlmError
from knowlm.models.manifest import write_manifest
from knowlm.utils.hashing import sha256_file
from knowlm.utils.jsonl import read_text

_LINE = re.compile(r"^(?P<hex>[0-9a-fA-F]{32}|[0-9a-fA-F]{64})\s+\*?(?P<name>.+?)\s*$")
_REVERSED = re.compile(r"^(?P<name>\S.*?)\s+(?P<hex>[0-9a-fA-F]{32}|[0-9a-fA-F]{64})\s*$")  # "file  HEX" variants


def parse_checksum_file(path: str | os.PathLike) -> dict[str, tuple[str, str]]:
    """``{relative filename: (algorithm, lowercase hex)}`` from an md5sum / sha256sum style list."""
    path = Path(path)
    if not path.is_file():
        raise KnowlmError(f"checksum file not found: {path}")
    entries: dict[str, tuple[str, str]] = {}
    for lineno, raw in enumerate(read_text(path).splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", "```", "~~~")):
            continue
        match = _LINE.match(line) or _REVERSED.match(line)
        if not match:
            raise KnowlmError(f"{path}:{lineno}: expected 'HEX  filename' (md5sum/sha256sum output), got {line[:60]!r}")
        digest = match["hex"].lower()
        name = match["name"].strip().removeprefix("./")
        entries[name] = ("md5" if len(digest) == 32 else "sha256", digest)
    if not entries:
        raise KnowlmError(f"{path} lists no checksums")
    return entries


@dataclass
class VerifyReport:
    directory: str
    verified: list[str] = field(default_factory=list)
    algorithm: str = ""
    seconds: float = 0.0


def verify_checksums(directory: str | os.PathLike, checksum_file: str | os.PathLike) -> VerifyReport:
    """Check every file named in ``checksum_file`` under ``directory``; raise naming the first bad one."""
    directory = Path(directory)
    started = time.perf_counter()
    entries = parse_checksum_file(checksum_file)
    report = VerifyReport(str(directory), algorithm="/".join(sorted({a for a, _ in entries.values()})))
    for name, (algorithm, expected) in entries.items():
        candidate = directory / name
        if not candidate.is_file():
            candidate = directory / Path(name).name  # lists often carry the publisher's directory prefix
        if not candidate.is_file():
            raise KnowlmError(f"{name}: listed in {Path(checksum_file).name} but not found in {directory}")
        actual = sha256_file(candidate, algorithm=algorithm)
        if actual != expected:
            raise KnowlmError(
                f"{name}: {algorithm} mismatch (expected {expected}, got {actual}): the file is damaged or from "
                "another revision; delete it and download again"
            )
        report.verified.append(name)
    report.seconds = time.perf_counter() - started
    return report


def download(
    repo_id: str,
    output: str | os.PathLike,
    include: list[str] | None = None,
    revision: str | None = None,
    checksums: str | os.PathLike | None = None,
    offline: bool = False,
    token: str | None = None,
) -> dict:
    """Snapshot ``repo_id`` into ``output`` (resuming partial files), then verify; returns a summary dict.

    ``offline`` (or ``HF_HUB_OFFLINE=1``) uses only files already present locally.
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    output = Path(output)
    started = time.perf_counter()
    env_offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    why_offline = "--offline was given" if offline else "HF_HUB_OFFLINE is set" if env_offline else None
    offline = offline or env_offline
    try:
        path = snapshot_download(
            repo_id=repo_id,
            revision=revision,
            allow_patterns=include or None,
            local_dir=str(output),
            local_files_only=offline,
            token=token,
        )
    except RepositoryNotFoundError:
        raise KnowlmError(f"repository {repo_id} not found on the Hugging Face hub (or it is gated: log in first)") from None
    except RevisionNotFoundError:
        raise KnowlmError(f"revision {revision!r} not found in {repo_id}") from None
    except LocalEntryNotFoundError:
        if why_offline:
            raise KnowlmError(f"{repo_id} is not available offline ({why_offline}) and no complete local copy is in {output}") from None
        raise KnowlmError(
            f"cannot reach the Hugging Face hub for {repo_id} (no network, or a proxy/firewall blocks it; HF_ENDPOINT "
            f"selects a mirror) and no complete local copy is in {output}"
        ) from None
    except (HfHubHTTPError, OSError, ValueError) as exc:
        raise KnowlmError(f"download of {repo_id} failed: {str(exc).splitlines()[0]}") from None
    path = Path(path)
    files = sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file() and ".cache" not in p.parts)
    if not files:
        raise KnowlmError(f"nothing matched {include} in {repo_id}")
    report = verify_checksums(path, checksums) if checksums else None
    summary = {
        "repo_id": repo_id,
        "revision": revision,
        "output": str(path),
        "files": len(files),
        "bytes": sum((path / f).stat().st_size for f in files),
        "verified": len(report.verified) if report else 0,
        "checksum_algorithm": report.algorithm if report else None,
        "seconds": time.perf_counter() - started,
    }
    write_manifest(path, produced_by="knowlm weights download",
                   arguments={"repo_id": repo_id, "include": include, "revision": revision, "checksums": str(checksums) if checksums else None},
                   base_model=repo_id, verified_files=report.verified if report else [])
    return summary
