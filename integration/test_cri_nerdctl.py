"""What nerdctl relies on besides CRI (nerdctl is not packaged here, so stand-ins): OCI hooks in
the spec it writes (`nerdctl internal oci-hook createRuntime` sets up networking, postStop tears
it down) get the container state on stdin, with runc's shim and with pyshim alike. Its
`binary://` log driver protocol is covered by test_ctr.py. The spec goes in through
`ctr run --config` (a full spec, as nerdctl builds one), on the session's containerd."""
from __future__ import annotations

import io
import json
import tarfile

import pytest

from integration.containerd import load_mkimage

HOOKS = ["prestart", "createRuntime", "poststart", "poststop"]


@pytest.fixture(scope="module")
def rootfs(tmp_path_factory) -> str:
    d = tmp_path_factory.mktemp("nerdctl-rootfs")
    with tarfile.open(fileobj=io.BytesIO(load_mkimage().build_layer())) as t:
        t.extractall(d)  # our own layer (Python 3.11.7 has no extraction filters)
    return str(d)


def spec_with_hooks(containerd, cid: str, rootfs: str, out: str) -> dict:
    spec = json.loads(containerd.ctr("oci", "spec", check=True).stdout)
    spec["root"] = {"path": rootfs, "readonly": True}
    spec["process"]["args"] = ["sh", "-c", "echo hello from $HOSTNAME"]
    spec["process"]["env"] = ["PATH=/bin", "HOSTNAME=box"]
    spec["hostname"] = "box"
    spec["linux"]["cgroupsPath"] = f"/{containerd.namespace}/{cid}"
    spec["annotations"] = {"nerdctl/name": "web", "nerdctl/networks": '["none"]'}
    # the stand-in for `nerdctl internal oci-hook EVENT`: records its stdin (the state) and argv
    spec["hooks"] = {event: [{
        "path": "/bin/sh",
        "args": ["sh", "-c", f'cat >"{out}/{event}.json"; echo "$@" >"{out}/{event}.argv"',
                 "nerdctl", "internal", "oci-hook", event],
        "env": ["PATH=/usr/bin:/bin"],
        "timeout": 10,
    }] for event in HOOKS}
    return spec


def test_oci_hooks_get_the_state_on_stdin(containerd, runtime, cid, rootfs, tmp_path):
    out = tmp_path / "hooks"
    out.mkdir()
    spec_path = tmp_path / "config.json"
    spec_path.write_text(json.dumps(spec_with_hooks(containerd, cid, rootfs, str(out))))
    r = containerd.ctr("run", "--rm", "--runtime", runtime, "--config", str(spec_path), cid,
                       timeout=60)
    assert (r.returncode, r.stdout) == (0, "hello from box\n"), r.stderr + containerd.log_tail()
    states = {}
    for event in HOOKS:
        assert (out / f"{event}.argv").read_text() == f"internal oci-hook {event}\n", event
        states[event] = json.loads((out / f"{event}.json").read_text())
    bundle = containerd.bundle_path(cid)
    for event, state in states.items():
        assert state["id"] == cid and state["bundle"] == bundle, (event, state)
        assert state["annotations"]["nerdctl/name"] == "web", (event, state)
        assert state["ociVersion"], (event, state)
    # create-time hooks: runc 1.1.5 says "creating"; pyshim "created", as the runtime-spec's
    # lifecycle (they run after the environment is created), crun and runtime-tools have it
    create_time = "creating" if runtime.endswith("runc.v2") else "created"
    assert states["createRuntime"]["status"] == create_time
    assert states["prestart"]["status"] == create_time
    # after start: runc 1.1.5 still says "created" here, pyshim "running" (the process runs)
    assert states["poststart"]["status"] == ("created" if runtime.endswith("runc.v2") else "running")
    assert states["poststop"]["status"] == "stopped"
    pid = states["createRuntime"]["pid"]
    assert pid > 0 and states["prestart"]["pid"] == pid == states["poststart"]["pid"]
