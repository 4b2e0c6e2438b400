"""Exec and Attach through the CRI streaming server (what `kubectl exec` and `kubectl attach`
reach), over WebSocket with the v4.channel.k8s.io protocol (integration/cri_stream.py), each
case with handlers `runc` and `pyshim`."""
from __future__ import annotations

from integration.cri import cri
from integration.cri_stream import STDOUT, StreamSession
from integration.test_cri_pods import STOPPABLE

TICKER = ["sh", "-c", "trap 'exit 0' TERM; while :; do echo tick; sleep 0.2; done"]


def exec_url(pods, cid, cmd, *, stdin=False, tty=False) -> str:
    return pods.cri.runtime.Exec(cri.ExecRequest(
        container_id=cid, cmd=cmd, stdin=stdin, tty=tty, stdout=True, stderr=not tty),
        timeout=30).url


def attach_url(pods, cid, *, stdin=False) -> str:
    return pods.cri.runtime.Attach(cri.AttachRequest(
        container_id=cid, stdin=stdin, stdout=True, stderr=True), timeout=30).url


def test_exec_streams_and_exit_code(pods):
    pod = pods.run()
    cid = pod.container("app", STOPPABLE)
    with StreamSession(exec_url(pods, cid, ["sh", "-c", "echo out; echo err >&2; exit 3"])) as s:
        r = s.collect(20)
    assert (r.stdout, r.stderr, r.exit_code) == (b"out\n", b"err\n", 3), r
    assert r.status["reason"] == "NonZeroExitCode"
    with StreamSession(exec_url(pods, cid, ["true"])) as s:
        r = s.collect(20)
    assert (r.stdout, r.stderr, r.exit_code, r.status["status"]) == (b"", b"", 0, "Success")


def test_exec_stdin(pods):
    pod = pods.run()
    cid = pod.container("app", STOPPABLE)
    cmd = ["sh", "-c", "read a; echo $a; read b; echo $b"]  # (head would buffer its output)
    with StreamSession(exec_url(pods, cid, cmd, stdin=True)) as s:
        s.send_stdin(b"one\n")
        s.read_until(STDOUT, b"one\n", 20)
        s.send_stdin(b"two\nthree\n")
        r = s.collect(20)
    assert (r.stdout, r.exit_code) == (b"one\ntwo\n", 0), r


def test_exec_tty_and_resize(pods):
    pod = pods.run()
    cid = pod.container("app", STOPPABLE)
    url = exec_url(pods, cid, ["sh", "-c", "sleep 0.5; stty size; tty; echo err >&2"],
                   stdin=True, tty=True)
    with StreamSession(url) as s:
        s.resize(100, 30)
        r = s.collect(20)
    # a terminal: stderr goes to it too, lines end in \r\n
    assert r.stdout == b"30 100\r\n/dev/pts/0\r\nerr\r\n", r
    assert (r.stderr, r.exit_code) == (b"", 0)


def test_attach_output(pods):
    pod = pods.run()
    cid = pod.container("app", TICKER)
    with StreamSession(attach_url(pods, cid)) as s:
        r = s.read_until(STDOUT, b"tick\ntick\n", 20)
    assert r.stdout.startswith(b"tick\n")
    # detaching leaves the container running
    assert pods.cri.container_status(cid).status.state == cri.CONTAINER_RUNNING


def test_attach_stdin(pods):
    pod = pods.run()
    cid = pod.container("app", ["sh", "-c", "while read l; do echo got $l; done; echo eof"],
                        stdin=True)
    with StreamSession(attach_url(pods, cid, stdin=True)) as s:
        s.send_stdin(b"x\n")
        s.read_until(STDOUT, b"got x\n", 20)
        s.send_stdin(b"y\n")
        r = s.read_until(STDOUT, b"got y\n", 20)
    assert r.stdout == b"got x\ngot y\n"
    assert pods.cri.container_status(cid).status.state == cri.CONTAINER_RUNNING
