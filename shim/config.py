"""pyshim's configuration: grouping policy, log level, and how containers are made.

Where it comes from, first match wins:
1. the runtime options containerd passes on `start`'s stdin when they are
   `runtimeoptions.v1.Options` (what CRI sends for non-runc runtimes, from
   `[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.pyshim.options]`): its
   `config_body` (TOML text) or `config_path` (a TOML file);
2. the file /etc/pyshim/config.toml (or $PYSHIM_CONFIG), when it exists;
3. the defaults.

```toml
grouping = "pod"        # "pod": one shim per io.kubernetes.cri.sandbox-id (as runc; else per container)
                        # "namespace": one shim serves every container of a containerd namespace
                        # "container": one shim per container, always
log_level = "info"      # or "debug" (containerd's -debug flag also turns debug on)
no_pivot_root = false   # true: move the rootfs onto / and chroot instead of pivot_root (a
                        # ramdisk rootfs), as the runc shim's NoPivotRoot option
no_new_keyring = false  # true: containers keep the shim's session keyring (runc's NoNewKeyring)
```

The last two are per container: read at each Create from its options (container_options),
which may also be the runc shim's own option types, as ctr and CRI send them: a
`containerd.runc.v1.Options` (NoPivotRoot, NoNewKeyring) or, from `ctr run --no-pivot` with
any runtime but runc's, a `containerd.linux.runc.CreateOptions`.

Invariant: this module runs inside `start` and imports only the standard library's builtins;
tomllib is imported only when there is TOML to read. A config that cannot be read or parsed is
an error naming its source: a shim must not silently run with a policy nobody asked for.
"""

from __future__ import annotations

import os

DEFAULT_PATH = "/etc/pyshim/config.toml"
GROUPINGS = ("pod", "namespace", "container")
LOG_LEVELS = ("info", "debug")
RUNTIMEOPTIONS_TYPE = "runtimeoptions.v1.Options"


class ConfigError(Exception):
    """The configuration is unreadable or wrong; the message names the source and the key."""


BOOLS = ("no_pivot_root", "no_new_keyring")
RUNC_OPTIONS_TYPE = "containerd.runc.v1.Options"  # no_pivot_root = 1, no_new_keyring = 2
LINUX_CREATE_OPTIONS_TYPE = "containerd.linux.runc.CreateOptions"  # 1 and 8


class Config:
    def __init__(self, grouping: str = "pod", log_level: str = "info", source: str = "defaults",
                 no_pivot_root: bool = False, no_new_keyring: bool = False):
        self.grouping, self.log_level, self.source = grouping, log_level, source
        self.no_pivot_root, self.no_new_keyring = no_pivot_root, no_new_keyring


def container_options(type_url: str, value: bytes) -> tuple[bool, bool]:
    """(no_pivot_root, no_new_keyring) for a container, from its CreateTaskRequest.options
    (containerd sends the runtime options when the task has none), else the config file."""
    numbers = {RUNC_OPTIONS_TYPE: (1, 2), LINUX_CREATE_OPTIONS_TYPE: (1, 8)}.get(
        type_url.rpartition("/")[2])
    if numbers is not None:
        try:
            flags = _fields(value, wire=0)
        except ValueError as e:
            raise ConfigError(f"runtime options {type_url}: undecodable: {e}") from None
        return tuple(bool(flags.get(n, 0)) for n in numbers)
    body, path = _runtimeoptions(value) if type_url.endswith(RUNTIMEOPTIONS_TYPE) else ("", "")
    cfg = _load(body, path)
    return cfg.no_pivot_root, cfg.no_new_keyring


def load(options: bytes) -> Config:
    """The configuration for this start, from the options Any (raw bytes) or the config file."""
    return _load(*_from_options(options))


def _load(body: str, path: str) -> Config:
    """From a runtimeoptions config_body, else its config_path, else the config file."""
    if body:
        return parse(body, "runtime options config_body")
    path = path or os.environ.get("PYSHIM_CONFIG") or DEFAULT_PATH
    try:
        with open(path, "rb") as f:
            text = f.read().decode()
    except FileNotFoundError:
        if path == DEFAULT_PATH:
            return Config()
        raise ConfigError(f"config file {path}: does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"config file {path}: {e}") from None
    return parse(text, path)


def parse(text: str, source: str) -> Config:
    import tomllib

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{source}: not valid TOML: {e}") from None
    unknown = sorted(set(data) - {"grouping", "log_level", *BOOLS})
    if unknown:
        raise ConfigError(f"{source}: unknown key(s): {', '.join(unknown)}")
    cfg = Config(source=source)
    for key, allowed in (("grouping", GROUPINGS), ("log_level", LOG_LEVELS)):
        if key in data:
            if data[key] not in allowed:
                raise ConfigError(f"{source}: {key} = {data[key]!r}: must be one of "
                                  f"{', '.join(allowed)}")
            setattr(cfg, key, data[key])
    for key in BOOLS:
        if key in data:
            if not isinstance(data[key], bool):
                raise ConfigError(f"{source}: {key} = {data[key]!r}: must be true or false")
            setattr(cfg, key, data[key])
    return cfg


def _from_options(options: bytes) -> tuple[str, str]:
    """(config_body, config_path) of a runtimeoptions.v1.Options inside a protobuf Any;
    empty strings for anything else (e.g. the runc shim's containerd.runc.v1.Options)."""
    if not options:
        return "", ""
    try:
        any_fields = _fields(options)
        type_url = any_fields.get(1, b"").decode()
    except (ValueError, UnicodeDecodeError) as e:
        raise ConfigError(f"runtime options: undecodable: {e}") from None
    if not type_url.endswith(RUNTIMEOPTIONS_TYPE):
        return "", ""
    return _runtimeoptions(any_fields.get(2, b""))


def _runtimeoptions(value: bytes) -> tuple[str, str]:
    """(config_body, config_path) of an encoded runtimeoptions.v1.Options."""
    try:
        inner = _fields(value)
        return inner.get(3, b"").decode(), inner.get(2, b"").decode()
    except (ValueError, UnicodeDecodeError) as e:
        raise ConfigError(f"runtime options: undecodable: {e}") from None


def _fields(data: bytes, wire: int = 2) -> dict:
    """The fields of one wire type of a protobuf message, last wins: bytes of the
    length-delimited ones (2), ints of the varints (0); the others are skipped.
    By hand: `start` must not pay for importing protobuf."""
    out, i = {}, 0
    while i < len(data):
        key, i = _varint(data, i)
        number, kind = key >> 3, key & 7
        if kind == 0:
            value, i = _varint(data, i)
        elif kind == 2:
            n, i = _varint(data, i)
            if i + n > len(data):
                raise ValueError("truncated field")
            value, i = data[i:i + n], i + n
        elif kind in (1, 5):
            i += 8 if kind == 1 else 4
            continue
        else:
            raise ValueError(f"unsupported wire type {kind}")
        if kind == wire:
            out[number] = value
    return out


def _varint(data: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if i >= len(data):
            raise ValueError("truncated varint")
        b = data[i]
        i += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, i
        shift += 7
