"""The event queue: strict order, retried while containerd is unreachable, nothing dropped."""


from proto.containerd.events import task_lite as ev
from proto.containerd.services.events.ttrpc.v1 import events_pb2
from shim import aio
from shim.events import FORWARD_SERVICE, EventQueue
from shim.ttrpc import Code, Server, TTRPCError
import shim.events


async def _serve_forward(path, forward):
    server = Server()
    server.register(FORWARD_SERVICE, {"Forward": forward})
    import socket
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(path)
    sock.listen()
    await server.start(sock)
    return server


async def _containerd(path, received, fail_first=0):
    """A stand-in for containerd's ttrpc Events service; fails its first calls."""
    calls = {"n": 0}

    async def forward(payload, ctx):
        calls["n"] += 1
        if calls["n"] <= fail_first:
            raise TTRPCError(Code.UNAVAILABLE, "starting up")
        received.append(events_pb2.ForwardRequest.FromString(payload).envelope)
        return b""

    return await _serve_forward(path, forward)


def _exits(n):
    return [ev.TaskExit(container_id="c", id=f"p{i}", pid=i) for i in range(n)]


def test_events_arrive_in_order_with_namespace_topic_and_timestamp(tmp_path):
    async def scenario():
        received = []
        path = str(tmp_path / "ttrpc.sock")
        server = await _containerd(path, received)
        q = EventQueue(path, "ns1")
        q.start()
        for e in _exits(20):
            q.publish("/tasks/exit", e)
        assert await q.flush(5)
        await q.close()
        server.close()
        return received

    got = aio.run(scenario())
    assert [e.topic for e in got] == ["/tasks/exit"] * 20
    assert [ev.TaskExit.FromString(e.event.value).id for e in got] == [f"p{i}" for i in range(20)]
    assert all(e.namespace == "ns1" and e.timestamp.seconds > 0 for e in got)
    assert got[0].event.type_url == "containerd.events.TaskExit"  # bare name, no prefix


def test_containerd_unreachable_then_back_nothing_lost_or_reordered(tmp_path, monkeypatch):
    async def scenario():
        received = []
        path = str(tmp_path / "ttrpc.sock")
        q = EventQueue(path, "ns1")
        q.start()
        for e in _exits(5):  # containerd is down: nobody listens yet
            q.publish("/tasks/exit", e)
        await aio.sleep(0.3)
        server = await _containerd(path, received, fail_first=2)  # back, but refusing at first
        for e in _exits(10)[5:]:
            q.publish("/tasks/exit", e)
        assert await q.flush(10)
        await q.close()
        server.close()
        return received

    monkeypatch.setattr(shim.events, "_MAX_BACKOFF", 0.1)
    got = aio.run(scenario())
    assert [ev.TaskExit.FromString(e.event.value).id for e in got] == [f"p{i}" for i in range(10)]


def test_flush_is_bounded_when_containerd_never_comes(tmp_path):
    async def scenario():
        q = EventQueue(str(tmp_path / "absent.sock"), "ns1")
        q.start()
        q.publish("/tasks/exit", _exits(1)[0])
        ok = await q.flush(0.3)
        await q.close()
        return ok

    assert aio.run(scenario()) is False


def test_an_event_containerd_rejects_is_dropped_not_retried_forever(tmp_path):
    async def scenario():
        received = []
        path = str(tmp_path / "ttrpc.sock")
        calls = {"n": 0}

        async def forward(payload, ctx):
            calls["n"] += 1
            envelope = events_pb2.ForwardRequest.FromString(payload).envelope
            if envelope.topic == "/bad":
                raise TTRPCError(Code.INVALID_ARGUMENT, "bad topic")
            received.append(envelope.topic)
            return b""

        server = await _serve_forward(path, forward)
        q = EventQueue(path, "ns1")
        q.start()
        q.publish("/bad", _exits(1)[0])
        q.publish("/tasks/exit", _exits(1)[0])
        assert await q.flush(5)
        await q.close()
        server.close()
        return received, calls["n"]

    received, calls = aio.run(scenario())
    assert received == ["/tasks/exit"] and calls == 2
