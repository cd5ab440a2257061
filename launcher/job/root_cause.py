"""Which node and rank failed first, from what torchrun printed on each node.

When one rank dies, the others die soon after (a peer's connection closes, or the launcher
stops them), and every node's torchrun prints a failure summary. The root cause is the
failure that is not a consequence of another one:

1. failures whose rank's last lines show a consequence (a peer's connection closed, a
   collective aborted or timed out) or that died of the launcher's own SIGTERM are
   "secondary" and rank last;
2. then the failures the launcher saw before it began to stop the job;
3. then the earliest by torchrun's own timestamp (`E1124 00:01:13.592000 ... failed
   (exitcode: 1) local_rank: 1`, microseconds, the node's clock);
4. then node order.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

#: torchrun's error line when a worker exits non-zero.
_FAILED = re.compile(
    r"^E(?P<mmdd>\d{4}) (?P<time>\d\d:\d\d:\d\d\.\d+)\s+\d+ .*failed \(exitcode: "
    r"(?P<code>-?\d+)\) local_rank: (?P<local>\d+)"
)
#: What a rank prints when it fails *because* another one did.
_CONSEQUENCE = re.compile(
    r"Connection closed by peer|Connection reset by peer|Broken pipe|"
    r"DistBackendError|NCCL communicator was aborted|ProcessGroupNCCL.*(?:watchdog|timeout)|"
    r"Watchdog caught collective operation timeout|Socket Timeout|"
    r"Signal 15 \(SIGTERM\) received|SignalException|"
    r"failed to recv, got 0 bytes|Connection refused.*(?:store|TCPStore)|"
    r"The client socket has failed to connect",
    re.IGNORECASE,
)
_SIGTERM_CODES = (-15, 143)
#: The line an uncaught exception's traceback ends on (`ValueError: ...`, `torch.OutOfMemoryError:
#: ...`, a bare `KeyboardInterrupt`), or the one line recipes.run prints for bad input (`error:`).
_ERROR_LINE = re.compile(
    r"^(?:[A-Za-z_]\w*\.)*[A-Za-z_]\w*(?:Error|Exception|Exit|Interrupt|Failure|Fault)"
    r"(?::.*)?$|^error: \S"
)
#: What torch.distributed's excepthook puts before each line of a rank's traceback.
_RANK_PREFIX = re.compile(r"^\[rank\d+\]: ?")
#: torchrun's summary of its failed workers: the consequence, not the cause.
_SUMMARY_ERRORS = ("ChildFailedError",)
#: An exception message spread over several lines: this many more are joined to it.
_CONTINUATION_LINES = 3
ERROR_LINE_CHARS = 500


@dataclass(frozen=True)
class RankFailure:
    """One failed worker, as its node's torchrun reported it."""

    node: str
    node_rank: int
    #: Global rank.
    rank: int
    exit_code: int
    #: `MMDD HH:MM:SS.ffffff` (sortable within a year), None when torchrun gave none.
    when: str | None


def parse_failures(
    node: str, node_rank: int, first_rank: int, lines: Sequence[str]
) -> list[RankFailure]:
    """Every `failed (exitcode: N) local_rank: L` line of a node's torchrun."""
    found = []
    for line in lines:
        match = _FAILED.match(line)
        if match is not None:
            found.append(
                RankFailure(
                    node,
                    node_rank,
                    first_rank + int(match["local"]),
                    int(match["code"]),
                    f"{match['mmdd']} {match['time']}",
                )
            )
    return found


def reports_failure(line: str) -> bool:
    """A torchrun line saying one of its workers failed (the node's torchrun will exit
    non-zero: with --max-restarts 0 nothing restarts it). Seen ~1 s before its exit."""
    return _FAILED.match(line) is not None


def is_consequence(exit_code: int | None, last_lines: Sequence[str]) -> bool:
    if exit_code in _SIGTERM_CODES:
        return True
    return any(_CONSEQUENCE.search(line) for line in last_lines[-40:])


def error_line(lines: Sequence[str]) -> str | None:
    """A failed rank's own last error line: the exception its traceback ended on (with the
    indented lines that continue its message, as a chained validation error prints them), or
    recipes.run's `error: ...`; whatever the rank printed after it (warnings at exit, its
    peers' teardown) is passed over. None when the rank printed no such line."""
    lines = [_RANK_PREFIX.sub("", line, count=1) for line in lines]
    for i in range(len(lines) - 1, -1, -1):
        line = lines[i].rstrip()
        if not _ERROR_LINE.match(line) or any(s in line for s in _SUMMARY_ERRORS):
            continue
        more = []
        for follow in lines[i + 1 : i + 1 + _CONTINUATION_LINES]:
            if not follow.strip() or not follow[:1].isspace():
                break
            more.append(follow.strip())
        text = " ".join([line, *more])
        return text if len(text) <= ERROR_LINE_CHARS else text[: ERROR_LINE_CHARS - 1] + "…"
    return None


def with_error(reason: str, lines: Sequence[str]) -> str:
    """`exit code 1` -> `exit code 1: ValueError: ...` when the lines hold an error line."""
    error = error_line(lines)
    return reason if error is None else f"{reason}: {error}"


def unreported_errors(
    ranks: Sequence[int], reported: Collection[int], lines_of: Callable[[int], Sequence[str]]
) -> list[tuple[int, tuple[str, ...], str]]:
    """(rank, its lines, its error line) of each rank of a node that torchrun did not report
    but that printed an error of its own (not a consequence): torchrun names the first worker
    it sees exit and stops the others, so the rank that raised first can be one it stopped
    while it was still on its way out (its peer's "Connection closed by peer" came first)."""
    found = []
    for rank in ranks:
        lines = tuple(lines_of(rank))
        error = error_line(lines)
        if rank not in reported and error is not None and not is_consequence(None, lines):
            found.append((rank, lines, error))
    return found


@dataclass(frozen=True)
class Candidate:
    node: str
    node_rank: int
    rank: int | None
    exit_code: int | None
    when: str | None
    seen_before_stop: bool
    last_lines: tuple[str, ...]
    reason: str

    @property
    def secondary(self) -> bool:
        return is_consequence(self.exit_code, self.last_lines)


def choose(candidates: Sequence[Candidate]) -> Candidate | None:
    if not candidates:
        return None
    return min(
        candidates,
        key=lambda c: (
            c.secondary,
            not c.seen_before_stop,
            c.when is None,
            c.when or "",
            c.node_rank,
            c.rank if c.rank is not None else -1,
        ),
    )


def describe_exit(code: int) -> str:
    if code < 0:
        return f"killed by signal {-code}"
    if code > 128:
        return f"exit code {code} (signal {code - 128}?)"
    return f"exit code {code}"
