"""runtime.hooks with real shell hooks in tmp_path: state on stdin, args and env, failures and
timeouts as typed errors, EPIPE tolerated, and the runner waits only for its own children and
leaves the caller's SIGCHLD handling alone."""

import json
import os
import signal
import time

import pytest

from runtime import hooks
from runtime.errors import ContainerSetupError, InvalidSpec
from runtime.spec import Hook, parse
from runtime.specgen import default_config

STATE = {"ociVersion": "1.1.0", "id": "c1", "status": "creating", "pid": 42, "bundle": "/b",
         "annotations": {}}


@pytest.fixture
def script(tmp_path):
    def make(body: str, name: str = "hook") -> str:
        path = tmp_path / name
        path.write_text("#!/bin/sh\n" + body + "\n")
        path.chmod(0o755)
        return str(path)
    return make


def test_state_on_stdin_args_and_env(script, tmp_path):
    out = tmp_path / "out"
    path = script(f'echo "$1 $A" > {out}; cat >> {out}')  # ($0 of a #! script is its path)
    hooks.run("prestart", [Hook(path, ["argv0", "one"], ["A=b"])], STATE)
    first, state = out.read_text().split("\n", 1)
    assert first == "one b"
    assert json.loads(state) == STATE


def test_without_env_a_hook_inherits_ours_and_without_args_gets_its_path(script, tmp_path,
                                                                          monkeypatch):
    monkeypatch.setenv("PYSHIM_HOOK_TEST", "yes")
    out = tmp_path / "out"
    path = script(f'echo "$0 $PYSHIM_HOOK_TEST" > {out}')
    hooks.run("prestart", [Hook(path)], STATE)
    assert out.read_text() == f"{path} yes\n"


def test_the_first_failure_stops_the_kind_and_names_it(script, tmp_path):
    out = tmp_path / "out"
    bad = script("echo boom; echo oops >&2; exit 3", "bad")
    good = script(f"touch {out}", "good")
    with pytest.raises(ContainerSetupError) as e:
        hooks.run("createRuntime", [Hook(bad), Hook(good)], STATE)
    assert (e.value.step, e.value.path) == ("createRuntime hook", bad)
    assert str(e.value) == f"createRuntime hook #0 ({bad}): exit status 3, output: boom\noops"
    assert not out.exists()


def test_a_missing_hook_fails(tmp_path):
    with pytest.raises(ContainerSetupError, match="No such file"):
        hooks.run("prestart", [Hook(str(tmp_path / "nope"))], STATE)


def test_a_timeout_kills_the_hook(script):
    path = script("echo started; exec sleep 30")
    t0 = time.monotonic()
    with pytest.raises(ContainerSetupError) as e:
        hooks.run("prestart", [Hook(path, timeout=1)], STATE)
    assert time.monotonic() - t0 < 3
    assert str(e.value).endswith("timed out after 1s, output: started")


def test_a_hook_that_does_not_read_stdin_is_fine_even_with_a_big_state(script):
    big = dict(STATE, annotations={"x": "y" * 300_000})  # more than a pipe holds
    hooks.run("prestart", [Hook(script("exit 0"))], big)


def test_a_hook_that_leaves_a_daemon_on_its_stdout_does_not_block(script, tmp_path):
    pidfile = tmp_path / "pid"
    path = script(f"sleep 3 & echo $! > {pidfile}; echo done")
    t0 = time.monotonic()
    hooks.run("prestart", [Hook(path, timeout=10)], STATE)
    assert time.monotonic() - t0 < 2
    daemon = int(pidfile.read_text())
    os.kill(daemon, signal.SIGKILL)
    try:
        os.waitpid(daemon, 0)  # ours only if pytest is a subreaper (the root tests make it one)
    except ChildProcessError:
        pass


def test_warn_runs_them_all_and_logs(script, caplog):
    bad = script("exit 1", "bad")
    good = script("exit 0", "good")
    failures = hooks.warn("poststop", [Hook(bad), Hook(good), Hook(bad)], STATE)
    assert failures == [f"poststop hook #0 ({bad}): exit status 1",
                        f"poststop hook #2 ({bad}): exit status 1"]
    assert [r.levelname for r in caplog.records] == ["WARNING", "WARNING"]
    assert "container c1: poststop hook #0" in caplog.records[0].getMessage()


def test_only_its_own_children_are_reaped_and_sigchld_is_untouched(script):
    seen = []
    old = signal.signal(signal.SIGCHLD, lambda *a: seen.append(1))
    sibling = os.fork()
    if sibling == 0:
        os._exit(7)
    try:
        hooks.run("prestart", [Hook(script("sleep 0.2"))], STATE)
        assert signal.getsignal(signal.SIGCHLD) is not signal.SIG_DFL
        assert seen  # our handler still ran for the exits
        # the sibling that exited meanwhile is still ours to reap
        assert os.waitstatus_to_exitcode(os.waitpid(sibling, 0)[1]) == 7
    finally:
        signal.signal(signal.SIGCHLD, old)


def test_budget():
    assert hooks.budget([Hook("/a", timeout=5), Hook("/b")]) == 5 + hooks.DEFAULT_TIMEOUT


def test_a_zero_timeout_is_an_invalid_spec():
    c = default_config()
    c["hooks"] = {"prestart": [{"path": "/bin/true", "timeout": 0}]}
    with pytest.raises(InvalidSpec) as e:
        parse(c)
    assert e.value.field == "hooks.prestart[0].timeout"
