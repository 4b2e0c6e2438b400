"""Pure-Python proto3 messages ("lite"), for the shim daemon.

The daemon imported google.protobuf (upb and the generated _pb2 modules) only to encode and decode
a few dozen small messages; that costs ~4 MB of RSS in every daemon. hack/gen_lite.py generates a
``<name>_lite.py`` beside each ``<name>_pb2.py`` the daemon needs (and proto/wkt_lite.py for the
well-known types they reference) whose classes subclass ``Message`` below and behave like the
subset of the protobuf message API the daemon uses:

- ``Msg(**fields)`` (unknown name -> ValueError; None means unset; a dict may stand for a message),
  attribute reads (unset scalars read as the proto3 default, an unset message field reads as an
  empty sub-message that becomes present once it, or anything in it, is mutated), type- and
  range-checked assignment (TypeError/ValueError, as protobuf), repeated fields as list
  subclasses (``.add(**fields)`` for messages), map fields as dict subclasses;
- ``SerializeToString()``: byte for byte what upb writes for the same content, except for the
  order of map entries (upb: hash order; lite: insertion order, or sorted by key with
  ``deterministic=True``, where upb has an order of its own);
- ``ParseFromString``/``MergeFromString``/``FromString`` (packed and unpacked repeated scalars
  accepted, unknown fields skipped, malformed input -> ``DecodeError``, a ValueError, naming the
  message); ``HasField``, ``ClearField``, ``Clear``, ``CopyFrom``, ``MergeFrom`` (deep copies),
  ``ByteSize``, ``==``, a compact repr, copy and pickle;
- ``FULL_NAME`` and ``DESCRIPTOR`` (``.full_name``, ``.name``, ``.fields``, ``.fields_by_name``
  with ``name``, ``number``, ``type``, ``is_repeated``, ``message_type``, ``enum_type``);
  ``EnumType`` for enums (``.Name``, ``.Value``, ``.keys()``, attribute access to values);
- the helpers of Any (Pack/Unpack/Is/TypeName) and Timestamp (From/ToNanoseconds, ...).

Where it differs from protobuf: messages passed in (constructor, assignment, append, map values)
are stored, not copied; a message field may be assigned; unknown fields are dropped, not kept
and re-serialized; no oneofs, proto2, groups or extensions (the generator refuses them).

Nothing is imported but, for float and fixed-width fields (none in the daemon's), the standard
library's _struct (on first use). ``build()``, which each generated module calls for its classes,
only records the fields: a class's tables (encoding, decoding, defaults) are computed the first
time it is used, once, never per call. ``prepare(module, ...)`` computes them all now (a fork
server would, before forking, so that its children share them).
"""

__all__ = ["DecodeError", "Message", "EnumType", "Descriptor", "FieldDescriptor", "build",
           "prepare", "AnyMixin", "TimestampMixin", "Repeated", "RepeatedMessage", "Map"]


class DecodeError(ValueError):
    """Malformed or truncated input (protobuf's google.protobuf.message.DecodeError)."""


class _Malformed(Exception):
    pass


# Field kinds: FieldDescriptor.TYPE_* numbers.
DOUBLE, FLOAT, INT64, UINT64, INT32, FIXED64, FIXED32, BOOL, STRING = 1, 2, 3, 4, 5, 6, 7, 8, 9
MESSAGE, BYTES, UINT32, ENUM, SFIXED32, SFIXED64, SINT32, SINT64 = 11, 12, 13, 14, 15, 16, 17, 18
# Labels.
SINGULAR, REPEATED, PACKED, MAP = 0, 1, 2, 3

_M32 = 0xFFFFFFFF
_M64 = 0xFFFFFFFFFFFFFFFF
_2_64 = 1 << 64

# Encoding codes (one value): string, bytes, unsigned varint (uint32/uint64/bool), signed varint
# (int32/int64/enum, negative as 10 bytes), zigzag 32/64, fixed integer, fixed float, message.
_C_STR, _C_BYTES, _C_UVAR, _C_SVAR, _C_Z32, _C_Z64, _C_FIXI, _C_FIXF, _C_MSG = range(9)
_C_REP, _C_PACKED, _C_MAP = 16, 32, 48  # added to the element's code
# Decoding codes.
(_D_STR, _D_VAR, _D_MSG, _D_RMSG, _D_RSTR, _D_BYTES, _D_FIX, _D_RBYTES, _D_RVAR, _D_RFIX,
 _D_PVAR, _D_PFIX, _D_MAP) = range(13)
# Varint conversions when decoding: none (uint64), uint32, int32 (and enum), int64, bool, sint32,
# sint64.
_V_U64, _V_U32, _V_I32, _V_I64, _V_BOOL, _V_Z32, _V_Z64 = range(7)

_VARINT_KINDS = {INT64: (_C_SVAR, _V_I64), UINT64: (_C_UVAR, _V_U64), INT32: (_C_SVAR, _V_I32),
                 BOOL: (_C_UVAR, _V_BOOL), UINT32: (_C_UVAR, _V_U32), ENUM: (_C_SVAR, _V_I32),
                 SINT32: (_C_Z32, _V_Z32), SINT64: (_C_Z64, _V_Z64)}
_FIXED_KINDS = {DOUBLE: "d", FLOAT: "f", FIXED64: "Q", FIXED32: "I", SFIXED64: "q", SFIXED32: "i"}
_DEFAULTS = {DOUBLE: 0.0, FLOAT: 0.0, INT64: 0, UINT64: 0, INT32: 0, FIXED64: 0, FIXED32: 0,
             BOOL: False, STRING: "", MESSAGE: None, BYTES: b"", UINT32: 0, ENUM: 0,
             SFIXED32: 0, SFIXED64: 0, SINT32: 0, SINT64: 0}

_osa = object.__setattr__
_onew = object.__new__
_lappend = list.append
_lextend = list.extend
_dset = dict.__setitem__
_structs: dict = {}


def _struct(fmt: str):
    s = _structs.get(fmt)
    if s is None:
        from _struct import Struct
        s = _structs[fmt] = Struct(fmt)
    return s


# ---------------------------------------------------------------------------------------------
# Value checks (assignment, constructor, containers): protobuf's TypeError/ValueError.

def _type_error(v, expected: str):
    return TypeError(f"{v!r} has type {type(v).__name__}, but expected one of: {expected}")


def _int_check(lo: int, hi: int):
    def check(v):
        if type(v) is not int:
            if isinstance(v, (bool, float, str, bytes)) or not hasattr(type(v), "__index__"):
                raise _type_error(v, "int")
            v = v.__index__()
        if v < lo or v > hi:
            raise ValueError(f"Value out of range: {v}")
        return v
    return check


def _check_bool(v):
    if type(v) is bool:
        return v
    if isinstance(v, (float, str, bytes)) or not hasattr(type(v), "__index__"):
        raise _type_error(v, "int, bool")
    return bool(v)


def _check_str(v):
    if type(v) is str:
        return v
    if isinstance(v, bytes):
        try:
            return v.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"{v!r} has type bytes, but isn't valid UTF-8 encoding.") from None
    if isinstance(v, str):
        return str(v)
    raise _type_error(v, "bytes, str")


def _check_bytes(v):
    if type(v) is bytes:
        return v
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v)
    raise _type_error(v, "bytes")


def _check_double(v):
    if type(v) is float:
        return v
    if isinstance(v, (str, bytes)) or not isinstance(v, (int, float)):
        raise _type_error(v, "int, float")
    return float(v)


def _check_float(v):
    """As upb stores it: a float32 (out of range -> +/-inf)."""
    v = _check_double(v)
    f32 = _struct("<f")
    try:
        return f32.unpack(f32.pack(v))[0]
    except OverflowError:
        return v * float("inf")


_INT_RANGES = {INT32: (-(1 << 31), (1 << 31) - 1), SINT32: (-(1 << 31), (1 << 31) - 1),
               SFIXED32: (-(1 << 31), (1 << 31) - 1), UINT32: (0, _M32), FIXED32: (0, _M32),
               INT64: (-(1 << 63), (1 << 63) - 1), SINT64: (-(1 << 63), (1 << 63) - 1),
               SFIXED64: (-(1 << 63), (1 << 63) - 1), UINT64: (0, _M64), FIXED64: (0, _M64),
               ENUM: (-(1 << 31), (1 << 31) - 1)}
_int_checks: dict = {}


def _checker(kind: int, sub):
    if kind == STRING:
        return _check_str
    if kind == BYTES:
        return _check_bytes
    if kind == BOOL:
        return _check_bool
    if kind == DOUBLE:
        return _check_double
    if kind == FLOAT:
        return _check_float
    lo, hi = _INT_RANGES[kind]
    check = _int_checks.get((lo, hi))
    if check is None:
        check = _int_checks[(lo, hi)] = _int_check(lo, hi)
    if kind == ENUM and sub is not None:
        def check_enum(v, _check=check, _enum=sub):
            return _enum.Value(v) if isinstance(v, str) else _check(v)
        return check_enum
    return check


def _message_value(cls, v):
    """A message value for a field of type cls: an instance of it, or a dict of its fields."""
    if isinstance(v, cls):
        _osa(v, "_present", True)
        return v
    if isinstance(v, dict):
        return cls(**v)
    raise _type_error(v, cls.FULL_NAME)


# ---------------------------------------------------------------------------------------------
# Containers. Mutating one marks it dirty, so that a lazily created parent becomes present.

class Repeated(list):
    """A repeated scalar field: a list whose elements are checked as the field's type."""

    __slots__ = ("_aux", "_dirty")

    def append(self, value):
        _lappend(self, self._aux(value))
        self._dirty = True

    def extend(self, values):
        check = self._aux
        _lextend(self, [check(v) for v in values])
        self._dirty = True

    def insert(self, index, value):
        list.insert(self, index, self._aux(value))
        self._dirty = True

    def __setitem__(self, index, value):
        if isinstance(index, slice):
            value = [self._aux(v) for v in value]
        else:
            value = self._aux(value)
        list.__setitem__(self, index, value)
        self._dirty = True

    def __iadd__(self, values):
        self.extend(values)
        return self

    def MergeFrom(self, other):
        self.extend(other)

    def __reduce__(self):
        return list, (list(self),)


class RepeatedMessage(Repeated):
    """A repeated message field; ``add(**fields)`` appends a new element and returns it."""

    __slots__ = ()

    def add(self, **fields):
        m = self._aux(**fields)
        _lappend(self, m)
        self._dirty = True
        return m

    def _value(self, v):
        return _message_value(self._aux, v)

    def append(self, value):
        _lappend(self, self._value(value))
        self._dirty = True

    def extend(self, values):
        _lextend(self, [self._value(v) for v in values])
        self._dirty = True

    def insert(self, index, value):
        list.insert(self, index, self._value(value))
        self._dirty = True

    def __setitem__(self, index, value):
        if isinstance(index, slice):
            value = [self._value(v) for v in value]
        else:
            value = self._value(value)
        list.__setitem__(self, index, value)
        self._dirty = True


class Map(dict):
    """A map field. A missing key reads as the default value and is inserted (as protobuf)."""

    __slots__ = ("_aux", "_dirty")  # _aux: key check, value check, value class, value default

    def __setitem__(self, key, value):
        kcheck, vcheck, vcls, _ = self._aux
        _dset(self, kcheck(key), vcheck(value) if vcls is None else _message_value(vcls, value))
        self._dirty = True

    def __missing__(self, key):
        kcheck, _, vcls, default = self._aux
        key = kcheck(key)
        value = default if vcls is None else vcls()
        _dset(self, key, value)
        self._dirty = True
        return value

    def get_or_create(self, key):
        return self[key]

    def update(self, *args, **kwargs):
        for k, v in dict(*args, **kwargs).items():
            self[k] = v

    def setdefault(self, key, default=None):
        if key not in self:
            self[key] = default
        return self[key]

    def MergeFrom(self, other):
        self.update(other)

    def __reduce__(self):
        return dict, (dict(self),)


# ---------------------------------------------------------------------------------------------
# Descriptors (the little of protobuf's the daemon reads) and enums.

class FieldDescriptor:
    __slots__ = ("name", "number", "type", "is_repeated", "message_type", "enum_type",
                 "containing_type")

    def __repr__(self):
        return f"<FieldDescriptor {self.containing_type.full_name}.{self.name}>"


class Descriptor:
    """``full_name``, ``name``, ``fields`` and ``fields_by_name`` of a message class."""

    __slots__ = ("full_name", "name", "_concrete_class", "_fields")

    def __init__(self, cls):
        self.full_name = cls.FULL_NAME
        self.name = cls.FULL_NAME.rpartition(".")[2]
        self._concrete_class = cls
        self._fields = None

    @property
    def fields(self) -> list:
        if self._fields is None:
            fields = []
            for f in self._concrete_class._BYNAME.values():
                d = FieldDescriptor()
                d.name, d.number, d.type, d.containing_type = f.name, f.number, f.kind, self
                d.is_repeated = f.label != SINGULAR
                d.message_type = f.sub.DESCRIPTOR if f.kind == MESSAGE else None
                d.enum_type = f.sub.DESCRIPTOR if f.kind == ENUM and f.sub is not None else None
                fields.append(d)
            self._fields = fields
        return self._fields

    @property
    def fields_by_name(self) -> dict:
        return {f.name: f for f in self.fields}

    @property
    def fields_by_number(self) -> dict:
        return {f.number: f for f in self.fields}

    def __repr__(self):
        return f"<Descriptor {self.full_name}>"


class _LazyDescriptor:
    """Message.DESCRIPTOR: made on first use, then stored on the class."""

    def __get__(self, obj, cls):
        if cls is Message:
            return self
        d = Descriptor(cls)
        setattr(cls, "DESCRIPTOR", d)
        return d


class EnumDescriptor:
    __slots__ = ("full_name", "name")

    def __init__(self, full_name):
        self.full_name = full_name
        self.name = full_name.rpartition(".")[2]


class EnumType:
    """A proto enum (protobuf's EnumTypeWrapper): ``Status.RUNNING``, ``Status.Name(2)``,
    ``Status.Value("RUNNING")``, ``keys()``, ``values()``, ``items()``."""

    __slots__ = ("DESCRIPTOR", "_by_name", "_by_number")

    def __init__(self, full_name: str, values: tuple):
        self.DESCRIPTOR = EnumDescriptor(full_name)
        self._by_name = dict(values)
        self._by_number = {}
        for name, number in values:
            self._by_number.setdefault(number, name)

    def __getattr__(self, name):
        if name[:1] == "_" or name == "DESCRIPTOR":
            raise AttributeError(name)
        try:
            return self._by_name[name]
        except KeyError:
            raise AttributeError(f"Enum {self.DESCRIPTOR.full_name} has no value {name!r}") from None

    def Name(self, number: int) -> str:
        try:
            return self._by_number[number]
        except (KeyError, TypeError):
            raise ValueError(f"Enum {self.DESCRIPTOR.name} has no name defined for value "
                             f"{number!r}") from None

    def Value(self, name: str) -> int:
        try:
            return self._by_name[name]
        except (KeyError, TypeError):
            raise ValueError(f"Enum {self.DESCRIPTOR.name} has no value defined for name "
                             f"{name!r}") from None

    def keys(self) -> list:
        return list(self._by_name)

    def values(self) -> list:
        return list(self._by_name.values())

    def items(self) -> list:
        return list(self._by_name.items())

    def __repr__(self):
        return f"<EnumType {self.DESCRIPTOR.full_name}>"


# ---------------------------------------------------------------------------------------------
# Fields and the per-class tables.

class _Field:
    __slots__ = ("name", "number", "kind", "sub", "label", "slot", "check", "default")

    def __init__(self, name, number, kind, sub=None, label=SINGULAR):
        if kind == ENUM and sub is not None and not isinstance(sub, EnumType):
            raise TypeError(f"field {name}: enum type expected, got {sub!r}")
        if kind == MESSAGE and not (isinstance(sub, type) and issubclass(sub, Message)):
            raise TypeError(f"field {name}: message class expected, got {sub!r}")
        if kind not in _DEFAULTS or label not in (SINGULAR, REPEATED, PACKED, MAP):
            raise TypeError(f"field {name}: unsupported kind {kind!r} or label {label!r}")
        self.name, self.number, self.kind, self.sub, self.label = name, number, kind, sub, label
        self.slot = "_" + name if kind == MESSAGE and label == SINGULAR else name
        self.check = None if kind == MESSAGE else _checker(kind, sub)
        self.default = _DEFAULTS[kind]


# Equal fields, tags and properties are shared between classes ("id = 1" of type string...).
_shared: dict = {}


def _share(value):
    return _shared.setdefault(value, value)


def _field(spec: tuple) -> "_Field":
    key = ("field", spec)
    f = _shared.get(key)
    if f is None:
        f = _shared[key] = _Field(*spec)
    return f


def _wire_type(kind):
    if kind in _VARINT_KINDS:
        return 0
    if kind in (DOUBLE, FIXED64, SFIXED64):
        return 1
    if kind in (FLOAT, FIXED32, SFIXED32):
        return 5
    return 2


def _tag(number: int, wire_type: int) -> bytes:
    out = bytearray()
    _varint(out, (number << 3) | wire_type)
    return _share(bytes(out))


def _elem_code(kind):
    """(encoding code, encoding aux, decoding varint conversion or fixed Struct)."""
    if kind == STRING:
        return _C_STR, None, None
    if kind == BYTES:
        return _C_BYTES, None, None
    if kind == MESSAGE:
        return _C_MSG, None, None
    if kind in _VARINT_KINDS:
        code, conv = _VARINT_KINDS[kind]
        return code, None, conv
    s = _struct("<" + _FIXED_KINDS[kind])
    return (_C_FIXF if kind in (FLOAT, DOUBLE) else _C_FIXI), s, s


def _msg_property(name: str, slot: str, sub):
    def get(self):
        v = getattr(self, slot)
        if v is None:
            v = _new(sub)
            _osa(v, "_present", False)  # present once mutated (see _is_present)
            _osa(self, slot, v)
        return v

    def set(self, value):
        _osa(self, slot, None if value is None else _message_value(sub, value))

    return property(get, set, None, f"{name}: {sub.FULL_NAME}")


def build(cls, fields: tuple, map_entry: bool = False) -> None:
    """Declare the fields of message class cls, each (name, number, kind[, sub[, label]]): sub
    is the message class or EnumType (or None), label SINGULAR, REPEATED, PACKED or MAP (then
    sub is the map entry class). Checks that cls.__slots__ lists each field's storage, in order.
    The tables are computed on the class's first use (most classes of a module never are)."""
    slots = tuple("_" + f[0] if f[2] == MESSAGE and len(f) < 5 else f[0] for f in fields)
    if cls.__dict__.get("__slots__") != slots:
        raise TypeError(f"{cls.__qualname__}.__slots__ should be {slots!r}")
    cls._SPEC = fields
    if map_entry:
        cls._MAP_ENTRY = True


class _Lazy:
    """A table of Message (_INIT, _ENC...): computes the class's tables on first use and stores
    them on the class, where later lookups find them first."""

    def __init__(self, name):
        self.name = name

    def __get__(self, obj, cls):
        _tables(cls)
        return cls.__dict__[self.name]


def _tables(cls) -> None:
    flds = tuple(_field(spec) for spec in cls._SPEC)
    if cls.__dict__.get("_MAP_ENTRY"):
        if [(f.number, f.label) for f in flds] != [(1, SINGULAR), (2, SINGULAR)]:
            raise TypeError(f"{cls.__qualname__}: a map entry has fields 1 and 2")
    init = [("_present", True)]
    cont = []
    enc = []
    dec = {}
    for f in sorted(flds, key=lambda f: f.number):
        code, aux, daux = _elem_code(f.kind)
        wt = _wire_type(f.kind)
        tag = (f.number << 3) | wt
        slot = f.slot
        if f.label == SINGULAR:
            init.append((slot, f.default))
            if f.kind == MESSAGE:
                setattr(cls, f.name, _share_property(f.name, slot, f.sub))
                enc.append((slot, code, _tag(f.number, wt), f.sub))
                dec[tag] = (slot, _D_MSG, f.sub)
            else:
                enc.append((slot, code, _tag(f.number, wt), aux))
                dcode = (_D_STR if code == _C_STR else _D_BYTES if code == _C_BYTES else
                         _D_FIX if wt != 0 else _D_VAR)
                dec[tag] = (slot, dcode, daux)
        elif f.label == MAP:
            entry = f.sub
            if not entry.__dict__.get("_MAP_ENTRY"):
                raise TypeError(f"{cls.__qualname__}.{f.name}: {entry!r} is not a map entry")
            k, v = entry._BYNAME.values()
            kcode, kaux, _ = _elem_code(k.kind)
            vcode, vaux, _ = _elem_code(v.kind)
            vcls = v.sub if v.kind == MESSAGE else None
            cont.append((slot, Map, (k.check, v.check, vcls, v.default)))
            enc.append((slot, _C_MAP, _tag(f.number, 2), (
                kcode, _tag(1, _wire_type(k.kind)), kaux,
                vcode, _tag(2, _wire_type(v.kind)), vaux if vcls is None else vcls)))
            dec[(f.number << 3) | 2] = (slot, _D_MAP, entry)
        elif f.kind == MESSAGE:
            cont.append((slot, RepeatedMessage, f.sub))
            enc.append((slot, _C_REP + code, _tag(f.number, 2), f.sub))
            dec[(f.number << 3) | 2] = (slot, _D_RMSG, f.sub)
        elif f.kind in (STRING, BYTES):
            cont.append((slot, Repeated, f.check))
            enc.append((slot, _C_REP + code, _tag(f.number, 2), aux))
            dec[tag] = (slot, _D_RSTR if f.kind == STRING else _D_RBYTES, None)
        else:
            cont.append((slot, Repeated, f.check))
            if f.label == PACKED:
                enc.append((slot, _C_PACKED + code, _tag(f.number, 2), aux))
            else:
                enc.append((slot, _C_REP + code, _tag(f.number, wt), aux))
            # Both encodings are accepted, as protobuf does.
            packed = (f.number << 3) | 2
            if wt == 0:
                dec[tag] = (slot, _D_RVAR, daux)
                dec[packed] = (slot, _D_PVAR, daux)
            else:
                dec[tag] = (slot, _D_RFIX, daux)
                dec[packed] = (slot, _D_PFIX, (_FIXED_KINDS[f.kind], daux.size))
    cls._INIT = tuple(init)
    cls._CONT = tuple(cont)
    cls._ENC = tuple(enc)
    cls._DEC = dec
    cls._BYNAME = {f.name: f for f in flds}


def prepare(*modules) -> None:
    """Compute now the tables of every message class of these (generated) modules."""
    todo = [vars(m) for m in modules]
    while todo:
        for v in list(todo.pop().values()):
            if isinstance(v, type) and issubclass(v, Message) and "_SPEC" in v.__dict__:
                if "_INIT" not in v.__dict__:
                    _tables(v)
                todo.append(vars(v))


def _share_property(name: str, slot: str, sub):
    key = ("property", name, sub)
    p = _shared.get(key)
    if p is None:
        p = _shared[key] = _msg_property(name, slot, sub)
    return p


def _new(cls):
    m = _onew(cls)
    for slot, default in cls._INIT:
        _osa(m, slot, default)
    for slot, ccls, aux in cls._CONT:
        c = ccls()
        c._aux = aux
        _osa(m, slot, c)
    return m


def _is_present(m) -> bool:
    """Whether sub-message m counts as set: it was assigned, parsed or mutated (a lazily created
    one, read from an unset field, is not until a field of it is set or a container of it (or of
    a sub-message of it) is mutated)."""
    if m._present:
        return True
    for f in m._BYNAME.values():
        v = getattr(m, f.slot)
        if (getattr(v, "_dirty", False) if f.label else
                f.kind == MESSAGE and v is not None and _is_present(v)):
            _osa(m, "_present", True)
            return True
    return False


# ---------------------------------------------------------------------------------------------
# Encoding.

def _varint(out: bytearray, v: int) -> None:
    while v > 127:
        out.append((v & 127) | 128)
        v >>= 7
    out.append(v)


def _put(out: bytearray, code: int, tag: bytes, aux, v) -> None:
    """Append one value with its tag, default or not."""
    out += tag
    if code == _C_STR:
        v = v.encode()
        _varint(out, len(v))
        out += v
    elif code == _C_UVAR:
        _varint(out, v)
    elif code == _C_MSG:
        b = _encode(v, False)
        _varint(out, len(b))
        out += b
    elif code == _C_SVAR:
        _varint(out, v if v >= 0 else v + _2_64)
    elif code == _C_BYTES:
        _varint(out, len(v))
        out += v
    elif code == _C_Z32:
        _varint(out, ((v << 1) ^ (v >> 31)) & _M32)
    elif code == _C_Z64:
        _varint(out, ((v << 1) ^ (v >> 63)) & _M64)
    else:
        out += aux.pack(v)


def _encode(msg, det) -> bytearray:
    out = bytearray()
    for attr, code, tag, aux in msg._ENC:
        v = getattr(msg, attr)
        if not v:  # default, unset or empty; but -0.0 is not all-zero bits, and upb sends it
            if code != _C_FIXF or not any(aux.pack(v)):
                continue
        if code == _C_STR:
            v = v.encode()
            out += tag
            n = len(v)
            if n < 128:
                out.append(n)
            else:
                _varint(out, n)
            out += v
        elif code == _C_UVAR:
            out += tag
            if v < 128:
                out.append(v)
            else:
                _varint(out, v)
        elif code == _C_MSG:
            if v._present or _is_present(v):
                b = _encode(v, det)
                out += tag
                _varint(out, len(b))
                out += b
        elif code < _C_REP:
            _put(out, code, tag, aux, v)
        elif code < _C_PACKED:  # repeated, one tag per element
            code -= _C_REP
            if code == _C_MSG:
                for e in v:
                    b = _encode(e, det)
                    out += tag
                    _varint(out, len(b))
                    out += b
            else:
                for e in v:
                    _put(out, code, tag, aux, e)
        elif code < _C_MAP:  # packed
            code -= _C_PACKED
            if code == _C_FIXI or code == _C_FIXF:
                b = _struct(f"<{len(v)}{aux.format[-1]}").pack(*v)
            else:
                b = bytearray()
                for e in v:
                    if code == _C_UVAR:
                        _varint(b, e)
                    elif code == _C_SVAR:
                        _varint(b, e if e >= 0 else e + _2_64)
                    elif code == _C_Z32:
                        _varint(b, ((e << 1) ^ (e >> 31)) & _M32)
                    else:
                        _varint(b, ((e << 1) ^ (e >> 63)) & _M64)
            out += tag
            _varint(out, len(b))
            out += b
        else:  # map: entries with both key and value, as upb writes them
            kcode, ktag, kaux, vcode, vtag, vaux = aux
            for k, e in (sorted(v.items()) if det else v.items()):
                b = bytearray()
                _put(b, kcode, ktag, kaux, k)
                _put(b, vcode, vtag, vaux, e)
                out += tag
                _varint(out, len(b))
                out += b
    return out


# ---------------------------------------------------------------------------------------------
# Decoding.

def _rvarint(buf: bytes, pos: int):
    b = buf[pos]
    pos += 1
    if b < 128:
        return b, pos
    v = b & 127
    shift = 7
    while True:
        b = buf[pos]
        pos += 1
        v |= (b & 127) << shift
        if b < 128:
            return v & _M64, pos
        shift += 7
        if shift >= 70:
            raise _Malformed("varint longer than 10 bytes")


def _rtag(buf: bytes, pos: int):
    """A tag: at most 5 bytes and 32 bits, as upb reads them."""
    v = 0
    for shift in (0, 7, 14, 21, 28):
        b = buf[pos]
        pos += 1
        v |= (b & 127) << shift
        if b < 128:
            if v >> 32:
                break
            return v, pos
    raise _Malformed("invalid tag")


def _conv(c: int, v: int):
    if c == _V_U32:
        return v & _M32
    if c == _V_I32:
        v &= _M32
        return v - (1 << 32) if v >> 31 else v
    if c == _V_I64:
        return v - _2_64 if v >> 63 else v
    if c == _V_BOOL:
        return v != 0
    if c == _V_Z32:
        v &= _M32
        return (v >> 1) ^ -(v & 1)
    if c == _V_Z64:
        return (v >> 1) ^ -(v & 1)
    return v


def _skip(buf: bytes, pos: int, end: int, tag: int) -> int:
    wt = tag & 7
    if tag >> 3 == 0:
        raise _Malformed("field number 0")
    if wt == 0:
        _, pos = _rvarint(buf, pos)
    elif wt == 2:
        n, pos = _rvarint(buf, pos)
        pos += n
    elif wt == 1:
        pos += 8
    elif wt == 5:
        pos += 4
    elif wt == 3:  # a group: skip up to its end tag
        while True:
            if pos >= end:
                raise _Malformed("truncated group")
            t, pos = _rtag(buf, pos)
            if t & 7 == 4:
                if t >> 3 != tag >> 3:
                    raise _Malformed("mismatched end-group tag")
                break
            pos = _skip(buf, pos, end, t)
    else:
        raise _Malformed(f"invalid wire type {wt}" if wt != 4 else "unexpected end-group tag")
    if pos > end:
        raise _Malformed("truncated")
    return pos


def _merge(msg, buf: bytes, pos: int, end: int) -> None:
    dec = msg._DEC
    while pos < end:
        tag = buf[pos]
        if tag < 128:
            pos += 1
        else:
            tag, pos = _rtag(buf, pos)
        f = dec.get(tag)
        if f is None:
            pos = _skip(buf, pos, end, tag)
            continue
        attr, dc, aux = f
        if dc == _D_VAR:
            v = buf[pos]
            if v < 128:
                pos += 1
            else:
                v, pos = _rvarint(buf, pos)
            _osa(msg, attr, _conv(aux, v) if aux else v)
            continue
        if dc == _D_FIX:
            if pos + aux.size > end:
                raise _Malformed("truncated")
            _osa(msg, attr, aux.unpack_from(buf, pos)[0])
            pos += aux.size
            continue
        if dc == _D_RVAR:
            v, pos = _rvarint(buf, pos)
            _lappend(getattr(msg, attr), _conv(aux, v) if aux else v)
            continue
        if dc == _D_RFIX:
            if pos + aux.size > end:
                raise _Malformed("truncated")
            _lappend(getattr(msg, attr), aux.unpack_from(buf, pos)[0])
            pos += aux.size
            continue
        # length-delimited
        n = buf[pos]
        if n < 128:
            pos += 1
        else:
            n, pos = _rvarint(buf, pos)
        e = pos + n
        if e > end:
            raise _Malformed("truncated")
        if dc == _D_STR:
            _osa(msg, attr, buf[pos:e].decode())
        elif dc == _D_MSG:
            child = getattr(msg, attr)
            if child is None:
                child = _new(aux)
                _osa(msg, attr, child)
            else:
                _osa(child, "_present", True)
            _merge(child, buf, pos, e)
        elif dc == _D_RMSG:
            child = _new(aux)
            _merge(child, buf, pos, e)
            _lappend(getattr(msg, attr), child)
        elif dc == _D_RSTR:
            _lappend(getattr(msg, attr), buf[pos:e].decode())
        elif dc == _D_BYTES:
            _osa(msg, attr, buf[pos:e])
        elif dc == _D_RBYTES:
            _lappend(getattr(msg, attr), buf[pos:e])
        elif dc == _D_PVAR:
            lst = getattr(msg, attr)
            while pos < e:
                v, pos = _rvarint(buf, pos)
                _lappend(lst, _conv(aux, v) if aux else v)
            if pos != e:
                raise _Malformed("truncated packed field")
        elif dc == _D_PFIX:
            ch, size = aux
            if n % size:
                raise _Malformed("packed field length is not a multiple of the element size")
            _lextend(getattr(msg, attr), _struct(f"<{n // size}{ch}").unpack_from(buf, pos))
        else:  # _D_MAP
            entry = _new(aux)
            _merge(entry, buf, pos, e)
            k, v = aux._BYNAME.values()
            value = getattr(entry, v.slot)
            if value is None:  # a message value left out: an empty message
                value = _new(v.sub)
            _dset(getattr(msg, attr), getattr(entry, k.slot), value)
        pos = e
    if pos != end:
        raise _Malformed("truncated")


def _parse(msg, data) -> int:
    if type(data) is not bytes:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"expected bytes, {type(data).__name__} found")
        data = bytes(data)
    try:
        _merge(msg, data, 0, len(data))
    except (_Malformed, IndexError, UnicodeDecodeError, RecursionError) as e:
        why = ("truncated" if isinstance(e, IndexError) else
               "invalid UTF-8 in a string field" if isinstance(e, UnicodeDecodeError) else
               "nested too deeply" if isinstance(e, RecursionError) else str(e))
        raise DecodeError(f"Error parsing message with type '{msg.FULL_NAME}': {why}") from None
    _osa(msg, "_present", True)
    return len(data)


# ---------------------------------------------------------------------------------------------
# Copying and comparing.

def _copy(m):
    c = _new(type(m))
    _merge_from(c, m)
    return c


def _merge_from(dst, src) -> None:
    for f in src._BYNAME.values():
        if f.label == SINGULAR:
            if f.kind == MESSAGE:
                c = getattr(src, f.slot)
                if c is not None and _is_present(c):
                    d = getattr(dst, f.slot)
                    if d is None:
                        d = _new(f.sub)
                        _osa(dst, f.slot, d)
                    _merge_from(d, c)
            else:
                v = getattr(src, f.slot)
                if v or (f.kind in (FLOAT, DOUBLE) and str(v)[0] == "-"):  # -0.0
                    _osa(dst, f.slot, v)
        elif f.label == MAP:
            d = getattr(dst, f.slot)
            for k, v in getattr(src, f.slot).items():
                _dset(d, k, _copy(v) if isinstance(v, Message) else v)
        elif f.kind == MESSAGE:
            _lextend(getattr(dst, f.slot), [_copy(e) for e in getattr(src, f.slot)])
        else:
            _lextend(getattr(dst, f.slot), getattr(src, f.slot))
    _osa(dst, "_present", True)


def _child(m, slot):
    c = getattr(m, slot)
    return c if c is not None and _is_present(c) else None


# ---------------------------------------------------------------------------------------------

class Message:
    """Base class of the generated messages (see the module docstring)."""

    __slots__ = ("_present",)
    FULL_NAME = ""
    DESCRIPTOR = _LazyDescriptor()
    _SPEC: tuple = ()
    _INIT, _CONT, _ENC, _DEC, _BYNAME = (_Lazy(n) for n in ("_INIT", "_CONT", "_ENC", "_DEC",
                                                             "_BYNAME"))

    def __init__(self, **fields):
        cls = type(self)
        for slot, default in cls._INIT:
            _osa(self, slot, default)
        for slot, ccls, aux in cls._CONT:
            c = ccls()
            c._aux = aux
            _osa(self, slot, c)
        if fields:
            byname = cls._BYNAME
            for name, v in fields.items():
                f = byname.get(name)
                if f is None:
                    raise ValueError(f'Protocol message {cls.__name__} has no "{name}" field.')
                if v is None:
                    continue
                if f.label == SINGULAR:
                    _osa(self, f.slot, _message_value(f.sub, v) if f.check is None else f.check(v))
                elif f.label == MAP:
                    getattr(self, f.slot).update(v)
                else:
                    getattr(self, f.slot).extend(v)

    def __setattr__(self, name, value):
        f = self._BYNAME.get(name)
        if f is not None:
            if f.label:
                raise AttributeError(f'Assignment not allowed to map, or repeated field "{name}" '
                                     f'in protocol message object.')
            if f.check is not None:
                value = f.check(value)
        _osa(self, name, value)
        if not self._present:
            _osa(self, "_present", True)

    # -- wire format
    def SerializeToString(self, deterministic: bool = False) -> bytes:
        return bytes(_encode(self, deterministic))

    SerializePartialToString = SerializeToString

    def ByteSize(self) -> int:
        return len(_encode(self, False))

    @classmethod
    def FromString(cls, data):
        m = _new(cls)
        _parse(m, data)
        return m

    def ParseFromString(self, data) -> int:
        self.Clear()
        return _parse(self, data)

    def MergeFromString(self, data) -> int:
        return _parse(self, data)

    # -- fields
    def HasField(self, name: str) -> bool:
        f = self._BYNAME.get(name)
        if f is None:
            raise ValueError(f'Protocol message {type(self).__name__} has no "{name}" field.')
        if f.kind != MESSAGE or f.label != SINGULAR:
            raise ValueError(f"Field {self.FULL_NAME}.{name} does not have presence.")
        c = getattr(self, f.slot)
        return c is not None and _is_present(c)

    def ClearField(self, name: str) -> None:
        f = self._BYNAME.get(name)
        if f is None:
            raise ValueError(f'Protocol message {type(self).__name__} has no "{name}" field.')
        if f.label == SINGULAR:
            _osa(self, f.slot, f.default)
        elif f.label == MAP:
            dict.clear(getattr(self, f.slot))
        else:
            del getattr(self, f.slot)[:]
        _osa(self, "_present", True)

    def WhichOneof(self, name: str):
        raise ValueError(f'Protocol message has no oneof "{name}" field.')

    def Clear(self) -> None:
        for slot, default in self._INIT[1:]:
            _osa(self, slot, default)
        for slot, ccls, _ in self._CONT:
            c = getattr(self, slot)
            if ccls is Map:
                dict.clear(c)
            else:
                list.__delitem__(c, slice(None))
        _osa(self, "_present", True)

    def CopyFrom(self, other) -> None:
        if type(other) is not type(self):
            raise TypeError(f"Parameter to CopyFrom() must be instance of same class: expected "
                            f"{type(self).__name__} got {type(other).__name__}.")
        if other is not self:
            self.Clear()
            _merge_from(self, other)
        _osa(self, "_present", True)

    def MergeFrom(self, other) -> None:
        if type(other) is not type(self):
            raise TypeError(f"Parameter to MergeFrom() must be instance of same class: expected "
                            f"{type(self).__name__} got {type(other).__name__}.")
        if other is self:
            other = _copy(other)
        _merge_from(self, other)

    def IsInitialized(self) -> bool:
        return True

    def DiscardUnknownFields(self) -> None:
        pass

    # -- Python protocol
    def __eq__(self, other):
        if type(other) is not type(self):
            return NotImplemented
        for f in self._BYNAME.values():
            if f.kind == MESSAGE and f.label == SINGULAR:
                a, b = _child(self, f.slot), _child(other, f.slot)
                if (a is None) != (b is None) or (a is not None and a != b):
                    return False
            elif getattr(self, f.slot) != getattr(other, f.slot):
                return False
        return True

    __hash__ = None

    def __repr__(self):
        parts = []
        for f in self._BYNAME.values():
            if f.kind == MESSAGE and f.label == SINGULAR:
                v = _child(self, f.slot)
                if v is not None:
                    parts.append(f"{f.name}={v!r}")
            else:
                v = getattr(self, f.slot)
                if v or (f.kind in (FLOAT, DOUBLE) and f.label == SINGULAR and str(v)[0] == "-"):
                    if f.label != SINGULAR:
                        v = dict(v) if f.label == MAP else list(v)
                    parts.append(f"{f.name}={v!r}")
        return f"{type(self).__name__}({', '.join(parts)})"

    __str__ = __repr__

    def __reduce__(self):
        return _unpickle, (type(self), self.SerializeToString())

    def __deepcopy__(self, memo=None):
        return _copy(self)

    def __copy__(self):
        return _copy(self)


def _unpickle(cls, data):
    return cls.FromString(data)


# ---------------------------------------------------------------------------------------------
# Well-known types: the helpers google.protobuf adds to Any and Timestamp.

class AnyMixin:
    __slots__ = ()

    def Pack(self, msg, type_url_prefix: str = "type.googleapis.com/", deterministic=None):
        if not type_url_prefix or type_url_prefix[-1] != "/":
            self.type_url = f"{type_url_prefix}/{msg.DESCRIPTOR.full_name}"
        else:
            self.type_url = f"{type_url_prefix}{msg.DESCRIPTOR.full_name}"
        self.value = msg.SerializeToString(deterministic=bool(deterministic))

    def Unpack(self, msg) -> bool:
        if not self.Is(msg.DESCRIPTOR):
            return False
        msg.ParseFromString(self.value)
        return True

    def TypeName(self) -> str:
        return self.type_url.rpartition("/")[2]

    def Is(self, descriptor) -> bool:
        return "/" in self.type_url and self.TypeName() == descriptor.full_name


_NANOS = 1_000_000_000
_TS_MIN, _TS_MAX = -62135596800, 253402300799  # 0001-01-01T00:00:00Z, 9999-12-31T23:59:59Z


def _check_timestamp(seconds, nanos):
    if seconds < _TS_MIN or seconds > _TS_MAX:
        raise ValueError(f"Timestamp is not valid: Seconds {seconds} must be in range "
                         f"[-62135596800, 253402300799].")
    if nanos < 0 or nanos >= _NANOS:
        raise ValueError(f"Timestamp is not valid: Nanos {nanos} must be in a range [0, 999999].")


class TimestampMixin:
    __slots__ = ()

    def FromNanoseconds(self, nanos: int) -> None:
        seconds, nanos = divmod(nanos, _NANOS)
        _check_timestamp(seconds, nanos)
        self.seconds = seconds
        self.nanos = nanos

    def FromMicroseconds(self, micros: int) -> None:
        self.FromNanoseconds(micros * 1000)

    def FromMilliseconds(self, millis: int) -> None:
        self.FromNanoseconds(millis * 1_000_000)

    def FromSeconds(self, seconds: int) -> None:
        _check_timestamp(seconds, 0)
        self.seconds = seconds
        self.nanos = 0

    def ToNanoseconds(self) -> int:
        _check_timestamp(self.seconds, self.nanos)
        return self.seconds * _NANOS + self.nanos

    def ToMicroseconds(self) -> int:
        return self.ToNanoseconds() // 1000

    def ToMilliseconds(self) -> int:
        return self.ToNanoseconds() // 1_000_000

    def ToSeconds(self) -> int:
        _check_timestamp(self.seconds, self.nanos)
        return self.seconds

    def GetCurrentTime(self) -> None:
        """Now, to the nanosecond (protobuf's goes through datetime: microseconds)."""
        from time import time_ns
        self.FromNanoseconds(time_ns())

    def ToDatetime(self, tzinfo=None):
        import datetime
        _check_timestamp(self.seconds, self.nanos)
        delta = datetime.timedelta(seconds=self.seconds, microseconds=self.nanos // 1000)
        if tzinfo is None:
            return datetime.datetime(1970, 1, 1) + delta
        return (datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc) + delta).astimezone(
            tzinfo)

    def FromDatetime(self, dt) -> None:
        import calendar
        seconds = calendar.timegm(dt.utctimetuple())
        nanos = dt.microsecond * 1000
        _check_timestamp(seconds, nanos)
        self.seconds = seconds
        self.nanos = nanos
