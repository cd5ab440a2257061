"""Preflight's rendezvous check: the master's listener, stopped early and judged.

Its one job: the master's probe (launcher/preflight/node_probe.py, `"listen"` in its JSON) binds the
master address and port exactly as torchrun will and accepts every node's connection;
this module tells that listener to stop waiting once the last other node's probe has
ended without connecting (`Arrivals`), and turns what the listener answered into a verdict
on the address and port (`listen_outcome`). launcher/preflight/checks.py runs the probes and makes
the "port" and "master" checks of the table from the verdict.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Listen:
    """The verdict on the master's address and port."""

    ok: bool
    short: str
    detail: str


class Arrivals:
    """Counts the other nodes' probes as they end. When the last one has and some never
    connected to the master, the master's listener, if it is listening, is told to stop
    waiting for them (`send_done`: one more connection, saying `done`): the master's probe
    then ends at once, not at its timeout. The master's probe prints `listening` once it
    has bound the port and connected to it itself, so a `done` can neither be refused by a
    listener not yet there nor be counted before the master's own connection.

    The last arrival waits at most `wait_s` for the master's probe to say `listening` or
    to end; past that it gives up (the listener, if it ever starts, ends at its own
    timeout) and `stalled_s` says how long it waited, for the report."""

    def __init__(self, send_done: Callable[[], None] | None, expected: int, wait_s: float) -> None:
        self._send_done = send_done
        self._left = expected
        self._wait_s = wait_s
        self._everyone_came = True
        self._lock = threading.Lock()
        self._listening = False
        self._master_ended = False
        #: Set once the master's probe is listening, or has ended.
        self._master_known = threading.Event()
        #: Seconds waited in vain for the master's probe to listen or end (None: it did).
        self.stalled_s: float | None = None

    def said(self, line: str) -> None:
        """A line of the master's probe, as it comes."""
        if line.strip() == "listening":
            with self._lock:
                self._listening = True
            self._master_known.set()

    def master_ended(self) -> None:
        with self._lock:
            self._master_ended = True
        self._master_known.set()

    def arrived(self, *, came: bool) -> None:
        with self._lock:
            self._left -= 1
            self._everyone_came = self._everyone_came and came
            last = self._left == 0
        if not last or self._everyone_came or self._send_done is None:
            return
        # It prints `listening` within a second of starting, or ends.
        if not self._master_known.wait(self._wait_s):
            with self._lock:
                self.stalled_s = self._wait_s
            return
        with self._lock:
            waiting = self._listening and not self._master_ended
        if waiting:
            self._send_done()


def listen_outcome(
    error: Exception | None,
    answer: dict[str, Any] | None,
    addr: str,
    port: int,
    stalled_s: float | None = None,
) -> Listen:
    """What the master's probe says of its listener: its error, else its `listen` answer."""
    if error is not None:
        if stalled_s is not None:
            return Listen(
                False,
                "silent",
                f"the master's probe neither listened on {addr}:{port} nor ended within "
                f"{stalled_s:g} s of the other nodes' probes, then: {error}",
            )
        return Listen(False, "error", str(error))
    if answer is None:
        return Listen(False, "no answer", "the master's listener did not answer")
    where = f"{addr}:{port}"
    if not answer.get("ok"):
        errno = answer.get("errno")
        if errno == 98:
            return Listen(False, "in use", f"{where} is in use (another job or service?)")
        if errno == 99:
            return Listen(
                False, "not here", f"{where}: {addr} is not an address of the master node"
            )
        return Listen(False, "error", f"cannot bind {where}: {answer.get('error')}")
    return Listen(True, "free", f"{where} free")
