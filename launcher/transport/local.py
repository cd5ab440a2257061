"""The local machine behind the Transport interface (no cluster given: no SSH at all).

Commands run as subprocesses from argv (no shell), in their own session so that a
timeout stops everything they started. Behaves like SshTransport where it can be seen:
relative paths are relative to the home directory, a missing command exits 127, a
working directory that cannot be entered exits 121 with the same message, a command
killed by signal N exits 128+N.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import selectors
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

from launcher.cluster import Node
from launcher.errors import CommandTimeout, LauncherInputError, TransportError
from launcher.transport.base import (
    DEFAULT_TIMEOUT_S,
    CommandResult,
    CompareMode,
    LineCallback,
    keep_tail,
    node_path,
)
from launcher.transport.line_buffer import LineBuffer
from launcher.transport.remote_shell import EXIT_BAD_CWD, check_argv, check_env, describe

_KILL_AFTER_S = 2.0


class LocalTransport:
    def __init__(self, node: Node | None = None, *, home: Path | None = None) -> None:
        self._node = node or Node(host="localhost", local=True)
        self._home = home or Path.home()

    @property
    def node(self) -> Node:
        return self._node

    def is_connected(self) -> bool:
        return True

    def close(self) -> None:
        """Nothing to close: there is no connection."""

    def _path(self, path: str) -> Path:
        return self._home / node_path(path)  # an absolute `path` replaces the home part

    def run(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        stdin: bytes = b"",
        timeout_s: float | None = DEFAULT_TIMEOUT_S,
        on_line: LineCallback | None = None,
        output_tail_bytes: int | None = None,
    ) -> CommandResult:
        args = check_argv(argv)
        full_env = {**os.environ, **check_env(env)}
        started = time.monotonic()
        workdir = self._path(cwd) if cwd else self._home
        if not workdir.is_dir():
            message = f"tuneboard: cannot cd to {cwd}\n"
            return CommandResult(self._node.name, args, EXIT_BAD_CWD, "", message, 0.0)
        try:
            proc = subprocess.Popen(
                args,
                cwd=workdir,
                env=full_env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        except (FileNotFoundError, PermissionError) as err:
            message = f"tuneboard: {args[0]}: {err.strerror}\n"
            return CommandResult(self._node.name, args, 127, "", message, 0.0)
        lines = LineBuffer(on_line) if on_line is not None else None
        deadline = None if timeout_s is None else started + timeout_s
        try:
            out, err_bytes = _pump(proc, stdin, lines, deadline, output_tail_bytes)
        except TimeoutError:
            _stop_group(proc)
            raise CommandTimeout(self._node.name, describe(args), timeout_s or 0.0, "") from None
        finally:
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()
        if lines is not None:
            lines.finish()
        returncode = proc.wait()
        if returncode < 0:  # killed by a signal: report it as a shell would (128 + N)
            returncode = 128 - returncode
        return CommandResult(
            self._node.name,
            args,
            returncode,
            out.decode("utf-8", errors="replace"),
            err_bytes.decode("utf-8", errors="replace"),
            time.monotonic() - started,
        )

    def upload(self, local: Path, remote: str, *, compare: CompareMode = "mtime") -> bool:
        if not local.is_file():
            raise LauncherInputError(f"{local} is not a regular file")
        dest = self._path(remote)
        try:
            if dest.exists() and (local.samefile(dest) or _same(local, dest, compare)):
                return False
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(dest.name + ".tuneboard-partial")
            shutil.copy2(local, tmp)
            os.replace(tmp, dest)
        except OSError as err:
            raise TransportError(
                f"{self._node.name}: cannot copy {local} to {dest}: {err}"
            ) from err
        return True

    def read_from(self, path: str, offset: int, max_bytes: int = 1 << 20) -> bytes:
        try:
            with self._path(path).open("rb") as f:
                f.seek(offset)
                return f.read(max_bytes)
        except FileNotFoundError:
            return b""
        except OSError as err:
            raise TransportError(f"{self._node.name}: cannot read {path}: {err}") from err


def _same(local: Path, dest: Path, compare: CompareMode) -> bool:
    a, b = local.stat(), dest.stat()
    if a.st_size != b.st_size:
        return False
    if compare == "mtime":
        return a.st_mtime_ns == b.st_mtime_ns  # copy2 keeps nanoseconds
    return _sha256(local) == _sha256(dest)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _pump(
    proc: subprocess.Popen[bytes],
    stdin: bytes,
    lines: LineBuffer | None,
    deadline: float | None,
    tail_bytes: int | None,
) -> tuple[bytes, bytes]:
    """Feed stdin (in a thread: no deadlock on big input), read stdout and stderr to EOF."""
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    writer = threading.Thread(target=_feed, args=(proc.stdin, stdin), daemon=True)
    writer.start()
    stdout_fd, stderr_fd = proc.stdout.fileno(), proc.stderr.fileno()
    chunks = {stdout_fd: bytearray(), stderr_fd: bytearray()}
    with selectors.DefaultSelector() as sel:
        for stream in (proc.stdout, proc.stderr):
            sel.register(stream, selectors.EVENT_READ)
        while sel.get_map():
            wait = None if deadline is None else deadline - time.monotonic()
            if wait is not None and wait <= 0:
                raise TimeoutError
            for key, _ in sel.select(wait):
                data = os.read(key.fd, 65536)
                if not data:
                    sel.unregister(key.fileobj)
                    continue
                chunks[key.fd] += data
                keep_tail(chunks[key.fd], tail_bytes)
                if key.fd == stdout_fd and lines is not None:
                    lines.feed(data)
    writer.join()
    return bytes(chunks[stdout_fd]), bytes(chunks[stderr_fd])


def _feed(pipe: IO[bytes], data: bytes) -> None:
    # A command may exit without reading its stdin: that is not an error.
    with contextlib.suppress(BrokenPipeError):
        if data:
            pipe.write(data)
    with contextlib.suppress(BrokenPipeError):
        pipe.close()


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    """TERM the command's session group, KILL it after a grace period (like `timeout -k`)."""
    for sig, wait_s in ((signal.SIGTERM, _KILL_AFTER_S), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue
