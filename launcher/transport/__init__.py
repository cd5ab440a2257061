"""Reaching nodes: one Transport interface (base.py) over SSH (ssh.py, paramiko) or the
local machine (local.py); host keys, ~/.ssh/config, remote shell quoting, line
buffering, and every node at once (fanout.py)."""
