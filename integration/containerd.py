"""A private containerd for tests, the demo and benchmarks.

    with PrivateContainerd() as c:
        c.import_image("busybox.tar")
        print(c.ctr("run", "--rm", IMAGE, "x", "echo", "hi").stdout)

Everything lives in one temp dir (config, root, state, sockets, log). stop() leaves
nothing behind: it removes remaining tasks and containers through ctr, stops containerd
by its PID, kills the shims (and their container processes) that belong to this instance
only (found in /proc by `-address <this socket>` in their command line), unmounts what is
still mounted under its dirs, removes leftover shim sockets and the temp dir.

With cri=True the CRI plugin runs too (containerd namespace k8s.io), as a node's would for
kubelet, with everything private to this instance: both runtime handlers (`runc` and `pyshim`),
restrict_oom_score_adj (this host lacks CAP_SYS_RESOURCE), the locally built pause image
(hack/pause.c, hack/mkimage.py) as sandbox_image, imported into k8s.io, a CNI config of its own
(ptp + host-local IPAM on a free 10.88.N.0/24, N = 0 first; plugins from Debian's
containernetworking-plugins in /usr/lib/cni) with a blackhole route for that subnet while it
runs, and the streaming server on 127.0.0.1. stop() then also removes every pod through CRI,
any network namespace of its sandboxes left behind, and the route (only if it added it).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import hashlib
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import json
import socket
import time
from typing import Iterable, Sequence

RUNC_RUNTIME = "io.containerd.runc.v2"
PYSHIM_RUNTIME = "io.containerd.pyshim.v2"
PYSHIM_BINARY = "containerd-shim-pyshim-v2"
BUSYBOX_IMAGE = "docker.io/pyshim/busybox:latest"  # what hack/mkimage.py builds
SHIM_SOCKET_DIR = "/run/containerd/s"  # fixed in containerd 1.6 (defaults.DefaultStateDir + "/s")
RUNC_STATE_ROOT = "/run/containerd/runc"  # the runc shim's default runc --root (+ /<namespace>)
CTR_FIFO_DIR = "/run/containerd/fifo"  # ctr's default --fifo-dir: <dir>/<random>/<id>-std{in,out,err}
TASK_DIR = "io.containerd.runtime.v2.task"  # the v2 runtime's bundles under `state`

MNT_DETACH = 2
FORKSERVER_DIR = "/run/pyshim/forkserver"  # shim/forkserver.py RUN_DIR

CRI_PLUGIN = "io.containerd.grpc.v1.cri"
CRI_NAMESPACE = "k8s.io"
CRI_HANDLERS = {"runc": RUNC_RUNTIME, "pyshim": PYSHIM_RUNTIME}  # runtime_handler -> runtime_type
PAUSE_IMAGE = "docker.io/pyshim/pause:1.0"  # hack/mkimage.py --pause (PAUSE_NAME)
CNI_BIN_DIR = "/usr/lib/cni"  # Debian's containernetworking-plugins
CNI_SUBNETS = [f"10.88.{n}.0/24" for n in range(256)]  # tried in order; host-facts: 10.88.0.0/24
CNI_LOCK_DIR = "/run/pyshim/cri-subnets"  # one flock per subnet in use by a live instance
NETNS_DIR = "/var/run/netns"  # where containerd 1.6's CRI pins pod network namespaces
CNI_CACHE_DIR = "/var/lib/cni/results"  # libcni's default cache (ADD results until DEL)


def _sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_mkimage():
    """hack/mkimage.py as a module (build_image, ExtraFile, ...)."""
    name = "pyshim_hack_mkimage"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "hack", "mkimage.py"))
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def build_busybox_image(out: str, extra_files=()) -> str:
    """Write the test image's OCI archive (BUSYBOX_IMAGE) to `out`; extra_files: a list of
    mkimage.ExtraFile to add to the rootfs. Returns the manifest digest."""
    return load_mkimage().build_image(out, extra_files, name=BUSYBOX_IMAGE)


class ContainerdError(RuntimeError):
    pass


def _libc():
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _unescape_mountinfo(s: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo
    out, i = [], 0
    while i < len(s):
        if s[i] == "\\" and i + 4 <= len(s) and s[i + 1:i + 4].isdigit():
            out.append(chr(int(s[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(s[i])
            i += 1
    return "".join(out)


def mountpoints() -> list[str]:
    """Mount points of this mount namespace, in mount order."""
    with open("/proc/self/mountinfo") as f:
        return [_unescape_mountinfo(line.split()[4]) for line in f if line.strip()]


def _under(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


def _cmdline(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def _ppid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    # pid (comm) state ppid ...; comm may contain spaces and parentheses
    return int(stat.rsplit(")", 1)[1].split()[1])


def _pids() -> list[int]:
    return [int(d) for d in os.listdir("/proc") if d.isdigit()]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _namespace_cgroups() -> set[str]:
    """The top-level cgroup directories of every hierarchy (v1 and v2)."""
    import glob
    return {d for d in glob.glob("/sys/fs/cgroup/*/*/") + glob.glob("/sys/fs/cgroup/*/")
            if os.path.isfile(os.path.join(d, "cgroup.procs"))}


def _remove_new_namespace_cgroups(before: set[str], namespaces: set[str]) -> list[str]:
    """A container without a cgroupsPath of its own gets /<containerd namespace>/<id>; the
    shims (runc's too) remove only <id> when it goes. rmdir the top-level cgroups named after
    one of our `namespaces` that did not exist when this containerd started and are empty now
    (anything still in one is a leak the leak checks name); notes for those that could not go."""
    notes = []
    for d in sorted(_namespace_cgroups() - before):
        if os.path.basename(d.rstrip("/")) not in namespaces:
            continue
        try:
            os.rmdir(d)
        except OSError as e:
            notes.append(f"cgroup {d}: {e.strerror}")
    return notes


class PrivateContainerd:
    """A containerd of its own, under a temp dir.

    cri: enable the CRI plugin (disabled by default: it wants CNI and more); see the module
        docstring. pause_tar: the sandbox image's archive (default: built from hack/pause.c);
        pod_subnet: the CNI subnet (default: the first free one of CNI_SUBNETS).
        cri_runtimes: more CRI handlers, {name: {"runtime_type": T, "options": {K: V}}}, e.g.
        {"pyshim-ns": {"runtime_type": PYSHIM_RUNTIME, "options": {"ConfigPath": FILE}}}.
    namespace: the containerd namespace ctr() uses.
    shims: {binary name: path} linked into a private bin dir put first on containerd's
        PATH, e.g. {"containerd-shim-pyshim-v2": "<repo>/.venv/bin/containerd-shim-pyshim-v2"}.
    extra_path: more dirs put first on containerd's PATH.
    log_level: containerd's log level (shim logs are forwarded into the same log).
    """

    def __init__(self, *, cri: bool = False, namespace: str = "default",
                 shims: dict[str, str] | None = None, extra_path: Sequence[str] = (),
                 log_level: str = "debug", start_timeout: float = 30.0,
                 containerd: str = "containerd", ctr_binary: str = "ctr", start: bool = True,
                 pause_tar: str | None = None, pod_subnet: str | None = None,
                 cni_bin_dir: str = CNI_BIN_DIR, cri_runtimes: dict[str, dict] | None = None):
        self.cri = cri
        self.cri_runtimes = dict(cri_runtimes or {})
        self.pause_tar = pause_tar
        self.pod_subnet = pod_subnet
        self.cni_bin_dir = cni_bin_dir
        self.stream_port: int | None = None
        self._subnet_lock: int | None = None
        self._route_added = False
        self._netns_seen: set[str] = set()
        self.namespace = namespace
        self.shims = dict(shims or {})
        self.extra_path = list(extra_path)
        self.log_level = log_level
        self.start_timeout = start_timeout
        self.containerd_binary = containerd
        self.ctr_binary = ctr_binary
        self.proc: subprocess.Popen | None = None
        self.dir: str | None = None
        self._log_file = None
        if start:
            self.start()

    # ---- paths -------------------------------------------------------------------------
    @property
    def root(self) -> str:
        return os.path.join(self.dir, "root")

    @property
    def state(self) -> str:
        return os.path.join(self.dir, "state")

    @property
    def address(self) -> str:
        return os.path.join(self.dir, "c.sock")

    @property
    def ttrpc_address(self) -> str:
        return os.path.join(self.dir, "c.sock.ttrpc")

    @property
    def config_path(self) -> str:
        return os.path.join(self.dir, "config.toml")

    @property
    def log_path(self) -> str:
        return os.path.join(self.dir, "containerd.log")

    def shim_socket_path(self, namespace: str | None, id: str) -> str:
        """Where containerd 1.6 puts the shim socket of container `id` (shim.SocketAddress)."""
        ns = namespace or self.namespace
        h = hashlib.sha256(f"{self.address}/{ns}/{id}".encode()).hexdigest()
        return os.path.join(SHIM_SOCKET_DIR, h)

    def bundle_path(self, id: str, namespace: str | None = None) -> str:
        return os.path.join(self.state, TASK_DIR, namespace or self.namespace, id)

    @property
    def cni_conf_dir(self) -> str:
        return os.path.join(self.dir, "cni", "net.d")

    @property
    def cni_network_name(self) -> str:
        """The CNI network's name: unique to this instance (libcni's cache files carry it)."""
        return "pyshim-" + os.path.basename(self.dir)

    # ---- lifecycle ---------------------------------------------------------------------
    def config_toml(self) -> str:
        q = lambda s: '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'  # noqa: E731
        lines = [
            "version = 2",
            f"root = {q(self.root)}",
            f"state = {q(self.state)}",
            "oom_score = 0",
        ]
        if not self.cri:
            lines.append(f'disabled_plugins = ["{CRI_PLUGIN}"]')
        lines += [
            "",
            "[grpc]",
            f"  address = {q(self.address)}",
            "",
            "[ttrpc]",
            f"  address = {q(self.ttrpc_address)}",
            "",
            "[debug]",
            f"  level = {q(self.log_level)}",
            "",
        ]
        if self.cri:
            lines += [
                f'[plugins."{CRI_PLUGIN}"]',
                f"  sandbox_image = {q(PAUSE_IMAGE)}",
                "  restrict_oom_score_adj = true  # no CAP_SYS_RESOURCE on this host",
                '  stream_server_address = "127.0.0.1"',
                f'  stream_server_port = "{self.stream_port}"',
                "  enable_tls_streaming = false",
                "  disable_apparmor = true",
                "  enable_selinux = false",
                "",
                f'[plugins."{CRI_PLUGIN}".containerd]',
                '  default_runtime_name = "runc"',
                '  snapshotter = "overlayfs"',
                "",
                f'[plugins."{CRI_PLUGIN}".cni]',
                f"  bin_dir = {q(self.cni_bin_dir)}",
                f"  conf_dir = {q(self.cni_conf_dir)}",
                "  max_conf_num = 1",
                "",
            ]
        runtimes = {h: {"runtime_type": t} for h, t in CRI_HANDLERS.items()}
        runtimes.update(self.cri_runtimes)
        for handler, rt in runtimes.items():
            lines += [f'[plugins."{CRI_PLUGIN}".containerd.runtimes.{handler}]',
                      f"  runtime_type = {q(rt['runtime_type'])}", ""]
            if rt.get("options"):
                lines.append(f'[plugins."{CRI_PLUGIN}".containerd.runtimes.{handler}.options]')
                lines += [f"  {k} = {q(str(v))}" for k, v in rt["options"].items()] + [""]
        return "\n".join(lines)

    def start(self) -> None:
        if self.proc is not None:
            raise ContainerdError("already started")
        if shutil.which(self.containerd_binary) is None:
            raise ContainerdError(f"{self.containerd_binary} not found on PATH")
        # Short: the grpc socket path must fit in sun_path (108 bytes).
        self.dir = tempfile.mkdtemp(prefix="pyctd-", dir="/tmp")
        self._ns_cgroups_before = _namespace_cgroups()
        try:
            os.chmod(self.dir, 0o711)
            os.makedirs(self.root)
            os.makedirs(self.state)
            if self.cri:
                self._cri_prepare()
            with open(self.config_path, "w") as f:
                f.write(self.config_toml())
            env = dict(os.environ)
            path = list(self.extra_path)
            if self.shims:
                bindir = os.path.join(self.dir, "bin")
                os.makedirs(bindir)
                for name, target in self.shims.items():
                    os.symlink(os.path.abspath(target), os.path.join(bindir, name))
                path.insert(0, bindir)
            if path:
                env["PATH"] = os.pathsep.join(path + [env.get("PATH", os.defpath)])
            for k in ("CONTAINERD_ADDRESS", "CONTAINERD_NAMESPACE"):
                env.pop(k, None)
            self._env = env
            self._spawn()
            if self.cri:
                self._cri_images()
        except BaseException:
            self.stop()
            raise

    def _spawn(self) -> None:
        if getattr(self, "_log_file", None) is None:
            self._log_file = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [self.containerd_binary, "--config", self.config_path],
            stdin=subprocess.DEVNULL, stdout=self._log_file, stderr=subprocess.STDOUT,
            env=self._env, start_new_session=True)
        self._wait_ready()

    def restart(self, timeout: float = 30.0) -> None:
        """Stop containerd alone (its shims and containers keep running) and start it again
        on the same root, state and sockets: what a containerd upgrade or crash looks like."""
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout)
        self._spawn()

    def shim_pid_of(self, container_id: str) -> int | None:
        """The shim serving container_id: pyshim records it in the bundle's shim.pid (its
        daemons may carry the fork server's command line); the runc shim has `-id ID`."""
        try:
            with open(os.path.join(self.bundle_path(container_id), "shim.pid")) as f:
                return int(f.read())
        except (OSError, ValueError):
            pass
        for pid in self.shim_processes():
            argv = _cmdline(pid) or []
            if any(a == "-id" and i + 1 < len(argv) and argv[i + 1] == container_id
                   for i, a in enumerate(argv)):
                return pid
        return None

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        last = ""
        while True:
            if self.proc.poll() is not None:
                raise ContainerdError(
                    f"containerd exited with {self.proc.returncode} while starting; "
                    f"log tail ({self.log_path}):\n{self.log_tail()}")
            if os.path.exists(self.address):
                try:
                    r = self.ctr("version", timeout=5)
                    if r.returncode == 0:
                        return
                    last = r.stderr.strip()
                except subprocess.TimeoutExpired:
                    last = "ctr version timed out"
            if time.monotonic() > deadline:
                raise ContainerdError(
                    f"containerd did not answer on {self.address} within {self.start_timeout}s "
                    f"({last}); log tail:\n{self.log_tail()}")
            time.sleep(0.1)

    def __enter__(self) -> "PrivateContainerd":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def log_tail(self, lines: int = 40) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 200_000))
                data = f.read().decode(errors="replace")
        except (OSError, TypeError):
            return "(no log)"
        return "\n".join(data.splitlines()[-lines:])

    # ---- CRI ---------------------------------------------------------------------------
    def _cri_prepare(self) -> None:
        """Before containerd starts: the stream port, a subnet (locked), its blackhole route,
        the CNI config."""
        missing = [p for p in ("ptp", "host-local", "loopback")
                   if not os.access(os.path.join(self.cni_bin_dir, p), os.X_OK)]
        if missing:
            raise ContainerdError(f"CNI plugins {missing} missing in {self.cni_bin_dir} "
                                  "(apt-get install containernetworking-plugins)")
        with socket.socket() as s:  # a free port; the stream server binds it a moment later
            s.bind(("127.0.0.1", 0))
            self.stream_port = s.getsockname()[1]
        self.pod_subnet = self._lock_subnet(self.pod_subnet)
        r = subprocess.run(["ip", "route", "add", "blackhole", self.pod_subnet],
                           capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            raise ContainerdError(f"ip route add blackhole {self.pod_subnet}: {r.stderr.strip()}")
        self._route_added = True
        os.makedirs(self.cni_conf_dir)
        conf = {
            "cniVersion": "1.0.0",
            "name": self.cni_network_name,
            "plugins": [{
                "type": "ptp",
                "ipMasq": False,
                "ipam": {"type": "host-local", "subnet": self.pod_subnet, "routes": [],
                         "dataDir": os.path.join(self.dir, "cni", "ipam")},
            }],
        }
        with open(os.path.join(self.cni_conf_dir, "10-pyshim.conflist"), "w") as f:
            json.dump(conf, f, indent=2)

    def _lock_subnet(self, want: str | None) -> str:
        """Hold the flock of a subnet that no live instance uses and no host route falls in."""
        os.makedirs(CNI_LOCK_DIR, exist_ok=True)
        for subnet in ([want] if want else CNI_SUBNETS):
            fd = os.open(os.path.join(CNI_LOCK_DIR, subnet.replace("/", "_") + ".lock"),
                         os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                os.close(fd)
                if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    continue
                raise
            routes = subprocess.run(["ip", "-4", "route", "show", "root", subnet],
                                    capture_output=True, text=True, timeout=30).stdout.strip()
            if routes:  # someone's routes (not ours: we hold the lock) in this subnet
                os.close(fd)
                continue
            self._subnet_lock = fd
            return subnet
        raise ContainerdError(f"no free pod subnet ({want or 'any of 10.88.N.0/24'}): all locked "
                              "by live instances or routed on this host")

    def _cri_images(self) -> None:
        """After containerd is up: the pause image into k8s.io (built unless given)."""
        tar = self.pause_tar
        if tar is None:
            tar = os.path.join(self.dir, "pause.tar")
            load_mkimage().build_pause_image(tar, name=PAUSE_IMAGE)
        self.import_image(tar, namespace=CRI_NAMESPACE)

    def cri_client(self, timeout: float = 30.0):
        """An integration.cri.CriClient on this containerd (close it, or use it as a context)."""
        from integration.cri import CriClient
        return CriClient(self.address, timeout=timeout)

    def sandbox_netns(self) -> dict[str, str]:
        """{sandbox container id: its network namespace path} for the CRI sandboxes containerd
        has now (from their specs); remembered, so stop() can remove any left behind."""
        out = {}
        r = self.ctr("containers", "ls", "-q", timeout=30, namespace=CRI_NAMESPACE)
        for cid in r.stdout.split() if r.returncode == 0 else []:
            info = self.ctr("containers", "info", cid, timeout=30, namespace=CRI_NAMESPACE)
            if info.returncode != 0:
                continue
            try:
                spec = json.loads(info.stdout).get("Spec") or {}
            except ValueError:
                continue
            ann = spec.get("annotations") or {}
            if ann.get("io.kubernetes.cri.container-type") != "sandbox":
                continue
            for ns in (spec.get("linux") or {}).get("namespaces") or []:
                if ns.get("type") == "network" and ns.get("path", "").startswith(NETNS_DIR + "/"):
                    out[cid] = ns["path"]
        self._netns_seen.update(out.values())
        return out

    def cni_cache_files(self) -> list[str]:
        """libcni's cached ADD results for this instance's network (gone after each DEL)."""
        try:
            names = os.listdir(CNI_CACHE_DIR)
        except OSError:
            return []
        return sorted(os.path.join(CNI_CACHE_DIR, n) for n in names
                      if n.startswith(self.cni_network_name + "-"))

    def _cri_remove_all(self) -> list[str]:
        notes = []
        try:
            self.sandbox_netns()
            with self.cri_client(timeout=30) as cri:
                notes += cri.remove_all(timeout=120)
        except Exception as e:  # noqa: BLE001 - teardown goes on whatever happened
            notes.append(f"CRI cleanup failed: {e!r}")
        return notes

    def _cri_release(self) -> list[str]:
        """After containerd is gone: network namespaces of our sandboxes, libcni cache files,
        the route we added, the subnet lock."""
        notes = []
        for path in sorted(self._netns_seen):
            if os.path.exists(path):
                if path in mountpoints():
                    notes.append(f"{_umount(path) or 'could not unmount'} netns {path}")
                try:
                    os.unlink(path)
                    notes.append(f"removed netns {path}")
                except OSError:
                    pass
        for p in self.cni_cache_files():
            os.unlink(p)
            notes.append(f"removed CNI cache {p}")
        if self._route_added:
            r = subprocess.run(["ip", "route", "del", "blackhole", self.pod_subnet],
                               capture_output=True, text=True, timeout=30)
            if r.returncode != 0:
                notes.append(f"could not remove the blackhole route {self.pod_subnet}: {r.stderr}")
            self._route_added = False
        if self._subnet_lock is not None:
            os.close(self._subnet_lock)
            self._subnet_lock = None
        return notes

    # ---- ctr ---------------------------------------------------------------------------
    def ctr_argv(self, *args: str, namespace: str | None = None) -> list[str]:
        """The command line of `ctr ARGS` against this containerd (for Popen)."""
        return [self.ctr_binary, "--address", self.address,
                "--namespace", namespace or self.namespace, *args]

    def ctr(self, *args: str, input: str | bytes | None = None, timeout: float = 60,
            check: bool = False, namespace: str | None = None) -> subprocess.CompletedProcess:
        """Run `ctr --address SOCK --namespace NS ARGS...`; text output unless input is bytes.

        A hang raises subprocess.TimeoutExpired (ctr itself is killed)."""
        cmd = [self.ctr_binary, "--address", self.address,
               "--namespace", namespace or self.namespace, *args]
        text = not isinstance(input, bytes)
        r = subprocess.run(cmd, input=input, capture_output=True, timeout=timeout, text=text,
                           stdin=subprocess.DEVNULL if input is None else None)
        if check and r.returncode != 0:
            raise ContainerdError(f"{' '.join(cmd)} exited {r.returncode}: {r.stderr!s}")
        return r

    def import_image(self, tar: str, timeout: float = 180, namespace: str | None = None) -> str:
        """`ctr images import TAR` (into `namespace`, default ctr()'s; CRI_NAMESPACE for CRI)."""
        r = self.ctr("images", "import", tar, timeout=timeout, namespace=namespace)
        if r.returncode != 0:
            raise ContainerdError(f"ctr images import {tar} failed ({r.returncode}): {r.stderr}"
                                  f"\nlog tail:\n{self.log_tail()}")
        return r.stdout

    def tasks(self) -> dict[str, tuple[int, str]]:
        """{task id: (pid, status)} from `ctr tasks ls`."""
        r = self.ctr("tasks", "ls", timeout=30, check=True)
        out = {}
        for line in r.stdout.splitlines()[1:]:
            f = line.split()
            if len(f) >= 3:
                out[f[0]] = (int(f[1]), f[2])
        return out

    def wait_task_status(self, id: str, statuses: Iterable[str] | str, timeout: float = 20,
                         proc: subprocess.Popen | None = None) -> tuple[int, str]:
        """Poll `ctr tasks ls` until task `id` has one of `statuses`; return (pid, status).
        Raises ContainerdError naming the last status seen after `timeout`, or as soon as
        `proc` (e.g. an attached `ctr run` that should create the task) has exited."""
        want = {statuses} if isinstance(statuses, str) else set(statuses)
        deadline = time.monotonic() + timeout
        seen = None
        while True:
            seen = self.tasks().get(id)
            if seen is not None and seen[1] in want:
                return seen
            if proc is not None and proc.poll() is not None:
                out, err = proc.communicate()
                raise ContainerdError(f"{proc.args} exited {proc.returncode} while waiting for task "
                                      f"{id} to be {sorted(want)} (last seen {seen}): "
                                      f"stdout={out!r} stderr={err!r}")
            if time.monotonic() > deadline:
                raise ContainerdError(f"task {id} not in {sorted(want)} after {timeout}s: {seen}")
            time.sleep(0.05)

    def run_with_stdin(self, run_args: Sequence[str], id: str, data: str, timeout: float = 60
                       ) -> subprocess.CompletedProcess:
        """`ctr run [run_args...]` (run_args end with IMAGE ID [CMD...]) with `data` on stdin.

        ctr 1.6 closes the container's stdin when its own stdin hits EOF, but only once the
        task exists (its stdinCloser is set after NewTask): an EOF seen earlier is lost and
        the container never sees it. So feed stdin only once the task is RUNNING."""
        cmd = [self.ctr_binary, "--address", self.address, "--namespace", self.namespace,
               "run", *run_args]
        p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + timeout
            while p.poll() is None and time.monotonic() < deadline:
                t = self.tasks().get(id)  # polled: ctr's own output says nothing before the end
                if t is not None and t[1] == "RUNNING":
                    break
                time.sleep(0.02)
            out, err = p.communicate(data, timeout=max(1.0, deadline - time.monotonic()))
        except BaseException:
            p.kill()
            p.wait()
            raise
        return subprocess.CompletedProcess(cmd, p.returncode, out, err)

    def reap(self, ids: Iterable[str], namespace: str | None = None) -> list[str]:
        """Force-remove containers `ids` (a failed test's leftovers): their tasks and containers
        through ctr, then any of their shims still alive, mounts and shim sockets."""
        ns = namespace or self.namespace
        ids = list(ids)
        notes = []
        tasks = self.ctr("tasks", "ls", "-q", timeout=30, namespace=ns).stdout.split()
        ctrs = self.ctr("containers", "ls", "-q", timeout=30, namespace=ns).stdout.split()
        for i in ids:
            if i in tasks:
                notes.append(f"removed task {i}")
                self.ctr("tasks", "kill", "-a", "-s", "SIGKILL", i, timeout=30, namespace=ns)
                self.ctr("tasks", "delete", "-f", i, timeout=30, namespace=ns)
            if i in ctrs:
                notes.append(f"removed container {i}")
                self.ctr("containers", "rm", i, timeout=30, namespace=ns)
        shims = [p for p in self.shim_processes()
                 if any(self._has_arg(_cmdline(p) or [], "-id", i) for i in ids)]
        notes += self._kill_pids(shims, 10)
        for mp in sorted(self.leftover_mounts(ids), key=lambda m: m.count("/"), reverse=True):
            notes.append(f"{_umount(mp) or 'could not unmount'} {mp}")
        for sock in self.leftover_sockets(ids, ns):
            notes.append(f"removed shim socket {sock}")
            os.unlink(sock)
        for i in ids:
            notes += _remove_ctr_fifos(i)
        return notes

    @staticmethod
    def _has_arg(argv: list[str], flag: str, value: str) -> bool:
        return any(a == flag and i + 1 < len(argv) and argv[i + 1] == value
                   for i, a in enumerate(argv)) or f"{flag}={value}" in argv

    def task_ids(self) -> list[str]:
        r = self.ctr("tasks", "ls", "-q", timeout=30)
        return r.stdout.split() if r.returncode == 0 else []

    def container_ids(self) -> list[str]:
        r = self.ctr("containers", "ls", "-q", timeout=30)
        return r.stdout.split() if r.returncode == 0 else []

    # ---- leak checks -------------------------------------------------------------------
    def _is_ours(self, argv: list[str]) -> bool:
        a = self.address
        for i, arg in enumerate(argv):
            if arg in ("-address", "--address") and i + 1 < len(argv) and argv[i + 1] == a:
                # ctr runs as `ctr --address SOCK`: not a shim. Shims get `-address`.
                if arg == "--address" and os.path.basename(argv[0]) == "ctr":
                    continue
                return True
            if arg in (f"-address={a}", f"--address={a}"):
                return True
        return False

    def forkserver_pid(self) -> int | None:
        """The pyshim fork server of this containerd, if one runs (see shim/forkserver.py).
        Its command line carries `-address SOCK` like a shim's, and so do the daemons it forks."""
        try:
            with open(os.path.join(FORKSERVER_DIR,
                                   _sha256_hex(os.path.normpath(self.address))[:24] + ".pid")) as f:
                pid = int(f.read())
        except (OSError, ValueError):
            return None
        return pid if _alive(pid) and self._is_ours(_cmdline(pid) or []) else None

    def shim_processes(self) -> list[int]:
        """PIDs of live shim processes started by this containerd (any runtime); the pyshim
        fork server is not one (it stays between tests; stop() ends it)."""
        if self.dir is None:
            return []
        me = os.getpid()
        forkserver = self.forkserver_pid()
        out = []
        for pid in _pids():
            if pid in (me, forkserver):
                continue
            argv = _cmdline(pid)
            if argv and self._is_ours(argv) and _alive(pid):
                out.append(pid)
        return sorted(out)

    def leftover_mounts(self, container_ids: Iterable[str] | None = None) -> list[str]:
        """Mount points under this instance's root/state dirs; only those whose path has
        a component equal to one of container_ids, if given."""
        if self.dir is None:
            return []
        tops = [os.path.realpath(self.dir)]
        ids = set(container_ids) if container_ids is not None else None
        out = []
        for mp in mountpoints():
            if not any(_under(mp, t) for t in tops):
                continue
            if ids is not None and not ids.intersection(mp.split("/")):
                continue
            out.append(mp)
        return out

    def leftover_sockets(self, ids: Iterable[str], namespace: str | None = None) -> list[str]:
        return [p for p in (self.shim_socket_path(namespace, i) for i in ids) if os.path.exists(p)]

    # ---- teardown ----------------------------------------------------------------------
    def stop(self, timeout: float = 10.0) -> list[str]:
        """Tear everything down; return a list of what had to be cleaned forcibly."""
        notes: list[str] = []
        if self.dir is None:
            return notes
        # 0. CRI: pods go through CRI (network teardown, netns, sandbox dirs).
        if self.cri and self.proc is not None and self.proc.poll() is None:
            notes += self._cri_remove_all()
        # 1. Remove tasks and containers through containerd while it still runs.
        namespaces = {self.namespace}
        if self.proc is not None and self.proc.poll() is None:
            try:
                for ns in self._namespaces():
                    namespaces.add(ns)
                    notes += self._remove_all(ns)
            except (subprocess.TimeoutExpired, OSError) as e:
                notes.append(f"ctr cleanup failed: {e!r}")
        # 2. Stop containerd by its PID.
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    notes.append("containerd ignored SIGTERM; SIGKILL")
                    self.proc.kill()
                    self.proc.wait()
            self.proc = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        # 3. Kill this instance's shims and the container processes under them.
        notes += self._kill_shims(timeout)
        # 4. Runtime leftovers keyed by the bundles still in state (sockets, runc state, cgroups).
        notes += self._clean_bundles()
        # 5. Unmount what is still mounted under our dirs, deepest first.
        notes += self._unmount_all()
        # 6. The namespace-named parent cgroups our containers made (/default, /k8s.io...).
        notes += _remove_new_namespace_cgroups(self._ns_cgroups_before, namespaces)
        if self.cri:
            notes += self._cri_release()
        left = self.leftover_mounts()
        if left:
            # Never rmtree through a mount.
            raise ContainerdError(f"could not unmount {left}; leaving {self.dir} in place")
        shutil.rmtree(self.dir, ignore_errors=True)
        if os.path.exists(self.dir):
            notes.append(f"could not remove {self.dir} entirely")
        self.dir = None
        return notes

    def _namespaces(self) -> list[str]:
        r = self.ctr("namespaces", "ls", "-q", timeout=30)
        names = r.stdout.split() if r.returncode == 0 else []
        return sorted(set(names) | {self.namespace})

    def _remove_all(self, ns: str) -> list[str]:
        notes = []
        r = self.ctr("tasks", "ls", "-q", timeout=30, namespace=ns)
        for tid in (r.stdout.split() if r.returncode == 0 else []):
            notes.append(f"removed task {ns}/{tid}")
            self.ctr("tasks", "kill", "-a", "-s", "SIGKILL", tid, timeout=30, namespace=ns)
            self.ctr("tasks", "delete", "-f", tid, timeout=30, namespace=ns)
        r = self.ctr("containers", "ls", "-q", timeout=30, namespace=ns)
        for cid in (r.stdout.split() if r.returncode == 0 else []):
            notes.append(f"removed container {ns}/{cid}")
            self.ctr("containers", "rm", cid, timeout=30, namespace=ns)
        return notes

    def _kill_shims(self, timeout: float) -> list[str]:
        notes = self._kill_pids(self.shim_processes(), timeout)
        forkserver = self.forkserver_pid()
        if forkserver:  # it would exit by itself once containerd's socket is gone, within 5 s
            _kill(forkserver, signal.SIGTERM)
            notes.append(f"stopped the pyshim fork server {forkserver}")
        return notes

    @staticmethod
    def _kill_pids(shims: list[int], timeout: float) -> list[str]:
        notes = []
        if not shims:
            return notes
        # The container's init is a child of its shim: kill it first (in a pid namespace
        # its death takes the rest of the container with it), then the shim.
        children = [p for p in _pids() if _ppid(p) in shims]
        for pid in children:
            notes.append(f"killed container process {pid}")
            _kill(pid, signal.SIGKILL)
        for pid in shims:
            notes.append(f"killed shim {pid}: {' '.join(_cmdline(pid) or [])}")
            _kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(_alive(p) for p in shims + children):
            time.sleep(0.05)
        return notes

    def _clean_bundles(self) -> list[str]:
        notes = []
        base = os.path.join(self.state, TASK_DIR)
        if not os.path.isdir(base):
            return notes
        for ns in os.listdir(base):
            for cid in os.listdir(os.path.join(base, ns)):
                sock = self.shim_socket_path(ns, cid)
                for p in (sock, sock + ".sock"):
                    if os.path.exists(p):
                        notes.append(f"removed shim socket {p}")
                        os.unlink(p)
                notes += _remove_ctr_fifos(cid)
                runc_state = os.path.join(RUNC_STATE_ROOT, ns, cid)
                if os.path.isdir(runc_state):
                    notes.append(f"removed runc state {runc_state}")
                    shutil.rmtree(runc_state, ignore_errors=True)
                for cg in self._cgroup_dirs(ns, cid):
                    try:
                        os.rmdir(cg)
                        notes.append(f"removed cgroup {cg}")
                    except OSError:
                        pass
        return notes

    @staticmethod
    def _cgroup_dirs(ns: str, cid: str) -> list[str]:
        # ctr's default cgroupsPath is /<namespace>/<id> (v2: top/ns/id; v1: top/<ctrl>/ns/id)
        top = "/sys/fs/cgroup"
        cand = [os.path.join(top, ns, cid)]
        try:
            cand += [os.path.join(top, c, ns, cid) for c in os.listdir(top)]
        except OSError:
            pass
        return [c for c in cand if os.path.isdir(c)]

    def _unmount_all(self) -> list[str]:
        notes = []
        for _ in range(5):
            mps = self.leftover_mounts()
            if not mps:
                break
            # deepest first; among equals, the last mounted first
            order = sorted(enumerate(mps), key=lambda im: (im[1].count("/"), im[0]), reverse=True)
            for _, mp in order:
                how = _umount(mp)
                if how:
                    notes.append(f"{how} {mp}")
        return notes


def _remove_ctr_fifos(cid: str) -> list[str]:
    """Remove ctr's IO fifo dirs left for container `cid` (when ctr was killed mid-run)."""
    notes = []
    try:
        dirs = os.listdir(CTR_FIFO_DIR)
    except OSError:
        return notes
    for d in dirs:
        path = os.path.join(CTR_FIFO_DIR, d)
        try:
            names = os.listdir(path)
        except OSError:
            continue
        if names and set(names) <= {f"{cid}-stdin", f"{cid}-stdout", f"{cid}-stderr"}:
            shutil.rmtree(path, ignore_errors=True)
            notes.append(f"removed ctr fifos {path}")
    return notes


def _umount(mp: str) -> str | None:
    """Unmount `mp`; lazily if a plain unmount fails. Returns what was done."""
    libc = _libc()
    if libc.umount2(mp.encode(), 0) == 0:
        return "unmounted"
    if libc.umount2(mp.encode(), MNT_DETACH) == 0:
        return "lazily unmounted"
    return None
