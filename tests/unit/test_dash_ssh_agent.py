"""The SSH agent stream's reader without a network: a stand-in Transport whose `run`
blocks, fails or exits, to check the reader always ends and never hangs a node."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from launcher.cluster import Node
from launcher.errors import TransportError
from launcher.transport.base import CommandResult
from tuneboard.sources.base import SourceError
from tuneboard.sources.ssh_agent import AgentCommand, RemoteLines


class StandIn:
    """Transport.run as a script: print `lines`, then do `then` (block, raise, or exit)."""

    def __init__(self, lines: Sequence[str], then: Callable[[], CommandResult]) -> None:
        self.node = Node(host="gpu1")
        self.lines = lines
        self.then = then
        self.closed = threading.Event()

    def run(self, argv: Sequence[str], *, on_line: Callable[[str], None], **_: Any) -> Any:
        for line in self.lines:
            on_line(line)
        return self.then()

    def close(self) -> None:
        self.closed.set()


def _exit(code: int, stderr: str = "") -> Callable[[], CommandResult]:
    return lambda: CommandResult("gpu1", ("python3",), code, "", stderr, 0.1)


def _read(transport: StandIn, silence_s: float = 5.0) -> tuple[list[str], Exception | None]:
    lines = RemoteLines(transport, ["python3"], silence_s=silence_s)  # type: ignore[arg-type]
    got: list[str] = []
    try:
        for line in lines:
            got.append(line)
    except SourceError as exc:
        return got, exc
    return got, None


def test_lines_then_a_clean_exit() -> None:
    assert _read(StandIn(["a", "b"], _exit(0))) == (["a", "b"], None)


def test_a_failed_agent_says_why() -> None:
    got, error = _read(StandIn(["a"], _exit(127, "sh: 1: python3: not found\n")))
    assert got == ["a"] and str(error) == "agent exited with status 127: sh: 1: python3: not found"


@pytest.mark.parametrize(
    ("raised", "message"),
    [
        (TransportError("gpu1: connection lost"), "gpu1: connection lost"),
        (RuntimeError("boom"), "agent reader failed: RuntimeError: boom"),  # never a hang
    ],
)
def test_a_reader_that_fails_ends_the_stream(raised: Exception, message: str) -> None:
    def fail() -> CommandResult:
        raise raised

    got, error = _read(StandIn(["a"], fail))
    assert got == ["a"] and str(error) == message


def test_a_silent_agent_is_dropped_so_the_node_reconnects() -> None:
    transport = StandIn(["a"], lambda: (time.sleep(30), _exit(0)())[1])  # hangs
    started = time.monotonic()
    got, error = _read(transport, silence_s=0.3)
    assert got == ["a"] and str(error) == "no word from the agent for 0.3 s"
    assert transport.closed.is_set()  # the connection is dropped: that ends the agent
    assert time.monotonic() - started < 5


def test_silence_limit_is_many_intervals() -> None:
    assert AgentCommand(interval_s=1.0).silence_s == 30.0
    assert AgentCommand(interval_s=10.0).silence_s == 100.0
