"""``braidflow ui``: the dashboard of a store's runs, served on this machine (or, with
a token it prints, to others), until Ctrl-C.

The command checks everything before it serves (the store, a file or a
PostgreSQL database, TARGET, the token, the address) and says what is wrong
in one line, exit code 2. It binds the port itself, so that a port in use is
one of those lines.
"""

from __future__ import annotations

import argparse
import errno
import ipaddress
import re
import secrets
import socket

from ._console import UsageError
from ._store import chosen_store

__all__ = ["DEFAULT_PORT", "command_ui"]

DEFAULT_PORT = 8765
_LOOPBACK = ("127.0.0.1", "localhost", "::1")
_TOKEN = re.compile(r"[A-Za-z0-9_-]{16,}")


def command_ui(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from ..ui import create_app
    except ImportError as error:
        raise UsageError(
            f"braidflow ui needs the ui extra ({error.name} is missing): "
            "pip install 'braidflow[ui]'"
        ) from error
    where = chosen_store(args)
    token = _token(args)
    if args.target is not None:
        from ._target import load_target

        load_target(args.target)  # a TARGET that does not load is said now, not at an action
    serializer = args.serializer or "json"  # (pickle: runs stored so may be read)
    store = where.open(create=False, read_only=True, serializer=serializer)  # looks only
    try:
        listener = _listen(args.host, args.port)
    except UsageError:
        store.close()
        raise
    local = args.host in _LOOPBACK
    app = create_app(
        store, where.given, target=args.target, token=token, hosts=_LOOPBACK if local else None
    )
    port = listener.getsockname()[1]
    shown = f"[{args.host}]" if ":" in args.host else args.host
    address = f"http://{shown}:{port}/" + (f"?token={token}" if token else "")
    print(f"braidflow ui: the runs of {where} at {address} (Ctrl-C stops)", flush=True)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
    try:
        uvicorn.Server(config).run(sockets=[listener])
    finally:
        listener.close()
        store.close()
    return 0


def _token(args: argparse.Namespace) -> str | None:
    """The token requests must carry: ``--token``, else a new one when
    serving to other machines, else none."""
    if args.token is not None:
        if not _TOKEN.fullmatch(args.token):
            raise UsageError(
                "--token must be 16 or more letters, digits, '-' or '_'; leave it out for a new one"
            )
        return str(args.token)
    if args.host in _LOOPBACK:
        return None
    return secrets.token_urlsafe(24)


def _listen(host: str, port: int) -> socket.socket:
    """A socket bound to the address, listening; a port in use is bad input."""
    if not 0 <= port <= 65535:
        raise UsageError(f"--port {port} is not a port (0 to 65535; 0: any free one)")
    family = socket.AF_INET
    try:
        if ipaddress.ip_address(host).version == 6:
            family = socket.AF_INET6
    except ValueError:
        pass  # a name: IPv4
    listener = socket.socket(family, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
        listener.listen(128)
    except socket.gaierror as error:  # a name that does not resolve
        listener.close()
        raise UsageError(f"cannot serve on {host!r}: {error.strerror or error}") from error
    except OSError as error:
        listener.close()
        if error.errno == errno.EADDRINUSE:
            raise UsageError(
                f"port {port} on {host} is in use; give another with --port (0: any free one)"
            ) from error
        raise UsageError(f"cannot serve on {host}:{port} ({error.strerror or error})") from error
    return listener
