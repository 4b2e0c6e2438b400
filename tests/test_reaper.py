"""The reaper: shell-style exit statuses, exits kept until claimed, per-pid watchers."""

import os
import signal
import time

from shim.reaper import Reaper, exit_status


def _child(code=None, sig=None):
    pid = os.fork()
    if pid == 0:
        if sig:
            os.kill(os.getpid(), sig)
        os._exit(code or 0)
    return pid


def _reap_until(reaper, done, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline:
        reaper.reap()
        time.sleep(0.005)


def test_exit_status_is_what_a_shell_reports():
    assert exit_status(3 << 8) == 3
    assert exit_status(signal.SIGKILL) == 137
    assert exit_status(signal.SIGTERM) == 143


def test_exits_go_to_the_handler_or_wait_unclaimed():
    seen = {}
    reaper = Reaper(lambda pid, status, when: seen.__setitem__(pid, status) or True)
    claimed = _child(5)
    _reap_until(reaper, lambda: claimed in seen)
    assert seen[claimed] == 5

    reaper = Reaper(lambda pid, status, when: False)  # nobody claims it yet
    early = _child(sig=signal.SIGKILL)
    _reap_until(reaper, lambda: early in reaper._unclaimed)
    status, when = reaper.take_unclaimed(early)
    assert status == 137 and when > 0
    assert reaper.take_unclaimed(early) is None  # taken once


def test_watchers_get_their_pid_only():
    handled, watched = [], []
    reaper = Reaper(lambda pid, status, when: handled.append(pid) or True)
    a, b = _child(1), _child(2)
    reaper.watch(a, watched.append)
    _reap_until(reaper, lambda: watched and b in handled)
    assert watched == [1] and handled == [b]
