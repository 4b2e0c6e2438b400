"""Reaping: the shim is a child subreaper and collects every exit itself.

Invariants:
- Every child exit is reaped exactly once, here, with waitpid(-1, WNOHANG) run from the event
  loop on SIGCHLD. Synchronous engine code may waitpid() its own short-lived helpers, because
  this callback cannot run while that code holds the loop's only thread.
- An exit nobody has claimed yet is kept (bounded) until its pid is claimed, so "exited before
  we registered it" cannot lose an exit.
"""

from __future__ import annotations

import os
import signal
import time
from collections import OrderedDict
from collections.abc import Callable

from runtime.sys import linux
from shim import aio

ExitHandler = Callable[[int, int, int], bool]  # (pid, exit_status, exited_at_ns) -> claimed?

_UNCLAIMED_LIMIT = 1024


def exit_status(wait_status: int) -> int:
    """The status a shell reports: the exit code, or 128+N for death by signal N."""
    code = os.waitstatus_to_exitcode(wait_status)
    return 128 - code if code < 0 else code


class Reaper:
    def __init__(self, on_exit: ExitHandler):
        self._on_exit = on_exit
        self._unclaimed: OrderedDict[int, tuple[int, int]] = OrderedDict()
        self._watchers: dict[int, Callable[[int], None]] = {}
        self.installed = False  # install() ran: SIGCHLD is ours and reaped on the loop

    def watch(self, pid: int, callback: Callable[[int], None]) -> None:
        """Call callback(exit_status) when pid exits (helpers such as log drivers)."""
        early = self._unclaimed.pop(pid, None)
        if early:
            callback(early[0])
        else:
            self._watchers[pid] = callback

    def install(self, loop: aio.Loop) -> None:
        linux.set_child_subreaper()
        loop.add_signal_handler(signal.SIGCHLD, self.reap)
        self.installed = True
        self.reap()  # children that exited before the handler was installed

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            code, when = exit_status(status), time.time_ns()
            watcher = self._watchers.pop(pid, None)
            if watcher:
                watcher(code)
            elif not self._on_exit(pid, code, when):
                self._unclaimed[pid] = (code, when)
                while len(self._unclaimed) > _UNCLAIMED_LIMIT:
                    self._unclaimed.popitem(last=False)

    def take_unclaimed(self, pid: int) -> tuple[int, int] | None:
        """The (status, time) of an exit reaped before its pid was registered, if any."""
        return self._unclaimed.pop(pid, None)
