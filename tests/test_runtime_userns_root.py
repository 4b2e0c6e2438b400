"""Root tests of user namespaces (linux.namespaces "user" + uidMappings/gidMappings) against the
real kernel: root inside is 100000 outside, exec joins the user namespace first, devices are the
host's bound in, a container can join another's user namespace by path, and delete leaves
nothing. Skipped unless running as root."""

import os
import shutil
import signal
import tempfile

import pytest
from test_runtime_exec_root import exec_output, process
from test_runtime_root import _reap, children, read_all, run_bundle, subreaper  # noqa: F401
from test_runtime_terminal_root import read_until

from runtime.container import Engine, Stdio
from runtime.errors import ContainerSetupError, InvalidSpec
from runtime.specgen import default_config

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

BUSYBOX = "/bin/busybox"
APPLETS = ("sh", "echo", "cat", "id", "ls", "touch", "sleep", "stat", "tty", "hostname", "read")
HOST_ID = 100000
MAPPING = [{"containerID": 0, "hostID": HOST_ID, "size": 65536}]
MAP_LINE = "0 100000 65536"  # /proc/<pid>/uid_map, its padding squeezed


@pytest.fixture
def userns_env():
    """A bundle whose rootfs belongs to the mapped root, under directories that other users
    can traverse (inside, root is 100000: the host's 0700 pytest directories are closed to it)."""
    if not os.path.exists(BUSYBOX):
        pytest.skip("no static busybox")
    top = tempfile.mkdtemp(prefix="pyshim-userns-")
    os.chmod(top, 0o755)
    bundle = os.path.join(top, "bundle")
    rootfs = os.path.join(bundle, "rootfs")
    os.makedirs(os.path.join(rootfs, "bin"))
    shutil.copy(BUSYBOX, os.path.join(rootfs, "bin/busybox"))
    for name in APPLETS:
        os.link(os.path.join(rootfs, "bin/busybox"), os.path.join(rootfs, "bin", name))
    for d, _, files in os.walk(rootfs):
        for p in (d, *(os.path.join(d, f) for f in files)):
            os.lchown(p, HOST_ID, HOST_ID)
    engine = Engine(os.path.join(top, "state"))
    yield engine, bundle
    for cid in engine.list():
        c = engine.load(cid)
        c.delete(force=True)
        _reap(c.pid)
    shutil.rmtree(top)


def write_config(bundle, args, mutate=None):
    import json
    c = default_config(args, hostname="userns")
    c["linux"]["namespaces"].append({"type": "user"})
    c["linux"]["uidMappings"] = c["linux"]["gidMappings"] = MAPPING
    if mutate:
        mutate(c)
    with open(os.path.join(bundle, "config.json"), "w") as f:
        json.dump(c, f)


def squeezed(lines: list[str]) -> list[str]:
    return [" ".join(line.split()) for line in lines]


def status_ids(pid: int) -> tuple[str, str]:
    lines = dict(line.split(":", 1) for line in open(f"/proc/{pid}/status").read().splitlines())
    return lines["Uid"].split()[0], lines["Gid"].split()[0]


def test_root_inside_is_the_mapped_id_outside(userns_env):
    engine, bundle = userns_env
    write_config(bundle, ["sh", "-c", "id -u; id -g; cat /proc/self/uid_map /proc/self/gid_map;"
                          " touch /made; echo x > /dev/null && stat -c %t,%T /dev/null;"
                          " hostname; ls /sys/kernel > /dev/null && echo sysfs; read x; exit 5"])
    before = children()
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    try:
        c = engine.create("c1", bundle, Stdio(stdin=in_r, stdout=out_w, stderr=out_w))
    finally:
        os.close(in_r)
        os.close(out_w)
    assert status_ids(c.pid) == (str(HOST_ID), str(HOST_ID))  # already, while created
    assert open(f"/proc/{c.pid}/setgroups").read() == "allow\n"  # a privileged parent: as runc
    c.start()
    shown = read_until(out_r, b"sysfs\n")  # all done but the read
    out, code, _ = exec_output(c, process(["sh", "-c", "id -u; cat /proc/self/uid_map;"
                                                " ls -n /made"]))
    assert code == 0
    assert squeezed(out[:2]) == ["0", MAP_LINE]
    assert out[2].split()[2:4] == ["0", "0"]  # its own file, owned by its root
    assert os.stat(os.path.join(bundle, "rootfs/made")).st_uid == HOST_ID
    os.write(in_w, b"\n")
    os.close(in_w)
    out = squeezed((shown + read_all(out_r).encode()).decode().splitlines())
    assert _reap(c.pid) == 5
    assert out == ["0", "0", MAP_LINE, MAP_LINE, "1,3", "userns", "sysfs"], out
    c.delete()
    assert engine.list() == [] and children() == before
    assert bundle not in open("/proc/self/mountinfo").read()


def test_exec_as_another_user_and_with_a_terminal(userns_env):
    engine, bundle = userns_env
    write_config(bundle, ["sleep", "30"])
    c = engine.create("c1", bundle)
    # into the created container too, whose init is not dumpable before it execs
    assert exec_output(c, process(["id", "-u"]))[:2] == (["0"], 0)
    c.start()
    out, code, _ = exec_output(c, process(["id"], user={"uid": 1000, "gid": 1000,
                                                       "additionalGids": [10]}))
    assert (out, code) == (["uid=1000 gid=1000 groups=10"], 0)
    stdio = Stdio()
    pid = c.exec({"args": ["sh", "-c", "tty; stat -c %u $(tty); id -u"], "cwd": "/",
                  "env": ["PATH=/bin"], "terminal": True}, stdio)
    try:
        shown = read_until(stdio.console_fd, b"\r\n0\r\n0\r\n").decode().split()
        assert shown[0].startswith("/dev/pts/")
        assert _reap(pid) == 0
    finally:
        os.close(stdio.console_fd)
    with pytest.raises(InvalidSpec) as e:  # 70000 is not mapped: refused before any fork
        c.exec({"args": ["id"], "cwd": "/", "user": {"uid": 70000, "gid": 0}}, Stdio())
    assert e.value.field == "process.user.uid"
    c.kill(signal.SIGKILL)
    _reap(c.pid)
    c.delete()


def test_without_a_network_namespace_sysfs_is_the_hosts_read_only(userns_env):
    engine, bundle = userns_env
    write_config(bundle, ["sh", "-c", "ls /sys/kernel >/dev/null && echo listed; touch /sys/x"],
                 lambda c: c["linux"].update(namespaces=[
                     n for n in c["linux"]["namespaces"] if n["type"] != "network"]))
    out, code = run_bundle(engine, bundle)
    assert code == 1
    assert out.startswith("listed\n") and "Read-only file system" in out


def test_joining_another_containers_user_namespace(userns_env):
    engine, bundle = userns_env
    write_config(bundle, ["sleep", "30"])
    first = engine.create("first", bundle)
    first.start()
    path = f"/proc/{first.pid}/ns/user"

    def join(c):
        for n in c["linux"]["namespaces"]:
            if n["type"] == "user":
                n["path"] = path
        del c["linux"]["uidMappings"], c["linux"]["gidMappings"]
    write_config(bundle, ["sh", "-c", "id -u; cat /proc/self/uid_map"], join)
    r, w = os.pipe()
    try:
        second = engine.create("second", bundle, Stdio(stdout=w))
    finally:
        os.close(w)
    assert os.readlink(f"/proc/{second.pid}/ns/user") == os.readlink(path)
    assert status_ids(second.pid) == (str(HOST_ID), str(HOST_ID))
    second.start()
    assert squeezed(read_all(r).splitlines()) == ["0", MAP_LINE]
    assert _reap(second.pid) == 0
    second.delete()
    first.kill(signal.SIGKILL)
    _reap(first.pid)
    first.delete()
    assert engine.list() == []


def test_a_read_only_bind_of_a_nosuid_host_mount(userns_env):
    # The host mount's nosuid/nodev/noexec are locked in the container's user namespace: the
    # ro remount must keep them (runc's retry with the locked flags), else EPERM.
    from runtime.sys.linux import LINUX, MS_NODEV, MS_NOEXEC, MS_NOSUID
    engine, bundle = userns_env
    src = os.path.join(os.path.dirname(bundle), "src")
    os.mkdir(src)
    LINUX.mount("tmpfs", src, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=755")
    try:
        open(os.path.join(src, "file"), "w").write("data\n")
        write_config(bundle, ["sh", "-c", "cat /data/file; touch /data/x"], lambda c: c[
            "mounts"].append({"destination": "/data", "type": "bind", "source": src,
                              "options": ["rbind", "ro"]}))
        out, code = run_bundle(engine, bundle)
        assert code == 1
        assert out.startswith("data\n") and "Read-only file system" in out
    finally:
        LINUX.umount2(src, 0)


# --- idmapped mounts (runtime-spec 1.1/1.2) ----------------------------------------------------
def _host_dir_with_roots_file(top: str) -> str:
    d = os.path.join(top, "data")
    os.makedirs(d)
    with open(os.path.join(d, "f"), "w") as f:
        f.write("x")
    os.chmod(d, 0o755)
    os.chmod(os.path.join(d, "f"), 0o644)
    return d  # both owned by the host's root


def test_idmap_with_the_containers_mappings_shows_roots_files_as_root(userns_env):
    """The Kubernetes user-namespace case: a host directory owned by root, bind-mounted with
    the "idmap" option and no mappings of its own, shows as root's inside a container whose
    root is 100000 outside; the same directory bound plainly shows as the overflow id."""
    engine, bundle = userns_env
    data = _host_dir_with_roots_file(os.path.dirname(bundle))

    def mounts(c):
        c["mounts"] += [{"destination": "/idmapped", "type": "bind", "source": data,
                         "options": ["rbind", "idmap"]},
                        {"destination": "/plain", "type": "bind", "source": data,
                         "options": ["rbind"]}]
    write_config(bundle, ["sh", "-c", "stat -c '%u %g' /idmapped/f /plain/f; "
                                      "touch /idmapped/new && stat -c '%u' /idmapped/new"],
                 mounts)
    out, code = run_bundle(engine, bundle)
    assert (out, code) == ("0 0\n65534 65534\n0\n", 0)
    assert os.stat(os.path.join(data, "new")).st_uid == 0  # root's on disk, like the rest


def test_idmap_with_mappings_of_its_own_in_a_container_without_a_user_namespace(tmp_path):
    """A mount's own uidMappings/gidMappings (containerID 0 -> hostID 1000): root's files show
    as 1000's through it, in a container that has no user namespace at all."""
    if not os.path.exists(BUSYBOX):
        pytest.skip("no static busybox")
    rootfs = tmp_path / "bundle" / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    shutil.copy(BUSYBOX, rootfs / "bin/busybox")
    for name in ("sh", "stat"):
        os.link(rootfs / "bin/busybox", rootfs / "bin" / name)
    data = _host_dir_with_roots_file(str(tmp_path))
    c = default_config(["stat", "-c", "%u %g", "/data/f"], hostname="idmap")
    one = [{"containerID": 0, "hostID": 1000, "size": 1}]
    c["mounts"].append({"destination": "/data", "type": "bind", "source": data,
                        "options": ["bind", "ro"], "uidMappings": one, "gidMappings": one})
    import json
    (tmp_path / "bundle" / "config.json").write_text(json.dumps(c))
    engine = Engine(str(tmp_path / "state"))
    before = children()
    out, code = run_bundle(engine, tmp_path / "bundle")
    assert (out, code) == ("1000 1000\n", 0)
    assert children() == before


def test_an_idmapped_mount_the_kernel_refuses_fails_create_naming_it(userns_env):
    """/proc cannot be idmapped: create fails naming the mount and leaves nothing behind."""
    engine, bundle = userns_env

    def mount(c):
        c["mounts"].append({"destination": "/p", "type": "bind", "source": "/proc",
                            "options": ["rbind", "idmap"]})
    write_config(bundle, ["true"], mount)
    before = children()
    with pytest.raises(ContainerSetupError) as e:
        engine.create("c1", bundle)
    assert e.value.step == "idmapped mount" and e.value.path == "/proc"
    assert "mounts[" in str(e.value)
    assert engine.list() == [] and children() == before
