#!/usr/bin/env python3
"""Write proto/cri/runtime/v1/api.proto, the Kubernetes CRI API (package runtime.v1), from the
descriptor that PyPI's container-runtime-interface-api ships.

Why: that package's generated modules run on our protobuf 7, but the package requires
protobuf~=6.31 and so cannot sit in our dev extra; Debian packages no CRI api.proto. The
package's `cri_api/v1/api_pb2.py` embeds the serialized FileDescriptorProto of the CRI
api.proto; this script turns it back into .proto text (comments are not in a descriptor, so
there are none), under our own path, so that hack/genproto.sh generates proto/cri/runtime/v1/
api_pb2.py and api_pb2_grpc.py like every other module of ours. The package name stays
`runtime.v1`: the gRPC method names (/runtime.v1.RuntimeService/RunPodSandbox) depend on it.
Nothing else under proto/ uses that package, so no symbol clashes.

Usage: hack/cri_proto.py [--wheel WHEEL | --version V] [--out PATH] [--check]
  --wheel    a downloaded container-runtime-interface-api wheel (default: `pip download` it)
  --version  the version to download (default 2.0.1)
  --check    also compile the written .proto and compare its descriptor with the wheel's
The script reads the wheel as a zip and parses the descriptor with protobuf: it never imports
the package's modules.
"""
from __future__ import annotations

import argparse
import ast
import os
import subprocess
import sys
import tempfile
import zipfile

from google.protobuf import descriptor_pb2

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIST = "container-runtime-interface-api"
VERSION = "2.0.1"
MODULE = "cri_api/v1/api_pb2.py"
OUT = os.path.join(ROOT, "proto", "cri", "runtime", "v1", "api.proto")
PROTO_NAME = "proto/cri/runtime/v1/api.proto"  # the file's name as hack/genproto.sh compiles it

F = descriptor_pb2.FieldDescriptorProto
SCALARS = {
    F.TYPE_DOUBLE: "double", F.TYPE_FLOAT: "float", F.TYPE_INT64: "int64",
    F.TYPE_UINT64: "uint64", F.TYPE_INT32: "int32", F.TYPE_FIXED64: "fixed64",
    F.TYPE_FIXED32: "fixed32", F.TYPE_BOOL: "bool", F.TYPE_STRING: "string",
    F.TYPE_BYTES: "bytes", F.TYPE_UINT32: "uint32", F.TYPE_SFIXED32: "sfixed32",
    F.TYPE_SFIXED64: "sfixed64", F.TYPE_SINT32: "sint32", F.TYPE_SINT64: "sint64",
}


def download(version: str, dest: str) -> str:
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                    "--disable-pip-version-check", "-d", dest, f"{DIST}=={version}"], check=True)
    wheels = [n for n in os.listdir(dest) if n.endswith(".whl")]
    if len(wheels) != 1:
        raise SystemExit(f"cri_proto: expected one wheel in {dest}, found {wheels}")
    return os.path.join(dest, wheels[0])


def descriptor_from_wheel(wheel: str) -> descriptor_pb2.FileDescriptorProto:
    """The FileDescriptorProto passed to AddSerializedFile in the wheel's api_pb2.py."""
    with zipfile.ZipFile(wheel) as z:
        src = z.read(MODULE).decode()
    for node in ast.walk(ast.parse(src)):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr == "AddSerializedFile"):
            fd = descriptor_pb2.FileDescriptorProto()
            fd.ParseFromString(ast.literal_eval(node.args[0]))
            return fd
    raise SystemExit(f"cri_proto: no AddSerializedFile call in {wheel}:{MODULE}")


class Printer:
    def __init__(self, fd: descriptor_pb2.FileDescriptorProto):
        self.fd = fd
        self.prefix = "." + fd.package + "."
        self.maps: dict[str, descriptor_pb2.DescriptorProto] = {}
        self.lines: list[str] = []

        def collect(msgs, scope):
            for m in msgs:
                name = scope + m.name
                if m.options.map_entry:
                    self.maps[name] = m
                collect(m.nested_type, name + ".")
        collect(fd.message_type, self.prefix)

    def out(self, depth: int, text: str) -> None:
        self.lines.append("  " * depth + text if text else "")

    def type_name(self, name: str) -> str:
        return name[len(self.prefix):] if name.startswith(self.prefix) else name

    def field_type(self, f: descriptor_pb2.FieldDescriptorProto) -> str:
        if f.type in SCALARS:
            return SCALARS[f.type]
        return self.type_name(f.type_name)

    @staticmethod
    def options(opts) -> str:
        items = []
        for fdesc, value in opts.ListFields():
            if fdesc.name == "deprecated":
                items.append(f"deprecated = {'true' if value else 'false'}")
            else:
                raise SystemExit(f"cri_proto: unsupported option {fdesc.name}")
        return f" [{', '.join(items)}]" if items else ""

    def enum(self, e, depth: int) -> None:
        self.out(depth, f"enum {e.name} {{")
        if e.options.ListFields():
            if not e.options.allow_alias or len(e.options.ListFields()) != 1:
                raise SystemExit(f"cri_proto: unsupported enum options on {e.name}")
            self.out(depth + 1, "option allow_alias = true;")
        for v in e.value:
            self.out(depth + 1, f"{v.name} = {v.number}{self.options(v.options)};")
        self.out(depth, "}")

    def message(self, m, depth: int) -> None:
        if m.options.map_entry:
            return
        if m.oneof_decl and any(not f.proto3_optional for f in m.field if f.HasField("oneof_index")):
            raise SystemExit(f"cri_proto: oneofs are not supported ({m.name})")
        if m.options.ListFields():
            raise SystemExit(f"cri_proto: unsupported message options on {m.name}")
        self.out(depth, f"message {m.name} {{")
        for n in m.nested_type:
            if not n.options.map_entry:
                self.message(n, depth + 1)
        for e in m.enum_type:
            self.enum(e, depth + 1)
        for f in m.field:
            entry = self.maps.get(f.type_name) if f.type == F.TYPE_MESSAGE else None
            if entry is not None:
                k, v = entry.field
                decl = f"map<{self.field_type(k)}, {self.field_type(v)}>"
            else:
                label = ("repeated " if f.label == F.LABEL_REPEATED else
                         "optional " if f.proto3_optional else "")
                decl = label + self.field_type(f)
            self.out(depth + 1, f"{decl} {f.name} = {f.number}{self.options(f.options)};")
        self.out(depth, "}")

    def render(self, source: str) -> str:
        fd = self.fd
        if fd.syntax != "proto3" or fd.dependency or fd.extension:
            raise SystemExit("cri_proto: expected a self-contained proto3 file")
        self.out(0, f"// The Kubernetes CRI API ({fd.package}), written by hack/cri_proto.py from the descriptor")
        self.out(0, f"// in {source}.")
        self.out(0, "// A descriptor keeps no comments: the upstream api.proto documents every field.")
        self.out(0, "// Do not edit: rerun hack/cri_proto.py (then hack/genproto.sh).")
        self.out(0, 'syntax = "proto3";')
        self.out(0, "")
        self.out(0, f"package {fd.package};")
        self.out(0, "")
        for fdesc, value in fd.options.ListFields():
            if fdesc.name != "go_package":
                raise SystemExit(f"cri_proto: unsupported file option {fdesc.name}")
            self.out(0, f'option go_package = "{value}";')
        for s in fd.service:
            self.out(0, "")
            self.out(0, f"service {s.name} {{")
            for m in s.method:
                if m.options.ListFields():
                    raise SystemExit(f"cri_proto: unsupported method options on {m.name}")
                cs = "stream " if m.client_streaming else ""
                ss = "stream " if m.server_streaming else ""
                self.out(1, f"rpc {m.name}({cs}{self.type_name(m.input_type)}) returns "
                            f"({ss}{self.type_name(m.output_type)}) {{}}")
            self.out(0, "}")
        for e in fd.enum_type:
            self.out(0, "")
            self.enum(e, 0)
        for m in fd.message_type:
            if not m.options.map_entry:
                self.out(0, "")
                self.message(m, 0)
        return "\n".join(self.lines) + "\n"


def _normalized(fd: descriptor_pb2.FileDescriptorProto) -> bytes:
    fd = descriptor_pb2.FileDescriptorProto.FromString(fd.SerializeToString())
    fd.ClearField("name")
    fd.ClearField("source_code_info")

    def strip(msgs):
        for m in msgs:
            for f in m.field:
                f.ClearField("json_name")
            strip(m.nested_type)
    strip(fd.message_type)
    return fd.SerializeToString(deterministic=True)


def check(out: str, want: descriptor_pb2.FileDescriptorProto) -> None:
    """Compile `out` with grpc_tools.protoc and compare its descriptor with `want`."""
    with tempfile.TemporaryDirectory() as d:
        ds = os.path.join(d, "set.pb")
        subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I", os.path.dirname(out),
                        f"--descriptor_set_out={ds}", os.path.basename(out)], check=True)
        got = descriptor_pb2.FileDescriptorSet.FromString(open(ds, "rb").read()).file[0]
    if _normalized(got) != _normalized(want):
        raise SystemExit(f"cri_proto: {out} does not compile back to the wheel's descriptor")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--wheel")
    ap.add_argument("--version", default=VERSION)
    ap.add_argument("--out", default=OUT)
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="cri-proto-") as d:
        wheel = args.wheel or download(args.version, d)
        fd = descriptor_from_wheel(wheel)
        version = os.path.basename(wheel).split("-")[1]
        text = Printer(fd).render(f"PyPI's {DIST} {version}, {MODULE}")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        f.write(text)
    if args.check:
        check(args.out, fd)
    print(f"{args.out}: {len(fd.message_type)} messages, {len(fd.enum_type)} enums, "
          f"{sum(len(s.method) for s in fd.service)} methods")
    return 0


if __name__ == "__main__":
    sys.exit(main())
