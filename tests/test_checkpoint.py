"""runtime.checkpoint without root and without criu: the planned `criu dump` and `criu restore`
command lines, the image metadata, the stdio probe, and criu's failures (a fake criu script)."""

import json
import os
import signal
import stat
import time

import pytest

from runtime import checkpoint as ck
from runtime.errors import InvalidSpec, InvalidState
from runtime.mounts import CgroupHierarchy, HostInfo
from runtime.specgen import default_config

BUNDLE = "/b/c1"
ROOTFS = "/b/c1/rootfs"
IMG = "/ckpt/img"
V1 = {"version": 1,
      "paths": {"cpu": "/sys/fs/cgroup/cpu/default/c1",
                "freezer": "/sys/fs/cgroup/freezer/default/c1",
                "memory": "/sys/fs/cgroup/memory/default/c1"},
      "mounts": {"cpu": "/sys/fs/cgroup/cpu", "freezer": "/sys/fs/cgroup/freezer",
                 "memory": "/sys/fs/cgroup/memory"}}
V2 = {"version": 2, "path": "/sys/fs/cgroup/default/c1", "mountpoint": "/sys/fs/cgroup"}
HOSTS_BIND = {"destination": "/etc/hosts", "type": "bind", "source": "/var/lib/hosts",
              "options": ["rbind", "ro"]}


def make_state(config=None, cgroup=None, pid=4242) -> dict:
    config = config or default_config(["sleep", "1000"])
    return {"ociVersion": "1.1.0", "id": "c1", "bundle": BUNDLE, "rootfs": ROOTFS, "pid": pid,
            "pidStartTime": 1, "created": "now", "annotations": config.get("annotations", {}),
            "cgroup": cgroup, "config": config}


def with_mounts(*extra, namespaces=None, **linux):
    config = default_config(["sleep", "1000"])
    config["mounts"] += list(extra)
    if namespaces is not None:
        config["linux"]["namespaces"] = namespaces
    config["linux"].update(linux)
    return config


def opts(**kw):
    kw.setdefault("image_path", IMG)
    return ck.CheckpointOptions(**kw)


def values(argv, flag):
    return [argv[i + 1] for i, a in enumerate(argv) if a == flag]


# --- dump ------------------------------------------------------------------------------------
def test_dump_defaults_as_runc():
    facts = ck.DumpFacts(masked_files=["/proc/kcore"], descriptors=["pipe:[7]", "/f/o", "/f/e"],
                         external_stdio={1: "file[2a:10]", 2: "file[2a:11]"})
    argv = ck.plan_dump(make_state(with_mounts(HOSTS_BIND), V1), opts(), facts)
    assert argv == [
        "criu", "dump", "--tree", "4242", "--images-dir", IMG, "--work-dir", IMG,
        "--log-file", "dump.log", "-v4", "--root", ROOTFS, "--leave-running",
        "--manage-cgroups", "--empty-ns", "net",
        "--freeze-cgroup", "/sys/fs/cgroup/freezer/default/c1",
        "--external", "mnt[/etc/hosts]:/etc/hosts",
        "--external", "mnt[/proc/kcore]:/dev/null",
        "--external", "mnt[/dev/null]:/dev/null", "--external", "mnt[/dev/zero]:/dev/zero",
        "--external", "mnt[/dev/full]:/dev/full", "--external", "mnt[/dev/random]:/dev/random",
        "--external", "mnt[/dev/urandom]:/dev/urandom", "--external", "mnt[/dev/tty]:/dev/tty",
        "--external", "file[2a:10]", "--external", "file[2a:11]"]


def test_dump_exit_drops_leave_running():
    argv = ck.plan_dump(make_state(), opts(exit=True), ck.DumpFacts())
    assert "--leave-running" not in argv
    assert "--leave-running" in ck.plan_dump(make_state(), opts(), ck.DumpFacts())


@pytest.mark.parametrize("field,flag", [("open_tcp", "--tcp-established"),
                                        ("external_unix_sockets", "--ext-unix-sk"),
                                        ("terminal", "--shell-job"),
                                        ("file_locks", "--file-locks")])
def test_behaviour_options_map_to_their_flag_on_dump_and_restore(field, flag):
    on, off = opts(**{field: True}), opts()
    assert flag in ck.plan_dump(make_state(), on, ck.DumpFacts())
    assert flag not in ck.plan_dump(make_state(), off, ck.DumpFacts())
    facts = ck.RestoreFacts(criu_root="/r", pidfile="/p")
    assert flag in ck.plan_restore(make_state(), on, facts)
    assert flag not in ck.plan_restore(make_state(), off, facts)


def test_every_option_at_once():
    argv = ck.plan_dump(make_state(), opts(exit=True, open_tcp=True, external_unix_sockets=True,
                                           terminal=True, file_locks=True,
                                           empty_namespaces=["network"], cgroups_mode="strict"),
                        ck.DumpFacts())
    i = argv.index("--root") + 2
    assert argv[i:] == ["--tcp-established", "--ext-unix-sk", "--shell-job", "--file-locks",
                        "--manage-cgroups=strict", "--empty-ns", "net",
                        "--external", "mnt[/dev/null]:/dev/null",
                        "--external", "mnt[/dev/zero]:/dev/zero",
                        "--external", "mnt[/dev/full]:/dev/full",
                        "--external", "mnt[/dev/random]:/dev/random",
                        "--external", "mnt[/dev/urandom]:/dev/urandom",
                        "--external", "mnt[/dev/tty]:/dev/tty"]


@pytest.mark.parametrize("mode,flag", [("", "--manage-cgroups"), ("soft", "--manage-cgroups=soft"),
                                       ("full", "--manage-cgroups=full"),
                                       ("strict", "--manage-cgroups=strict")])
def test_cgroups_modes(mode, flag):
    argv = ck.plan_dump(make_state(), opts(cgroups_mode=mode), ck.DumpFacts())
    assert [a for a in argv if a.startswith("--manage-cgroups")] == [flag]


def test_bad_cgroups_mode_and_empty_namespace_name_the_option():
    with pytest.raises(InvalidSpec) as e:
        ck.plan_dump(make_state(), opts(cgroups_mode="props"), ck.DumpFacts())
    assert e.value.field == "cgroups_mode" and "props" in str(e.value)
    with pytest.raises(InvalidSpec) as e:
        ck.plan_dump(make_state(), opts(empty_namespaces=["network", "ipc"]), ck.DumpFacts())
    assert e.value.field == "empty_namespaces[1]" and "ipc" in str(e.value)


def test_empty_namespaces_network_is_the_net_runc_always_empties():
    argv = ck.plan_dump(make_state(), opts(empty_namespaces=["network"]), ck.DumpFacts())
    assert values(argv, "--empty-ns") == ["net"]


def test_custom_image_and_work_paths():
    argv = ck.plan_dump(make_state(), opts(image_path="/i", work_path="/w"), ck.DumpFacts())
    assert values(argv, "--images-dir") == ["/i"] and values(argv, "--work-dir") == ["/w"]
    with pytest.raises(InvalidSpec, match="image_path"):
        ck.plan_dump(make_state(), opts(image_path=""), ck.DumpFacts())
    with pytest.raises(InvalidSpec, match="image_path"):
        ck.plan_dump(make_state(), opts(image_path="rel/img"), ck.DumpFacts())
    with pytest.raises(InvalidSpec, match="work_path"):
        ck.plan_dump(make_state(), opts(work_path="rel"), ck.DumpFacts())


def test_joined_network_and_pid_namespaces_are_external():
    ns = [{"type": "pid", "path": "/proc/1/ns/pid"}, {"type": "network", "path": "/run/netns/x"},
          {"type": "mount"}, {"type": "ipc"}]
    facts = ck.DumpFacts(ns_inodes={"/proc/1/ns/pid": 4026531836, "/run/netns/x": 4026532000})
    argv = ck.plan_dump(make_state(with_mounts(namespaces=ns)), opts(), facts)
    assert values(argv, "--external")[:2] == ["net[4026532000]:extRootNetNS",
                                               "pid[4026531836]:extRootPidNS"]
    # a new network namespace is criu's to dump (and runc's empty-ns skips its properties)
    argv = ck.plan_dump(make_state(), opts(), ck.DumpFacts())
    assert not [v for v in values(argv, "--external") if "extRoot" in v]
    with pytest.raises(ck.CheckpointError, match="/run/netns/x"):
        ck.plan_dump(make_state(with_mounts(namespaces=ns)), opts(), ck.DumpFacts())


def test_freeze_cgroup_v1_v2_none():
    assert values(ck.plan_dump(make_state(cgroup=V2), opts(), ck.DumpFacts()),
                  "--freeze-cgroup") == ["/sys/fs/cgroup/default/c1"]
    assert values(ck.plan_dump(make_state(cgroup=V1), opts(), ck.DumpFacts()),
                  "--freeze-cgroup") == ["/sys/fs/cgroup/freezer/default/c1"]
    assert "--freeze-cgroup" not in ck.plan_dump(make_state(cgroup=None), opts(), ck.DumpFacts())


def _v1_host():
    return HostInfo(cgroups=(
        CgroupHierarchy("/sys/fs/cgroup/cpu,cpuacct", "cgroup", "cpu,cpuacct",
                        "/sys/fs/cgroup/cpu,cpuacct/default/c1"),
        CgroupHierarchy("/sys/fs/cgroup/memory", "cgroup", "memory",
                        "/sys/fs/cgroup/memory/default/c1")))


def test_cgroup_v1_hierarchy_binds_are_external_unless_cgroupns():
    config = default_config(["sleep", "1"], cgroup=True)
    argv = ck.plan_dump(make_state(config), opts(), ck.DumpFacts(host=_v1_host()))
    mnts = [v for v in values(argv, "--external") if v.startswith("mnt[/sys")]
    assert mnts == ["mnt[/sys/fs/cgroup/cpu,cpuacct]:/sys/fs/cgroup/cpu,cpuacct",
                    "mnt[/sys/fs/cgroup/memory]:/sys/fs/cgroup/memory"]
    restore = ck.plan_restore(make_state(config), opts(),
                              ck.RestoreFacts("/r", "/p", host=_v1_host()))
    assert [v for v in values(restore, "--external") if v.startswith("mnt[/sys")] == [
        "mnt[/sys/fs/cgroup/cpu,cpuacct]:/sys/fs/cgroup/cpu,cpuacct/default/c1",
        "mnt[/sys/fs/cgroup/memory]:/sys/fs/cgroup/memory/default/c1"]
    config["linux"]["namespaces"].append({"type": "cgroup"})
    argv = ck.plan_dump(make_state(config), opts(), ck.DumpFacts(host=_v1_host()))
    assert not [v for v in values(argv, "--external") if v.startswith("mnt[/sys")]


def test_bind_destination_through_a_symlink_is_resolved():
    facts = ck.DumpFacts(resolved={"/etc/hosts": "/real/hosts"})
    argv = ck.plan_dump(make_state(with_mounts(HOSTS_BIND)), opts(), facts)
    assert "mnt[/real/hosts]:/real/hosts" in values(argv, "--external")


def test_criu_config_file_annotation_and_default():
    exists = {"/etc/criu/runc.conf", "/etc/criu/mine.conf"}.__contains__
    assert ck._criu_config({}, exists) == "/etc/criu/runc.conf"
    assert ck._criu_config({}, lambda p: False) is None
    assert ck._criu_config({"org.criu.config": "/etc/criu/mine.conf"}, exists) == \
        "/etc/criu/mine.conf"
    assert ck._criu_config({"org.criu.config": ""}, exists) is None  # empty: none at all
    argv = ck.plan_dump(make_state(), opts(), ck.DumpFacts(config_file="/etc/criu/mine.conf"))
    assert argv[-2:] == ["--config", "/etc/criu/mine.conf"]


# --- restore ---------------------------------------------------------------------------------
def test_restore_argv():
    ns = [{"type": "pid"}, {"type": "network", "path": "/run/netns/x"}, {"type": "mount"},
          {"type": "ipc", "path": "/proc/9/ns/ipc"}, {"type": "uts"}]
    state = make_state(with_mounts(HOSTS_BIND, namespaces=ns), V1, pid=0)
    facts = ck.RestoreFacts(criu_root="/run/pyshim/default/c1/criu-root",
                            pidfile="/run/pyshim/default/c1/restore.pid",
                            descriptors=["pipe:[7]", "/run/fifo/o", "/run/fifo/e"],
                            external_stdio={1: "file[2a:10]", 2: "file[2a:10]"})
    argv = ck.plan_restore(state, opts(work_path="/w", cgroups_mode="full"), facts)
    assert argv == [
        "criu", "restore", "--images-dir", IMG, "--work-dir", "/w", "--log-file",
        "restore.log", "-v4", "--root", "/run/pyshim/default/c1/criu-root",
        "--restore-detached", "--restore-sibling", "--pidfile",
        "/run/pyshim/default/c1/restore.pid", "--evasive-devices",
        "--manage-cgroups=full", "--empty-ns", "net",
        "--cgroup-root", "cpu:/default/c1", "--cgroup-root", "freezer:/default/c1",
        "--cgroup-root", "memory:/default/c1",
        "--inherit-fd", "fd[5]:extRootNetNS",
        "--join-ns", "ipc:/proc/9/ns/ipc",
        "--external", "mnt[/etc/hosts]:/var/lib/hosts",
        "--external", "mnt[/dev/null]:/dev/null",
        "--external", "mnt[/dev/zero]:/dev/zero", "--external", "mnt[/dev/full]:/dev/full",
        "--external", "mnt[/dev/random]:/dev/random",
        "--external", "mnt[/dev/urandom]:/dev/urandom", "--external", "mnt[/dev/tty]:/dev/tty",
        "--inherit-fd", "fd[3]:pipe:[7]", "--inherit-fd", "fd[4]:file[2a:10]"]


def test_restore_refuses_a_joined_cgroup_namespace():
    state = make_state(with_mounts(namespaces=[{"type": "cgroup", "path": "/proc/1/ns/cgroup"}]))
    with pytest.raises(ck.CheckpointError, match="cgroup namespace"):
        ck.plan_restore(state, opts(), ck.RestoreFacts("/r", "/p"))


def test_restore_cgroup_v2_has_no_cgroup_root():
    argv = ck.plan_restore(make_state(cgroup=V2), opts(), ck.RestoreFacts("/r", "/p"))
    assert "--cgroup-root" not in argv


def test_inherited_stdio_keys():
    # runc's rule for pipes; pyshim's external files; /dev/null and internal paths stay criu's
    assert ck.inherit_keys(["/dev/null", "pipe:[5]", "pipe:[5]"], {}) == {"pipe:[5]": 1}
    assert ck.inherit_keys(["pipe:[4]", "/run/f/o", "/dev/null"], {1: "file[1f:99]"}) == {
        "pipe:[4]": 0, "file[1f:99]": 1}
    assert ck.inherit_keys(["", "socket:[3]", "anon_inode:[eventfd]"], {}) == {}
    spec = ck.spec_mod.parse(with_mounts(namespaces=[{"type": "pid", "path": "/p"},
                                                     {"type": "network", "path": "/n"}]))
    stdio, ns_fds = ck.restore_fd_layout(spec, ["pipe:[4]", "pipe:[5]", "pipe:[6]"], {})
    assert stdio == {"pipe:[4]": (3, 0), "pipe:[5]": (4, 1), "pipe:[6]": (5, 2)}
    assert ns_fds == {"network": 6, "pid": 7}


# --- probes and image metadata ---------------------------------------------------------------
def _sleeper(stdin: int, stdout: int) -> int:
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.dup2(stdin, 0)
            os.dup2(stdout, 1)
            os.write(ready_w, b"x")
            time.sleep(30)
        finally:
            os._exit(0)
    os.close(ready_w)
    os.read(ready_r, 1)
    os.close(ready_r)
    return pid


def test_probe_stdio_reads_descriptors_and_marks_foreign_mounts_external(tmp_path):
    fifo = str(tmp_path / "out")
    os.mkfifo(fifo)
    keep = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    w = os.open(fifo, os.O_WRONLY)
    r, pw = os.pipe()
    pid = _sleeper(r, w)
    try:
        descriptors, external = ck.probe_stdio(pid)
        assert descriptors[0] == f"pipe:[{os.fstat(r).st_ino}]"
        assert descriptors[1] == fifo
        assert 1 not in external  # the FIFO is on a mount of its own mount namespace
        with open(f"/proc/{pid}/fdinfo/1") as f:
            mnt_id = int(next(line for line in f if line.startswith("mnt_id:")).split()[1])
        _, external = ck.probe_stdio(pid, own_mounts=set())  # as if it were a container's
        assert external[1] == f"file[{mnt_id:x}:{os.stat(fifo).st_ino:x}]"
        assert 0 not in external  # a pipe is never a file
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        for fd in (keep, w, r, pw):
            os.close(fd)


class StubContainer:
    def __init__(self, data, status="running"):
        self._data, self._status, self.id = data, status, data["id"]

    def status(self):
        return self._status

    def full_state(self):
        return self._data


def test_prepare_dump_writes_descriptors_config_and_metadata(tmp_path):
    img, work = str(tmp_path / "img"), str(tmp_path / "work")
    data = make_state(with_mounts(HOSTS_BIND))
    facts = ck.DumpFacts(descriptors=["pipe:[1]", "/f/o", "/f/o"], external_stdio={1: "file[a:b]"})
    job = ck.prepare_dump(StubContainer(data), opts(image_path=img, work_path=work, open_tcp=True),
                          facts=facts)
    assert job.argv[:4] == ["criu", "dump", "--tree", "4242"]
    assert job.log_file == os.path.join(work, "dump.log")
    with open(os.path.join(img, "descriptors.json")) as f:
        assert json.load(f) == ["pipe:[1]", "/f/o", "/f/o"]  # runc's format: 3 strings
    with open(os.path.join(img, "config.json")) as f:
        assert json.load(f) == data["config"]
    descriptors, external, saved = ck.read_image(img)
    assert (descriptors, external) == (["pipe:[1]", "/f/o", "/f/o"], {1: "file[a:b]"})
    assert saved.open_tcp and not saved.file_locks and saved.image_path == ""
    assert stat.S_IMODE(os.stat(img).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(os.path.join(img, "descriptors.json")).st_mode) == 0o600


@pytest.mark.parametrize("status", ["created", "stopped"])
def test_only_running_or_paused_containers_are_dumped(tmp_path, status):
    with pytest.raises(InvalidState, match=status):
        ck.prepare_dump(StubContainer(make_state(), status), opts(image_path=str(tmp_path)),
                        facts=ck.DumpFacts())
    ck.prepare_dump(StubContainer(make_state(), "paused"), opts(image_path=str(tmp_path)),
                    facts=ck.DumpFacts())


def test_read_image_of_a_runc_image_and_of_no_image(tmp_path):
    with pytest.raises(ck.CheckpointError, match="descriptors.json"):
        ck.read_image(str(tmp_path))
    (tmp_path / "descriptors.json").write_text('["/dev/null", "pipe:[3]", "pipe:[4]"]')
    assert ck.read_image(str(tmp_path)) == (["/dev/null", "pipe:[3]", "pipe:[4]"], {}, None)


# --- running criu (a fake one) ---------------------------------------------------------------
def fake_criu(tmp_path, body: str) -> str:
    """An executable `criu` in tmp_path/bin running `body` (sh); args are also logged."""
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    path = bindir / "criu"
    path.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/criu.args\n{body}\n')
    path.chmod(0o755)
    return str(path)


def test_check_criu_reports_criu_s_reason(tmp_path):
    bad = fake_criu(tmp_path, 'echo "Error (criu/vdso.c:381): vdso: Unexpected rt vDSO area '
                              'bounds" >&2\necho "Error (criu/crtools.c:260): Could not initialize '
                              'kernel features detection." >&2\nexit 1')
    reason = ck.check_criu(bad)
    assert reason == (f"`{bad} check` failed (exit status 1): Error (criu/vdso.c:381): vdso: "
                      "Unexpected rt vDSO area bounds; Error (criu/crtools.c:260): Could not "
                      "initialize kernel features detection.")
    with pytest.raises(ck.CriuUnavailable) as e:
        ck.require_criu(bad)
    assert e.value.reason == reason
    good = fake_criu(tmp_path, 'echo "Looks good."')
    assert ck.check_criu(good) is None
    assert "not found" in ck.check_criu(str(tmp_path / "no-such-criu"))


def test_checkpoint_runs_criu_and_reports_its_first_error(tmp_path):
    img, work = str(tmp_path / "img"), str(tmp_path / "work")
    criu = fake_criu(tmp_path, 'for a; do case "$prev" in --work-dir) w=$a;; esac; prev=$a; done\n'
                               'echo "(00.01) Error (criu/cr-dump.c:1): boom" >> $w/dump.log\n'
                               'echo "(00.02) Error (criu/cr-dump.c:2): later" >> $w/dump.log\n'
                               'exit 1')
    with pytest.raises(ck.CriuError) as e:
        ck.checkpoint(StubContainer(make_state()), opts(image_path=img, work_path=work),
                      criu=criu, facts=ck.DumpFacts())
    err = e.value
    assert err.status == 1 and "boom" in err.reason and "later" not in err.reason
    assert img in str(err) and os.path.join(work, "dump.log") in str(err)
    assert err.with_log("/b/criu-dump.log").log_file == "/b/criu-dump.log"


def test_checkpoint_success_and_timeout(tmp_path):
    img = str(tmp_path / "img")
    ok = fake_criu(tmp_path, "exit 0")
    job = ck.checkpoint(StubContainer(make_state()), opts(image_path=img), criu=ok,
                        facts=ck.DumpFacts())
    assert job.pid and (tmp_path / "criu.args").read_text().startswith("dump --tree 4242")
    slow = fake_criu(tmp_path, "exec sleep 30")
    t0 = time.monotonic()
    with pytest.raises(ck.CriuError, match="did not finish within 0.2s"):
        ck.checkpoint(StubContainer(make_state()), opts(image_path=img), criu=slow,
                      facts=ck.DumpFacts(), timeout=0.2)
    assert time.monotonic() - t0 < 5


def test_criu_that_cannot_be_executed_is_a_criu_error(tmp_path):
    with pytest.raises(ck.CriuError, match="cannot run"):
        ck.checkpoint(StubContainer(make_state()), opts(image_path=str(tmp_path / "img")),
                      criu=str(tmp_path / "missing"), facts=ck.DumpFacts())
