"""`tuneboard agent` on every node, over the launcher's SSH transport.

One `AgentStreamSource` per node (tuneboard/sources/agent_stream.py); its `connect` is an
`SshAgentConnect`: it keeps one SSH connection to the node (launcher/transport/ssh.py:
known_hosts checked, ~/.ssh/config applied, keepalive), reconnects when that connection
is gone, and starts `PYTHON -m tuneboard agent --node NAME ...` on it. The agent's stdout
arrives line by line (`Transport.run(on_line=...)`, read in a thread of its own), and the
agent exits by itself when the channel closes (tuneboard/agent.py). Closing the source
closes the connection, which ends the remote agent.

A failure (refused connection, unknown host key, the agent missing on the node) becomes a
`SourceError` with the launcher's one-line message: the source shows the node
disconnected with that message and tries again with backoff.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from launcher.cluster import Node
from launcher.errors import LauncherError
from launcher.transport.base import ConnectOptions, Transport
from launcher.transport.connect import open_transport
from tuneboard.sources.agent_stream import AgentStreamSource
from tuneboard.sources.base import SourceError

#: Reconnect backoff (first, max) in seconds: a node back from a reboot shows up within
#: the max; each failed attempt costs one connect timeout at most.
BACKOFF_S = (1.0, 10.0)
#: What of the agent's stdout and stderr is kept besides the lines handed over (messages).
_OUTPUT_TAIL_BYTES = 1 << 16

Opener = Callable[[Node, ConnectOptions], Transport]


@dataclass(frozen=True)
class AgentCommand:
    """How the agent is started on a node."""

    #: The node's python, the one tuneboard is installed in.
    python: str = "python3"
    interval_s: float = 1.0
    #: A job or output directory on the node whose metrics, status and logs to follow.
    job_dir: str | None = None
    #: Fake GPUs instead of NVML on the node (tests, demos).
    fake_gpus: int | None = None

    @property
    def silence_s(self) -> float:
        """An agent silent this long on a live connection is restarted (it prints a line
        every interval, so this is many missed samples)."""
        return max(30.0, 10 * self.interval_s)

    def argv(self, node_name: str) -> list[str]:
        argv = [self.python, "-m", "tuneboard", "agent", "--interval", f"{self.interval_s:g}"]
        argv += ["--node", node_name]
        if self.job_dir is not None:
            argv += ["--job-dir", self.job_dir]
        if self.fake_gpus is not None:
            argv += ["--fake-gpus", str(self.fake_gpus)]
        return argv


class _End:
    def __init__(self, error: str | None) -> None:
        self.error = error


class RemoteLines:
    """The stdout lines of one remote command, read by a thread; iterate once.

    Iteration ends when the command exits with status 0; a failure (non-zero exit, lost
    connection, no line for `silence_s`) raises SourceError after the lines that did arrive.
    """

    def __init__(self, transport: Transport, argv: Sequence[str], *, silence_s: float = 60.0):
        self._queue: queue.SimpleQueue[str | _End] = queue.SimpleQueue()
        self._silence_s = silence_s
        self._argv = list(argv)
        self._transport = transport
        self._thread = threading.Thread(
            target=self._run, name=f"ssh-agent:{transport.node.name}", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        end = _End("agent reader stopped")  # replaced below; always put, whatever happens
        try:
            result = self._transport.run(
                self._argv,
                timeout_s=None,
                on_line=self._queue.put,
                output_tail_bytes=_OUTPUT_TAIL_BYTES,
            )
            if result.ok:
                end = _End(None)
            else:
                said = result.stderr.strip().splitlines()
                why = said[-1] if said else "no message"
                end = _End(f"agent exited with status {result.returncode}: {why}")
        except LauncherError as exc:
            end = _End(str(exc))
        except Exception as exc:  # noqa: BLE001 - shown on the node's row, then a reconnect
            end = _End(f"agent reader failed: {type(exc).__name__}: {exc}")
        finally:
            self._queue.put(end)

    def __iter__(self) -> Iterator[str]:
        while True:
            try:
                item = self._queue.get(timeout=self._silence_s)
            except queue.Empty:
                # a live connection with a hung agent (a stuck mount, say): drop the
                # connection, which ends the agent; the source reconnects
                self._transport.close()
                raise SourceError(f"no word from the agent for {self._silence_s:g} s") from None
            if isinstance(item, _End):
                if item.error is not None:
                    raise SourceError(item.error)
                return
            yield item


class SshAgentConnect:
    """`connect` for AgentStreamSource: reuse or reopen the node's connection, start the agent."""

    def __init__(
        self,
        node: Node,
        options: ConnectOptions,
        command: AgentCommand,
        *,
        opener: Opener = open_transport,
    ) -> None:
        self.node = node
        self.options = options
        self.command = command
        self._opener = opener
        self._lock = threading.Lock()
        self._transport: Transport | None = None
        self._closed = False

    def __call__(self) -> RemoteLines:
        with self._lock:
            if self._closed:
                raise SourceError("closed")
            transport = self._transport
        if transport is None or not transport.is_connected():
            if transport is not None:
                transport.close()
            try:
                transport = self._opener(self.node, self.options)
            except LauncherError as exc:
                raise SourceError(str(exc)) from None
            with self._lock:
                if self._closed:  # closed while connecting
                    transport.close()
                    raise SourceError("closed")
                self._transport = transport
        argv = self.command.argv(self.node.name)
        return RemoteLines(transport, argv, silence_s=self.command.silence_s)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            transport, self._transport = self._transport, None
        if transport is not None:
            transport.close()


def ssh_agent_sources(
    nodes: Sequence[Node],
    options: ConnectOptions,
    command: AgentCommand,
    *,
    backoff_s: tuple[float, float] = BACKOFF_S,
    opener: Opener = open_transport,
) -> list[AgentStreamSource]:
    """One agent source per node; nothing connects until the dashboard first polls."""
    return [
        AgentStreamSource(
            node.name,
            SshAgentConnect(node, options, command, opener=opener),
            interval_s=command.interval_s,
            backoff_s=backoff_s,
        )
        for node in nodes
    ]
