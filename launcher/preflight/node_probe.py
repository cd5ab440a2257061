"""What preflight asks each node, run there by the node's own python (stdlib only).

The launcher sends this file's source as `python -c SOURCE MODE JSON`
(launcher/preflight/checks.py), so it must stay self-contained: no imports from tuneboard,
nothing outside the standard library (the node's python is the one tuneboard is installed
in: ≥ 3.10). It prints one JSON object on stdout.

Modes:
- `facts`: python, installed package versions (from metadata: nothing heavy is imported),
  which modules are importable, GPUs (nvidia-smi, else NVML), RAM, free disk under the
  workdir, which paths exist, the interface that reaches the master address, the latest
  checkpoint in the output folder, and last a TCP connection to the master's listener.
  On the master (`"listen": {"count": N, "timeout_s": T}` in the JSON) the same process
  first binds the rendezvous address and port as torchrun will (so "port in use" and "not
  an address of this node" show here), accepts the N connections of every node's probe
  (its own included; each client closes first) or one that says `done` while it gathers
  its facts, and reports the outcome under "listen": one SSH channel and one python on
  the master, not two.
- `connect ADDR PORT TIMEOUT [done]`: open one TCP connection to the master, as every rank
  will (`done`: tell the listener to stop waiting for the others).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from typing import Any

MIB = 1024 * 1024
HELLO = b"tuneboard-preflight\n"
DONE = b"tuneboard-done\n"


def _version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _importable(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _gpus() -> dict[str, Any]:
    query = "index,name,memory.total,memory.free"
    try:
        out = subprocess.run(
            ["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except FileNotFoundError:
        return _nvml_gpus("nvidia-smi not found")
    except subprocess.TimeoutExpired:
        return {"gpus": [], "gpu_source": "nvidia-smi", "gpu_error": "nvidia-smi hung for 30 s"}
    if out.returncode != 0:
        text = (out.stderr or out.stdout).strip().splitlines()
        return _nvml_gpus("nvidia-smi: " + (text[-1] if text else f"exit {out.returncode}"))
    gpus = []
    for line in out.stdout.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 4:
            continue
        index, name, total, free = parts
        gpus.append(
            {
                "index": int(index),
                "name": name,
                "memory_total_bytes": int(float(total)) * MIB,
                "memory_free_bytes": int(float(free)) * MIB if free.isdigit() else None,
            }
        )
    return {"gpus": gpus, "gpu_source": "nvidia-smi", "gpu_error": None}


def _nvml_gpus(why: str) -> dict[str, Any]:
    try:
        import pynvml
    except ImportError:
        return {"gpus": [], "gpu_source": None, "gpu_error": why}
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as err:
        return {"gpus": [], "gpu_source": "nvml", "gpu_error": f"{why}; NVML: {err}"}
    try:
        gpus = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = pynvml.nvmlDeviceGetName(handle)
            mem = pynvml.nvmlDeviceGetMemoryInfo(handle)
            gpus.append(
                {
                    "index": i,
                    "name": name.decode() if isinstance(name, bytes) else str(name),
                    "memory_total_bytes": int(mem.total),
                    "memory_free_bytes": int(mem.free),
                }
            )
    finally:
        pynvml.nvmlShutdown()
    return {"gpus": gpus, "gpu_source": "nvml", "gpu_error": None}


def _meminfo() -> dict[str, int | None]:
    fields: dict[str, int | None] = {"mem_total_bytes": None, "mem_available_bytes": None}
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                key, _, rest = line.partition(":")
                value = rest.split()
                if key == "MemTotal" and value:
                    fields["mem_total_bytes"] = int(value[0]) * 1024
                elif key == "MemAvailable" and value:
                    fields["mem_available_bytes"] = int(value[0]) * 1024
    except OSError:
        return fields  # not Linux: RAM unknown (None), preflight says so
    return fields


def _in_workdir(workdir: str, path: str) -> str:
    path = os.path.expanduser(path)
    return path if os.path.isabs(path) else os.path.join(workdir, path)


def _disk(workdir: str) -> dict[str, Any]:
    probe = workdir
    while not os.path.exists(probe) and os.path.dirname(probe) != probe:
        probe = os.path.dirname(probe)
    try:
        usage = shutil.disk_usage(probe)
    except OSError as err:
        return {"disk_path": probe, "disk_free_bytes": None, "disk_error": str(err)}
    return {"disk_path": probe, "disk_free_bytes": usage.free, "disk_error": None}


def _addresses() -> list[tuple[str, str, int]]:
    """(interface, IPv4 address, prefix length) from `ip -o -4 addr show`."""
    try:
        out = subprocess.run(
            ["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True, timeout=10
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    found = []
    for match in re.finditer(r"^\d+:\s+(\S+)\s+inet\s+([0-9.]+)/(\d+)", out, re.MULTILINE):
        found.append((match.group(1).split("@")[0], match.group(2), int(match.group(3))))
    return found


def _ip4(text: str) -> int | None:
    try:
        return int.from_bytes(socket.inet_aton(text), "big")
    except OSError:
        return None


def _interface_holding(address: str, exact: bool) -> str | None:
    target = _ip4(address)
    if target is None:
        return None
    near = None
    for name, addr, prefix in _addresses():
        mine = _ip4(addr)
        if mine == target:
            return name
        mask = ((1 << prefix) - 1) << (32 - prefix) if prefix else 0
        if not exact and mine is not None and (mine & mask) == (target & mask):
            near = near or name
    return near


def _route(master_addr: str, master_port: int, is_master: bool) -> dict[str, Any]:
    """The interface this node's ranks will use to reach (or, on the master, serve) the
    master address: what GLOO_SOCKET_IFNAME / NCCL_SOCKET_IFNAME should name."""
    try:
        infos = socket.getaddrinfo(master_addr, master_port, socket.AF_INET, socket.SOCK_DGRAM)
    except socket.gaierror as err:
        return {"master_ip": None, "iface": None, "route_error": f"cannot resolve: {err}"}
    ip = str(infos[0][4][0])
    if is_master:
        # The master's own address routes via `lo` whatever NIC holds it: ask who holds it.
        return {"master_ip": ip, "iface": _interface_holding(ip, exact=False), "route_error": None}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect((ip, master_port))  # UDP: no packet sent, only a route lookup
            source = str(s.getsockname()[0])
        except OSError as err:
            return {"master_ip": ip, "iface": None, "route_error": f"no route: {err}"}
    return {"master_ip": ip, "iface": _interface_holding(source, exact=False), "route_error": None}


def _latest_checkpoint(folder: str) -> int | None:
    best = None
    try:
        names = os.listdir(folder)
    except OSError:
        return None
    for name in names:
        done = os.path.isfile(os.path.join(folder, name, "trainer_state.json"))
        if name.startswith("checkpoint-") and name[11:].isdigit() and done:
            best = max(best or 0, int(name[11:]))
    return best


def facts(args: dict[str, Any]) -> dict[str, Any]:
    addr, port = args["master_addr"], int(args["master_port"])
    timeout_s = float(args["connect_timeout_s"])
    listening, own = None, None
    if args.get("listen"):
        # First, so that the others' probes can connect while this one looks around; its
        # own connection first of all, so that a `done` (which may come as soon as
        # `listening` is printed) is never accepted before it.
        listening = _Listening(addr, port, args["listen"])
        if listening.bound:
            own = connect(addr, port, timeout_s)
            print("listening", flush=True)
    workdir = _in_workdir(os.path.expanduser("~"), args["workdir"])
    out: dict[str, Any] = {
        "python": sys.executable,
        "python_version": ".".join(str(v) for v in sys.version_info[:3]),
        "hostname": socket.gethostname(),
        "workdir": workdir,
        "packages": {name: _version(name) for name in args["packages"]},
        "modules": {name: _importable(name) for name in args["modules"]},
        "paths": {p: os.path.exists(_in_workdir(workdir, p)) for p in args["paths"]},
        "latest_checkpoint": None,
        "cpu_count": os.cpu_count(),
    }
    if args.get("output_dir"):
        out["latest_checkpoint"] = _latest_checkpoint(_in_workdir(workdir, args["output_dir"]))
    out.update(_gpus())
    out.update(_meminfo())
    out.update(_disk(workdir))
    out.update(_route(addr, port, bool(args["is_master"])))
    # Last: the master's listener (bound as its probe starts) has had the most time to bind.
    out["connect"] = own or connect(addr, port, timeout_s, retry_refused_s=timeout_s)
    if listening is not None:
        out["listen"] = listening.outcome()
    return out


def _family(addr: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def _bind(addr: str, port: int, count: int) -> socket.socket | dict[str, Any]:
    server = socket.socket(_family(addr), socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as torch's TCPStore
    try:
        server.bind((addr.strip("[]"), port))
    except OSError as err:
        server.close()
        return {"ok": False, "errno": err.errno, "error": err.strerror or str(err)}
    server.listen(max(count, 1))
    return server


def _accept(server: socket.socket, count: int, timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    accepted = 0
    try:
        while accepted < count and time.monotonic() < deadline:
            server.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                conn, _ = server.accept()
            except TimeoutError:
                break
            with conn:
                if _drain(conn).startswith(DONE):
                    break  # the launcher's word that no one else will come
            accepted += 1
    finally:
        server.close()
    return {"ok": True, "accepted": accepted}


class _Listening:
    """The master's listener, in a thread of the master's own probe."""

    def __init__(self, addr: str, port: int, spec: dict[str, Any]) -> None:
        self._count = int(spec["count"])
        self._timeout_s = float(spec["timeout_s"])
        self._result: dict[str, Any] = {"ok": False, "error": "the listener did not finish"}
        self._thread: threading.Thread | None = None
        server = _bind(addr, port, self._count)
        self.bound = not isinstance(server, dict)
        if isinstance(server, dict):
            self._result = server
            return
        self._thread = threading.Thread(target=self._serve, args=(server,), daemon=True)
        self._thread.start()

    def _serve(self, server: socket.socket) -> None:
        self._result = _accept(server, self._count, self._timeout_s)

    def outcome(self) -> dict[str, Any]:
        """Once every node came (or `done`, or the timeout): how the bind went."""
        if self._thread is not None:
            self._thread.join(self._timeout_s + 5)
        return self._result


def _drain(conn: socket.socket) -> bytes:
    conn.settimeout(2.0)
    data = b""
    try:
        while chunk := conn.recv(64):
            data += chunk
    except OSError:
        return data  # the client went away: it connected, which is all that is checked
    return data


def connect(
    addr: str,
    port: int,
    timeout_s: float,
    payload: bytes = HELLO,
    retry_refused_s: float = 0.0,
) -> dict[str, Any]:
    """One TCP connection; "connection refused" is retried for `retry_refused_s` (the
    listener may still be starting)."""
    started = time.monotonic()
    while True:
        try:
            conn = socket.create_connection((addr.strip("[]"), port), timeout=timeout_s)
            break
        except ConnectionRefusedError as err:
            if time.monotonic() - started < retry_refused_s:
                time.sleep(0.05)
                continue
            return {"ok": False, "error": err.strerror, "seconds": time.monotonic() - started}
        except OSError as err:
            reason = "timed out" if isinstance(err, TimeoutError) else err.strerror or str(err)
            return {"ok": False, "error": reason, "seconds": time.monotonic() - started}
    with conn:
        conn.sendall(payload)
        conn.shutdown(socket.SHUT_WR)  # close first: TIME_WAIT stays here, not on the port
    return {"ok": True, "seconds": time.monotonic() - started}


def main(argv: list[str]) -> int:
    mode = argv[0] if argv else ""
    if mode == "facts":
        result = facts(json.loads(argv[1]))
    elif mode == "connect":
        payload = DONE if argv[4:] == ["done"] else HELLO
        result = connect(argv[1], int(argv[2]), float(argv[3]), payload)
    else:
        print(f"usage: node_probe facts JSON | connect ADDR PORT TIMEOUT [done], not {argv}")
        return 2
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
