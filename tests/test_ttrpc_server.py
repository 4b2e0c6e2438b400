"""ttrpc server, driven by a raw socket client that speaks the wire format with
struct directly (so these tests do not rely on the library's own client)."""

import os
import socket
import struct
import time

import pytest

from proto.ttrpc import ttrpc_pb2
from shim import aio
from shim import log as shimlog
from shim.ttrpc import Code, Server, TTRPCError, check_peer_credentials, get_peer_credentials

HDR = struct.Struct(">IIBB")
MAX = 4 << 20

# Golden frames: see tests/test_ttrpc_codec.py for the field-by-field breakdown.
STATE_BODY = bytes.fromhex(
    "0a17636f6e7461696e6572642e7461736b2e76322e5461736b"
    "12055374617465"
    "1a040a026331"
    "2a250a1a636f6e7461696e6572642d6e616d6573706163652d7474727063120764656661756c74"
)
STATE_FRAME = bytes.fromhex("0000004d" "00000001" "01" "00") + STATE_BODY
EMPTY_OK_REPLY_1 = bytes.fromhex("00000000" "00000001" "02" "00")
NOT_FOUND_REPLY_1 = bytes.fromhex("0000000f" "00000001" "02" "00" "0a0d08051209") + b"not found"

TASK = "containerd.task.v2.Task"


def run(coro):
    """Run a test coroutine with a hard ceiling so a bug hangs nothing."""
    return aio.run(aio.wait_for(coro, 5))


def request(stream_id, service, method, payload=b"", timeout_nano=0):
    body = ttrpc_pb2.Request(service=service, method=method, payload=payload,
                             timeout_nano=timeout_nano).SerializeToString()
    return HDR.pack(len(body), stream_id, 1, 0) + body


class Raw:
    """A bare ttrpc client: write bytes, read whole frames."""

    def __init__(self, stream):
        self.reader = self.writer = stream

    @classmethod
    async def open(cls, path):
        return cls(await aio.open_unix_connection(str(path)))

    async def send(self, data):
        self.writer.write(data)
        await self.writer.drain()

    async def recv_raw(self):
        header = await aio.wait_for(self.reader.readexactly(10), 2)
        length = HDR.unpack(header)[0]
        return header + await self.reader.readexactly(length)

    async def recv(self):
        """(stream_id, status code, message, payload) of the next response frame."""
        frame = await self.recv_raw()
        _, stream_id, type_, _ = HDR.unpack(frame[:10])
        assert type_ == 2
        resp = ttrpc_pb2.Response.FromString(frame[10:])
        return stream_id, resp.status.code, resp.status.message, resp.payload

    def close(self):
        self.writer.close()


async def start(tmp_path, services, **kwargs):
    """A started Server on a fresh listening socket; returns (server, path)."""
    path = str(tmp_path / "s.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    sock.listen()
    server = Server(**kwargs)
    for name, methods in services.items():
        server.register(name, methods)
    await server.start(sock)
    return server, path


async def stop(server):
    server.close()
    await server.wait_closed()


async def echo(payload, ctx):
    return payload


async def wait_until(predicate, timeout=2.0):
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "condition not reached"
        await aio.sleep(0.005)


def test_golden_state_request_gets_golden_empty_ok(tmp_path):
    seen = {}

    async def state(payload, ctx):
        seen.update(payload=payload, ns=ctx.get("containerd-namespace-ttrpc"),
                    md=ctx.metadata, deadline=ctx.deadline, name=(ctx.service, ctx.method))
        return b""

    async def main():
        server, path = await start(tmp_path, {TASK: {"State": state}})
        conn = await Raw.open(path)
        await conn.send(STATE_FRAME)
        assert await conn.recv_raw() == EMPTY_OK_REPLY_1
        conn.close()
        await stop(server)

    run(main())
    assert seen == {"payload": b"\x0a\x02c1", "ns": "default",
                    "md": {"containerd-namespace-ttrpc": ["default"]}, "deadline": None,
                    "name": (TASK, "State")}


def test_payload_round_trip(tmp_path):
    async def main():
        server, path = await start(tmp_path, {"s": {"Echo": echo}})
        conn = await Raw.open(path)
        await conn.send(request(1, "s", "Echo", b"\x10\x01"))
        assert await conn.recv_raw() == bytes.fromhex("00000004" "00000001" "02" "00" "12021001")
        conn.close()
        await stop(server)

    run(main())


def test_error_status_golden(tmp_path):
    async def missing(payload, ctx):
        raise TTRPCError(Code.NOT_FOUND, "not found")

    async def main():
        server, path = await start(tmp_path, {TASK: {"State": missing}})
        conn = await Raw.open(path)
        await conn.send(STATE_FRAME)
        assert await conn.recv_raw() == NOT_FOUND_REPLY_1
        conn.close()
        await stop(server)

    run(main())


def test_unknown_service_and_method(tmp_path):
    async def main():
        server, path = await start(tmp_path, {"s": {"Echo": echo}})
        conn = await Raw.open(path)
        await conn.send(request(1, "foo.Bar", "Echo"))
        assert await conn.recv_raw() == (
            bytes.fromhex("00000015" "00000001" "02" "00" "0a13080c120f") + b"service foo.Bar")
        await conn.send(request(3, "s", "Nope"))
        assert await conn.recv() == (3, 12, "method Nope", b"")
        conn.close()
        await stop(server)

    run(main())


def test_oversized_frame_then_same_connection_serves(tmp_path):
    async def main():
        server, path = await start(tmp_path, {TASK: {"State": echo}})
        conn = await Raw.open(path)
        await conn.send(HDR.pack(MAX + 1, 5, 1, 0) + bytes(MAX + 1))
        assert await conn.recv() == (
            5, 8, "message length 4194305 exceed maximum message size of 4194304", b"")
        await conn.send(STATE_FRAME)
        assert await conn.recv() == (1, 0, "", b"\x0a\x02c1")
        assert server.connection_count == 1
        conn.close()
        await stop(server)

    run(main())


def test_even_stream_id_rejected(tmp_path):
    async def main():
        server, path = await start(tmp_path, {"s": {"Echo": echo}})
        conn = await Raw.open(path)
        await conn.send(request(2, "s", "Echo", b"x"))
        stream_id, code, message, _ = await conn.recv()
        assert (stream_id, code) == (2, Code.INVALID_ARGUMENT)
        assert "odd" in message
        await conn.send(request(3, "s", "Echo", b"y"))
        assert await conn.recv() == (3, 0, "", b"y")
        conn.close()
        await stop(server)

    run(main())


def test_undecodable_request_body(tmp_path):
    async def main():
        server, path = await start(tmp_path, {"s": {"Echo": echo}})
        conn = await Raw.open(path)
        await conn.send(HDR.pack(3, 1, 1, 0) + b"\xff\xff\xff")
        stream_id, code, message, _ = await conn.recv()
        assert (stream_id, code) == (1, Code.INVALID_ARGUMENT)
        assert message.startswith("unmarshal request error")
        conn.close()
        await stop(server)

    run(main())


def test_non_request_frames_are_ignored(tmp_path):
    async def main():
        server, path = await start(tmp_path, {"s": {"Echo": echo}})
        conn = await Raw.open(path)
        # A response-type frame and an unknown type 9, then a real request.
        await conn.send(HDR.pack(1, 1, 2, 0) + b"a" + HDR.pack(0, 3, 9, 0) + request(5, "s", "Echo", b"z"))
        assert await conn.recv() == (5, 0, "", b"z")
        conn.close()
        await stop(server)

    run(main())


def test_fifty_concurrent_requests_blocked_one_does_not_hold_others(tmp_path):
    async def main():
        release, blocked = aio.Event(), aio.Event()

        async def wait(payload, ctx):
            blocked.set()
            await release.wait()
            return b"done"

        server, path = await start(tmp_path, {"s": {"Wait": wait, "Echo": echo}})
        conn = await Raw.open(path)
        # All 50 requests in one write: the Wait first, then 49 echoes.
        others = range(3, 101, 2)
        await conn.send(request(1, "s", "Wait") + b"".join(
            request(i, "s", "Echo", str(i).encode()) for i in others))
        replies = [await conn.recv() for _ in others]
        assert blocked.is_set()
        assert sorted(r[0] for r in replies) == list(others)
        assert all(code == 0 and payload == str(sid).encode() for sid, code, _, payload in replies)
        release.set()
        assert await conn.recv() == (1, 0, "", b"done")  # answered last: out of order
        conn.close()
        await stop(server)

    run(main())


def test_timeout_nano_deadline_exceeded_and_handler_cancelled(tmp_path):
    cancelled = []

    async def slow(payload, ctx):
        try:
            await aio.sleep(10)
        except aio.CancelledError:
            cancelled.append(ctx.stream_id)
            raise
        return b"late"

    async def main():
        server, path = await start(tmp_path, {"s": {"Slow": slow, "Echo": echo}})
        conn = await Raw.open(path)
        began = time.monotonic()
        await conn.send(request(1, "s", "Slow", timeout_nano=50_000_000))
        stream_id, code, _, payload = await conn.recv()
        elapsed = time.monotonic() - began
        assert (stream_id, code, payload) == (1, Code.DEADLINE_EXCEEDED, b"")
        assert 0.04 <= elapsed < 1.0
        assert cancelled == [1]
        # A fast handler with a generous deadline is unaffected.
        await conn.send(request(3, "s", "Echo", b"ok", timeout_nano=10_000_000_000))
        assert await conn.recv() == (3, 0, "", b"ok")
        conn.close()
        await stop(server)

    run(main())


def test_context_deadline_reflects_timeout(tmp_path):
    remaining = []

    async def peek(payload, ctx):
        remaining.append(ctx.time_remaining())
        return b""

    async def main():
        server, path = await start(tmp_path, {"s": {"Peek": peek}})
        conn = await Raw.open(path)
        await conn.send(request(1, "s", "Peek", timeout_nano=2_000_000_000))
        assert (await conn.recv())[1] == 0
        conn.close()
        await stop(server)

    run(main())
    assert 1.0 < remaining[0] <= 2.0


def test_plain_exception_is_unknown_and_server_keeps_serving(tmp_path):
    async def boom(payload, ctx):
        raise RuntimeError("boom")

    async def wrong_type(payload, ctx):
        return "not bytes"

    async def main():
        server, path = await start(tmp_path, {"s": {"Boom": boom, "Wrong": wrong_type, "Echo": echo}})
        conn = await Raw.open(path)
        await conn.send(request(1, "s", "Boom"))
        assert await conn.recv() == (1, Code.UNKNOWN, "boom", b"")
        await conn.send(request(3, "s", "Wrong"))
        assert (await conn.recv())[:2] == (3, Code.UNKNOWN)
        await conn.send(request(5, "s", "Echo", b"still"))
        assert await conn.recv() == (5, 0, "", b"still")
        conn.close()
        await stop(server)

    with shimlog.capture() as records:
        run(main())
    # logged as an error with the traceback of the handler's exception
    assert any(level == "error" and name == "pyshim.ttrpc" and "Traceback" in text
               and "RuntimeError: boom" in text for level, name, text in records)


def test_reply_too_large_is_resource_exhausted(tmp_path):
    async def huge(payload, ctx):
        return bytes(MAX)

    async def main():
        server, path = await start(tmp_path, {"s": {"Huge": huge}})
        conn = await Raw.open(path)
        await conn.send(request(1, "s", "Huge"))
        assert (await conn.recv())[:2] == (1, Code.RESOURCE_EXHAUSTED)
        conn.close()
        await stop(server)

    run(main())


def test_split_writes_are_reassembled(tmp_path):
    async def main():
        server, path = await start(tmp_path, {TASK: {"State": echo}})
        conn = await Raw.open(path)
        for part in (STATE_FRAME[:4], STATE_FRAME[4:11], STATE_FRAME[11:]):
            await conn.send(part)
            await aio.sleep(0.01)
        assert await conn.recv() == (1, 0, "", b"\x0a\x02c1")
        conn.close()
        await stop(server)

    run(main())


def test_eof_mid_frame_cancels_only_that_connection(tmp_path):
    async def main():
        started, was_cancelled = aio.Event(), aio.Event()

        async def wait(payload, ctx):
            started.set()
            try:
                await aio.sleep(10)
            except aio.CancelledError:
                was_cancelled.set()
                raise

        server, path = await start(tmp_path, {"s": {"Wait": wait, "Echo": echo}})
        bad, good = await Raw.open(path), await Raw.open(path)
        await bad.send(request(1, "s", "Wait"))
        await started.wait()
        await bad.send(STATE_FRAME[:6])  # half a header, then the peer goes away
        bad.close()
        await aio.wait_for(was_cancelled.wait(), 2)
        await wait_until(lambda: server.connection_count == 1)
        await good.send(request(1, "s", "Echo", b"alive"))
        assert await good.recv() == (1, 0, "", b"alive")
        good.close()
        await stop(server)

    run(main())


def test_close_cancels_handlers_and_closes_connections(tmp_path):
    async def main():
        started, was_cancelled = aio.Event(), aio.Event()

        async def wait(payload, ctx):
            started.set()
            try:
                await aio.sleep(10)
            except aio.CancelledError:
                was_cancelled.set()
                raise

        server, path = await start(tmp_path, {"s": {"Wait": wait}})
        conn = await Raw.open(path)
        await conn.send(request(1, "s", "Wait"))
        await started.wait()
        assert server.connection_count == 1
        server.close()
        await aio.wait_for(server.wait_closed(), 2)
        assert was_cancelled.is_set()
        assert server.connection_count == 0
        assert await aio.wait_for(conn.reader.read(65536), 2) == b""  # EOF, no reply
        conn.close()
        with pytest.raises(ConnectionRefusedError):
            await aio.open_unix_connection(path)

    run(main())


def test_serve_returns_after_close(tmp_path):
    async def main():
        path = str(tmp_path / "s.sock")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(path)
        sock.listen()
        server = Server()
        server.register("s", {"Echo": echo})
        serving = aio.create_task(server.serve(sock))
        conn = await Raw.open(path)
        await conn.send(request(1, "s", "Echo", b"x"))
        assert await conn.recv() == (1, 0, "", b"x")
        assert not serving.done()
        conn.close()
        server.close()
        await aio.wait_for(serving, 2)

    run(main())


def test_register_duplicate_service():
    server = Server()
    server.register("s", {"Echo": echo})
    with pytest.raises(ValueError):
        server.register("s", {"Other": echo})


def test_check_peer_credentials():
    assert check_peer_credentials((123, 1000, 1000), 1000, 1000)
    assert not check_peer_credentials((123, 1000, 1000), 0, 0)
    assert not check_peer_credentials((123, 0, 1000), 0, 0)  # gid mismatch alone rejects
    assert not check_peer_credentials((123, 1000, 0), 0, 0)  # uid mismatch alone rejects


def test_get_peer_credentials_of_socketpair():
    a, b = socket.socketpair(socket.AF_UNIX)
    with a, b:
        assert get_peer_credentials(a) == (os.getpid(), os.geteuid(), os.getegid())


def test_peer_with_other_uid_is_disconnected(tmp_path, monkeypatch):
    # Pretend the server runs as another user: our own connection must be refused.
    real = os.geteuid()
    monkeypatch.setattr(os, "geteuid", lambda: real + 1)

    async def main():
        server, path = await start(tmp_path, {"s": {"Echo": echo}})
        conn = await Raw.open(path)
        # Nothing sent, so the server's close arrives as a clean EOF (not a reset).
        assert await aio.wait_for(conn.reader.read(65536), 2) == b""
        assert server.connection_count == 0
        conn.close()
        await stop(server)

    run(main())


def test_peer_check_disabled_accepts_other_uid(tmp_path, monkeypatch):
    real = os.geteuid()
    monkeypatch.setattr(os, "geteuid", lambda: real + 1)

    async def main():
        server, path = await start(tmp_path, {"s": {"Echo": echo}}, check_peer=False)
        conn = await Raw.open(path)
        await conn.send(request(1, "s", "Echo", b"x"))
        assert await conn.recv() == (1, 0, "", b"x")
        conn.close()
        await stop(server)

    run(main())
