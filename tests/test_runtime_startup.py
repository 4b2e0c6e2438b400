"""The engine's start-up helpers: runtime.record (the data classes without dataclasses),
runtime.fastjson (json without importing json), and what the light commands import."""

import json
import math
import os
import subprocess
import sys

import pytest

from runtime import fastjson
from runtime.record import Record, field, replace

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --- record ----------------------------------------------------------------------------------
class Point(Record):
    x: int
    y: int = 0
    tags: list = field(list)
    note: str = field(default="", compare=False, repr=False)


class Frozen(Record, frozen=True):
    a: str
    b: tuple = ()


class Child(Point):
    z: int = 9


def test_record_constructs_like_a_dataclass():
    p = Point(1, tags=["t"])
    assert (p.x, p.y, p.tags, p.note) == (1, 0, ["t"], "")
    assert Point(1).tags is not Point(1).tags  # a factory per instance
    assert Child(1, 2, z=3).z == 3 and Child._fields == ("x", "y", "tags", "note", "z")
    with pytest.raises(TypeError, match="missing argument 'x'"):
        Point()
    with pytest.raises(TypeError, match="unexpected keyword 'w'"):
        Point(1, w=2)
    with pytest.raises(TypeError, match="multiple values for 'x'"):
        Point(1, x=2)
    with pytest.raises(TypeError, match="takes 4 arguments"):
        Point(1, 2, [], "", 5)


def test_record_eq_repr_hash_frozen_and_replace():
    assert Point(1, note="a") == Point(1, note="b")  # compare=False
    assert Point(1) != Point(2) and Point(1) != Child(1)
    assert repr(Point(1, 2)) == "Point(x=1, y=2, tags=[])"
    with pytest.raises(TypeError):
        hash(Point(1))
    f = Frozen("a")
    assert hash(f) == hash(Frozen("a")) and {f, Frozen("a")} == {f}
    with pytest.raises(AttributeError):
        f.a = "b"
    assert replace(f, b=(1,)) == Frozen("a", (1,)) and f.b == ()
    with pytest.raises(TypeError):
        replace(f, c=1)


# --- fastjson --------------------------------------------------------------------------------
DOCS = [
    {"ociVersion": "1.0.2", "id": "c1", "pid": 42, "status": "running", "bundle": "/b",
     "annotations": {"k": "v<>&", "ü": "ß\u2028"}, "nested": [1, 2.5, -0.0, True, False, None,
                                                            [], {}, [{}], "\x00\n\t\""]},
    [], {}, "plain", 3, 1e100, 1.5, None, [[[1]]], {"a": {"b": {"c": []}}},
    {"big": 2**64 - 1, "neg": -(2**63)},
]


@pytest.mark.parametrize("doc", DOCS)
@pytest.mark.parametrize("kw", [{}, {"indent": 2}, {"indent": 4}, {"indent": "\t"},
                                {"separators": (",", ":")}, {"ensure_ascii": False},
                                {"indent": 2, "separators": (",", ": "), "ensure_ascii": False},
                                {"sort_keys": True, "indent": 1}])
def test_dumps_is_json_dumps(doc, kw):
    assert fastjson.dumps(doc, **kw) == json.dumps(doc, **kw)


def test_dumps_special_floats_keys_and_errors_like_json():
    doc = {1: math.inf, 2.5: -math.inf, None: 0, True: 1}
    for kw in ({}, {"indent": 2}):
        assert fastjson.dumps(doc, **kw) == json.dumps(doc, **kw)
    assert fastjson.dumps(math.nan) == "NaN"
    for kw in ({}, {"indent": 2}):
        with pytest.raises(TypeError, match="not JSON serializable"):
            fastjson.dumps({"x": object()}, **kw)


@pytest.mark.parametrize("doc", DOCS)
def test_loads_round_trips_like_json(doc):
    text = json.dumps(doc, indent=2)
    assert fastjson.loads(text) == json.loads(text)
    assert fastjson.loads(text.encode()) == json.loads(text.encode())
    assert fastjson.loads(" \n" + json.dumps(doc) + "\r\n ") == doc


@pytest.mark.parametrize("text", ["", "  ", "{", '{"a": 1} x', "[1,]", "nul", '"\x01"',
                                  "\ufeff{}", "{'a': 1}", "01"])
def test_loads_errors_are_jsons_own(text):
    with pytest.raises(json.JSONDecodeError) as want:
        json.loads(text)
    with pytest.raises(json.JSONDecodeError) as got:
        fastjson.loads(text)
    assert str(got.value) == str(want.value)


def test_loads_takes_a_utf8_bom_in_bytes_and_constants():
    assert fastjson.loads(b"\xef\xbb\xbf{\"a\": 1}") == {"a": 1}
    assert math.isnan(fastjson.loads("NaN")) and fastjson.loads("-Infinity") == -math.inf
    with pytest.raises(TypeError):
        fastjson.loads(1)


# --- what the light paths import -------------------------------------------------------------
HEAVY = ("json", "re", "enum", "logging", "dataclasses", "subprocess", "shutil", "datetime",
         "socket", "ctypes", "signal", "os", "_collections_abc", "runtime.spec",
         "runtime.mounts", "runtime.launch", "runtime.execproc", "runtime.init",
         "runtime.seccomp", "runtime.hooks", "runtime.cgroups.plan", "runtime.sys.linux")


def _modules_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-IS", "-c", f"import sys; sys.path.insert(0, {REPO!r})\n"
                          f"{code}\nprint(' '.join(sys.modules))"],
                         capture_output=True, text=True, check=True).stdout
    return set(out.split())


def test_importing_the_engine_loads_nothing_heavy():
    loaded = _modules_after("import runtime.container")
    assert not loaded & set(HEAVY), loaded & set(HEAVY)


def test_the_create_path_loads_neither_ctypes_nor_resource_nor_struct():
    """~1.8 ms of every pyshim-runc create/run/exec: the syscall layer goes through
    runtime.sys.ffi (ctypes' core) and prlimit(2), and packs its few C structs by hand."""
    loaded = _modules_after("import runtime.container as c\nc.load_engine()\n"
                            "from runtime.sys.linux import LINUX")
    assert "runtime.sys.linux" in loaded
    unwanted = {"ctypes", "resource", "struct"}
    assert not loaded & unwanted, loaded & unwanted


def test_the_create_path_loads_runtime_hooks_only_for_a_spec_with_hooks():
    # launch() imports it (before the fork) when the spec has hooks; the init runs none without.
    loaded = _modules_after("import runtime.container, runtime.launch")
    assert "runtime.launch" in loaded and "runtime.hooks" not in loaded


def test_state_list_kill_of_a_stopped_container_load_nothing_heavy(tmp_path):
    root = tmp_path / "root"
    (root / "c1").mkdir(parents=True)
    data = {"ociVersion": "1.0.2", "id": "c1", "bundle": "/b", "rootfs": "/b/rootfs",
            "pid": 2**22 + 1, "pidStartTime": 1, "created": "2026-01-01T00:00:00Z",
            "annotations": {}, "cgroup": {"version": 1, "paths": {}, "mounts": {}},
            "config": {"ociVersion": "1.0.2", "root": {"path": "rootfs"}}}
    (root / "c1" / "state.json").write_text(json.dumps(data))
    for argv in (["state", "c1"], ["list"], ["kill", "c1", "KILL"], ["list", "-q"]):
        loaded = _modules_after(f"from runtime.cli import main\nsys.stdout.flush()\n"
                                f"main(['--root', {str(root)!r}, *{argv!r}])")
        assert not loaded & set(HEAVY), (argv, loaded & set(HEAVY))


def test_utc_now_is_datetimes_isoformat_with_a_z(monkeypatch):
    import datetime
    import time

    from runtime import container
    for ns in (1_700_000_000_123_456_789, 1_700_000_000_000_000_000, 1_700_000_000_000_001_000):
        monkeypatch.setattr(time, "time_ns", lambda ns=ns: ns)
        want = datetime.datetime.fromtimestamp(ns // 1000 / 1e6, datetime.timezone.utc)
        want = want.replace(microsecond=ns // 1000 % 1_000_000)
        assert container.utc_now() == want.isoformat().replace("+00:00", "Z")


@pytest.mark.parametrize("cid,ok", [("abc", True), ("a-b_c.d+e", True), ("ü1", True),
                                    ("", False), (".", False), ("..", False), ("a/b", False),
                                    ("a b", False), ("abc\n", False), ("a:b", False)])
def test_container_ids_follow_runcs_rule(cid, ok):
    from runtime import container
    assert container._valid_id(cid) is ok


# --- a fresh CLI process: what the engine imports lazily is there before the forks -----------
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
def test_a_fresh_cli_run_with_hooks_and_seccomp(tmp_path):
    """Modules imported on first use must be imported before the init pivots into the
    container's root (nothing can be imported after): hooks (subprocess, for startContainer
    after pivot_root) and the seccomp filter's loader (the default spec has a profile)."""
    from test_runtime_root import write_config
    busybox = "/bin/busybox"
    if not os.path.exists(busybox):
        pytest.skip("no static busybox")
    bundle = tmp_path / "bundle"
    (bundle / "rootfs" / "bin").mkdir(parents=True)
    import shutil
    shutil.copy(busybox, bundle / "rootfs/bin/busybox")
    os.link(bundle / "rootfs/bin/busybox", bundle / "rootfs/bin/sh")
    marks = tmp_path / "marks"
    hook = {"path": "/bin/sh", "args": ["sh", "-c", f"echo $0 >> {marks}"]}

    def mutate(c):
        c["hooks"] = {kind: [{**hook, "args": hook["args"] + [kind]}]
                      for kind in ("createRuntime", "poststop")}
        # in the container's root: its own path and file
        c["hooks"]["startContainer"] = [{"path": "/bin/sh",
                                         "args": ["sh", "-c", "echo started > /started"]}]
        c["linux"]["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
            {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]}
    write_config(bundle, ["sh", "-c", "mkdir /tmp/x || echo in; exit 3"], mutate)
    r = subprocess.run([sys.executable, "-IS", "-c",
                        f"import sys; sys.path.insert(0, {REPO!r})\n"
                        "from runtime.cli import main\n"
                        f"sys.exit(main(['--root', {str(tmp_path / 'state')!r}, 'run', "
                        f"'--bundle', {str(bundle)!r}, 'c1']))"],
                       capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stdout) == (3, "in\n"), r.stderr
    assert "mkdir" in r.stderr  # busybox: Operation not permitted
    assert marks.read_text().split() == ["createRuntime", "poststop"]
    assert (bundle / "rootfs" / "started").read_text() == "started\n"
