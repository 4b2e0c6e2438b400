"""The container's state directory: <root>/<id>/{state.json, exec.fifo}.

Invariant: state.json is replaced atomically (temp file + rename), so a reader sees the old or
the new file, never a torn one. It holds everything later calls need, including the config
as validated at create, so editing config.json afterwards changes nothing.
"""

import os

from . import fastjson as json

STATE_FILE = "state.json"
FIFO = "exec.fifo"


def write(state_dir: str, data: dict) -> None:
    tmp = os.path.join(state_dir, f".{STATE_FILE}.tmp")
    payload = json.dumps(data).encode()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        while payload:
            payload = payload[os.write(fd, payload):]
    finally:
        os.close(fd)
    os.replace(tmp, os.path.join(state_dir, STATE_FILE))


def read(state_dir: str) -> dict | None:
    try:
        with open(os.path.join(state_dir, STATE_FILE), "rb") as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def remove(state_dir: str) -> None:
    """Remove the state dir and everything in it, ignoring errors (shutil.rmtree(..., True)
    without importing shutil: ~7 ms of start-up for `delete`). Links are removed, never
    followed."""
    try:
        entries = list(os.scandir(state_dir))
    except OSError:
        entries = []
    for e in entries:
        try:
            if e.is_dir(follow_symlinks=False):
                remove(e.path)
            else:
                os.unlink(e.path)
        except OSError:
            pass
    try:
        os.rmdir(state_dir)
    except OSError:
        pass
