"""The warm CLI's fork server: a process of the embedded stack (started by `conjure up`
and by the stack's automatic start, stopped by `conjure down`; infra/stack.py) that has
imported everything a command needs and forks a child per command (cli/warm.py is the
client and describes the protocol).

Fork is only safe in a process with one thread, so this one starts no thread and makes no
Temporal client or runtime, and checks /proc/self/task before each fork. It reads no
settings either: the child replaces its environment with the client's before the command
reads CONJURE_HOME, config.toml or anything else, as a fresh process would. If a conjure
module it loaded changed on disk (an editable install being edited, an upgrade), it
refuses and ends; the next stack start brings a fresh one.

Its socket is `$CONJURE_HOME/run/cli.sock` (mode 0600 in a 0700 directory), and it serves
only its own uid (SO_PEERCRED). Each request is logged to `$CONJURE_HOME/run/cli.log`.
"""

from __future__ import annotations

import importlib
import io
import os
import select
import signal
import socket
import struct
import sys
import threading
import time
from typing import Any, NoReturn

from conjure.cli import warm

# What commands import: the root group, every command module served warm, and the
# libraries those import inside their functions.
PRELOAD = (
    "conjure.cli.commands.root",
    "conjure.cli.commands.run",
    "conjure.cli.commands.runs",
    "conjure.cli.commands.control",
    "conjure.cli.commands.resources",
    "conjure.cli.commands.pipeline",
    "conjure.cli.commands.hyper",
    "conjure.cli.commands.machines",
    "conjure.cli.commands.environments",
    "conjure.cli.facade",
    "conjure.cli.sync",
    "conjure.cli.client",
    "conjure.cli.runs",
    "conjure.cli.listing",
    "conjure.cli.liveness",
    "conjure.cli.recorded",
    "conjure.cli.preflight",
    "conjure.cli.specs",
    "conjure.cli.code",
    "conjure.cli.mounts",
    "conjure.cli.pool",
    "conjure.cli.resources",
    "conjure.cli.pipelines",
    "conjure.cli.hyper",
    "conjure.cli.fleet",
    "conjure.infra.docker_ping",
    "conjure.infra.config",
    "conjure.infra.stack",
    "conjure.infra.temporal",
    "conjure.infra.store",
    "conjure.infra.logs",
    "conjure.workflows.models",
    "temporalio.client",
    "temporalio.service",
    "fsspec",
    "fsspec.implementations.local",
    "fsspec.implementations.chained",
    "packaging.requirements",
    "packaging.tags",
    "pydantic_settings",
    "rich.console",
    "rich.table",
    "asyncio",
)


def threads() -> int:
    return len(os.listdir("/proc/self/task"))


def log(msg: str) -> None:
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {msg}", flush=True)


class Server:
    def __init__(self, path: str) -> None:
        self.path = path
        self.listener: socket.socket | None = None
        self.inode = 0
        self.files: dict[str, int] = {}
        self.children: dict[int, socket.socket] = {}
        self.stopping = False
        self.wake_r, self.wake_w = os.pipe()
        self.stdio = (sys.stdout.encoding, sys.stdout.errors or "strict")
        self.served = 0

    # Start ------------------------------------------------------------------------------

    def preload(self) -> list[str]:
        failed = []
        for name in PRELOAD:
            try:
                importlib.import_module(name)
            except Exception as e:  # an optional library missing: served in the child
                failed.append(f"{name} ({type(e).__name__}: {e})")
        _clear_caches()
        root = warm.package_root()
        for module in list(sys.modules.values()):
            path = getattr(module, "__file__", None)
            if not path:
                continue
            path = os.path.realpath(path)
            if path.startswith(root + os.sep):
                try:
                    self.files[path] = os.stat(path).st_mtime_ns
                except OSError:
                    continue
        return failed

    def stale(self) -> str:
        """The first loaded module that changed on disk since it was loaded, or ''."""
        for path, mtime in self.files.items():
            try:
                if os.stat(path).st_mtime_ns != mtime:
                    return path
            except OSError:
                return path
        return ""

    def bind(self) -> bool:
        run_dir = os.path.dirname(self.path)
        os.makedirs(run_dir, mode=0o700, exist_ok=True)
        os.chmod(run_dir, 0o700)
        if os.path.exists(self.path):
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            probe.settimeout(0.5)
            try:
                probe.connect(self.path)
                log(f"another warm CLI serves {self.path}: leaving it")
                return False
            except OSError:
                pass  # a dead server's socket
            finally:
                probe.close()
        tmp = f"{self.path}.{os.getpid()}"
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            listener.bind(tmp)
        finally:
            os.umask(old)
        os.chmod(tmp, 0o600)
        listener.listen(64)
        os.replace(tmp, self.path)
        self.inode = os.stat(self.path).st_ino
        self.listener = listener
        return True

    # Loop -------------------------------------------------------------------------------

    def run(self) -> None:
        assert self.listener is not None
        os.set_blocking(self.wake_w, False)
        signal.signal(signal.SIGCHLD, _nothing)
        for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(s, self._stop)
        signal.set_wakeup_fd(self.wake_w)
        listening = self.listener.fileno()
        while not self.stopping:
            ready, _, _ = select.select([listening, self.wake_r], [], [], 5.0)
            if self.wake_r in ready:
                os.read(self.wake_r, 4096)
                self.reap()
            if listening in ready:
                try:
                    conn, _ = self.listener.accept()
                except OSError:
                    continue
                self.handle(conn)
            if not ready:
                changed = self.stale()
                if changed:
                    log(
                        f"{changed} changed on disk: ending (the next stack start brings a new one)"
                    )
                    break
        self.close()

    def _stop(self, signum: int, _frame: Any) -> None:
        self.stopping = True

    def close(self) -> None:
        if self.listener is not None:
            self.listener.close()
        try:
            if os.stat(self.path).st_ino == self.inode:
                os.unlink(self.path)
        except OSError:
            pass
        log(f"stopped after {self.served} command(s)")

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            conn = self.children.pop(pid, None)
            if conn is None:
                continue
            if os.WIFSIGNALED(status):
                end: dict[str, int] = {"signal": os.WTERMSIG(status)}
            else:
                end = {"exit": os.waitstatus_to_exitcode(status)}
            log(f"child {pid} ended: {end}")
            try:  # the child normally said it first; the client takes the first word
                conn.settimeout(1)
                warm.send(conn, end)
            except OSError:
                pass
            conn.close()

    # One request ------------------------------------------------------------------------

    def handle(self, conn: socket.socket) -> None:
        fds: list[int] = []
        try:
            conn.settimeout(2)
            creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            client_pid, uid, _gid = struct.unpack("3i", creds)
            if uid != os.getuid():
                log(f"refused uid {uid} (pid {client_pid}): not this server's user")
                conn.close()
                return
            req, fds = _read_request(conn)
            reason = self.refusal(req, fds)
            if reason:
                log(f"refused client pid {client_pid}: {reason}")
                warm.send(conn, {"refused": reason})
                for fd in fds:
                    os.close(fd)
                conn.close()
                return
        except (OSError, ValueError) as e:
            log(f"bad request: {type(e).__name__}: {e}")
            for fd in fds:
                os.close(fd)
            conn.close()
            return
        pid = os.fork()
        if pid == 0:
            self.child(conn, fds, req)
        for fd in fds:
            os.close(fd)
        self.children[pid] = conn
        self.served += 1
        command = req["argv"][1] if len(req["argv"]) > 1 else ""
        log(f"client pid {client_pid}: `{command}` served by child {pid}")

    def refusal(self, req: dict[str, Any], fds: list[int]) -> str:
        if len(fds) != 3 or not isinstance(req.get("argv"), list) or len(req["argv"]) < 2:
            return "malformed request"
        if req.get("package") != warm.package_root() or req.get("prefix") != sys.prefix:
            return "a client of another installation"
        n = threads()
        if n != 1:
            return f"{n} threads in the server: fork is not safe"
        changed = self.stale()
        if changed:
            self.stopping = True  # ends after this answer
            return f"{changed} changed on disk"
        return ""

    # The child --------------------------------------------------------------------------

    def child(self, conn: socket.socket, fds: list[int], req: dict[str, Any]) -> NoReturn:
        """Become the client's process: its fds, environment, cwd and umask; then the
        command, through the same `_main` as in-process. Never returns."""
        code = 1
        said_hello = False
        done = threading.Event()
        try:
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD):
                signal.signal(s, signal.SIG_DFL)
            assert self.listener is not None
            self.listener.close()
            os.close(self.wake_r)
            os.close(self.wake_w)
            for other in self.children.values():
                other.close()
            for target, fd in enumerate(fds):
                os.dup2(fd, target)
                os.close(fd)
            os.environ.clear()
            os.environ.update(req["env"])
            os.chdir(req["cwd"])
            os.umask(req["umask"])
            sys.argv = list(req["argv"])
            _locale()
            self.fresh_stdio()
            warm.send(conn, {"pid": os.getpid()})
            said_hello = True
            go = warm.recv(conn)
            if not go or not go.get("go"):
                os._exit(0)
            conn.settimeout(None)
            threading.Thread(target=_watch_client, args=(conn, done), daemon=True).start()
            from conjure.cli.commands.root import _main

            code = _main(prog_name=req["prog_name"])
        except BaseException as e:
            if not said_hello:
                os._exit(1)  # the client falls back: the command never ran
            code = 130 if isinstance(e, KeyboardInterrupt) else 1
        done.set()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        try:
            warm.send(conn, {"exit": code})
        except OSError:
            pass
        os._exit(code)

    def fresh_stdio(self) -> None:
        """sys.stdin/stdout/stderr on the client's fds, buffered as Python would have
        set them up in the client (line-buffered on a terminal)."""
        encoding, errors = self.stdio
        io_env = os.environ.get("PYTHONIOENCODING", "")
        if io_env:
            enc, _, errs = io_env.partition(":")
            encoding, errors = enc or encoding, errs or errors
        unbuffered = bool(os.environ.get("PYTHONUNBUFFERED"))

        def text(fd: int, mode: str, line: bool, errs: str) -> io.TextIOWrapper:
            buffering = 0 if unbuffered and mode == "w" else -1
            raw = open(fd, mode + "b", buffering=buffering, closefd=False)
            return io.TextIOWrapper(
                raw, encoding=encoding, errors=errs, line_buffering=line,
                write_through=unbuffered and mode == "w",
            )  # fmt: skip

        sys.stdin = sys.__stdin__ = text(0, "r", False, errors)  # type: ignore[misc]
        sys.stdout = sys.__stdout__ = text(1, "w", os.isatty(1), errors)  # type: ignore[misc]
        sys.stderr = sys.__stderr__ = text(2, "w", True, "backslashreplace")  # type: ignore[misc]


def _nothing(signum: int, _frame: Any) -> None:
    """SIGCHLD: the wakeup fd wakes the loop, which reaps."""


def _locale() -> None:
    import locale

    try:
        locale.setlocale(locale.LC_CTYPE, "")
    except locale.Error:
        pass


def _watch_client(conn: socket.socket, done: threading.Event) -> None:
    """The child's watch on its client: the client never writes again, so the end of
    the stream before the command is done means it died (even by SIGKILL), and the
    child ends with it."""
    try:
        while conn.recv(64):
            pass
    except OSError:
        pass
    if not done.is_set():
        os.kill(os.getpid(), signal.SIGKILL)


def _read_request(conn: socket.socket) -> tuple[dict[str, Any], list[int]]:
    data, fds, _flags, _addr = socket.recv_fds(conn, 1 << 16, 3)
    if len(data) < 4:
        data += _more(conn, 4 - len(data))
    size = struct.unpack(">I", data[:4])[0]
    body = data[4:]
    if len(body) < size:
        body += _more(conn, size - len(body))
    import json

    req = json.loads(body)
    if not isinstance(req, dict):
        raise ValueError("not an object")
    return req, list(fds)


def _more(conn: socket.socket, n: int) -> bytes:
    rest = warm.recv_exact(conn, n)
    if rest is None:
        raise ValueError("short request")
    return rest


def _clear_caches() -> None:
    """Empty every functools cache of conjure's modules (settings, clients): the child
    must read its client's environment and config as a fresh process would."""
    for name, module in list(sys.modules.items()):
        if not name.startswith("conjure.") or module is None:
            continue
        for value in list(vars(module).values()):
            clear = getattr(value, "cache_clear", None)
            if callable(clear) and getattr(value, "__module__", None) == name:
                clear()


def serve() -> int:
    """`python -m conjure.cli.main warm-server`: preload, bind, serve until SIGTERM."""
    path = warm.socket_path()
    server = Server(path)
    started = time.monotonic()
    failed = server.preload()
    for what in failed:
        log(f"not preloaded: {what}")
    if threads() != 1:
        log(f"{threads()} threads after preloading: fork would not be safe; not serving")
        return 1
    if not server.bind():
        return 0
    log(
        f"serving {path} (pid {os.getpid()}, {len(sys.modules)} modules preloaded in "
        f"{time.monotonic() - started:.2f}s)"
    )
    server.run()
    return 0
