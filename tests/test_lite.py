"""proto/lite.py and the *_lite.py modules hack/gen_lite.py makes: the daemon's protobuf codec
without google.protobuf. Every message is checked against upb (the _pb2 modules) byte for byte,
field for field, on random contents; then the edge cases one by one."""

import copy
import filecmp
import importlib
import importlib.util
import os
import pickle
import random
import struct
import subprocess
import sys

import pytest
from google.protobuf import any_pb2, message_factory, timestamp_pb2
from google.protobuf.descriptor import FieldDescriptor as FD
from google.protobuf.message import DecodeError as PbDecodeError

from proto import lite, wkt_lite
from proto.cgroups.v1 import metrics_lite as v1_lite
from proto.cgroups.v1 import metrics_pb2 as v1_pb2
from proto.containerd.task.v2 import shim_lite, shim_pb2
from proto.containerd.types.task import task_lite, task_pb2

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load_generator():
    spec = importlib.util.spec_from_file_location("gen_lite", os.path.join(ROOT, "hack", "gen_lite.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen_lite = _load_generator()


def _lite_files(tree):
    for dirpath, _, files in os.walk(os.path.join(tree, "proto")):
        for name in files:
            if name.endswith("_lite.py"):
                yield os.path.relpath(os.path.join(dirpath, name), tree)


def _pb2_files():
    """The FileDescriptors gen_lite covers: its FILES and what they import."""
    fds = [importlib.import_module(gen_lite._pb2_module(n)).DESCRIPTOR for n in gen_lite.FILES]
    files, wkt = gen_lite._closure(fds)
    return files + wkt


def _messages(container):
    for d in container.message_types_by_name.values():
        yield d
        yield from _messages_nested(d)


def _messages_nested(d):
    for n in d.nested_types:
        yield n
        yield from _messages_nested(n)


def _lite_classes(module):
    found = {}

    def walk(ns):
        for v in list(vars(ns).values()):
            if isinstance(v, type) and issubclass(v, lite.Message) and v.__module__ == module.__name__:
                found[v.FULL_NAME] = v
                walk(v)
    walk(module)
    return found


def _all_lite_classes(fds):
    classes = {}
    for fd in fds:
        classes.update(_lite_classes(importlib.import_module(gen_lite.module_of(fd.name))))
    return classes


PB2_FILES = _pb2_files()
PB2_MESSAGES = {d.full_name: d for fd in PB2_FILES for d in _messages(fd)}
LITE = _all_lite_classes(PB2_FILES)


def pb2_class(d):
    return message_factory.GetMessageClass(d)


# ---------------------------------------------------------------------------------------------
# Random contents, built the same way in both libraries.

STRINGS = ["", "a", "c1", "héllo wörld", "日本語", "🐳 whale", "nul\x00inside", "x" * 200,
           "/run/containerd/io.containerd.runtime.v2.task/k8s.io/" + "f" * 64]


def _f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


def rand_scalar(rnd, f):
    t = f.type
    if t in (FD.TYPE_INT32, FD.TYPE_SINT32, FD.TYPE_SFIXED32):
        return rnd.choice([0, 1, -1, 127, 128, -129, 2**31 - 1, -2**31, rnd.randint(-2**31, 2**31 - 1)])
    if t in (FD.TYPE_INT64, FD.TYPE_SINT64, FD.TYPE_SFIXED64):
        return rnd.choice([0, 1, -1, 300, 2**63 - 1, -2**63, rnd.randint(-2**63, 2**63 - 1)])
    if t in (FD.TYPE_UINT32, FD.TYPE_FIXED32):
        return rnd.choice([0, 1, 127, 128, 16383, 16384, 2**32 - 1, rnd.randint(0, 2**32 - 1)])
    if t in (FD.TYPE_UINT64, FD.TYPE_FIXED64):
        return rnd.choice([0, 1, 2**63, 2**64 - 1, rnd.randint(0, 2**64 - 1)])
    if t == FD.TYPE_BOOL:
        return rnd.choice([False, True])
    if t == FD.TYPE_STRING:
        if rnd.random() < 0.2:
            return "".join(chr(rnd.choice([rnd.randint(32, 126), rnd.randint(0xa0, 0xd7ff),
                                           rnd.randint(0x10000, 0x10ffff)]))
                           for _ in range(rnd.randint(1, 20)))
        return rnd.choice(STRINGS)
    if t == FD.TYPE_BYTES:
        return rnd.choice([b"", b"\x00", b"\xff\xfe",
                           bytes(rnd.randrange(256) for _ in range(rnd.randint(0, 300)))])
    if t == FD.TYPE_ENUM:
        return rnd.choice([v.number for v in f.enum_type.values] + [0, 99, -5])
    if t == FD.TYPE_FLOAT:
        return rnd.choice([0.0, -0.0, 1.5, -2.25, float("inf"), _f32(3.4e38), _f32(rnd.uniform(-1e6, 1e6))])
    if t == FD.TYPE_DOUBLE:
        return rnd.choice([0.0, -0.0, 1e-300, -1.5, float("-inf"), rnd.uniform(-1e10, 1e10)])
    raise AssertionError(f"no random value for type {t}")


def rand_spec(rnd, d, depth=0):
    """{field name: value}: scalars, lists, dicts, and nested specs for messages."""
    spec = {}
    for f in d.fields:
        if rnd.random() < 0.25:
            continue  # unset
        if f.message_type is not None and f.message_type.GetOptions().map_entry:
            kf, vf = f.message_type.fields
            m = {}
            for _ in range(rnd.randint(0, 3)):
                m[rand_scalar(rnd, kf)] = (rand_spec(rnd, vf.message_type, depth + 1)
                                           if vf.message_type else rand_scalar(rnd, vf))
            spec[f.name] = m
        elif f.message_type is not None:
            if depth > 3:
                continue
            if f.is_repeated:
                spec[f.name] = [rand_spec(rnd, f.message_type, depth + 1) for _ in range(rnd.randint(0, 3))]
            else:
                spec[f.name] = rand_spec(rnd, f.message_type, depth + 1)
        elif f.is_repeated:
            spec[f.name] = [rand_scalar(rnd, f) for _ in range(rnd.randint(0, 4))]
        else:
            spec[f.name] = rand_scalar(rnd, f)
    return spec


def make(cls_of, d, spec):
    kwargs = {}
    for name, v in spec.items():
        f = d.fields_by_name[name]
        if f.message_type is not None and f.message_type.GetOptions().map_entry:
            vf = f.message_type.fields_by_name["value"]
            kwargs[name] = {k: make(cls_of, vf.message_type, x) if vf.message_type else x
                            for k, x in v.items()}
        elif f.message_type is not None and f.is_repeated:
            kwargs[name] = [make(cls_of, f.message_type, x) for x in v]
        elif f.message_type is not None:
            kwargs[name] = make(cls_of, f.message_type, v)
        else:
            kwargs[name] = v
    return cls_of(d)(**kwargs)


def has_map(d, seen=None):
    seen = set() if seen is None else seen
    if d.full_name in seen:
        return False
    seen.add(d.full_name)
    return any(f.message_type is not None and (f.message_type.GetOptions().map_entry
                                               or has_map(f.message_type, seen)) for f in d.fields)


def as_python(d, msg):
    """A message's contents through its attributes, the same for both libraries."""
    out = {}
    for f in d.fields:
        v = getattr(msg, f.name)
        if f.message_type is not None and f.message_type.GetOptions().map_entry:
            vf = f.message_type.fields_by_name["value"]
            out[f.name] = {k: as_python(vf.message_type, x) if vf.message_type else x for k, x in v.items()}
        elif f.message_type is not None and f.is_repeated:
            out[f.name] = [as_python(f.message_type, x) for x in v]
        elif f.message_type is not None:  # (recursive types: stop where unset)
            out[f.name] = as_python(f.message_type, v) if msg.HasField(f.name) else None
        elif f.is_repeated:
            out[f.name] = list(v)
        else:
            # -0.0 == 0.0: compare the sign too
            out[f.name] = (v, str(v)) if isinstance(v, float) else (v, type(v))
    return out


def trim_maps(d, spec):
    """spec with at most one entry in each map (whose order then cannot differ)."""
    out = {}
    for name, v in spec.items():
        f = d.fields_by_name[name]
        if f.message_type is None:
            out[name] = v
        elif f.message_type.GetOptions().map_entry:
            vf = f.message_type.fields_by_name["value"]
            out[name] = {k: trim_maps(vf.message_type, x) if vf.message_type else x
                         for k, x in list(v.items())[:1]}
        elif f.is_repeated:
            out[name] = [trim_maps(f.message_type, x) for x in v]
        else:
            out[name] = trim_maps(f.message_type, v)
    return out


def check_pair(d, spec):
    pb = make(pb2_class, d, spec)
    lt = make(lambda x: LITE[x.full_name], d, spec)
    pb_bytes, lt_bytes = pb.SerializeToString(), lt.SerializeToString()
    if has_map(d):
        # Map entries come in hash order from upb (and in its own order when deterministic),
        # in insertion order from lite (sorted by key when deterministic): compare the content,
        # then the bytes of the same message with a single entry per map.
        assert pb2_class(d).FromString(lt_bytes).SerializeToString(deterministic=True) == \
            pb.SerializeToString(deterministic=True), f"{d.full_name} {spec!r}"
        one = trim_maps(d, spec)
        assert make(lambda x: LITE[x.full_name], d, one).SerializeToString() == \
            make(pb2_class, d, one).SerializeToString(), f"{d.full_name} {one!r}"
    else:
        assert lt_bytes == pb_bytes, f"{d.full_name} {spec!r}"
        assert lt.SerializeToString(deterministic=True) == pb_bytes
    assert pb2_class(d).FromString(lt_bytes) == pb
    decoded = LITE[d.full_name].FromString(pb_bytes)
    assert decoded == lt
    assert as_python(d, decoded) == as_python(d, pb) == as_python(d, lt)
    assert LITE[d.full_name].FromString(lt_bytes) == lt


# ---------------------------------------------------------------------------------------------
# Every message, against upb.

def test_every_pb2_message_has_a_lite_class():
    assert set(LITE) == set(PB2_MESSAGES)
    for name, cls in LITE.items():
        assert cls.FULL_NAME == name == cls.DESCRIPTOR.full_name
        assert cls.DESCRIPTOR.name == PB2_MESSAGES[name].name
        assert cls.__qualname__ == pb2_class(PB2_MESSAGES[name]).__qualname__


def test_covered_files():
    names = {fd.name for fd in PB2_FILES}
    for f in ["proto/containerd/task/v2/shim.proto", "proto/containerd/events/task.proto",
              "proto/containerd/types/mount.proto", "proto/containerd/types/task/task.proto",
              "proto/containerd/runc/options/oci.proto", "proto/runtimeoptions/v1/api.proto",
              "proto/ttrpc/ttrpc.proto", "proto/containerd/services/events/ttrpc/v1/events.proto",
              "proto/cgroups/v1/metrics.proto", "proto/cgroups/v2/metrics.proto",
              "google/protobuf/any.proto", "google/protobuf/empty.proto",
              "google/protobuf/timestamp.proto"]:
        assert f in names


@pytest.mark.parametrize("name", sorted(PB2_MESSAGES))
def test_random_contents_match_upb(name):
    d = PB2_MESSAGES[name]
    rnd = random.Random(name)
    for _ in range(40):
        check_pair(d, rand_spec(rnd, d))
    check_pair(d, {})


def test_descriptor_fields_match_upb():
    for name, cls in LITE.items():
        pb_fields = PB2_MESSAGES[name].fields
        lt_fields = cls.DESCRIPTOR.fields
        assert [(f.name, f.number, f.type, f.is_repeated) for f in lt_fields] == \
            [(f.name, f.number, f.type, f.is_repeated) for f in pb_fields]
        for a, b in zip(lt_fields, pb_fields):
            assert ((a.message_type and a.message_type.full_name) ==
                    (b.message_type and b.message_type.full_name))
            assert (a.enum_type and a.enum_type.full_name) == (b.enum_type and b.enum_type.full_name)
        assert set(cls.DESCRIPTOR.fields_by_name) == {f.name for f in pb_fields}


# ---------------------------------------------------------------------------------------------
# Every field kind, nesting, recursion and maps of every sort, in a .proto made for the test.

KINDS_PROTO = """
syntax = "proto3";
package litetest;
import "google/protobuf/timestamp.proto";

enum Top { TOP_ZERO = 0; TOP_ONE = 1; TOP_NEG = -1; }

message Kinds {
  enum Color { RED = 0; GREEN = 1; BLUE = 2; }
  message Inner { string name = 1; Inner child = 2; Color color = 3; sint32 z = 4; }
  double f_double = 1; float f_float = 2; int64 f_int64 = 3; uint64 f_uint64 = 4;
  int32 f_int32 = 5; fixed64 f_fixed64 = 6; fixed32 f_fixed32 = 7; bool f_bool = 8;
  string f_string = 9; Inner f_msg = 10; bytes f_bytes = 11; uint32 f_uint32 = 12;
  Color f_enum = 13; sfixed32 f_sfixed32 = 14; sfixed64 f_sfixed64 = 15; sint32 f_sint32 = 16;
  sint64 f_sint64 = 17;
  repeated double r_double = 21; repeated float r_float = 22; repeated int64 r_int64 = 23;
  repeated uint64 r_uint64 = 24; repeated int32 r_int32 = 25; repeated fixed64 r_fixed64 = 26;
  repeated fixed32 r_fixed32 = 27; repeated bool r_bool = 28; repeated string r_string = 29;
  repeated Inner r_msg = 30; repeated bytes r_bytes = 31; repeated uint32 r_uint32 = 32;
  repeated Color r_enum = 33; repeated sfixed32 r_sfixed32 = 34; repeated sfixed64 r_sfixed64 = 35;
  repeated sint32 r_sint32 = 36; repeated sint64 r_sint64 = 37;
  repeated int32 u_int32 = 40 [packed = false]; repeated sint64 u_sint64 = 41 [packed = false];
  repeated fixed32 u_fixed32 = 42 [packed = false]; repeated double u_double = 43 [packed = false];
  repeated bool u_bool = 44 [packed = false];
  map<string, Inner> m_msg = 50; map<int32, string> m_int = 51; map<bool, bytes> m_bool = 52;
  map<uint64, Color> m_enum = 53; map<sint32, double> m_sint = 54; map<string, string> m_str = 55;
  google.protobuf.Timestamp f_ts = 60;
  Top f_top = 61;
  int32 f_max_number = 536870911;
}
"""


@pytest.fixture(scope="module")
def kinds(tmp_path_factory):
    if importlib.util.find_spec("grpc_tools") is None:
        pytest.skip("grpcio-tools missing")
    from grpc_tools import protoc
    tmp = tmp_path_factory.mktemp("kinds")
    (tmp / "litetest").mkdir()
    (tmp / "litetest" / "kinds.proto").write_text(KINDS_PROTO)
    include = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    assert protoc.main(["protoc", f"-I{tmp}", f"-I{include}", f"--python_out={tmp}",
                        "litetest/kinds.proto"]) == 0
    sys.path.insert(0, str(tmp))
    try:
        pb = importlib.import_module("litetest.kinds_pb2")
        sources = gen_lite.generate([pb.DESCRIPTOR])
        assert set(sources) == {"litetest/kinds_lite.py", "proto/wkt_lite.py"}
        (tmp / "litetest" / "kinds_lite.py").write_text(sources["litetest/kinds_lite.py"])
        lt = importlib.import_module("litetest.kinds_lite")
    finally:
        sys.path.remove(str(tmp))
    classes = _lite_classes(lt)
    LITE.update(classes)
    yield pb, lt
    for name in classes:
        del LITE[name]


def test_every_kind_matches_upb(kinds):
    pb, lt = kinds
    ds = [pb.Kinds.DESCRIPTOR] + list(_messages_nested(pb.Kinds.DESCRIPTOR))
    assert {d.full_name for d in ds} <= set(LITE)
    for d in ds:
        rnd = random.Random(d.full_name)
        for _ in range(150):
            check_pair(d, rand_spec(rnd, d))


def test_kinds_enums_and_nesting(kinds):
    pb, lt = kinds
    assert lt.TOP_NEG == -1 and lt.Top.Name(-1) == "TOP_NEG" and lt.Top.Value("TOP_ONE") == 1
    assert lt.Kinds.Color.BLUE == lt.Kinds.BLUE == pb.Kinds.BLUE == 2
    assert lt.Kinds.Inner.FULL_NAME == "litetest.Kinds.Inner"
    assert lt.Kinds.MMsgEntry.DESCRIPTOR.full_name == pb.Kinds.MMsgEntry.DESCRIPTOR.full_name
    m = lt.Kinds(f_top=-1, f_enum="GREEN", f_max_number=7)
    assert m.f_enum == 1
    assert m.SerializeToString() == pb.Kinds(f_top=-1, f_enum="GREEN", f_max_number=7).SerializeToString()
    assert m.SerializeToString().endswith(b"\xf8\xff\xff\xff\x0f\x07")  # the largest field number
    # the 10-byte negative varint
    assert lt.Kinds(f_int32=-1).SerializeToString() == b"\x28" + b"\xff" * 9 + b"\x01"
    # a recursive message
    deep = lt.Kinds.Inner(name="a")
    deep.child.child.child.name = "d"
    p = pb.Kinds.Inner(name="a")
    p.child.child.child.name = "d"
    assert deep.SerializeToString() == p.SerializeToString()


def test_floats_as_upb_stores_them(kinds):
    pb, lt = kinds
    for v in (0.1, 1e40, -1e40, -0.0, 3.0):
        a, b = lt.Kinds(f_float=v, f_double=v), pb.Kinds(f_float=v, f_double=v)
        assert (a.f_float, str(a.f_float)) == (b.f_float, str(b.f_float))
        assert a.SerializeToString() == b.SerializeToString()
    nan = lt.Kinds(f_double=float("nan"), f_float=float("nan"))
    assert nan.SerializeToString() == pb.Kinds(f_double=float("nan"),
                                               f_float=float("nan")).SerializeToString()


def test_maps(kinds):
    pb, lt = kinds
    m = lt.Kinds()
    m.m_str["b"] = "2"
    m.m_str["a"] = "1"
    m.m_msg["x"].name = "inner"
    assert m.m_int[5] == ""  # a missing key reads as the default, and is inserted (as upb)
    p = pb.Kinds()
    p.m_str["b"] = "2"
    p.m_str["a"] = "1"
    p.m_msg["x"].name = "inner"
    assert p.m_int[5] == ""
    assert pb.Kinds.FromString(m.SerializeToString()) == p
    assert m.SerializeToString(deterministic=True).index(b"\x0a\x01a") < \
        m.SerializeToString(deterministic=True).index(b"\x0a\x01b")  # sorted by key
    assert m.SerializeToString().index(b"\x0a\x01b") < m.SerializeToString().index(b"\x0a\x01a")
    with pytest.raises(TypeError):
        m.m_int["not an int"] = "x"
    with pytest.raises(AttributeError):
        m.m_str = {}
    assert lt.Kinds.FromString(p.SerializeToString()).m_msg["x"].name == "inner"
    # a map entry missing its key or value: the defaults
    entry = b"\x92\x03\x02\x12\x00"  # m_msg (50): {value: Inner{}} (no key)
    assert lt.Kinds.FromString(entry) == lt.Kinds(m_msg={"": lt.Kinds.Inner()})
    assert dict(pb.Kinds.FromString(entry).m_msg) == {"": pb.Kinds.Inner()}


# ---------------------------------------------------------------------------------------------
# Edge cases, against upb where it has an answer.

def test_empty_and_defaults_omitted():
    for cls in LITE.values():
        assert cls().SerializeToString() == b""
        assert cls.FromString(b"") == cls()
    m = shim_lite.StateResponse(id="", pid=0, terminal=False, status=task_lite.UNKNOWN, stdin="")
    assert m.SerializeToString() == b""
    assert m == shim_lite.StateResponse()
    assert wkt_lite.Empty().SerializeToString() == b""
    assert shim_lite.StateResponse(id="x") != shim_lite.StateResponse()


def test_unset_fields_read_as_defaults():
    m = shim_lite.StateResponse()
    assert (m.id, m.pid, m.terminal, m.status) == ("", 0, False, 0)
    assert type(m.terminal) is bool and type(m.pid) is int
    assert m.exited_at.seconds == 0 and not m.HasField("exited_at")
    assert list(shim_lite.CreateTaskRequest().rootfs) == []
    assert shim_lite.CreateTaskRequest().options.value == b""


UNKNOWN = (b"\xb8\x06\x96\x01"                       # 103: varint
           b"\xb1\x06" + b"\x01" * 8 +               # 102: fixed64
           b"\xaa\x06\x03abc"                        # 101: length-delimited
           b"\xa5\x06\x01\x02\x03\x04"               # 100: fixed32
           b"\x9b\x06\x08\x01\x12\x01x\x9c\x06"      # 99: a group holding fields 1 and 2
           b"\x08\x05")                              # 1 as a varint: a string field's wrong type


def test_unknown_fields_are_skipped():
    data = UNKNOWN + b"\x0a\x02c1" + UNKNOWN + b"\x18\x07"
    lt = shim_lite.StateResponse.FromString(data)
    pb = shim_pb2.StateResponse.FromString(data)
    assert (lt.id, lt.pid) == (pb.id, pb.pid) == ("c1", 7)
    pb.DiscardUnknownFields()
    assert lt.SerializeToString() == pb.SerializeToString() == b"\x0a\x02c1\x18\x07"


@pytest.mark.parametrize("data", [
    b"\x0a\x05ab",                     # a string running past the end
    b"\x0a",                           # a tag without its value
    b"\x18",                           # ditto, varint
    b"\x18\x80",                       # a varint cut short
    b"\x18" + b"\xff" * 10 + b"\x01",  # a varint of 11 bytes
    b"\x00\x01",                       # field number 0
    b"\x0e\x01",                       # wire type 6
    b"\x0f\x01",                       # wire type 7
    b"\x0c",                           # an end-group without a group
    b"\x0b\x08\x01",                   # a group without its end
    b"\x0b\x14",                       # a group ending with another's end tag
    b"\x0a\x02\xff\xfe",               # a string that is not UTF-8
    b"\x52\x03\x08\x01",               # a sub-message (exited_at) longer than the data
    b"\x52\x02\x08\x80\x18\x01",       # a sub-message whose varint runs past its end
    b"\x55\x01\x02",                   # fixed32 cut short (unknown field 10, wire type 5)
    b"\x80\x80\x80\x80\x10\x01",       # a tag over 32 bits
    b"\xf8\xff\xff\xff\x8f\x00\x01",   # a tag over 5 bytes
])
def test_malformed_input_raises_decode_error(data):
    with pytest.raises(PbDecodeError):
        shim_pb2.StateResponse.FromString(data)
    with pytest.raises(lite.DecodeError, match="containerd.task.v2.StateResponse"):
        shim_lite.StateResponse.FromString(data)
    m = shim_lite.StateResponse()
    with pytest.raises(ValueError):  # DecodeError is a ValueError
        m.ParseFromString(data)


def _rich_messages():
    rnd = random.Random(7)
    for name in ("containerd.task.v2.CreateTaskRequest", "io.containerd.cgroups.v1.Metrics",
                 "containerd.task.v2.PidsResponse", "ttrpc.Request", "containerd.task.v2.StateResponse"):
        d = PB2_MESSAGES[name]
        spec = rand_spec(rnd, d)
        while len(make(pb2_class, d, spec).SerializeToString()) < 40:
            spec = rand_spec(rnd, d)
        yield d, make(pb2_class, d, spec).SerializeToString()


def _outcome(cls, data, discard=False):
    try:
        m = cls.FromString(data)
    except (PbDecodeError, lite.DecodeError):
        return "error"
    if discard:
        m.DiscardUnknownFields()
    return m.SerializeToString(deterministic=True)


def test_every_truncation_agrees_with_upb():
    for d, data in _rich_messages():
        errors = 0
        for n in range(len(data)):
            prefix = data[:n]
            expected = _outcome(pb2_class(d), prefix)
            assert _outcome(LITE[d.full_name], prefix) == expected, (d.full_name, n)
            errors += expected == "error"
        assert errors > 0


def test_corrupted_input_agrees_with_upb():
    rnd = random.Random(11)
    checked = {"error": 0, "ok": 0}
    for d, data in _rich_messages():
        for _ in range(400):
            b = bytearray(data)
            for _ in range(rnd.randint(1, 3)):
                b[rnd.randrange(len(b))] = rnd.choice([0, 1, 0x7f, 0x80, 0xff, rnd.randrange(256)])
            b = bytes(b)
            expected = _outcome(pb2_class(d), b, discard=True)
            assert _outcome(LITE[d.full_name], b) == expected, (d.full_name, b.hex())
            checked["error" if expected == "error" else "ok"] += 1
    assert checked["error"] > 50 and checked["ok"] > 50


def test_packed_and_unpacked_repeated_both_accepted():
    packed = v1_lite.CPUUsage(per_cpu=[1, 300, 2**64 - 1]).SerializeToString()
    assert packed == v1_pb2.CPUUsage(per_cpu=[1, 300, 2**64 - 1]).SerializeToString()
    assert packed[0] == 0x22  # field 4, length-delimited: packed, as upb writes it
    unpacked = b"\x20\x01\x20\xac\x02\x20" + b"\xff" * 9 + b"\x01"
    both = unpacked + b"\x22\x01\x05"
    for data, want in ((packed, [1, 300, 2**64 - 1]), (unpacked, [1, 300, 2**64 - 1]),
                       (both, [1, 300, 2**64 - 1, 5])):
        assert list(v1_lite.CPUUsage.FromString(data).per_cpu) == want
        assert list(v1_pb2.CPUUsage.FromString(data).per_cpu) == want


def _same_presence(scenario):
    """Run scenario on a fresh message of each library; HasField and bytes must agree."""
    for mod_pb, mod_lt, cls, fields in (
            (shim_pb2, shim_lite, "StateResponse", ["exited_at"]),
            (v1_pb2, v1_lite, "Metrics", ["cpu", "pids", "memory", "blkio"])):
        pb, lt = getattr(mod_pb, cls)(), getattr(mod_lt, cls)()
        if scenario(pb, mod_pb) is False:
            continue
        scenario(lt, mod_lt)
        assert [lt.HasField(f) for f in fields] == [pb.HasField(f) for f in fields], scenario.__name__
        assert lt.SerializeToString() == pb.SerializeToString(), scenario.__name__
        assert lt == type(lt).FromString(pb.SerializeToString())


def test_has_field_semantics_match_upb():
    ts = {shim_pb2: timestamp_pb2.Timestamp, shim_lite: wkt_lite.Timestamp}

    def read_only(m, mod):
        if hasattr(m, "exited_at"):
            assert m.exited_at.seconds == 0
        else:
            assert m.cpu.usage.total == 0 and m.pids.limit == 0

    def set_default_value(m, mod):
        if hasattr(m, "exited_at"):
            m.exited_at.seconds = 0
        else:
            m.pids.current = 0

    def from_nanoseconds(m, mod):
        if not hasattr(m, "exited_at"):
            return False
        m.exited_at.FromNanoseconds(1_700_000_000_123_456_789)

    def from_nanoseconds_zero(m, mod):
        if not hasattr(m, "exited_at"):
            return False
        m.exited_at.FromNanoseconds(0)

    def kwarg_empty(m, mod):
        if not hasattr(m, "exited_at"):
            return False
        m.MergeFrom(type(m)(exited_at=ts[mod]()))

    def copy_from_empty(m, mod):
        if not hasattr(m, "exited_at"):
            return False
        m.exited_at.CopyFrom(ts[mod]())

    def nested_scalar(m, mod):
        if hasattr(m, "cpu"):
            m.cpu.usage.total = 5

    def nested_extend_empty(m, mod):
        if hasattr(m, "cpu"):
            m.cpu.usage.per_cpu.extend([])
        else:
            return False

    def nested_add(m, mod):
        if hasattr(m, "memory"):
            m.blkio.io_serviced_recursive.add(op="Read")
        else:
            return False

    def clear_field(m, mod):
        if hasattr(m, "exited_at"):
            m.exited_at.seconds = 5
            m.ClearField("exited_at")
        else:
            m.cpu.usage.total = 5
            m.ClearField("cpu")

    def clear_child(m, mod):
        if hasattr(m, "exited_at"):
            m.exited_at.Clear()
        else:
            m.pids.Clear()

    def parse_into_child(m, mod):
        if hasattr(m, "exited_at"):
            m.exited_at.ParseFromString(b"")
        else:
            m.pids.MergeFromString(b"\x08\x03")

    for scenario in (read_only, set_default_value, from_nanoseconds, from_nanoseconds_zero,
                     kwarg_empty, copy_from_empty, nested_scalar, nested_extend_empty, nested_add,
                     clear_field, clear_child, parse_into_child):
        _same_presence(scenario)


def test_has_field_errors():
    m = shim_lite.StateResponse()
    with pytest.raises(ValueError, match="nope"):
        m.HasField("nope")
    with pytest.raises(ValueError):
        m.HasField("id")  # proto3 scalars have no presence
    with pytest.raises(ValueError):
        shim_lite.PidsResponse().HasField("processes")
    with pytest.raises(ValueError):
        shim_pb2.StateResponse().HasField("id")


def test_constructor_and_assignment_errors_match_upb():
    for kwargs, error in (({"nope": 1}, ValueError), ({"pid": -1}, ValueError),
                          ({"pid": 2**32}, ValueError), ({"pid": "1"}, TypeError),
                          ({"pid": 1.5}, TypeError), ({"id": 5}, TypeError),
                          ({"terminal": "yes"}, TypeError), ({"status": "NOT_A_STATUS"}, ValueError),
                          ({"exited_at": shim_lite.StateRequest()}, TypeError)):
        with pytest.raises(error) as e:
            shim_lite.StateResponse(**kwargs)
        if "nope" in kwargs:
            assert "nope" in str(e.value)
        if "exited_at" not in kwargs:
            with pytest.raises(error):
                shim_pb2.StateResponse(**kwargs)
    m = shim_lite.StateResponse()
    with pytest.raises(ValueError):
        m.pid = -1
    with pytest.raises(TypeError):
        m.bundle = 3
    with pytest.raises(AttributeError):
        m.nope = 3
    with pytest.raises(AttributeError):
        shim_lite.CreateTaskRequest().rootfs = []
    with pytest.raises(AttributeError):
        shim_pb2.CreateTaskRequest().rootfs = []
    r = shim_lite.CreateTaskRequest()
    with pytest.raises(TypeError):
        r.rootfs.append(shim_lite.StateRequest())
    c = v1_lite.CPUUsage()
    with pytest.raises(ValueError):
        c.per_cpu.append(-1)
    # as upb: no bool for an int, but an int for a bool, a name for an enum, UTF-8 for a string
    for kwargs in ({"pid": True}, {"status": True}, {"terminal": 1.0}):
        with pytest.raises(TypeError):
            shim_lite.StateResponse(**kwargs)
        with pytest.raises(TypeError):
            shim_pb2.StateResponse(**kwargs)
    m = shim_lite.StateResponse(pid=1, status="RUNNING", id=b"c1", terminal=2)
    assert (m.pid, m.status, m.id, m.terminal) == (1, 2, "c1", True)
    assert m.SerializeToString() == shim_pb2.StateResponse(
        pid=1, status="RUNNING", id=b"c1", terminal=2).SerializeToString()
    # None means unset
    assert shim_lite.StateResponse(id=None, exited_at=None) == shim_lite.StateResponse()


def test_repeated_add_and_pids_response_as_the_service_builds_it():
    lt, pb = shim_lite.PidsResponse(), shim_pb2.PidsResponse()
    for m, any_of in ((lt, None), (pb, None)):
        for pid in (1, 42):
            info = m.processes.add(pid=pid)
            assert info.pid == pid and m.processes[-1] is not None
            if pid == 42:
                info.info.type_url = "containerd.runc.v1.ProcessDetails"
                info.info.value = b"\x0a\x02e1"
    assert lt.SerializeToString() == pb.SerializeToString()
    assert len(lt.processes) == 2 and lt.processes[1].info.value == b"\x0a\x02e1"
    lt.processes.append(task_lite.ProcessInfo(pid=7))
    lt.processes.extend([task_lite.ProcessInfo(pid=8)])
    assert [p.pid for p in lt.processes] == [1, 42, 7, 8]
    r = shim_lite.CreateTaskRequest()
    r.rootfs.add(type="bind", options=["rbind", "ro"])
    r.rootfs[0].options.append("nosuid")
    assert list(r.rootfs[0].options) == ["rbind", "ro", "nosuid"]
    assert r.rootfs == [shim_lite.CreateTaskRequest(rootfs=[{"type": "bind", "options": [
        "rbind", "ro", "nosuid"]}]).rootfs[0]]


def test_timestamp():
    for n in (0, 1, 999_999_999, 1_000_000_000, 1_700_000_000_123_456_789, -1, -1_500_000_000):
        a, b = wkt_lite.Timestamp(), timestamp_pb2.Timestamp()
        a.FromNanoseconds(n)
        b.FromNanoseconds(n)
        assert (a.seconds, a.nanos) == (b.seconds, b.nanos)
        assert a.ToNanoseconds() == n == b.ToNanoseconds()
        assert a.SerializeToString() == b.SerializeToString()
        assert a.ToDatetime() == b.ToDatetime()
    with pytest.raises(ValueError):
        wkt_lite.Timestamp().FromNanoseconds(10**30)
    t = wkt_lite.Timestamp()
    t.GetCurrentTime()
    import time
    assert abs(t.ToNanoseconds() - time.time_ns()) < 5 * 10**9
    import datetime
    dt = datetime.datetime(2024, 5, 6, 7, 8, 9, 123456)
    t.FromDatetime(dt)
    p = timestamp_pb2.Timestamp()
    p.FromDatetime(dt)
    assert (t.seconds, t.nanos) == (p.seconds, p.nanos) and t.ToDatetime() == dt
    t.FromSeconds(5)
    assert (t.seconds, t.nanos, t.ToSeconds()) == (5, 0, 5)


def test_any_pack_unpack():
    inner = shim_lite.CreateTaskRequest(id="c1", rootfs=[{"type": "overlay", "options": ["a", "b", "c"]}])
    a = wkt_lite.Any()
    a.Pack(inner)
    assert a.type_url == "type.googleapis.com/containerd.task.v2.CreateTaskRequest"
    p = any_pb2.Any()
    p.Pack(shim_pb2.CreateTaskRequest.FromString(inner.SerializeToString()))
    assert a.SerializeToString() == p.SerializeToString()
    out = shim_lite.CreateTaskRequest()
    assert a.Unpack(out) and out == inner
    assert a.Is(shim_lite.CreateTaskRequest.DESCRIPTOR) and a.TypeName() == inner.FULL_NAME
    assert not a.Unpack(shim_lite.StateRequest())
    a.Pack(inner, type_url_prefix="example.com")
    assert a.type_url == "example.com/containerd.task.v2.CreateTaskRequest"
    # the bare name containerd uses is not a type URL to protobuf either
    bare = wkt_lite.Any(type_url=inner.DESCRIPTOR.full_name, value=inner.SerializeToString())
    assert not bare.Is(inner.DESCRIPTOR)
    assert not any_pb2.Any(type_url=inner.DESCRIPTOR.full_name).Is(shim_pb2.CreateTaskRequest.DESCRIPTOR)
    # in a request, as the daemon's Create receives it
    req = shim_lite.CreateTaskRequest(options=a)
    assert shim_lite.CreateTaskRequest.FromString(req.SerializeToString()).options == a


def test_services_match_the_pb2_descriptors():
    found = 0
    for fd in PB2_FILES:
        module = importlib.import_module(gen_lite.module_of(fd.name))
        services = getattr(module, "SERVICES", {})
        want = {s.full_name: [(m.name, m.input_type.full_name, m.output_type.full_name)
                              for m in s.methods] for s in fd.services_by_name.values()}
        got = {name: [(m, req.FULL_NAME, resp.FULL_NAME) for m, (req, resp) in methods.items()]
               for name, methods in services.items()}
        assert got == want
        found += len(got)
    assert found >= 2
    task = shim_lite.SERVICES["containerd.task.v2.Task"]
    assert task["Create"] == (shim_lite.CreateTaskRequest, shim_lite.CreateTaskResponse)
    assert task["Kill"][1] is wkt_lite.Empty
    assert list(task)[0] == "State"


def test_enums_and_module_constants():
    assert (task_lite.UNKNOWN, task_lite.CREATED, task_lite.RUNNING, task_lite.STOPPED,
            task_lite.PAUSED) == (0, 1, 2, 3, 4)
    assert task_lite.Status.Name(task_lite.PAUSED) == "PAUSED"
    assert task_lite.Status.Value("STOPPED") == 3 and task_lite.Status.STOPPED == 3
    assert task_lite.Status.keys() == task_pb2.Status.keys()
    assert task_lite.Status.items() == task_pb2.Status.items()
    assert task_lite.Status.DESCRIPTOR.full_name == "containerd.v1.types.Status"
    with pytest.raises(ValueError):
        task_lite.Status.Name(42)
    with pytest.raises(AttributeError):
        task_lite.Status.NOPE


def canon(d, lt):
    """lite message lt's content as upb serializes it deterministically."""
    return pb2_class(d).FromString(lt.SerializeToString()).SerializeToString(deterministic=True)


def scramble(d, m) -> bool:
    """Change every string in m, recursively; whether there was one."""
    changed = False
    for f in d.fields:
        v = getattr(m, f.name)
        if f.message_type is not None and f.message_type.GetOptions().map_entry:
            continue
        if f.message_type is not None:
            for x in (v if f.is_repeated else [v] if m.HasField(f.name) else []):
                changed |= scramble(f.message_type, x)
        elif f.type == FD.TYPE_STRING and not f.is_repeated:
            setattr(m, f.name, v + "~")
            changed = True
    return changed


def test_copy_merge_clear_match_upb():
    rnd = random.Random(3)
    for name in ("containerd.task.v2.CreateTaskRequest", "io.containerd.cgroups.v1.Metrics",
                 "containerd.task.v2.UpdateTaskRequest", "containerd.task.v2.StateResponse"):
        d = PB2_MESSAGES[name]
        for _ in range(20):
            s1, s2 = rand_spec(rnd, d), rand_spec(rnd, d)
            a_pb, b_pb = make(pb2_class, d, s1), make(pb2_class, d, s2)
            a_lt, b_lt = make(lambda x: LITE[x.full_name], d, s1), make(lambda x: LITE[x.full_name], d, s2)
            a_pb.MergeFrom(b_pb)
            a_lt.MergeFrom(b_lt)
            assert canon(d, a_lt) == a_pb.SerializeToString(deterministic=True)
            c = LITE[name]()
            c.CopyFrom(b_lt)
            assert c == b_lt and canon(d, c) == b_pb.SerializeToString(deterministic=True)
            # a deep copy: changing the copy leaves the original alone
            before = b_lt.SerializeToString(deterministic=True)
            if scramble(d, c):
                assert c != b_lt
            assert b_lt.SerializeToString(deterministic=True) == before
            c.Clear()
            assert c == LITE[name]() and c.SerializeToString() == b""
    with pytest.raises(TypeError):
        shim_lite.StateResponse().CopyFrom(shim_lite.StateRequest())


def test_repr_copy_pickle():
    m = shim_lite.CreateTaskRequest(id="c1", rootfs=[{"type": "bind"}], terminal=True)
    assert repr(m) == "CreateTaskRequest(id='c1', rootfs=[Mount(type='bind')], terminal=True)"
    assert repr(shim_lite.StateResponse(exited_at={})) == "StateResponse(exited_at=Timestamp())"
    for c in (copy.deepcopy(m), copy.copy(m), pickle.loads(pickle.dumps(m))):
        assert c == m and c is not m and c.rootfs[0] is not m.rootfs[0]
    with pytest.raises(TypeError):
        hash(m)
    n = shim_lite.CreateTaskRequest()
    assert n.ParseFromString(m.SerializeToString()) == len(m.SerializeToString()) and n == m
    assert m.ByteSize() == len(m.SerializeToString())


def test_the_daemons_descriptor_uses():
    """What shim/ reads of DESCRIPTOR: full_name for Any type URLs, fields_by_name in metrics."""
    details = shim_lite.StateResponse.DESCRIPTOR
    assert details.full_name == shim_pb2.StateResponse.DESCRIPTOR.full_name
    for cls in (v1_lite.Metrics, v1_lite.MemoryStat, v1_lite.CPUUsage):
        pb = getattr(v1_pb2, cls.DESCRIPTOR.name)
        want = {n: (f.message_type is None, f.is_repeated)
                for n, f in pb.DESCRIPTOR.fields_by_name.items()}
        got = {n: (f.message_type is None, f.is_repeated)
               for n, f in cls.DESCRIPTOR.fields_by_name.items()}
        assert got == want


# ---------------------------------------------------------------------------------------------
# Imports and freshness.

def test_tables_are_computed_on_first_use_or_by_prepare():
    code = ("from proto import lite\n"
            "from proto.cgroups.v2 import metrics_lite as m\n"
            "assert '_INIT' not in vars(m.Metrics) and '_INIT' not in vars(m.IOEntry)\n"
            "assert m.Metrics(pids={'current': 3}).SerializeToString() == b'\\x0a\\x02\\x08\\x03'\n"
            "assert '_INIT' in vars(m.Metrics) and '_INIT' not in vars(m.IOEntry)\n"
            "lite.prepare(m)\n"
            "assert all('_ENC' in vars(c) for c in vars(m).values() if isinstance(c, type)"
            " and issubclass(c, lite.Message))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_lite_modules_never_import_google():
    modules = sorted({gen_lite.module_of(fd.name) for fd in PB2_FILES})
    code = ("import importlib, sys\n"
            f"for m in {modules!r}: importlib.import_module(m)\n"
            "import proto.lite\n"
            "from proto.containerd.task.v2 import shim_lite\n"
            "r = shim_lite.CreateTaskRequest(id='x', rootfs=[{'type': 'bind'}])\n"
            "shim_lite.CreateTaskRequest.FromString(r.SerializeToString()).rootfs[0].type\n"
            "bad = sorted(m for m in sys.modules if m == 'google' or m.startswith('google.'))\n"
            "assert not bad, bad\n"
            "print(len([m for m in sys.modules if m.endswith('_lite')]))\n"
            "import google.protobuf  # it was there to be imported\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) == len(modules)


def test_generated_lite_modules_are_fresh(tmp_path):
    subprocess.run([sys.executable, os.path.join(ROOT, "hack", "gen_lite.py"), str(tmp_path),
                    "--from", ROOT], check=True)
    fresh = sorted(_lite_files(str(tmp_path)))
    committed = sorted(_lite_files(ROOT))
    assert "proto/wkt_lite.py" in committed
    assert fresh == committed, "a lite module was added or removed: run hack/gen_lite.py"
    stale = [p for p in fresh if not filecmp.cmp(tmp_path / p, os.path.join(ROOT, p), shallow=False)]
    assert stale == [], f"stale lite modules (run hack/gen_lite.py): {stale}"
    for p in committed:
        with open(os.path.join(ROOT, p)) as f:
            assert f.readline() == "# generated by hack/gen_lite.py; do not edit\n"


def test_generator_refuses_what_lite_cannot_do(tmp_path):
    if importlib.util.find_spec("grpc_tools") is None:
        pytest.skip("grpcio-tools missing")
    from grpc_tools import protoc
    (tmp_path / "litebad").mkdir()
    (tmp_path / "litebad" / "bad.proto").write_text(
        'syntax = "proto3"; package litebad; message M { oneof o { string a = 1; int32 b = 2; } }\n'
        'message N { optional int32 x = 1; }\n')
    assert protoc.main(["protoc", f"-I{tmp_path}", f"--python_out={tmp_path}", "litebad/bad.proto"]) == 0
    sys.path.insert(0, str(tmp_path))
    try:
        pb = importlib.import_module("litebad.bad_pb2")
    finally:
        sys.path.remove(str(tmp_path))
    with pytest.raises(gen_lite.Unsupported, match="oneof"):
        gen_lite.generate([pb.DESCRIPTOR])
