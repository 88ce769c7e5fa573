"""Loopback helpers shared by the server and distributed launches."""

from __future__ import annotations

import errno
import socket


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def check_port_free(host: str, port: int, flag: str = "--port") -> None:
    """A one-line KnowlmError when ``host:port`` cannot be bound (busy, or a host this machine does not have),
    checked before a model is loaded and a "running on" banner printed. Binds the way uvicorn does
    (SO_REUSEADDR), so a port in TIME_WAIT after a restart is not refused."""
    from knowlm.errors import KnowlmError

    if not 0 < port < 65536:
        raise KnowlmError(f"{flag} must be in 1..65535, got {port}")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise KnowlmError(f"--host {host}: cannot resolve it ({exc.strerror})") from None
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except PermissionError:
            raise KnowlmError(f"{flag} {port}: not allowed to listen on it (ports below 1024 need root); choose another") from None
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise KnowlmError(f"{flag} {port}: {host}:{port} is already in use (another server?); choose another port") from None
            raise KnowlmError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def check_api_key(key: str | None, flag: str = "--api-key") -> str | None:
    """``None`` (no auth) or a usable key. An empty or blank key, e.g. ``--api-key "$KEY"`` with KEY unset,
    is refused rather than silently serving without auth."""
    from knowlm.errors import KnowlmError

    if key is None:
        return None
    if not key.strip():
        raise KnowlmError(f"{flag} is empty (an unset variable in --api-key \"$KEY\" or KNOWLM_API_KEY?); "
                          f"give a key, or leave the option out to serve without authentication")
    if key != key.strip():
        raise KnowlmError(f"{flag} starts or ends with whitespace; clients would have to send it exactly")
    return key
