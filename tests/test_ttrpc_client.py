"""ttrpc client, against the library's Server and against a fake server that reads
and writes frames with struct directly (to pin the wire bytes and misbehave)."""

import socket
import struct
import time

import pytest

from proto.ttrpc import ttrpc_pb2
from shim import aio
from shim.ttrpc import Client, Code, ConnectionClosed, Server, TTRPCError

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


def run(coro):
    """Run a test coroutine with a hard ceiling so a bug hangs nothing."""
    return aio.run(aio.wait_for(coro, 5))


def empty_ok(stream_id):
    """Go ttrpc's OK reply with an empty payload: a header, no body."""
    return HDR.pack(0, stream_id, 2, 0)


def reply(stream_id, payload=b"", code=0, message=""):
    resp = ttrpc_pb2.Response(payload=payload)
    if code:
        resp.status.code, resp.status.message = code, message
    body = resp.SerializeToString()
    return HDR.pack(len(body), stream_id, 2, 0) + body


class Fake:
    """A scripted server: records every request frame, replies via ``script``.

    ``script(fake, stream_id, frame_bytes, writer)`` is awaited for each frame.
    """

    def __init__(self, script):
        self.script = script
        self.frames = []  # (stream_id, raw frame bytes)
        self.writers = []

    async def start(self, path):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(str(path))
        sock.listen()
        self.tasks = []
        self.server = aio.Listener(
            sock, lambda stream: self.tasks.append(aio.create_task(self._serve(stream, stream))))

    async def _serve(self, reader, writer):
        self.writers.append(writer)
        try:
            while True:
                header = await reader.readexactly(10)
                length, stream_id, _, _ = HDR.unpack(header)
                frame = header + await reader.readexactly(length)
                self.frames.append((stream_id, frame))
                await self.script(self, stream_id, frame, writer)
        except (aio.IncompleteReadError, ConnectionError):
            writer.close()

    async def stop(self):
        for writer in self.writers:
            writer.close()
        self.server.close()
        await aio.gather(*self.tasks, return_exceptions=True)


async def ok_script(fake, stream_id, frame, writer):
    writer.write(empty_ok(stream_id))


async def start_server(tmp_path, methods):
    path = str(tmp_path / "s.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    sock.listen()
    server = Server()
    server.register("s", methods)
    await server.start(sock)
    return server, path


async def stop_server(server):
    server.close()
    await server.wait_closed()


def test_golden_request_and_empty_ok_reply(tmp_path):
    async def main():
        fake = Fake(ok_script)
        await fake.start(tmp_path / "f.sock")
        async with await Client.connect(str(tmp_path / "f.sock")) as client:
            result = await client.call("containerd.task.v2.Task", "State", b"\x0a\x02c1",
                                       metadata={"containerd-namespace-ttrpc": "default"})
        assert result == b""
        assert fake.frames == [(1, STATE_FRAME)]
        await fake.stop()

    run(main())


def test_stream_ids_are_odd_and_increasing(tmp_path):
    async def main():
        fake = Fake(ok_script)
        await fake.start(tmp_path / "f.sock")
        async with await Client.connect(str(tmp_path / "f.sock")) as client:
            for _ in range(3):
                await client.call("s", "M")
            await aio.gather(*(client.call("s", "M") for _ in range(3)))
        assert [sid for sid, _ in fake.frames] == [1, 3, 5, 7, 9, 11]
        await fake.stop()

    run(main())


def test_out_of_order_replies_reach_their_callers(tmp_path):
    async def reverse_script(fake, stream_id, frame, writer):
        if len(fake.frames) == 5:  # hold replies until all five are in, then answer backwards
            for sid, _ in reversed(fake.frames):
                writer.write(reply(sid, b"for %d" % sid))

    async def main():
        fake = Fake(reverse_script)
        await fake.start(tmp_path / "f.sock")
        async with await Client.connect(str(tmp_path / "f.sock")) as client:
            results = await aio.gather(*(client.call("s", "M") for _ in range(5)))
        assert results == [b"for 1", b"for 3", b"for 5", b"for 7", b"for 9"]
        await fake.stop()

    run(main())


def test_concurrent_calls_against_server(tmp_path):
    async def delayed_echo(payload, ctx):
        await aio.sleep((20 - int(payload)) / 1000)  # later calls answer first
        return payload + ctx.get("k", "").encode()

    async def main():
        server, path = await start_server(tmp_path, {"Echo": delayed_echo})
        async with await Client.connect(path) as client:
            results = await aio.gather(*(
                client.call("s", "Echo", b"%d" % i, metadata={"k": "!"}) for i in range(20)))
        assert results == [b"%d!" % i for i in range(20)]
        await stop_server(server)

    run(main())


def test_error_mapping(tmp_path):
    async def missing(payload, ctx):
        raise TTRPCError(Code.NOT_FOUND, "container c1 not found")

    async def boom(payload, ctx):
        raise ValueError("boom")

    async def main():
        server, path = await start_server(tmp_path, {"Missing": missing, "Boom": boom})
        async with await Client.connect(path) as client:
            cases = [("s", "Missing", Code.NOT_FOUND, "container c1 not found"),
                     ("s", "Boom", Code.UNKNOWN, "boom"),
                     ("s", "Nope", Code.UNIMPLEMENTED, "method Nope"),
                     ("x.Y", "Z", Code.UNIMPLEMENTED, "service x.Y")]
            for service, method, code, message in cases:
                with pytest.raises(TTRPCError) as info:
                    await client.call(service, method)
                assert (info.value.code, info.value.message) == (code, message)
        await stop_server(server)

    run(main())


def test_unlisted_status_code_and_garbage_reply(tmp_path):
    async def script(fake, stream_id, frame, writer):
        if stream_id == 1:
            writer.write(reply(1, code=99, message="future"))
        else:
            writer.write(HDR.pack(3, stream_id, 2, 0) + b"\x0a\x05a")  # truncated Response

    async def main():
        fake = Fake(script)
        await fake.start(tmp_path / "f.sock")
        async with await Client.connect(str(tmp_path / "f.sock")) as client:
            with pytest.raises(TTRPCError) as info:
                await client.call("s", "M")
            assert (info.value.code, info.value.message) == (99, "future")
            with pytest.raises(TTRPCError) as info:
                await client.call("s", "M")
            assert info.value.code == Code.UNKNOWN
        await fake.stop()

    run(main())


def test_pending_calls_fail_when_server_closes_connection(tmp_path):
    async def close_after_two(fake, stream_id, frame, writer):
        if len(fake.frames) == 2:
            writer.close()

    async def main():
        fake = Fake(close_after_two)
        await fake.start(tmp_path / "f.sock")
        client = await Client.connect(str(tmp_path / "f.sock"))
        results = await aio.gather(client.call("s", "A"), client.call("s", "B"),
                                       return_exceptions=True)
        assert [type(r) for r in results] == [ConnectionClosed, ConnectionClosed]
        assert client.closed
        with pytest.raises(ConnectionClosed):
            await client.call("s", "C")
        assert len(fake.frames) == 2  # the third call never reached the wire
        await client.wait_closed()
        await fake.stop()

    run(main())


def test_close_fails_pending_calls(tmp_path):
    async def silent(fake, stream_id, frame, writer):
        pass

    async def main():
        fake = Fake(silent)
        await fake.start(tmp_path / "f.sock")
        client = await Client.connect(str(tmp_path / "f.sock"))
        pending = aio.create_task(client.call("s", "Wait"))
        while not fake.frames:
            await aio.sleep(0.005)
        client.close()
        with pytest.raises(ConnectionClosed):
            await pending
        await client.wait_closed()
        await fake.stop()

    run(main())


def test_call_timeout(tmp_path):
    async def script(fake, stream_id, frame, writer):
        if stream_id == 3:  # answer the late reply for 1 first: it must be dropped
            writer.write(reply(1, b"late") + reply(3, b"on time"))

    async def main():
        fake = Fake(script)
        await fake.start(tmp_path / "f.sock")
        async with await Client.connect(str(tmp_path / "f.sock")) as client:
            began = time.monotonic()
            with pytest.raises(TTRPCError) as info:
                await client.call("s", "Slow", timeout=0.05)
            assert info.value.code == Code.DEADLINE_EXCEEDED
            assert 0.04 <= time.monotonic() - began < 1.0
            assert await client.call("s", "Fast", timeout=2) == b"on time"
            assert client._pending == {}  # a timed-out call leaves no entry behind
        first = ttrpc_pb2.Request.FromString(fake.frames[0][1][10:])
        assert first.timeout_nano == 50_000_000
        second = ttrpc_pb2.Request.FromString(fake.frames[1][1][10:])
        assert (second.method, second.timeout_nano) == ("Fast", 2_000_000_000)
        await fake.stop()

    run(main())


def test_server_side_deadline_via_client_timeout(tmp_path):
    async def sleepy(payload, ctx):
        await aio.sleep(10)
        return b""

    async def main():
        server, path = await start_server(tmp_path, {"Sleep": sleepy})
        async with await Client.connect(path) as client:
            with pytest.raises(TTRPCError) as info:
                await client.call("s", "Sleep", timeout=0.05)
            assert info.value.code == Code.DEADLINE_EXCEEDED
        await stop_server(server)

    run(main())


def test_oversized_request_is_refused_locally(tmp_path):
    async def main():
        server, path = await start_server(tmp_path, {"Echo": lambda p, c: aio.sleep(0, p)})
        async with await Client.connect(path) as client:
            with pytest.raises(TTRPCError) as info:
                await client.call("s", "Echo", bytes(MAX))
            assert info.value.code == Code.RESOURCE_EXHAUSTED
            assert await client.call("s", "Echo", b"small") == b"small"  # connection intact
        await stop_server(server)

    run(main())


def test_connect_to_missing_socket(tmp_path):
    async def main():
        with pytest.raises(OSError):
            await Client.connect(str(tmp_path / "absent.sock"))

    run(main())
