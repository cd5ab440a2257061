"""Detached processes on a node: start one that outlives the connection, check it, stop it.

Why this shape (see ../shared/notes/measured-facts.md, "SSH and torchrun"):

- A command left attached to its SSH channel dies when the channel closes (EPIPE on
  its next write; SIGHUP with a pty). So a job is started detached: `setsid -f` (own
  session and process group), stdin from /dev/null, stdout and stderr appended to a log
  file on the node, its pid written to a pid file. The log is read back by offset
  (launcher/job/log_follower.py), never through a channel the job depends on.
- torch ≥ 2.13's torchrun starts its workers in a NEW session: they are not in
  torchrun's process group, and KILLing torchrun orphans them. So every process of a
  job carries an environment marker, `TUNEBOARD_JOB=<marker>` (inherited by anything
  it starts; /proc/PID/environ keeps it whatever the process does later), and a stop is:
  TERM the job's process group (torchrun forwards it to its workers), wait a grace
  period, then KILL every process whose /proc/PID/environ carries the marker. A job
  with another marker is never touched: this is the opposite of `pkill -f`.

The job runs under a small `sh` wrapper (the group leader, pid in the pid file) that
waits for it and writes its exit code to `<pid file>.exit`. Everything here is POSIX
sh plus `setsid` (util-linux) and GNU `grep -z`, run through Transport.run, so the
local machine and SSH nodes share it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from launcher.errors import LauncherInputError, TransportError
from launcher.transport.base import Transport, node_path

MARKER_VAR = "TUNEBOARD_JOB"
_MARKER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")

# The wrapper, in the job's new session: $1 pid file, $2 the caller's umask, then argv.
# It traps TERM/INT/HUP with a no-op so that it outlives a TERM of its group long enough
# to record the job's exit code; the job itself gets default signal handling (exec resets
# caught signals). No single quotes: it is embedded in _START between single quotes.
_RUNNER = (
    'echo $$ > "$1.tmp" && mv -f -- "$1.tmp" "$1" || exit 93; '
    'p=$1; umask "$2"; shift 2; '
    "trap : TERM INT HUP; "
    '"$@"; rc=$?; '
    'echo "$rc" > "$p.exit.tmp" && mv -f -- "$p.exit.tmp" "$p.exit"; '
    'exit "$rc"'
)
assert "'" not in _RUNNER

# $1 pid file, $2 log file, $3 marker, then argv. Files are created 0600 (umask 077),
# the job runs with the caller's umask. Prints the wrapper's pid = the job's pgid.
# Builtins wherever they do (no `dirname`, no `cat`): every fork counts on a busy node.
_START = (
    f"runner='{_RUNNER}'; "
    "um=$(umask); umask 077; pidf=$1; logf=$2; TUNEBOARD_JOB=$3; export TUNEBOARD_JOB; shift 3; "
    # relative paths are relative to the login directory, whatever `cwd` the job has
    "case $pidf in /*) ;; *) pidf=$HOME/$pidf ;; esac; "
    "case $logf in /*) ;; *) logf=$HOME/$logf ;; esac; "
    "piddir=${pidf%/*}; logdir=${logf%/*}; "
    'mkdir -p -- "${piddir:-/}" "${logdir:-/}" || exit 90; '
    'rm -f -- "$pidf" "$pidf.exit"; '
    'setsid -f sh -c "$runner" tuneboard-job "$pidf" "$um" "$@" '
    '</dev/null >>"$logf" 2>&1 || exit 91; '
    "i=0; "
    'while [ ! -s "$pidf" ]; do i=$((i + 1)); '
    'if [ "$i" -gt 1000 ]; then echo "tuneboard: no pid file after 10 s: $pidf" >&2; exit 92; fi; '
    "sleep 0.01; done; "
    'read -r pid < "$pidf" || :; echo "$pid"'
)

# `pids` sets P to the live pids whose environment carries the marker "$m" (zombies have
# none), space-separated: one `grep` over /proc per call, the rest is shell builtins.
_PIDS_FN = (
    "me=$$; "
    "pids() { P=; "
    'for f in $(grep -lzxF -- "$m" /proc/[0-9]*/environ 2>/dev/null); do '
    "f=${f#/proc/}; f=${f%/environ}; "
    'case $f in *[!0-9]*|"$me") ;; *) P="$P $f" ;; esac; done; P=${P# }; }; '
)

# $1 marker, $2 exit file.
_STATE = (
    'm="TUNEBOARD_JOB=$1"; exitf=$2; code=; '
    + _PIDS_FN
    + 'if [ -f "$exitf" ]; then read -r code < "$exitf" || :; fi; '
    'echo "exit=$code"; pids; echo "pids=$P"'
)

# $1 pgid (0: unknown), $2 marker, $3 grace in tenths of a second.
# While the group's leader (the wrapper, which outlives its job to record the exit code)
# is alive, the job is: that is watched by reading /proc/PGID/stat (a builtin, no fork),
# every 0.02 s at first. Then every 0.1 s, a /proc scan for the marker finds what else is
# left (torchrun's workers run in sessions of their own), up to the grace period in all;
# what remains is KILLed. A pid reused by another process can only make the wait last the
# grace period: nothing is ever signalled but the group and the marker's processes.
_STOP = (
    'pgid=$1; m="TUNEBOARD_JOB=$2"; n=$(($3 * 10)); '
    + _PIDS_FN
    + 'carries() { grep -qzxF -- "$m" "/proc/$1/environ" 2>/dev/null; }; '
    'leader() { s=; { read -r s < "/proc/$pgid/stat"; } 2>/dev/null; s=${s##*) }; '
    '[ -n "$s" ] && [ "${s%% *}" != Z ]; }; '
    "pids; before=$P; group=no; "
    'if [ "$pgid" -gt 0 ] && carries "$pgid"; then '
    'kill -s TERM -- "-$pgid" 2>/dev/null && group=yes; fi; '
    'if [ "$group" = no ] && [ -n "$before" ]; then kill -s TERM $before 2>/dev/null; fi; '
    "i=0; "  # hundredths of a second waited so far
    'if [ "$group" = yes ]; then while [ "$i" -lt "$n" ] && leader; do '
    'if [ "$i" -lt 20 ]; then sleep 0.02; i=$((i + 2)); else sleep 0.1; i=$((i + 10)); fi; '
    "done; fi; "
    'pids; while [ -n "$P" ] && [ "$i" -lt "$n" ]; do sleep 0.1; i=$((i + 10)); pids; done; '
    "rest=$P; left=; "
    'if [ -n "$rest" ]; then kill -s KILL $rest 2>/dev/null; '
    'j=0; pids; while [ "$j" -lt 20 ] && [ -n "$P" ]; do sleep 0.05; j=$((j + 1)); pids; done; '
    "left=$P; fi; "
    'echo "group=$group"; echo "before=$before"; echo "killed=$rest"; echo "left=$left"'
)


@dataclass(frozen=True)
class DetachedProcess:
    """A job started on a node; enough to find it again from another process."""

    node: str
    pgid: int
    marker: str
    pid_path: str
    log_path: str

    @property
    def exit_path(self) -> str:
        return self.pid_path + ".exit"


@dataclass(frozen=True)
class ProcessState:
    #: Live processes carrying the job's marker (the wrapper, torchrun, every worker).
    pids: tuple[int, ...]
    #: The job's exit code, once its wrapper recorded it (None: running, or killed).
    exit_code: int | None

    @property
    def running(self) -> bool:
        return bool(self.pids)


@dataclass(frozen=True)
class StopResult:
    #: Whether the process group got the TERM (its leader still carried the marker).
    group_signalled: bool
    #: Processes of the job when the stop began.
    found: tuple[int, ...]
    #: Those still alive after the grace period, KILLed.
    killed: tuple[int, ...]
    #: Those still alive after the KILL (stuck in the kernel): should be empty.
    left: tuple[int, ...]
    duration_s: float


def check_marker(marker: str) -> str:
    if not _MARKER.fullmatch(marker):
        raise LauncherInputError(
            f"job marker {marker!r} must be 1-128 letters, digits, '.', '_' or '-' "
            "(not starting with '.', '_' or '-')"
        )
    return marker


def _sh(name: str, script: str, *args: str) -> list[str]:
    # `env -u` so that a caller which itself carries a marker (a launcher started from
    # inside a job) never finds its own helper processes.
    return ["env", "-u", MARKER_VAR, "sh", "-c", script, f"tuneboard-{name}", *args]


def start_detached(
    transport: Transport,
    argv: Sequence[str],
    *,
    marker: str,
    pid_path: str,
    log_path: str,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
) -> DetachedProcess:
    """Start argv detached on the node; returns once its pid file exists (~10 ms).

    `env` (secrets included) reaches the job through the channel's stdin, never a
    command line or a file (launcher/transport/remote_shell.py). The job survives the connection.
    """
    check_marker(marker)
    if not argv:
        raise LauncherInputError("empty command")
    pid_path, log_path = node_path(pid_path), node_path(log_path)
    command = _sh("start", _START, pid_path, log_path, marker, *argv)
    result = transport.run(command, env=env, cwd=cwd, timeout_s=30).check()
    text = result.stdout.strip()
    if not text.isdigit():
        raise TransportError(f"{transport.node.name}: pid file {pid_path} holds {text!r}")
    return DetachedProcess(transport.node.name, int(text), marker, pid_path, log_path)


def marker_pids(transport: Transport, marker: str) -> tuple[int, ...]:
    """Live processes on the node whose environment carries TUNEBOARD_JOB=marker."""
    return process_state(transport, check_marker(marker), "").pids


def job_state(transport: Transport, proc: DetachedProcess) -> ProcessState:
    return process_state(transport, proc.marker, proc.exit_path)


def process_state(transport: Transport, marker: str, exit_path: str) -> ProcessState:
    check_marker(marker)
    out = _fields(
        transport.run(_sh("state", _STATE, marker, exit_path), timeout_s=30).check().stdout
    )
    code = out.get("exit", "")
    return ProcessState(
        _pids(out.get("pids", "")), int(code) if code.lstrip("-").isdigit() else None
    )


def stop(transport: Transport, proc: DetachedProcess, *, grace_s: float = 10.0) -> StopResult:
    """TERM the job's group, wait up to grace_s, KILL every process still carrying its marker."""
    return stop_marker(transport, proc.marker, pgid=proc.pgid, grace_s=grace_s)


def stop_marker(
    transport: Transport, marker: str, *, pgid: int = 0, grace_s: float = 10.0
) -> StopResult:
    """As `stop`, for a job known only by its marker (its group, when pgid is given)."""
    check_marker(marker)
    ticks = max(0, round(grace_s * 10))
    started = time.monotonic()
    command = _sh("stop", _STOP, str(pgid), marker, str(ticks))
    out = _fields(transport.run(command, timeout_s=grace_s + 30).check().stdout)
    return StopResult(
        group_signalled=out.get("group") == "yes",
        found=_pids(out.get("before", "")),
        killed=_pids(out.get("killed", "")),
        left=_pids(out.get("left", "")),
        duration_s=time.monotonic() - started,
    )


def _fields(stdout: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in stdout.splitlines():
        key, eq, value = line.partition("=")
        if eq:
            fields[key.strip()] = value.strip()
    return fields


def _pids(text: str) -> tuple[int, ...]:
    return tuple(sorted(int(p) for p in text.split() if p.isdigit()))
