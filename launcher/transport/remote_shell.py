"""Command lines for a remote POSIX shell, built from argv; environment sent over stdin.

Two rules keep user input from ever being executed and secrets from ever being seen:

1. A command is an argv list. Every element is quoted with `shlex.quote` and the
   remote login shell only ever sees `exec sh -c PRELUDE tuneboard CWD TIMEOUT ARGV...`:
   a value such as `out; touch /tmp/pwned` arrives as one argument, never as shell code.
2. The environment (HF_TOKEN, WANDB_API_KEY, the job's settings) is not on the command
   line (anyone on the node can read /proc/PID/cmdline) and not in a file. It is sent as
   the first line of the channel's stdin, `export NAME='value' ...`, which PRELUDE reads
   with the `read` builtin and applies with `eval` (values are `shlex.quote`d by us, so
   the eval runs only assignments), then it runs the command, which inherits them.
   The values live in the shell's memory and in the environment of the processes that
   get them, readable in /proc/PID/environ by the same user and root only — as with any
   environment variable.

Why not the SSH protocol's own "env" request (paramiko `environment=`)? sshd applies
only names listed in its `AcceptEnv` (Debian ships `AcceptEnv LANG LC_*`) and drops
the rest *silently*: the token would be missing and the job would fail hours later on
its first upload. The stdin line works with every sshd, with no server change. Its one
limit: a value may not contain a newline (tokens and settings never do); such a value
is refused with an error that names the variable, not its value.

The node's login shell must accept POSIX single quotes (sh, bash, dash, zsh, ksh, fish);
the remote side needs `sh` and, for a timeout, coreutils `timeout`.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence

from launcher.errors import LauncherInputError

ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

#: Exit codes of PRELUDE itself (a command's own codes pass through unchanged).
EXIT_NO_ENV_LINE = 120
EXIT_BAD_CWD = 121
#: What coreutils `timeout` returns when it had to stop the command.
EXIT_TIMEOUT = 124

#: Runs as `sh -c PRELUDE tuneboard CWD TIMEOUT_S ARGV...` with the env line on stdin.
#: One line on purpose: csh-family login shells reject newlines inside quotes. The command
#: runs as a child (not exec'd) so that a death by signal N comes back as exit code 128+N
#: (sshd would send an "exit-signal" that paramiko drops, leaving no code at all).
PRELUDE = (
    "IFS= read -r __tb_env || { echo 'tuneboard: no environment line on stdin' >&2; exit 120; }; "
    'eval "$__tb_env" || exit 120; unset __tb_env; '
    'if [ -n "$1" ]; then cd -- "$1" || { echo "tuneboard: cannot cd to $1" >&2; exit 121; }; fi; '
    "t=$2; shift 2; "
    'if [ "$t" != 0 ]; then timeout -k 2 "$t" "$@"; else "$@"; fi; '
    "exit $?"
)


def check_argv(argv: Sequence[str]) -> tuple[str, ...]:
    """A non-empty argv of strings without NUL bytes (which no exec can carry)."""
    if isinstance(argv, str):
        raise LauncherInputError(f"a command is a list of arguments, not the string {argv!r}")
    if not argv:
        raise LauncherInputError("empty command")
    for arg in argv:
        if not isinstance(arg, str):
            raise LauncherInputError(f"command argument {arg!r} is not a string")
        if "\0" in arg:
            raise LauncherInputError(f"command argument {arg!r} contains a NUL byte")
    return tuple(argv)


def join_argv(argv: Sequence[str]) -> str:
    """argv -> one shell word per element (`shlex.quote`); the only way commands are built."""
    return " ".join(shlex.quote(arg) for arg in check_argv(argv))


def check_env(env: Mapping[str, str] | None) -> dict[str, str]:
    """Validate names and values; errors name the variable, never show the value."""
    checked: dict[str, str] = {}
    for name, value in (env or {}).items():
        if not isinstance(name, str) or not ENV_NAME.fullmatch(name):
            raise LauncherInputError(
                f"environment name {name!r} is not valid (letters, digits, '_'; "
                "not starting with a digit)"
            )
        if not isinstance(value, str):
            raise LauncherInputError(f"environment variable {name}: value is not a string")
        if "\n" in value or "\0" in value:
            raise LauncherInputError(
                f"environment variable {name}: a value with a newline or NUL byte cannot be "
                "passed to a node (value not shown)"
            )
        checked[name] = value
    return checked


def env_line(env: Mapping[str, str] | None) -> bytes:
    """The first stdin line PRELUDE reads: `export A='x' B='y'` (empty line for no env)."""
    checked = check_env(env)
    if not checked:
        return b"\n"
    assignments = " ".join(f"{name}={shlex.quote(value)}" for name, value in checked.items())
    return f"export {assignments}\n".encode()


def format_timeout(timeout_s: float | None) -> str:
    """Seconds for coreutils `timeout` ("0" = none)."""
    if timeout_s is None:
        return "0"
    if timeout_s <= 0:
        raise LauncherInputError(f"timeout must be positive, got {timeout_s!r} s")
    return f"{max(timeout_s, 0.001):.3f}"


def remote_command(argv: Sequence[str], *, cwd: str | None, timeout_s: float | None) -> str:
    """The exact string given to the node's sshd (and so to the login shell)."""
    return join_argv(
        ["exec", "sh", "-c", PRELUDE, "tuneboard", cwd or "", format_timeout(timeout_s), *argv]
    )


def describe(argv: Sequence[str], limit: int = 120) -> str:
    """A short, quoted rendering of argv for messages (argv never carries secrets)."""
    text = join_argv(argv)
    return text if len(text) <= limit else text[: limit - 1] + "…"
