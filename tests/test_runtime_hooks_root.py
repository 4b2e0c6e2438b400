"""Root tests of OCI hooks in real containers: each kind runs at its moment, in its namespace,
with the state on stdin; a failing prestart/createRuntime/createContainer hook fails create and
leaves nothing (poststop still runs), a failing startContainer hook fails start, and failing
poststart/poststop hooks are only warnings. Skipped unless running as root."""

import glob
import json
import os
import signal
import socket
import time

import pytest
from test_runtime_root import _reap, children, env, subreaper, write_config  # noqa: F401

from runtime.errors import ContainerSetupError

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
KINDS = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart",
         "poststop")


@pytest.fixture
def hookenv(env, tmp_path):
    """(engine, bundle, log, add) where add(kind, exit=0, ...) adds a hook that appends
    "kind|hostname|state" to the log. startContainer's runs inside the container: its script
    and its log live in the rootfs."""
    engine, bundle = env
    log = tmp_path / "hooks.log"
    host_script = tmp_path / "hook.sh"
    inner_script = bundle / "rootfs" / "hook.sh"
    body = '#!/bin/sh\nstate=$(cat)\necho "$1|$(hostname)|$state" >> "$LOG"\n{extra}exit ${{2:-0}}\n'
    host_script.write_text(body.format(extra=""))
    inner_script.write_text(body.format(extra=""))
    for s in (host_script, inner_script):
        s.chmod(0o755)
    added = {}

    def add(kind, code=0, timeout=None, extra=""):
        inside = kind == "startContainer"
        script = inner_script if inside else host_script
        if extra:
            script.write_text(body.format(extra=extra + "\n"))
        hook = {"path": "/hook.sh" if inside else str(script), "args": ["hook.sh", kind, str(code)],
                "env": ["LOG=/hooks.log" if inside else f"LOG={log}"]}
        if timeout:
            hook["timeout"] = timeout
        added.setdefault(kind, []).append(hook)

    def config(args):
        write_config(bundle, args, lambda c: c.update(hooks=added))

    def entries():
        text = log.read_text() if log.exists() else ""
        inner = bundle / "rootfs" / "hooks.log"
        text += inner.read_text() if inner.exists() else ""
        out = []
        for line in text.splitlines():
            kind, host, state = line.split("|", 2)
            out.append((kind, host, json.loads(state)))
        return sorted(out, key=lambda e: KINDS.index(e[0]))
    return engine, bundle, add, config, entries


def test_every_kind_runs_at_its_moment_in_its_namespace(hookenv):
    engine, bundle, add, config, entries = hookenv
    for kind in KINDS:
        add(kind)
    config(["true"])
    c = engine.create("c1", str(bundle))
    assert [e[0] for e in entries()] == ["prestart", "createRuntime", "createContainer"]
    c.start()
    assert [e[0] for e in entries()][3:] == ["startContainer", "poststart"]
    assert _reap(c.pid) == 0
    c.delete()
    got = entries()
    assert [e[0] for e in got] == list(KINDS)
    host = socket.gethostname()
    assert [e[1] for e in got] == [host, host, "pyshim-test", "pyshim-test", host, host]
    assert [(e[2]["status"], e[2]["pid"]) for e in got] == [
        # create-time hooks run after the environment is created (runtime-spec lifecycle
        # steps 3-5; "creating" is step 2): "created", as crun and runtime-tools have it
        ("created", c.pid), ("created", c.pid), ("created", c.pid), ("created", c.pid),
        ("running", c.pid), ("stopped", 0)]
    assert all(e[2]["id"] == "c1" and e[2]["bundle"] == str(bundle) for e in got)


@pytest.mark.parametrize("kind", ["prestart", "createRuntime", "createContainer"])
def test_a_failing_create_hook_fails_create_and_leaves_nothing(hookenv, kind):
    engine, bundle, add, config, entries = hookenv
    add(kind, code=3, extra="echo boom")
    add("poststop")
    config(["true"])
    before = children()
    with pytest.raises(ContainerSetupError) as e:
        engine.create("c1", str(bundle))
    assert e.value.step == f"{kind} hook"
    assert "exit status 3, output: boom" in str(e.value)
    assert engine.list() == [] and children() == before
    assert not glob.glob("/sys/fs/cgroup/*/c1") and not glob.glob("/sys/fs/cgroup/*/*/*/c1")
    assert [e[0] for e in entries()] == [kind, "poststop"]  # the lifecycle goes on at delete


def test_a_hook_timeout_fails_create_in_bounded_time(hookenv):
    engine, bundle, add, config, entries = hookenv
    add("createContainer", timeout=1, extra="sleep 30")
    config(["true"])
    t0 = time.monotonic()
    with pytest.raises(ContainerSetupError, match="timed out after 1s"):
        engine.create("c1", str(bundle))
    assert time.monotonic() - t0 < 5
    assert engine.list() == []


def test_a_failing_start_container_hook_fails_start(hookenv):
    engine, bundle, add, config, entries = hookenv
    add("startContainer", code=5)
    add("poststart")
    config(["true"])
    c = engine.create("c1", str(bundle))
    with pytest.raises(ContainerSetupError) as e:
        c.start()
    assert e.value.step == "startContainer hook" and "exit status 5" in str(e.value)
    assert _reap(c.pid) == 1  # the init gave up before exec'ing the user process
    assert c.status() == "stopped"
    assert [e[0] for e in entries()] == ["startContainer"]  # no poststart
    c.delete()


def test_failing_poststart_and_poststop_hooks_are_warnings(hookenv, caplog):
    engine, bundle, add, config, entries = hookenv
    add("poststart", code=1)
    add("poststop", code=1)
    add("poststop")
    config(["sleep", "30"])
    c = engine.create("c1", str(bundle))
    c.start()
    assert c.status() == "running"
    c.delete(force=True)
    assert _reap(c.pid) == -signal.SIGKILL
    assert engine.list() == []
    assert [e[0] for e in entries()] == ["poststart", "poststop", "poststop"]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 2 and "poststart hook #0" in warnings[0]
