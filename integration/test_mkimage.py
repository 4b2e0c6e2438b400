"""hack/mkimage.py: the test image is deterministic and laid out as the scenarios expect.
Needs no root and no containerd (only /bin/busybox, from busybox-static)."""
from __future__ import annotations

import gzip
import io
import json
import os
import tarfile

import pytest

from integration.containerd import BUSYBOX_IMAGE, load_mkimage

pytestmark = pytest.mark.skipif(not os.path.exists("/bin/busybox"), reason="no /bin/busybox")


def _blobs(path):
    with tarfile.open(path) as t:
        files = {m.name: t.extractfile(m).read() for m in t.getmembers() if m.isfile()}
    index = json.loads(files["index.json"])
    desc = index["manifests"][0]
    manifest = json.loads(files["blobs/sha256/" + desc["digest"].split(":")[1]])
    config = json.loads(files["blobs/sha256/" + manifest["config"]["digest"].split(":")[1]])
    layer = gzip.decompress(files["blobs/sha256/" + manifest["layers"][0]["digest"].split(":")[1]])
    return files, desc, manifest, config, layer


def test_deterministic(tmp_path):
    mk = load_mkimage()
    a, b = tmp_path / "a.tar", tmp_path / "b.tar"
    assert mk.build_image(str(a)) == mk.build_image(str(b))
    assert a.read_bytes() == b.read_bytes()


def test_layout_and_metadata(tmp_path):
    mk = load_mkimage()
    out = tmp_path / "img.tar"
    mk.build_image(str(out), [mk.ExtraFile("/usr/bin/probe", data=b"#!/bin/sh\necho probe\n", mode=0o755)])
    files, desc, manifest, config, layer = _blobs(out)
    assert json.loads(files["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    assert desc["annotations"] == {"io.containerd.image.name": BUSYBOX_IMAGE,
                                   "org.opencontainers.image.ref.name": "latest"}
    assert desc["platform"] == {"architecture": mk.host_arch(), "os": "linux"}
    assert len(manifest["layers"]) == 1
    assert manifest["layers"][0]["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"
    assert config["architecture"] == mk.host_arch() and config["os"] == "linux"
    assert config["config"] == {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                                "Cmd": ["sh"], "WorkingDir": "/"}

    with tarfile.open(fileobj=io.BytesIO(layer)) as t:
        members = t.getmembers()
        byname = {m.name.rstrip("/"): m for m in members}
        data = {m.name: t.extractfile(m).read() for m in members if m.isfile()}
    assert all(m.mtime == 0 for m in members)
    seen = set()
    for m in members:  # every hard link comes after its target
        if m.islnk():
            assert m.linkname == "bin/busybox" and m.linkname in seen
        seen.add(m.name)
    applets = mk.busybox_applets()
    assert {"sh", "cat", "echo", "sleep", "id", "env"} <= set(applets)
    for a in applets:
        assert byname[f"bin/{a}"].islnk(), a
    assert byname["bin/busybox"].isfile() and byname["bin/busybox"].mode == 0o755
    assert byname["tmp"].isdir() and byname["tmp"].mode == 0o1777
    assert (byname["home/app"].uid, byname["home/app"].gid) == (1000, 1000)
    passwd = data["etc/passwd"].decode().splitlines()
    assert passwd[0].startswith("root:x:0:0:")
    assert any(l.startswith("nobody:x:65534:65534:") for l in passwd)
    assert "app:x:1000:1000:app:/home/app:/bin/sh" in passwd
    assert "app:x:1000:" in data["etc/group"].decode().splitlines()
    assert data["usr/bin/probe"] == b"#!/bin/sh\necho probe\n" and byname["usr/bin/probe"].mode == 0o755


def test_busybox_must_be_static(tmp_path):
    mk = load_mkimage()
    assert mk.is_static_elf("/bin/busybox")
    assert mk.main([str(tmp_path / "x.tar"), "--busybox", "/bin/sh"]) == 1
