#!/usr/bin/env python3
"""Build a small OCI image archive from the host's static busybox, with no registry.

Usage: hack/mkimage.py [--name REF] [--add HOST_PATH:ROOTFS_PATH[:MODE]]... OUT.tar
       hack/mkimage.py --pause [--name REF] OUT.tar

The archive is an OCI image layout (oci-layout, index.json, blobs/sha256/...) with one
gzip layer holding /bin/busybox plus a hard link per applet (from `busybox --list`) in
/bin, /etc/passwd and /etc/group (root 0, nobody 65534, app 1000 with home /home/app),
/tmp (1777) and /home/app (owned 1000:1000). It is deterministic: fixed mtimes, fixed
owners, sorted entries, gzip without a timestamp, so the same inputs give the same
digests. `ctr images import OUT.tar` names it after the index annotation
io.containerd.image.name (default docker.io/pyshim/busybox:latest).

From Python, build_image(out, extra_files=[ExtraFile(...)]) adds more files to the
rootfs, e.g. a static probe binary.

--pause (build_pause_image) builds the CRI sandbox image instead: hack/pause.c compiled with
`gcc -static` as /pause, the image's entrypoint, and nothing else (default name
docker.io/pyshim/pause:1.0). Deterministic too, for a given compiler and libc.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import platform
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from typing import Iterable

DEFAULT_NAME = "docker.io/pyshim/busybox:latest"
PAUSE_NAME = "docker.io/pyshim/pause:1.0"
PAUSE_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pause.c")
BUSYBOX = "/bin/busybox"
MTIME = 0  # every entry's mtime; the image's "created" is the epoch too
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

PASSWD = """\
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
app:x:1000:1000:app:/home/app:/bin/sh
"""
GROUP = """\
root:x:0:
nobody:x:65534:
app:x:1000:
"""

MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_INDEX = "application/vnd.oci.image.index.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"

_ARCH = {
    "x86_64": "amd64", "amd64": "amd64",
    "aarch64": "arm64", "arm64": "arm64",
    "armv7l": "arm", "armv6l": "arm",
    "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64", "i686": "386",
}


@dataclass(frozen=True)
class ExtraFile:
    """A file to put in the rootfs: from a host file (source) or from bytes (data)."""

    path: str                 # absolute path inside the rootfs, e.g. "/bin/probe"
    source: str | None = None  # host file to copy
    data: bytes | None = None  # or literal contents
    mode: int | None = None   # default: the source's mode, or 0o644 for data
    uid: int = 0
    gid: int = 0


def host_arch() -> str:
    m = platform.machine()
    try:
        return _ARCH[m]
    except KeyError:
        raise SystemExit(f"mkimage: unknown machine architecture {m!r}") from None


def is_static_elf(path: str) -> bool:
    """True if `path` is an ELF file without a PT_INTERP (dynamic loader) program header."""
    import struct
    with open(path, "rb") as f:
        hdr = f.read(64)
        if hdr[:4] != b"\x7fELF":
            return False
        end = "<" if hdr[5] == 1 else ">"
        if hdr[4] == 2:
            phoff, = struct.unpack_from(end + "Q", hdr, 0x20)
            phentsize, phnum = struct.unpack_from(end + "HH", hdr, 0x36)
        else:
            phoff, = struct.unpack_from(end + "I", hdr, 0x1C)
            phentsize, phnum = struct.unpack_from(end + "HH", hdr, 0x2A)
        for i in range(phnum):
            f.seek(phoff + i * phentsize)
            p_type, = struct.unpack(end + "I", f.read(4))
            if p_type == 3:  # PT_INTERP
                return False
    return True


def busybox_applets(busybox: str = BUSYBOX) -> list[str]:
    out = subprocess.run([busybox, "--list"], check=True, capture_output=True, text=True).stdout
    names = sorted({n.strip() for n in out.split() if n.strip()})
    return [n for n in names if "/" not in n and n not in ("busybox", ".", "..")]


def _dir(path: str, mode: int = 0o755, uid: int = 0, gid: int = 0) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(path.strip("/") + "/")
    ti.type, ti.mode, ti.uid, ti.gid, ti.mtime = tarfile.DIRTYPE, mode, uid, gid, MTIME
    return ti


def _file(path: str, size: int, mode: int, uid: int = 0, gid: int = 0) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(path.strip("/"))
    ti.type, ti.size, ti.mode, ti.uid, ti.gid, ti.mtime = tarfile.REGTYPE, size, mode, uid, gid, MTIME
    return ti


def _link(path: str, target: str) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(path.strip("/"))
    ti.type, ti.linkname, ti.mode, ti.mtime = tarfile.LNKTYPE, target.strip("/"), 0o755, MTIME
    return ti


def build_layer(extra_files: Iterable[ExtraFile] = (), busybox: str = BUSYBOX) -> bytes:
    """The uncompressed layer tar. Directories and files in path order, then hard links
    (a link must come after its target, and '[' sorts before 'busybox')."""
    with open(busybox, "rb") as f:
        bb = f.read()
    dirs: dict[str, tarfile.TarInfo] = {}
    files: dict[str, tuple[tarfile.TarInfo, bytes]] = {}

    def add_dir(p, mode=0o755, uid=0, gid=0):
        dirs[p.strip("/")] = _dir(p, mode, uid, gid)

    def add_file(p, data: bytes, mode: int, uid=0, gid=0):
        p = "/" + p.strip("/")
        parent = os.path.dirname(p)
        while parent not in ("/", ""):  # implicit parents
            dirs.setdefault(parent.strip("/"), _dir(parent))
            parent = os.path.dirname(parent)
        files[p.strip("/")] = (_file(p, len(data), mode, uid, gid), data)

    for d in ("bin", "dev", "etc", "home", "proc", "sys", "usr", "usr/bin", "sbin", "var"):
        add_dir(d)
    add_dir("root", 0o700)
    add_dir("tmp", 0o1777)
    add_dir("home/app", 0o755, 1000, 1000)
    add_file("/bin/busybox", bb, 0o755)
    add_file("/etc/passwd", PASSWD.encode(), 0o644)
    add_file("/etc/group", GROUP.encode(), 0o644)
    for x in extra_files:
        if (x.source is None) == (x.data is None):
            raise ValueError(f"ExtraFile {x.path}: give exactly one of source and data")
        if x.source is not None:
            with open(x.source, "rb") as f:
                data = f.read()
            mode = x.mode if x.mode is not None else os.stat(x.source).st_mode & 0o7777
        else:
            data = x.data
            mode = x.mode if x.mode is not None else 0o644
        add_file(x.path, data, mode, x.uid, x.gid)

    links = [f"bin/{a}" for a in busybox_applets(busybox)]
    links = [p for p in links if p not in files and p not in dirs]

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        entries = sorted(list(dirs.items()) + [(k, v) for k, v in files.items()], key=lambda kv: kv[0])
        for name, item in entries:
            if isinstance(item, tuple):
                ti, data = item
                tar.addfile(ti, io.BytesIO(data))
            else:
                tar.addfile(item)
        for p in sorted(links):
            tar.addfile(_link(p, "bin/busybox"))
    return buf.getvalue()


def _gzip(data: bytes) -> bytes:
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=6) as gz:
        gz.write(data)
    return out.getvalue()


def _json(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def build_image(out: str, extra_files: Iterable[ExtraFile] = (), name: str = DEFAULT_NAME,
                busybox: str = BUSYBOX, arch: str | None = None) -> str:
    """Write the OCI archive to `out`; return the manifest digest."""
    return write_archive(out, build_layer(extra_files, busybox),
                         {"Env": [PATH_ENV], "Cmd": ["sh"], "WorkingDir": "/"}, name, arch)


def compile_pause(out: str, source: str = PAUSE_SOURCE, cc: str = "gcc") -> str:
    """Compile hack/pause.c into the static binary `out` (gcc -static); return `out`."""
    r = subprocess.run([cc, "-static", "-O2", "-Wall", "-o", out, source],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{cc} -static {source} failed ({r.returncode}): {r.stderr.strip()} "
                           "(apt-get install gcc libc6-dev)")
    return out


def build_pause_layer(pause_binary: str) -> bytes:
    """The pause image's layer: /pause, nothing else."""
    with open(pause_binary, "rb") as f:
        data = f.read()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        tar.addfile(_file("/pause", len(data), 0o755), io.BytesIO(data))
    return buf.getvalue()


def build_pause_image(out: str, name: str = PAUSE_NAME, pause_binary: str | None = None,
                      arch: str | None = None) -> str:
    """Write the CRI sandbox (pause) image's OCI archive to `out`; return the manifest digest.
    pause_binary: an already built static pause program (default: compile hack/pause.c)."""
    if pause_binary is None:
        import tempfile
        with tempfile.TemporaryDirectory(prefix="pause-") as d:
            return build_pause_image(out, name, compile_pause(os.path.join(d, "pause")), arch)
    if not is_static_elf(pause_binary):
        raise ValueError(f"{pause_binary} is not a static ELF binary")
    return write_archive(out, build_pause_layer(pause_binary),
                         {"Env": [PATH_ENV], "Entrypoint": ["/pause"], "WorkingDir": "/"},
                         name, arch)


def write_archive(out: str, layer: bytes, image_config: dict, name: str,
                  arch: str | None = None) -> str:
    """The OCI archive of a one-layer image (`layer`: uncompressed tar; `image_config`: the
    config's "config" object); return the manifest digest."""
    arch = arch or host_arch()
    layer_gz = _gzip(layer)
    config = _json({
        "architecture": arch,
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": image_config,
        "rootfs": {"type": "layers", "diff_ids": [_sha(layer)]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "hack/mkimage.py"}],
    })
    manifest = _json({
        "schemaVersion": 2,
        "mediaType": MT_MANIFEST,
        "config": {"mediaType": MT_CONFIG, "digest": _sha(config), "size": len(config)},
        "layers": [{"mediaType": MT_LAYER, "digest": _sha(layer_gz), "size": len(layer_gz)}],
    })
    ref = name.rsplit(":", 1)[1] if ":" in name.rsplit("/", 1)[-1] else "latest"
    index = _json({
        "schemaVersion": 2,
        "mediaType": MT_INDEX,
        "manifests": [{
            "mediaType": MT_MANIFEST,
            "digest": _sha(manifest),
            "size": len(manifest),
            "annotations": {
                "io.containerd.image.name": name,
                "org.opencontainers.image.ref.name": ref,
            },
            "platform": {"architecture": arch, "os": "linux"},
        }],
    })
    layout = _json({"imageLayoutVersion": "1.0.0"})

    members = [("blobs/", None), ("blobs/sha256/", None)]
    blobs = {_sha(b)[7:]: b for b in (config, manifest, layer_gz)}
    members += [(f"blobs/sha256/{h}", blobs[h]) for h in sorted(blobs)]
    members += [("index.json", index), ("oci-layout", layout)]

    tmp = out + ".tmp"
    with tarfile.open(tmp, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for mname, data in members:
            if data is None:
                tar.addfile(_dir(mname))
            else:
                tar.addfile(_file(mname, len(data), 0o644), io.BytesIO(data))
    os.replace(tmp, out)
    return _sha(manifest)


def _parse_add(spec: str) -> ExtraFile:
    parts = spec.split(":")
    if len(parts) not in (2, 3) or not parts[1].startswith("/"):
        raise argparse.ArgumentTypeError(f"--add wants HOST_PATH:/ROOTFS_PATH[:OCTAL_MODE], got {spec!r}")
    mode = int(parts[2], 8) if len(parts) == 3 else None
    return ExtraFile(path=parts[1], source=parts[0], mode=mode)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", help="the OCI archive to write (e.g. busybox.tar)")
    ap.add_argument("--name", default=DEFAULT_NAME, help=f"image name (default {DEFAULT_NAME})")
    ap.add_argument("--add", action="append", type=_parse_add, default=[], metavar="HOST:ROOTFS[:MODE]",
                    help="add a host file to the rootfs (repeatable)")
    ap.add_argument("--busybox", default=BUSYBOX, help="static busybox to use (default /bin/busybox)")
    ap.add_argument("--pause", action="store_true",
                    help=f"build the CRI sandbox image from hack/pause.c instead (default name {PAUSE_NAME})")
    args = ap.parse_args(argv)
    if args.pause:
        name = PAUSE_NAME if args.name == DEFAULT_NAME else args.name
        try:
            digest = build_pause_image(args.out, name)
        except (RuntimeError, OSError) as e:
            print(f"mkimage: {e}", file=sys.stderr)
            return 1
        print(f"{args.out}: {name} {digest}")
        return 0
    if not os.path.exists(args.busybox):
        print(f"mkimage: {args.busybox} not found (apt-get install busybox-static)", file=sys.stderr)
        return 1
    if not is_static_elf(args.busybox):
        print(f"mkimage: {args.busybox} is not a static ELF binary (apt-get install busybox-static)",
              file=sys.stderr)
        return 1
    digest = build_image(args.out, args.add, args.name, args.busybox)
    print(f"{args.out}: {args.name} {digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
