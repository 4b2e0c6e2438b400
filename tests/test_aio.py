"""shim.aio: the daemon's own event loop. Semantics are asyncio's where the shim relies on them."""

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from shim import aio
from shim import log as shimlog

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_tasks_interleave_and_return_results():
    order = []

    async def worker(name, delay):
        order.append(f"{name}-start")
        await aio.sleep(delay)
        order.append(f"{name}-end")
        return name

    async def main():
        a = aio.create_task(worker("a", 0.03))
        b = aio.create_task(worker("b", 0.01))
        return await aio.gather(a, b)

    assert aio.run(main()) == ["a", "b"]
    assert order == ["a-start", "b-start", "b-end", "a-end"]


def test_sleep_zero_yields_to_other_tasks():
    seen = []

    async def other():
        seen.append("other")

    async def main():
        aio.create_task(other())
        await aio.sleep(0)
        return list(seen)

    assert aio.run(main()) == ["other"]


def test_cancel_throws_into_the_awaiting_coroutine_and_marks_the_task_cancelled():
    cleaned = []

    async def victim():
        try:
            await aio.sleep(10)
        finally:
            cleaned.append(True)

    async def main():
        t = aio.create_task(victim())
        await aio.sleep(0.01)
        assert t.cancel()
        with pytest.raises(aio.CancelledError):
            await t
        return t.cancelled(), t.cancelling()

    assert aio.run(main()) == (True, 1)
    assert cleaned == [True]


def test_cancel_before_first_step_still_cancels():
    async def never():
        raise AssertionError("must not run")

    async def main():
        t = aio.create_task(never())
        t.cancel()
        await aio.gather(t, return_exceptions=True)
        return t.cancelled()

    assert aio.run(main()) is True


def test_timeout_turns_its_own_cancellation_into_timeout_error():
    async def main():
        start = time.monotonic()
        with pytest.raises(TimeoutError):
            async with aio.timeout(0.05) as scope:
                await aio.sleep(5)
        assert scope.expired()
        assert aio.current_task().cancelling() == 0  # uncancelled: the task lives on
        return time.monotonic() - start

    assert 0.04 < aio.run(main()) < 1.0


def test_timeout_does_not_swallow_a_cancellation_from_outside():
    async def inner():
        async with aio.timeout(5):
            await aio.sleep(5)

    async def main():
        t = aio.create_task(inner())
        await aio.sleep(0.01)
        t.cancel()
        results = await aio.gather(t, return_exceptions=True)
        return t.cancelled(), results

    cancelled, results = aio.run(main())
    assert cancelled and isinstance(results[0], aio.CancelledError)


def test_wait_for_on_a_future_cancels_it_on_expiry():
    async def main():
        fut = aio.get_running_loop().create_future()
        with pytest.raises(TimeoutError):
            await aio.wait_for(fut, 0.02)
        return fut.cancelled()

    assert aio.run(main()) is True


def test_wait_for_returns_the_value_in_time():
    async def value():
        await aio.sleep(0.01)
        return 42

    assert aio.run(aio.wait_for(value(), 1)) == 42


def test_gather_return_exceptions_collects_failures_in_order():
    async def boom():
        raise ValueError("x")

    async def ok():
        return 1

    async def main():
        return await aio.gather(boom(), ok(), return_exceptions=True)

    first, second = aio.run(main())
    assert isinstance(first, ValueError) and second == 1


def test_gather_without_return_exceptions_raises():
    async def boom():
        raise ValueError("x")

    with pytest.raises(ValueError):
        aio.run(aio.gather(boom()))


def test_event_wakes_every_waiter():
    async def main():
        ev = aio.Event()
        waiters = [aio.create_task(ev.wait()) for _ in range(3)]
        await aio.sleep(0)
        assert not any(w.done() for w in waiters)
        ev.set()
        return await aio.gather(*waiters)

    assert aio.run(main()) == [True, True, True]


def test_lock_is_fifo_and_survives_a_cancelled_waiter():
    order = []

    async def user(lock, name, hold):
        async with lock:
            order.append(name)
            await aio.sleep(hold)

    async def main():
        lock = aio.Lock()
        a = aio.create_task(user(lock, "a", 0.02))
        await aio.sleep(0)
        b = aio.create_task(user(lock, "b", 0))
        c = aio.create_task(user(lock, "c", 0))
        await aio.sleep(0)
        b.cancel()
        await aio.gather(a, b, c, return_exceptions=True)
        return lock.locked()

    assert aio.run(main()) is False
    assert order == ["a", "c"]


def test_call_later_runs_in_deadline_order_and_cancelled_handles_never_run():
    ran = []

    async def main():
        loop = aio.get_running_loop()
        loop.call_later(0.03, ran.append, 3)
        loop.call_later(0.01, ran.append, 1)
        loop.call_later(0.02, ran.append, 2).cancel()
        await aio.sleep(0.05)

    aio.run(main())
    assert ran == [1, 3]


def test_a_failing_callback_is_logged_and_the_loop_goes_on():
    def bad():
        raise RuntimeError("callback broke")

    async def main():
        aio.get_running_loop().call_soon(bad)
        await aio.sleep(0.01)
        return "alive"

    with shimlog.capture() as records:
        assert aio.run(main()) == "alive"
    assert any(level == "error" and "callback broke" in text for level, _, text in records)


def test_readers_and_writers_on_a_pipe():
    r, w = os.pipe()
    os.set_blocking(r, False)
    got = []

    async def main():
        loop = aio.get_running_loop()
        done = loop.create_future()

        def on_read():
            data = os.read(r, 100)
            got.append(data)
            loop.remove_reader(r)
            done.set_result(None)

        loop.add_reader(r, on_read)
        loop.call_later(0.01, os.write, w, b"ping")
        await aio.wait_for(done, 2)
        assert not loop.remove_reader(r)  # already removed

    try:
        aio.run(main())
    finally:
        os.close(r)
        os.close(w)
    assert got == [b"ping"]


def test_signal_handler_runs_as_a_callback_and_is_removed_at_close():
    got = []

    async def main():
        loop = aio.get_running_loop()
        done = loop.create_future()
        loop.add_signal_handler(signal.SIGUSR1, lambda: (got.append(1), done.set_result(None)))
        os.kill(os.getpid(), signal.SIGUSR1)  # ourselves only
        await aio.wait_for(done, 2)

    aio.run(main())
    assert got == [1]
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL
    assert signal.set_wakeup_fd(-1) == -1  # the loop gave its wake-up fd back


def test_stream_round_trip_with_backpressure(tmp_path):
    """4 MiB each way through a unix socket: writes buffer, drain waits, nothing is lost."""
    path = str(tmp_path / "s.sock")
    blob = os.urandom(4 << 20)

    async def main():
        listener_sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener_sock.bind(path)
        listener_sock.listen()
        served = []

        async def echo(stream):
            while data := await stream.read(65536):
                stream.write(data)
                await stream.drain()
            stream.close()

        listener = aio.Listener(listener_sock, lambda s: served.append(aio.create_task(echo(s))))
        client = await aio.open_unix_connection(path)
        client.write(blob)
        reader = aio.create_task(client.readexactly(len(blob)))
        await client.drain()
        client.sock.shutdown(socket.SHUT_WR)
        echoed = await aio.wait_for(reader, 10)
        assert await client.read(10) == b""
        client.close()
        listener.close()
        await aio.gather(*served)
        return echoed

    assert aio.run(main()) == blob


def test_readexactly_at_eof_is_incomplete_read(tmp_path):
    a, b = socket.socketpair()

    async def main():
        stream = aio.Stream(a)
        b.sendall(b"abc")
        b.close()
        with pytest.raises(aio.IncompleteReadError) as info:
            await stream.readexactly(10)
        stream.close()
        return info.value.partial

    assert aio.run(main()) == b"abc"


def test_close_fails_a_pending_read():
    a, b = socket.socketpair()

    async def main():
        stream = aio.Stream(a)
        reader = aio.create_task(stream.read(10))
        await aio.sleep(0.01)
        stream.close()
        with pytest.raises(ConnectionError):
            await reader

    try:
        aio.run(main())
    finally:
        b.close()


def test_connect_to_nobody_is_refused(tmp_path):
    path = str(tmp_path / "nobody.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)  # bound, never listening
    try:
        with pytest.raises(ConnectionRefusedError):
            aio.run(aio.open_unix_connection(path))
    finally:
        s.close()


def test_run_cancels_tasks_left_behind():
    cleaned = []

    async def straggler():
        try:
            await aio.sleep(10)
        finally:
            cleaned.append(True)

    async def main():
        aio.create_task(straggler())
        await aio.sleep(0)

    aio.run(main())
    assert cleaned == [True]


def test_no_running_loop_outside_run():
    with pytest.raises(RuntimeError):
        aio.get_running_loop()


def test_the_daemon_imports_neither_asyncio_nor_protobuf():
    """The point of shim.aio, shim.log and proto/lite: the daemon, with the whole engine
    preloaded as the fork server has it, must not pull asyncio, ssl, google.protobuf, logging,
    dataclasses/inspect or typing in (~12 MB RSS together)."""
    code = (f"import sys; sys.path[:0] = [{REPO!r}]; import shim.daemon, shim.service, shim.stdio, shim.events, "
            "shim.checkpoint, shim.metrics, shim.ttrpc; shim.daemon.preload_engine(); "
            "shim.daemon.warm_up(); "
            "print(sorted(m for m in ('asyncio', 'ssl', 'google.protobuf', 'logging', 'dataclasses', "
            "'inspect', 'typing', 'subprocess', 're', 'json') if m in sys.modules))")
    # As the launcher runs it (-IS), and with nothing but the repository on the path: the
    # daemon needs no third-party package at all.
    out = subprocess.run([sys.executable, "-IS", "-c", code], cwd="/", capture_output=True,
                         text=True, check=True).stdout.strip()
    assert out == "[]"
