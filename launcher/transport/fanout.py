"""Every node at once: connect in parallel, run a function on each, collect per-node results.

A node's LauncherError (unreachable, refused, a command that failed) becomes that node's
result so the caller can show a table with one row per node; any other exception is a
bug and is raised once every node has finished.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import TracebackType
from typing import Generic, TypeVar

from launcher.cluster import Cluster, Node
from launcher.errors import LauncherError
from launcher.transport.base import ConnectOptions, Transport
from launcher.transport.connect import open_transport

T = TypeVar("T")
U = TypeVar("U")

#: Threads for one fan-out; SSH work is I/O-bound, so more threads than cores is fine.
MAX_WORKERS = 64


@dataclass(frozen=True)
class NodeResult(Generic[T]):
    node: Node
    value: T | None
    error: LauncherError | None
    duration_s: float

    @property
    def ok(self) -> bool:
        return self.error is None


def on_nodes(
    items: Sequence[U], node_of: Callable[[U], Node], fn: Callable[[U], T]
) -> tuple[NodeResult[T], ...]:
    """fn(item) for every item in parallel; results in the order of items."""

    def one(item: U) -> NodeResult[T]:
        started = time.monotonic()
        try:
            value = fn(item)
        except LauncherError as err:
            return NodeResult(node_of(item), None, err, time.monotonic() - started)
        return NodeResult(node_of(item), value, None, time.monotonic() - started)

    if not items:
        return ()
    with ThreadPoolExecutor(max_workers=min(MAX_WORKERS, len(items))) as pool:
        return tuple(pool.map(one, items))


class NodePool:
    """One open transport per node of a cluster, connected in parallel; closes them all.

    with NodePool(cluster, options) as pool:
        if pool.failures: ...            # one NodeResult per node that did not connect
        results = pool.map(lambda t: t.run(["nvidia-smi", "-L"]))
    """

    def __init__(self, cluster: Cluster, options: ConnectOptions | None = None) -> None:
        self.cluster = cluster
        results = on_nodes(cluster.nodes, lambda n: n, lambda n: open_transport(n, options))
        self.transports: dict[str, Transport] = {
            r.node.name: r.value for r in results if r.value is not None
        }
        self.failures: tuple[NodeResult[Transport], ...] = tuple(r for r in results if not r.ok)
        self.connect_results = results

    def map(self, fn: Callable[[Transport], T]) -> tuple[NodeResult[T], ...]:
        """fn(transport) on every connected node in parallel, in cluster order."""
        connected = [
            self.transports[n.name] for n in self.cluster.nodes if n.name in self.transports
        ]
        return on_nodes(connected, lambda t: t.node, fn)

    def close(self) -> None:
        for transport in self.transports.values():
            transport.close()

    def __enter__(self) -> NodePool:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
