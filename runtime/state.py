"""The container's state directory: <root>/<id>/{state.json, exec.fifo}.

Invariant: state.json is replaced atomically (temp file + rename), so a reader sees the old or
the new file, never a torn one. It holds everything later calls need, including the config
as validated at create, so editing config.json afterwards changes nothing.
"""

import posix

from . import ospath
from . import fastjson as json

STATE_FILE = "state.json"
FIFO = "exec.fifo"


def write(state_dir: str, data: dict) -> None:
    prepare(state_dir, data)
    commit(state_dir)


def prepare(state_dir: str, data: dict) -> None:
    """Write state.json's next content beside it, for commit() to publish (create writes it
    while the init still sets up, and publishes it once the init is ready)."""
    payload = json.dumps(data).encode()
    fd = posix.open(_tmp(state_dir), posix.O_WRONLY | posix.O_CREAT | posix.O_TRUNC |
                    posix.O_CLOEXEC, 0o600)
    try:
        while payload:
            payload = payload[posix.write(fd, payload):]
    finally:
        posix.close(fd)


def commit(state_dir: str) -> None:
    """Replace state.json with what prepare() wrote, atomically."""
    posix.replace(_tmp(state_dir), ospath.join(state_dir, STATE_FILE))


def _tmp(state_dir: str) -> str:
    return ospath.join(state_dir, f".{STATE_FILE}.tmp")


def read(state_dir: str) -> dict | None:
    try:
        with open(ospath.join(state_dir, STATE_FILE), "rb") as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def remove(state_dir: str) -> None:
    """Remove the state dir and everything in it, ignoring errors (shutil.rmtree(..., True)
    without importing shutil: ~7 ms of start-up for `delete`). Links are removed, never
    followed."""
    try:
        entries = list(posix.scandir(state_dir))
    except OSError:
        entries = []
    for e in entries:
        try:
            if e.is_dir(follow_symlinks=False):
                remove(e.path)
            else:
                posix.unlink(e.path)
        except OSError:
            pass
    try:
        posix.rmdir(state_dir)
    except OSError:
        pass
