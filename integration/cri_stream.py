"""A client of the CRI streaming server (Exec and Attach URLs) over WebSocket, standard library
only: what `kubectl exec` does through the API server, minus SPDY.

The server (containerd's copy of kubelet's streaming server) speaks the channel protocol
`v4.channel.k8s.io`: every binary message starts with a channel byte, 0 stdin, 1 stdout,
2 stderr, 3 error (v4: a JSON metav1.Status once the process has ended), 4 resize (JSON
{"Width": W, "Height": H}).

    with StreamSession(url) as s:
        s.send_stdin(b"hello\\n")
        result = s.collect(timeout=10)    # stdout, stderr, status (dict), exit_code
"""
from __future__ import annotations

import base64
import json
import os
import socket
import struct
import time
import urllib.parse
from dataclasses import dataclass, field

PROTOCOL = "v4.channel.k8s.io"
STDIN, STDOUT, STDERR, ERROR, RESIZE = range(5)


class StreamError(RuntimeError):
    pass


@dataclass
class StreamResult:
    stdout: bytes = b""
    stderr: bytes = b""
    status: dict | None = None
    closed: bool = False
    frames: list[tuple[int, bytes]] = field(default_factory=list)

    @property
    def exit_code(self) -> int | None:
        """0 for Success, the ExitCode cause for NonZeroExitCode, None if no status came."""
        if self.status is None:
            return None
        if self.status.get("status") == "Success":
            return 0
        for cause in (self.status.get("details") or {}).get("causes") or []:
            if cause.get("reason") == "ExitCode":
                return int(cause["message"])
        return -1


class StreamSession:
    """One WebSocket session on an Exec/Attach URL; every read is bounded by `timeout`."""

    def __init__(self, url: str, timeout: float = 30.0):
        u = urllib.parse.urlsplit(url)
        if u.scheme != "http":
            raise StreamError(f"only plain http streaming URLs are supported: {url}")
        self.timeout = timeout
        self.sock = socket.create_connection((u.hostname, u.port or 80), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        path = u.path + (f"?{u.query}" if u.query else "")
        req = (f"GET {path} HTTP/1.1\r\nHost: {u.netloc}\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
               f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: {PROTOCOL}\r\n\r\n")
        self.sock.sendall(req.encode())
        self.buf = b""
        head = self._read_until(b"\r\n\r\n")
        status_line = head.split(b"\r\n", 1)[0].decode(errors="replace")
        if " 101 " not in status_line + " ":
            raise StreamError(f"no WebSocket upgrade: {head.decode(errors='replace')!r}")
        self.result = StreamResult()

    def __enter__(self) -> "StreamSession":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- raw I/O -------------------------------------------------------------------------------
    def _recv(self) -> bytes:
        data = self.sock.recv(65536)
        if not data:
            raise EOFError
        return data

    def _read_until(self, marker: bytes) -> bytes:
        while marker not in self.buf:
            self.buf += self._recv()
        head, self.buf = self.buf.split(marker, 1)
        return head

    def _read_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            self.buf += self._recv()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)
        n = len(payload)
        if n < 126:
            head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
        elif n < 1 << 16:
            head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(head + mask + masked)

    def _read_frame(self) -> tuple[int, bytes]:
        b0, b1 = self._read_exact(2)
        opcode, n = b0 & 0x0F, b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", self._read_exact(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", self._read_exact(8))[0]
        mask = self._read_exact(4) if b1 & 0x80 else None
        data = self._read_exact(n)
        if mask:
            data = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
        return opcode, data

    # ---- the channel protocol ------------------------------------------------------------------
    def send(self, channel: int, data: bytes) -> None:
        self._send_frame(0x2, bytes([channel]) + data)

    def send_stdin(self, data: bytes) -> None:
        self.send(STDIN, data)

    def resize(self, width: int, height: int) -> None:
        self.send(RESIZE, json.dumps({"Width": width, "Height": height}).encode())

    def read_message(self, deadline: float) -> tuple[int, bytes] | None:
        """The next channel message, or None once the server closed the session."""
        while True:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                opcode, data = self._read_frame()
            except (EOFError, ConnectionResetError):
                self.result.closed = True
                return None
            except socket.timeout:
                raise TimeoutError("no message from the streaming server in time") from None
            if opcode == 0x8:  # close
                self.result.closed = True
                try:
                    self._send_frame(0x8, data[:2])
                except OSError:
                    pass
                return None
            if opcode == 0x9:  # ping
                self._send_frame(0xA, data)
                continue
            if opcode in (0x1, 0x2) and data:
                msg = (data[0], data[1:])
                self._record(*msg)
                return msg
            # empty frames (a channel announcing itself), pongs: nothing to record

    def _record(self, channel: int, data: bytes) -> None:
        r = self.result
        r.frames.append((channel, data))
        if channel == STDOUT:
            r.stdout += data
        elif channel == STDERR:
            r.stderr += data
        elif channel == ERROR and data:
            r.status = json.loads(data)

    def read_until(self, channel: int, needle: bytes, timeout: float | None = None) -> StreamResult:
        """Read until `needle` has appeared on `channel` (stdout or stderr)."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while needle not in (self.result.stdout if channel == STDOUT else self.result.stderr):
            if self.read_message(deadline) is None:
                raise StreamError(f"session closed before {needle!r} on channel {channel}: "
                                  f"{self.result}")
        return self.result

    def collect(self, timeout: float | None = None) -> StreamResult:
        """Read everything until the server closes the session."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while self.read_message(deadline) is not None:
            pass
        return self.result

    def close(self) -> None:
        try:
            if not self.result.closed:
                self._send_frame(0x8, struct.pack("!H", 1000))
        except OSError:
            pass
        self.sock.close()
