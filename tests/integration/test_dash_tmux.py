"""The dashboard as a person uses it: in a 160×48 tmux pane, keys sent with send-keys,
the screen read with capture-pane. TERM=screen-256color and no COLORTERM, as over SSH:
the output must stay within the 256-colour palette.

Needs tmux (apt-get install tmux); skipped without it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from tests.conftest import ROOT

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux (apt-get install tmux)"),
]

REPLAY = "tests/data/replay-3x8-a800.jsonl"


class Pane:
    """One session on a private tmux server (its own socket: no user config, no other
    session's window size)."""

    def __init__(self, session: str) -> None:
        self.session = session

    def tmux(self, *args: str) -> str:
        return subprocess.run(
            ["tmux", "-L", self.session, "-f", "/dev/null", *args],
            check=True,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", self.session, *keys)
        if keys[-1] == "Escape":  # a lone ESC, not the start of alt+<next key>
            time.sleep(0.4)

    def screen(self, escapes: bool = False) -> str:
        return self.tmux("capture-pane", "-p", *(["-e"] if escapes else []), "-t", self.session)

    def wait_until(self, ok: Callable[[str], bool], what: str, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            if ok(screen):
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: not on screen after {timeout} s:\n{screen}")
            time.sleep(0.1)

    def wait_for(self, text: str, timeout: float = 20.0) -> str:
        return self.wait_until(lambda screen: text in screen, repr(text), timeout)

    def dead(self) -> bool:
        return self.tmux("display-message", "-p", "-t", self.session, "#{pane_dead}").strip() == "1"


@pytest.fixture
def pane() -> Iterator[Pane]:
    session = f"tb-test-{uuid.uuid4().hex[:8]}"
    # as over ssh: no COLORTERM; and no COLUMNS/LINES, which would override the pane's size
    env = {k: v for k, v in os.environ.items() if k not in ("COLORTERM", "COLUMNS", "LINES")}
    command = (
        f"cd {ROOT} && TERM=screen-256color {sys.executable} -m tuneboard dashboard "
        f"--replay {REPLAY} --speed 60"
    )
    pane = Pane(session)
    tmux = ["tmux", "-L", session, "-f", "/dev/null"]
    new = ["new-session", "-d", "-s", session, "-x", "160", "-y", "48"]
    shell = ["env", "-u", "COLORTERM", "-u", "COLUMNS", "-u", "LINES", "sh", "-c", command]
    subprocess.run([*tmux, *new, *shell], check=True, env=env, timeout=10)
    pane.tmux("set-option", "-t", session, "remain-on-exit", "on")
    try:
        yield pane
    finally:
        subprocess.run([*tmux, "kill-server"], capture_output=True, timeout=10)


def test_dashboard_in_tmux(pane: Pane) -> None:
    size = pane.tmux("display-message", "-p", "-t", pane.session, "#{pane_width}x#{pane_height}")
    assert size.strip() == "160x48"
    screen = pane.wait_for("node02")
    assert "1 Cluster" in screen and "24 GPUs" in screen and "8×A800" in screen
    assert "c Compact" in screen and "q Quit" in screen  # the footer shows the keys

    pane.keys("2")
    pane.wait_for("llama2-13b-sft")
    screen = pane.wait_for("done", timeout=30)  # 280 s of job at 60×
    assert "step 160/160" in screen and "MFU" in screen and "┤" in screen
    pane.keys("/")
    pane.keys("-l", "NCCL WARN")

    def only_nccl_warnings(screen: str) -> bool:
        log_lines = [line for line in screen.splitlines() if "│ [node" in line]
        return bool(log_lines) and all("NCCL WARN" in line for line in log_lines)

    screen = pane.wait_until(only_nccl_warnings, "the filtered log")
    assert "node02 │ [node02/rank17] NCCL WARN Call to ibv_poll_cq slow" in screen
    pane.keys("Escape")

    pane.keys("3")
    screen = pane.wait_for("Recommended:")
    assert "3x8xA800" in screen  # detected from what the dashboard sees

    pane.keys("?")
    pane.wait_for("keys (no mouse needed)")
    pane.keys("Escape")
    pane.keys("1")
    pane.keys("c")
    time.sleep(0.5)
    screen = pane.wait_for("max°C")  # the compact layout's header

    colours = pane.screen(escapes=True)
    assert "38;5;" in colours or "48;5;" in colours  # 256-colour escapes...
    assert "38;2;" not in colours and "48;2;" not in colours  # ...and no truecolor ones

    pane.keys("q")
    deadline = time.monotonic() + 10
    while not pane.dead():
        assert time.monotonic() < deadline, "q did not quit"
        time.sleep(0.1)
