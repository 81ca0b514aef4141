"""Private ``redis-server`` processes for the test suite.

The suite never touches a shared Redis (least of all the one on 6379): each
test process starts its own server on a free loopback port, and fault tests
start more of their own. A server here can be stopped, killed, restarted on
the same port, and frozen with SIGSTOP, which is what the fault tests need.

The helper speaks just enough RESP over a plain socket to check on the server,
so it works before (and regardless of) the redis-py client under test.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Self

__all__ = ["RedisReplyError", "RedisServer", "RedisServerError", "find_redis_server"]

HOST = "127.0.0.1"
_FORBIDDEN_PORTS = frozenset({6379})
_PORT_ATTEMPTS = 8
# Retrying a fixed port only helps if whoever took it lets go soon.
_FIXED_PORT_ATTEMPTS = 3
# Short, because a port squatter that accepts and never answers would
# otherwise hold every probe for the full timeout.
_PROBE_TIMEOUT = 0.3
_LOG_TAIL = 4000


class RedisServerError(RuntimeError):
    pass


def find_redis_server() -> str:
    path = shutil.which("redis-server")
    if path is None:
        raise RedisServerError(
            "redis-server is not on PATH; the tests need it to start their own private "
            "servers (on Debian: apt-get install redis-server)"
        )
    return path


def free_port() -> int:
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((HOST, 0))
            port: int = s.getsockname()[1]
        if port not in _FORBIDDEN_PORTS:
            return port


def _die_with_parent() -> None:
    # If the test process is killed outright, its servers go with it instead of
    # lingering on their ports. SIGKILL, because a SIGSTOPped server would sit
    # on a pending SIGTERM forever.
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL)


def _encode_command(args: Sequence[str | bytes | int]) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


class RedisReplyError(Exception):
    """An error reply (``-ERR ...``) to a command sent with ``execute_command``."""


def _read_reply(stream: Any) -> Any:
    line: bytes = stream.readline()
    if not line.endswith(b"\r\n"):
        raise ConnectionError("connection closed mid-reply")
    kind, body = line[:1], line[1:-2]
    if kind == b"+":
        return body.decode()
    if kind == b"-":
        raise RedisReplyError(body.decode())
    if kind == b":":
        return int(body)
    if kind == b"$":
        size = int(body)
        if size < 0:
            return None
        data: bytes = stream.read(size + 2)
        return data[:-2]
    if kind == b"*":
        count = int(body)
        return None if count < 0 else [_read_reply(stream) for _ in range(count)]
    raise ConnectionError(f"unexpected reply {line!r}")


class RedisServer:
    """One private redis-server process on a loopback port.

    The port is chosen when the server first starts and kept for its whole life,
    so ``restart()`` brings it back where clients expect it. The data directory
    is kept across restarts too (fault tests with ``--appendonly yes`` rely on
    that) and removed by ``close()``.

    The methods block while they wait for the server; from async code, call
    them through ``asyncio.to_thread`` when the event loop must keep running.
    """

    host: str = HOST

    def __init__(
        self,
        extra_args: Iterable[str] = (),
        *,
        port: int | None = None,
        startup_timeout: float = 15.0,
        config_file: str | Path | None = None,
        port_picker: Callable[[], int] | None = None,
    ) -> None:
        """``config_file`` goes first on the command line, as redis-server wants it; a
        relative path is taken inside the server's directory, so it can be written there
        after construction and before ``start()`` (Sentinel must be able to rewrite its
        file). ``port_picker`` replaces ``free_port`` when a fresh port is needed, e.g. for
        cluster nodes, whose port + 10000 must be free too."""
        self.executable = find_redis_server()
        self.extra_args = tuple(extra_args)
        self.config_file = config_file
        self._port_picker = port_picker or free_port
        # With --requirepass the helper's own probes must authenticate too.
        self.password: str | None = _option_value(self.extra_args, "--requirepass")
        self.startup_timeout = startup_timeout
        self._fixed_port = port is not None
        self._port: int | None = port
        self.directory = Path(tempfile.mkdtemp(prefix="docket-redis-"))
        self.process: subprocess.Popen[bytes] | None = None
        self.paused = False
        self._closed = False
        self._ever_started = False
        _live_servers.add(self)

    @classmethod
    def start_new(
        cls, extra_args: Iterable[str] = (), *, startup_timeout: float = 15.0
    ) -> RedisServer:
        """Start an extra private server, e.g. for a fault test that kills it."""
        server = cls(extra_args, startup_timeout=startup_timeout)
        try:
            server.start()
        except BaseException:
            server.close()
            raise
        return server

    @property
    def port(self) -> int:
        if self._port is None:
            raise RedisServerError("the server has not been started yet")
        return self._port

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    @property
    def unix_socket(self) -> Path:
        return self.directory / "redis.sock"

    @property
    def unix_url(self) -> str:
        return f"unix://{self.unix_socket}?db=0"

    @property
    def log_path(self) -> Path:
        return self.directory / "redis.log"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def __repr__(self) -> str:
        state = "paused" if self.paused else "running" if self.running else "stopped"
        return f"<RedisServer {self.host}:{self._port} pid={self.pid} {state}>"

    def __enter__(self) -> Self:
        if not self.running:
            self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- lifecycle -----------------------------------------------------------------

    def start(self) -> None:
        if self._closed:
            raise RedisServerError("this server has been closed")
        if self.running:
            raise RedisServerError(f"{self!r} is already running")

        failures: list[str] = []
        keep_port = self._fixed_port or self._ever_started
        attempts = _FIXED_PORT_ATTEMPTS if keep_port else _PORT_ATTEMPTS
        for _ in range(attempts):
            if self._port is None:
                self._port = self._port_picker()
            if self._launch():
                return
            failures.append(f"port {self._port}: {self._log_tail(400)}")
            if keep_port:
                # A restart must come back on its old port; give whoever holds it
                # a moment to let go, then try again.
                time.sleep(0.2)
            else:
                self._port = None
        raise RedisServerError(
            f"could not start redis-server after {attempts} attempts:\n" + "\n".join(failures)
        )

    def _launch(self) -> bool:
        """Start the process and wait for it; False if the port was taken."""
        port = self.port
        self.unix_socket.unlink(missing_ok=True)
        config = [] if self.config_file is None else [str(self.directory / self.config_file)]
        command = [
            self.executable,
            *config,
            "--port", str(port),
            "--bind", HOST,
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.directory),
            "--logfile", str(self.log_path),
            "--unixsocket", str(self.unix_socket),
            "--unixsocketperm", "700",
            "--daemonize", "no",
            *self.extra_args,
        ]  # fmt: skip
        stderr = open(self.directory / "stderr.log", "ab")  # noqa: SIM115
        try:
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                cwd=self.directory,
                # Its own session, so a Ctrl-C meant for pytest does not kill the
                # server before the fixtures' teardown gets to it.
                start_new_session=True,
                preexec_fn=_die_with_parent if _can_tie_to_parent() else None,
            )
        finally:
            stderr.close()
        self.paused = False

        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                if "Address already in use" in self._log_tail():
                    return False
                raise RedisServerError(
                    f"redis-server exited with code {self.process.returncode} on port {port}.\n"
                    f"command: {shlex.join(command)}\nlog:\n{self._log_tail()}"
                )
            if self._answers_as_ours():
                self._ever_started = True
                return True
            time.sleep(0.02)
        self._terminate(signal.SIGKILL)
        raise RedisServerError(
            f"redis-server on port {port} did not answer PING within "
            f"{self.startup_timeout:.0f}s.\n"
            f"command: {shlex.join(command)}\nlog:\n{self._log_tail()}"
        )

    def _answers_as_ours(self) -> bool:
        # PING alone is not enough: while ours is failing to bind, another test
        # process's server may already answer on the same port.
        try:
            if self.execute_command("PING", timeout=_PROBE_TIMEOUT) != "PONG":
                return False
            info = self.execute_command("INFO", "server", timeout=_PROBE_TIMEOUT)
        except (OSError, RedisReplyError):
            return False
        assert isinstance(info, bytes)
        return f"process_id:{self.pid}\r\n".encode() in info

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server gracefully (SIGTERM), keeping its port and directory."""
        self._terminate(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """Kill the server outright (SIGKILL), as a crash would."""
        self._terminate(signal.SIGKILL)

    def restart(self, *, kill: bool = False) -> None:
        """Stop (or kill) the server and start it again on the same port."""
        if kill:
            self.kill()
        else:
            self.stop()
        self.start()

    def ensure_running(self) -> None:
        """Undo whatever a test left behind: resume a paused server, start a stopped one."""
        if self.paused:
            self.resume()
        if not self.running:
            self.start()

    def pause(self) -> None:
        """Freeze the process (SIGSTOP): connections stay open but nothing answers."""
        self._signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        self._signal(signal.SIGCONT)
        self.paused = False

    def close(self) -> None:
        """Stop the server for good and delete its directory."""
        if self._closed:
            return
        try:
            self.stop()
        finally:
            self._closed = True
            shutil.rmtree(self.directory, ignore_errors=True)
            _live_servers.discard(self)

    def _signal(self, signum: int) -> None:
        if not self.running:
            raise RedisServerError(f"{self!r} is not running")
        assert self.process is not None
        self.process.send_signal(signum)

    def _terminate(self, signum: int, timeout: float = 10.0) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            self.paused = False
            return
        if self.paused:
            # A stopped process holds a SIGTERM pending until it runs again.
            process.send_signal(signal.SIGCONT)
            self.paused = False
        process.send_signal(signum)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    # --- talking to it ------------------------------------------------------------

    def execute_command(self, *args: str | bytes | int, timeout: float = 5.0) -> Any:
        """Send one command on a fresh connection and return the decoded reply.

        Simple strings come back as ``str``, bulk strings as ``bytes``; an error
        reply raises. For test set-up and checks, not for the code under test.
        """
        return self.execute_commands(args, timeout=timeout)[0]

    def execute_commands(
        self, *commands: tuple[str | bytes | int, ...], timeout: float = 5.0
    ) -> list[Any]:
        """Send ``commands`` one after another on one fresh connection; their replies.
        One connection matters for WAIT, which waits for that connection's own writes
        (on a connection that wrote nothing it returns at once)."""
        with (
            socket.create_connection((self.host, self.port), timeout=timeout) as conn,
            conn.makefile("rb") as stream,
        ):
            if self.password is not None:
                conn.sendall(_encode_command(("AUTH", self.password)))
                _read_reply(stream)
            replies = []
            for command in commands:
                conn.sendall(_encode_command(command))
                replies.append(_read_reply(stream))
            return replies

    def ping(self, timeout: float = 1.0) -> bool:
        try:
            return bool(self.execute_command("PING", timeout=timeout) == "PONG")
        except (OSError, RedisReplyError):
            return False

    def _log_tail(self, limit: int = _LOG_TAIL) -> str:
        text = ""
        for name in ("stderr.log", "redis.log"):
            with contextlib.suppress(OSError):
                text += (self.directory / name).read_text(errors="replace")
        return text[-limit:] or "(empty)"


def _option_value(args: Sequence[str], option: str) -> str | None:
    """The value given for ``option`` in redis-server arguments, if any."""
    for index, arg in enumerate(args[:-1]):
        if arg == option:
            return args[index + 1]
    return None


def _can_tie_to_parent() -> bool:
    # PR_SET_PDEATHSIG fires when the *thread* that forked exits, so it is only
    # safe from the main thread, which lives as long as the process.
    return sys.platform == "linux" and threading.current_thread() is threading.main_thread()


# Strong references: a server nobody holds any more must still be stopped.
_live_servers: set[RedisServer] = set()


@atexit.register
def _close_leftovers() -> None:
    # Fixture teardown normally closes every server; this covers an interrupted
    # run so no server outlives the test process.
    for server in list(_live_servers):
        try:
            server.close()
        except Exception as e:  # pragma: no cover - best effort at exit
            print(f"could not stop {server!r}: {e}", file=sys.stderr)
