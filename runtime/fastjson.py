"""json.loads/json.dumps for the engine without importing json: `import json` costs ~5 ms of
start-up here (its decoder and encoder import re, re imports enum), more than a whole
`pyshim-runc state` may take. The work is done by CPython's own C accelerator (_json), the
same code json uses; only the thin Python layer around it is here.

Invariant: loads(s) == json.loads(s) and dumps(obj, ...) == json.dumps(obj, ...) for the JSON
documents the engine handles (dict, list, str, int, float, bool, None; str keys), including the
errors: a malformed document raises json's own JSONDecodeError with json's message (json is
imported then, on the error path only). Without _json (another interpreter) this is json.
"""

try:
    from _json import encode_basestring as _str_utf8
    from _json import encode_basestring_ascii as _str_ascii
    from _json import make_encoder as _make_encoder
    from _json import make_scanner as _make_scanner
except ImportError:  # pragma: no cover - CPython always has it
    _make_scanner = None

_WS = " \t\n\r"


class _Context:
    """What _json.make_scanner reads from json.JSONDecoder (the defaults of json.loads)."""
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = {"-Infinity": float("-inf"), "Infinity": float("inf"),
                      "NaN": float("nan")}.__getitem__


_scan = _make_scanner(_Context()) if _make_scanner is not None else None


def _error(msg: str, doc: str, pos: int) -> Exception:
    from json import JSONDecodeError
    return JSONDecodeError(msg, doc, pos)


def _skip_ws(s: str, i: int) -> int:
    n = len(s)
    while i < n and s[i] in _WS:
        i += 1
    return i


def loads(s):
    """json.loads for str, or UTF-8 bytes."""
    if _scan is None:  # pragma: no cover
        import json
        return json.loads(s)
    if isinstance(s, (bytes, bytearray)):
        if s[:3] == b"\xef\xbb\xbf":
            s = s[3:]  # json.loads accepts a UTF-8 BOM in bytes
        s = bytes(s).decode("utf-8", "surrogatepass")
    elif not isinstance(s, str):
        raise TypeError(f"the JSON object must be str, bytes or bytearray, not "
                        f"{type(s).__name__}")
    elif s.startswith("\ufeff"):
        raise _error("Unexpected UTF-8 BOM (decode using utf-8-sig)", s, 0)
    try:
        obj, end = _scan(s, _skip_ws(s, 0))
    except StopIteration as e:
        raise _error("Expecting value", s, e.value) from None
    end = _skip_ws(s, end)
    if end != len(s):
        raise _error("Extra data", s, end)
    return obj


def load(f):
    return loads(f.read())


def _default(o):
    raise TypeError(f"Object of type {o.__class__.__name__} is not JSON serializable")


def _float(o: float) -> str:
    if o != o:
        return "NaN"
    if o == float("inf"):
        return "Infinity"
    if o == float("-inf"):
        return "-Infinity"
    return float.__repr__(o)


def dumps(obj, *, indent=None, separators=None, ensure_ascii: bool = True,
          sort_keys: bool = False) -> str:
    """json.dumps with these keyword arguments (and json's defaults for the others)."""
    if _make_scanner is None:  # pragma: no cover
        import json
        return json.dumps(obj, indent=indent, separators=separators,
                          ensure_ascii=ensure_ascii, sort_keys=sort_keys)
    if separators is not None:
        item_sep, key_sep = separators
    else:
        item_sep, key_sep = ("," if indent is not None else ", "), ": "
    enc = _str_ascii if ensure_ascii else _str_utf8
    if indent is None:
        encoder = _make_encoder({}, _default, enc, None, key_sep, item_sep, sort_keys, False,
                                True)
        return "".join(encoder(obj, 0))
    if not isinstance(indent, str):
        indent = " " * indent
    out: list[str] = []
    _indented(obj, out, enc, indent, item_sep, key_sep, sort_keys, 0)
    return "".join(out)


def _scalar(o, enc) -> str | None:
    if isinstance(o, str):
        return enc(o)
    if o is None:
        return "null"
    if o is True:
        return "true"
    if o is False:
        return "false"
    if isinstance(o, int):
        return int.__repr__(o)
    if isinstance(o, float):
        return _float(o)
    return None


def _key(k, enc) -> str:
    if isinstance(k, str):
        return enc(k)
    if isinstance(k, (int, float)) or k is None:  # json turns these keys into strings
        return enc(_scalar(k, enc))
    raise TypeError(f"keys must be str, int, float, bool or None, not {k.__class__.__name__}")


def _indented(o, out: list, enc, indent: str, item_sep: str, key_sep: str, sort_keys: bool,
              level: int) -> None:
    """json's pure-Python indented encoder (_make_iterencode), for the types above."""
    text = _scalar(o, enc)
    if text is not None:
        out.append(text)
        return
    if isinstance(o, (list, tuple)):
        if not o:
            out.append("[]")
            return
        inner = "\n" + indent * (level + 1)
        out.append("[" + inner)
        for i, v in enumerate(o):
            if i:
                out.append(item_sep + inner)
            _indented(v, out, enc, indent, item_sep, key_sep, sort_keys, level + 1)
        out.append("\n" + indent * level + "]")
        return
    if isinstance(o, dict):
        if not o:
            out.append("{}")
            return
        inner = "\n" + indent * (level + 1)
        out.append("{" + inner)
        items = sorted(o.items()) if sort_keys else o.items()
        for i, (k, v) in enumerate(items):
            if i:
                out.append(item_sep + inner)
            out.append(_key(k, enc) + key_sep)
            _indented(v, out, enc, indent, item_sep, key_sep, sort_keys, level + 1)
        out.append("\n" + indent * level + "}")
        return
    _default(o)
