"""A connected transport to a node: the local machine or SSH, chosen by the node.

Kept apart from the interface (base.py) because it imports both implementations, which
import the interface.
"""

from __future__ import annotations

from launcher.cluster import Node
from launcher.transport.base import ConnectOptions, Transport


def open_transport(node: Node, options: ConnectOptions | None = None) -> Transport:
    """A connected transport to node: local for the local node, else SSH."""
    if node.local:
        from launcher.transport.local import LocalTransport

        return LocalTransport(node)
    from launcher.transport.ssh import SshTransport  # paramiko only when a node is remote

    return SshTransport.connect(node, options or ConnectOptions())
