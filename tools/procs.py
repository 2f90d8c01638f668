"""Processes by session: each component a tool starts leads a session of its own (`start_new_session=True`), and
every process it starts stays in that session, wherever it is reparented.

Airflow 3.3 runs each task in a process group of its own, so ending a worker's group leaves its tasks running;
they still belong to the worker's session (only `setsid` would take them out, and Airflow does not call it). Linux
only (/proc), like the rest of the tools.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Collection
from pathlib import Path


def in_sessions(sessions: Collection[int]) -> list[int]:
    """The live processes (not zombies) of the sessions led by the processes `sessions` (even once those died)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # Fields after the command name, which may hold spaces and parentheses: state, ppid, pgrp, session.
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[3]) in sessions:
            found.append(int(entry.name))
    return found


def end_sessions(sessions: Collection[int], grace_s: float = 10) -> list[int]:
    """SIGTERM every process of `sessions`, SIGKILL what is left after `grace_s` (0: SIGKILL at once, as when a
    machine dies); returns the processes that were running. Reaps none: their parents do."""
    found = in_sessions(sessions)
    _signal(found, signal.SIGTERM if grace_s else signal.SIGKILL)
    deadline = time.monotonic() + grace_s
    while grace_s and in_sessions(sessions) and time.monotonic() < deadline:
        time.sleep(0.2)
    _signal(in_sessions(sessions), signal.SIGKILL)
    deadline = time.monotonic() + 10
    while in_sessions(sessions) and time.monotonic() < deadline:
        time.sleep(0.05)
    return found


def _signal(pids: list[int], signum: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)
