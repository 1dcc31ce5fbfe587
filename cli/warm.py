"""The warm CLI's client: hand this `conjure` command to the fork server of the embedded
stack (cli/warm_server.py), which has already imported what a command needs.

The entry point calls `run_warm` before anything heavy is imported, so this module uses
the standard library only. It sends argv, cwd, the whole environment and the umask over
`$CONJURE_HOME/run/cli.sock` and passes fds 0, 1 and 2 with SCM_RIGHTS; the server forks
a child that runs the command on them exactly as this process would. Signals this
process gets (^C, SIGTERM, SIGHUP) go on to the child, and its exit code is ours. When
there is no server, it is unreachable, or it refuses (its code changed on disk, it has a
thread, it is another installation's), `run_warm` returns None and the command runs in
this process as before: never a traceback, never a different result.

Off: `CONJURE_WARM_CLI=0` in the environment or `warm_cli = false` in config.toml.

Protocol (each message a 4-byte big-endian length, then JSON): the client sends the
request with its fds; the child answers {"pid": N}; the client says {"go": true} (from
then on it never falls back); the child ends with {"exit": code}. If the child dies
without saying so, the server sends {"signal": n} or {"exit": code} from its wait status.
A server that refuses answers {"refused": reason}.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import sys
from typing import Any

SERVER_COMMAND = "warm-server"  # `python -m conjure.cli.main warm-server` (infra/stack.py)
SOCKET_NAME = "cli.sock"  # in $CONJURE_HOME/run/
# Commands that must run in the caller's own process: the stack's own life (`up`,
# `down` stops the server itself), the long-lived processes, and the fast ones.
IN_PROCESS = frozenset({"up", "down", "worker", "agent", "console", SERVER_COMMAND})
FAST_FLAGS = frozenset({"--help", "-h", "--version"})
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
CONNECT_TIMEOUT = 0.5
REPLY_TIMEOUT = 5.0  # until the child says its pid; after that, no fallback


def package_root() -> str:
    """The conjure package this code is (the server refuses clients of another one)."""
    return os.path.realpath(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def home() -> str:
    return os.path.expanduser(os.environ.get("CONJURE_HOME") or "~/.conjure")


def socket_path(conjure_home: str | None = None) -> str:
    return os.path.join(conjure_home or home(), "run", SOCKET_NAME)


def _off(value: str) -> bool:
    return value.strip().lower() in ("0", "false", "no", "off")


def enabled() -> bool:
    """CONJURE_WARM_CLI wins over config.toml's warm_cli, as for every setting."""
    env = os.environ.get("CONJURE_WARM_CLI")
    if env is not None:
        return not _off(env)
    path = os.path.join(home(), "config.toml")
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError:
        return True
    if b"warm_cli" not in raw:  # the usual case: tomllib is not even imported
        return True
    import tomllib

    try:
        value = tomllib.loads(raw.decode()).get("warm_cli", True)
    except (ValueError, UnicodeDecodeError):
        return True  # the command itself will report the broken file
    return value if isinstance(value, bool) else not _off(str(value))


def wanted(argv: list[str]) -> bool:
    """Whether this command line may be served warm."""
    args = argv[1:]
    if not args or args[0] in IN_PROCESS or args[0].startswith("-"):
        return False
    return not any(a in FAST_FLAGS for a in args)


def prog_name(argv0: str) -> str:
    """The program name click would detect in this process (`conjure`, or `python -m
    conjure.cli.main`), for the child's help and usage lines."""
    main = sys.modules.get("__main__")
    package = getattr(main, "__package__", None)
    if not package:
        return os.path.basename(argv0)
    name = os.path.splitext(os.path.basename(argv0))[0]
    module = package if name == "__main__" else f"{package}.{name}"
    return f"python -m {module.lstrip('.')}"


def send(sock: socket.socket, message: dict[str, Any], fds: list[int] | None = None) -> None:
    data = json.dumps(message).encode()
    frame = struct.pack(">I", len(data)) + data
    if fds:
        n = socket.send_fds(sock, [frame], fds)
        frame = frame[n:]
    if frame:
        sock.sendall(frame)


def recv_exact(sock: socket.socket, n: int) -> bytes | None:
    """n bytes, or None at end of stream."""
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def recv(sock: socket.socket) -> dict[str, Any] | None:
    """The next message, or None at end of stream."""
    head = recv_exact(sock, 4)
    if head is None:
        return None
    body = recv_exact(sock, struct.unpack(">I", head)[0])
    if body is None:
        return None
    message = json.loads(body)
    return message if isinstance(message, dict) else None


def _request(argv: list[str]) -> dict[str, Any]:
    return {
        "argv": list(argv),
        "prog_name": prog_name(argv[0]),
        "cwd": os.getcwd(),
        "env": dict(os.environ),
        "umask": _umask(),
        "package": package_root(),
        "prefix": sys.prefix,
    }


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def run_warm(argv: list[str]) -> int | None:
    """The command's exit code as the warm CLI's child ran it, or None: run it here."""
    if not wanted(argv) or not enabled():
        return None
    path = socket_path()
    if not os.path.exists(path):
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    got: list[int] = []
    try:
        sock.settimeout(CONNECT_TIMEOUT)
        sock.connect(path)
        sock.settimeout(REPLY_TIMEOUT)
        send(sock, _request(argv), [0, 1, 2])
        reply = recv(sock)
        if reply is None or not isinstance(reply.get("pid"), int):
            sock.close()  # refused, or a child that never said hello: it ends on EOF
            return None
        child = reply["pid"]
        _forward_signals(child, got)  # before "go": no ^C can fall between the two
        send(sock, {"go": True})
    except (OSError, ValueError):
        sock.close()
        return None
    except KeyboardInterrupt:  # ^C before the command began: nothing ran, nothing to say
        sock.close()
        return 130
    return _follow(sock, got)


def _forward_signals(child: int, got: list[int]) -> None:
    def forward(signum: int, _frame: Any) -> None:
        got.append(signum)
        try:
            os.kill(child, signum)
        except OSError:
            pass

    for signum in FORWARDED:
        signal.signal(signum, forward)


def _follow(sock: socket.socket, got: list[int]) -> int:
    """Wait, signals going on to the child, until it reports how it ended: our end."""
    sock.settimeout(None)
    while True:
        try:
            message = recv(sock)
        except OSError:
            message = None
        except ValueError:
            continue
        if message is None:  # the child and the server are both gone without a word
            return _died(got[-1] if got else signal.SIGKILL)
        if isinstance(message.get("exit"), int):
            return int(message["exit"])
        if isinstance(message.get("signal"), int):
            return _died(message["signal"])


def _died(signum: int) -> int:
    """End as the child did, killed by signum (as this process would have been)."""
    for s in FORWARDED:
        signal.signal(s, signal.SIG_DFL)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    if signum != signal.SIGINT:
        os.kill(os.getpid(), signum)
    return 128 + signum
