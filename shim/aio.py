"""The daemon's event loop: the small subset of asyncio the shim uses, on epoll, in one module.

Why not asyncio: importing it costs ~5 MB of RSS per process (streams, transports, subprocess,
futures, base_events...), a third of a daemon, and the shim uses none of what makes it large.
Density is the point of grouping, so the daemon runs on this instead. The names and semantics
follow asyncio's (Future, Task with cancel()/cancelling()/uncancel(), sleep, timeout,
timeout_at, wait_for, gather, Event, Lock, run) so code reads the same; only the stream layer
differs: `Stream` is one non-blocking unix socket with an output buffer.

Invariants:
- One thread. Callbacks run one at a time from `Loop._run_once`; nothing here is thread-safe.
- A callback's exception is logged and never stops the loop.
- Signals arrive through signal.set_wakeup_fd on a non-blocking pipe and run as callbacks,
  never inside the Python-level signal handler.
- A task cancelled while it awaits a future has that future cancelled; a task cancelled while
  it is runnable gets CancelledError thrown in at its next step.
"""

from __future__ import annotations

import errno
import heapq
import os
import select
import signal
import socket
import time
from collections import deque
from types import coroutine

from shim.log import getLogger

log = getLogger("pyshim.aio")

__all__ = ["CancelledError", "Event", "Future", "IncompleteReadError", "InvalidStateError",
           "Listener", "Lock", "Loop", "Stream",
           "Task", "create_task", "current_task", "ensure_future", "gather", "get_running_loop",
           "open_unix_connection", "run", "sleep", "timeout", "timeout_at", "wait_for"]


class CancelledError(BaseException):
    """The task or future was cancelled."""


class InvalidStateError(Exception):
    """Result asked of a pending future, or a done future set twice."""


class IncompleteReadError(EOFError):
    """EOF before `readexactly` had its n bytes; `partial` holds what came."""

    def __init__(self, partial: bytes, expected: int) -> None:
        super().__init__(f"{len(partial)} bytes read, {expected} expected")
        self.partial, self.expected = partial, expected


TimeoutError = TimeoutError  # the builtin, as asyncio's is since 3.11

_PENDING, _CANCELLED, _FINISHED = 0, 1, 2
_running: "Loop | None" = None
_current: "Task | None" = None


def get_running_loop() -> "Loop":
    if _running is None:
        raise RuntimeError("no running event loop")
    return _running


def current_task() -> "Task | None":
    return _current


class Handle:
    __slots__ = ("_callback", "_args", "_cancelled", "when")

    def __init__(self, callback, args, when: float = 0.0) -> None:
        self._callback, self._args, self._cancelled, self.when = callback, args, False, when

    def cancel(self) -> None:
        self._cancelled = True
        self._callback = self._args = None  # drop references at once

    def cancelled(self) -> bool:
        return self._cancelled

    def _run(self) -> None:
        try:
            self._callback(*self._args)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException:
            log.exception("event loop callback %r failed", self._callback)

    def __lt__(self, other: "Handle") -> bool:
        return self.when < other.when


class Loop:
    """epoll + a ready queue + a timer heap + signal callbacks."""

    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._ready: deque[Handle] = deque()
        self._timers: list[Handle] = []
        self._fds: dict[int, list] = {}  # fd -> [reader Handle | None, writer Handle | None]
        self._signals: dict[int, Handle] = {}
        self._wakeup_r = self._wakeup_w = -1
        self._closed = False

    # --- time and callbacks ---------------------------------------------------------------
    time = staticmethod(time.monotonic)

    def call_soon(self, callback, *args) -> Handle:
        handle = Handle(callback, args)
        self._ready.append(handle)
        return handle

    def call_at(self, when: float, callback, *args) -> Handle:
        handle = Handle(callback, args, when)
        heapq.heappush(self._timers, handle)
        return handle

    def call_later(self, delay: float, callback, *args) -> Handle:
        return self.call_at(time.monotonic() + delay, callback, *args)

    def create_future(self) -> "Future":
        return Future(self)

    def create_task(self, coro) -> "Task":
        return Task(coro, self)

    # --- file descriptors -----------------------------------------------------------------
    def _update(self, fd: int, entry: list) -> None:
        mask = (select.EPOLLIN if entry[0] else 0) | (select.EPOLLOUT if entry[1] else 0)
        if not mask:
            del self._fds[fd]
            try:
                self._epoll.unregister(fd)
            except (OSError, ValueError):
                pass  # already closed: the kernel dropped it
        elif len(entry) == 2:
            try:
                self._epoll.register(fd, mask)
            except FileExistsError:  # a closed fd's number reused before we forgot it
                self._epoll.modify(fd, mask)
            entry.append(True)
        else:
            try:
                self._epoll.modify(fd, mask)
            except FileNotFoundError:  # closed and reused: the kernel forgot the old one
                self._epoll.register(fd, mask)

    def _add(self, fd: int, which: int, callback, args) -> None:
        if not isinstance(fd, int):
            fd = fd.fileno()
        entry = self._fds.setdefault(fd, [None, None])
        entry[which] = Handle(callback, args)
        try:
            self._update(fd, entry)
        except BaseException:
            entry[which] = None
            if len(entry) == 2 and not entry[1 - which]:
                del self._fds[fd]
            raise

    def _remove(self, fd: int, which: int) -> bool:
        if not isinstance(fd, int):
            fd = fd.fileno()
        entry = self._fds.get(fd)
        if entry is None or entry[which] is None:
            return False
        entry[which] = None
        self._update(fd, entry)
        return True

    def add_reader(self, fd, callback, *args) -> None:
        self._add(fd, 0, callback, args)

    def add_writer(self, fd, callback, *args) -> None:
        self._add(fd, 1, callback, args)

    def remove_reader(self, fd) -> bool:
        return self._remove(fd, 0)

    def remove_writer(self, fd) -> bool:
        return self._remove(fd, 1)

    # --- signals --------------------------------------------------------------------------
    def add_signal_handler(self, sig: int, callback, *args) -> None:
        if self._wakeup_r < 0:
            self._wakeup_r, self._wakeup_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
            signal.set_wakeup_fd(self._wakeup_w, warn_on_full_buffer=False)
            self.add_reader(self._wakeup_r, self._on_signals)
        self._signals[sig] = Handle(callback, args)
        signal.signal(sig, _ignore_in_handler)

    def remove_signal_handler(self, sig: int) -> bool:
        if self._signals.pop(sig, None) is None:
            return False
        signal.signal(sig, signal.SIG_DFL)
        return True

    def _on_signals(self) -> None:
        try:
            data = os.read(self._wakeup_r, 4096)
        except BlockingIOError:
            return
        for signum in dict.fromkeys(data):  # one callback per signal kind per wake-up
            handle = self._signals.get(signum)
            if handle is not None:
                self._ready.append(handle)

    # --- running --------------------------------------------------------------------------
    def _run_once(self) -> None:
        timers = self._timers
        while timers and timers[0]._cancelled:
            heapq.heappop(timers)
        if self._ready:
            wait = 0
        elif timers:
            wait = max(0.0, timers[0].when - time.monotonic())
        else:
            wait = -1
        for fd, mask in self._epoll.poll(wait):
            entry = self._fds.get(fd)
            if entry is None:
                continue
            if mask & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR) and entry[0]:
                self._ready.append(entry[0])
            if mask & (select.EPOLLOUT | select.EPOLLHUP | select.EPOLLERR) and entry[1]:
                self._ready.append(entry[1])
        now = time.monotonic()
        while timers and (timers[0]._cancelled or timers[0].when <= now):
            handle = heapq.heappop(timers)
            if not handle._cancelled:
                self._ready.append(handle)
        for _ in range(len(self._ready)):  # only what is ready now; new ones wait a turn
            handle = self._ready.popleft()
            if not handle._cancelled:
                handle._run()

    def run_until_complete(self, future: "Future"):
        global _running
        if _running is not None:
            raise RuntimeError("an event loop is already running")
        _running = self
        try:
            while not future.done():
                self._run_once()
        finally:
            _running = None
        return future.result()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for sig in list(self._signals):
            self.remove_signal_handler(sig)
        if self._wakeup_r >= 0:
            signal.set_wakeup_fd(-1)
            os.close(self._wakeup_r)
            os.close(self._wakeup_w)
        self._epoll.close()
        self._ready.clear()
        self._timers.clear()
        self._fds.clear()


def _ignore_in_handler(signum, frame) -> None:
    """The Python-level handler does nothing: the wake-up fd carries the signal to the loop."""


def run(main):
    """Run coroutine `main` on a new loop until it completes; cancel what is left; close."""
    loop = Loop()
    try:
        task = loop.create_task(main)
        return loop.run_until_complete(task)
    finally:
        try:
            _cancel_all(loop)
        finally:
            loop.close()


def _cancel_all(loop: Loop) -> None:
    """Give the tasks still pending a chance to unwind (as asyncio.run does)."""
    pending = [t for t in Task._live if not t.done() and t._loop is loop]
    if not pending:
        return
    for t in pending:
        t.cancel()
    loop.run_until_complete(loop.create_task(gather(*pending, return_exceptions=True)))


# --- futures and tasks ---------------------------------------------------------------------

class Future:
    __slots__ = ("_loop", "_state", "_result", "_exception", "_callbacks", "__weakref__")

    def __init__(self, loop: Loop | None = None) -> None:
        self._loop = loop or get_running_loop()
        self._state = _PENDING
        self._result = self._exception = None
        self._callbacks: list = []

    def done(self) -> bool:
        return self._state != _PENDING

    def cancelled(self) -> bool:
        return self._state == _CANCELLED

    def result(self):
        if self._state == _CANCELLED:
            raise CancelledError()
        if self._state == _PENDING:
            raise InvalidStateError("result is not set")
        if self._exception is not None:
            raise self._exception
        return self._result

    def exception(self):
        if self._state == _CANCELLED:
            raise CancelledError()
        if self._state == _PENDING:
            raise InvalidStateError("exception is not set")
        return self._exception

    def add_done_callback(self, fn) -> None:
        if self._state != _PENDING:
            self._loop.call_soon(fn, self)
        else:
            self._callbacks.append(fn)

    def remove_done_callback(self, fn) -> int:
        before = len(self._callbacks)
        self._callbacks = [c for c in self._callbacks if c != fn]
        return before - len(self._callbacks)

    def _finish(self, state: int) -> None:
        self._state = state
        callbacks, self._callbacks = self._callbacks, []
        for fn in callbacks:
            self._loop.call_soon(fn, self)

    def set_result(self, result) -> None:
        if self._state != _PENDING:
            raise InvalidStateError("future already done")
        self._result = result
        self._finish(_FINISHED)

    def set_exception(self, exception) -> None:
        if self._state != _PENDING:
            raise InvalidStateError("future already done")
        if isinstance(exception, type):
            exception = exception()
        self._exception = exception
        self._finish(_FINISHED)

    def cancel(self, msg=None) -> bool:
        if self._state != _PENDING:
            return False
        self._finish(_CANCELLED)
        return True

    def __await__(self):
        if self._state == _PENDING:
            yield self
        return self.result()

    __iter__ = __await__


class Task(Future):
    """Drives a coroutine: each step runs it until it awaits a pending Future."""

    __slots__ = ("_coro", "_waiting_on", "_must_cancel", "_cancels")
    _live: "set[Task]" = set()  # strong refs while running, as asyncio keeps them

    def __init__(self, coro, loop: Loop | None = None) -> None:
        super().__init__(loop)
        self._coro = coro
        self._waiting_on: Future | None = None
        self._must_cancel = False
        self._cancels = 0
        Task._live.add(self)
        self._loop.call_soon(self._step, None)

    def get_coro(self):
        return self._coro

    def cancel(self, msg=None) -> bool:
        if self._state != _PENDING:
            return False
        self._cancels += 1
        if self._waiting_on is not None and self._waiting_on.cancel():
            return True  # its callback wakes us with CancelledError
        self._must_cancel = True
        return True

    def cancelling(self) -> int:
        return self._cancels

    def uncancel(self) -> int:
        if self._cancels > 0:
            self._cancels -= 1
        return self._cancels

    def _step(self, exc: BaseException | None) -> None:
        global _current
        if self._state != _PENDING:
            return
        if self._must_cancel:
            if not isinstance(exc, CancelledError):
                exc = CancelledError()
            self._must_cancel = False
        self._waiting_on = None
        previous, _current = _current, self
        try:
            result = self._coro.send(None) if exc is None else self._coro.throw(exc)
        except StopIteration as stop:
            if self._must_cancel:  # cancelled while finishing: asyncio reports cancelled
                self._must_cancel = False
                Future.cancel(self)
            else:
                Future.set_result(self, stop.value)
            Task._live.discard(self)
        except CancelledError:
            Future.cancel(self)
            Task._live.discard(self)
        except (KeyboardInterrupt, SystemExit) as e:
            Future.set_exception(self, e)
            Task._live.discard(self)
            raise
        except BaseException as e:
            Future.set_exception(self, e)
            Task._live.discard(self)
        else:
            if isinstance(result, Future):
                self._waiting_on = result
                result.add_done_callback(self._wakeup)
                if self._must_cancel and result.cancel():
                    self._must_cancel = False
            elif result is None:  # a bare yield: run again next turn
                self._loop.call_soon(self._step, None)
            else:
                self._loop.call_soon(self._step, RuntimeError(f"task got bad yield: {result!r}"))
        finally:
            _current = previous

    def _wakeup(self, future: Future) -> None:
        if future._state == _CANCELLED:
            self._step(CancelledError())
        elif future._exception is not None:
            self._step(future._exception)
        else:
            self._step(None)


def create_task(coro) -> Task:
    return get_running_loop().create_task(coro)


def ensure_future(aw) -> Future:
    if isinstance(aw, Future):
        return aw
    return get_running_loop().create_task(aw)


@coroutine
def _yield_once():
    yield


async def sleep(delay: float, result=None):
    if delay <= 0:
        await _yield_once()
        return result
    loop = get_running_loop()
    future = loop.create_future()
    handle = loop.call_later(delay, _resolve, future, result)
    try:
        return await future
    finally:
        handle.cancel()


def _resolve(future: Future, result) -> None:
    if not future.done():
        future.set_result(result)


class Timeout:
    """`async with timeout(s)`: cancel the current task at the deadline and turn that
    cancellation into TimeoutError once it has unwound (asyncio.Timeout's contract)."""

    __slots__ = ("_when", "_task", "_handle", "_expired", "_cancelling")

    def __init__(self, when: float | None) -> None:
        self._when = when
        self._task: Task | None = None
        self._handle: Handle | None = None
        self._expired = False
        self._cancelling = 0

    def expired(self) -> bool:
        return self._expired

    def when(self) -> float | None:
        return self._when

    async def __aenter__(self) -> "Timeout":
        self._task = current_task()
        if self._task is None:
            raise RuntimeError("timeout() used outside a task")
        self._cancelling = self._task.cancelling()
        if self._when is not None:
            loop = get_running_loop()
            if self._when <= loop.time():
                self._handle = loop.call_soon(self._on_timeout)
            else:
                self._handle = loop.call_at(self._when, self._on_timeout)
        return self

    def _on_timeout(self) -> None:
        self._task.cancel()
        self._expired = True

    async def __aexit__(self, exc_type, exc, tb) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._expired and exc_type is not None and issubclass(exc_type, CancelledError):
            if self._task.uncancel() <= self._cancelling:
                raise TimeoutError() from exc
        return None


def timeout(delay: float | None) -> Timeout:
    return Timeout(None if delay is None else time.monotonic() + delay)


def timeout_at(when: float | None) -> Timeout:
    return Timeout(when)


async def wait_for(aw, timeout_s: float | None):
    """Await `aw` for at most `timeout_s` seconds; on expiry it is cancelled and TimeoutError
    raised. A coroutine runs inside the caller's task, a future is awaited as it is."""
    if timeout_s is None:
        return await aw
    async with timeout(timeout_s):
        return await aw


async def gather(*aws, return_exceptions: bool = False) -> list:
    """Await each in turn (they run concurrently once wrapped in tasks); results in order."""
    futures = [ensure_future(a) for a in aws]
    results = []
    for future in futures:
        try:
            results.append(await future)
        except CancelledError as e:
            if not return_exceptions or _current is None or _current.cancelling():
                raise
            results.append(e)
        except Exception as e:
            if not return_exceptions:
                raise
            results.append(e)
    # Yield once, as asyncio's gather does: the futures' done-callbacks (scheduled when they
    # finished) run before the caller goes on, so a caller looping on state those callbacks
    # update never spins.
    await _yield_once()
    return results


class Event:
    __slots__ = ("_flag", "_waiters")

    def __init__(self) -> None:
        self._flag = False
        self._waiters: deque[Future] = deque()

    def is_set(self) -> bool:
        return self._flag

    def set(self) -> None:
        if not self._flag:
            self._flag = True
            for future in self._waiters:
                if not future.done():
                    future.set_result(True)

    def clear(self) -> None:
        self._flag = False

    async def wait(self) -> bool:
        if self._flag:
            return True
        future = get_running_loop().create_future()
        self._waiters.append(future)
        try:
            await future
            return True
        finally:
            self._waiters.remove(future)


class Lock:
    __slots__ = ("_locked", "_waiters")

    def __init__(self) -> None:
        self._locked = False
        self._waiters: deque[Future] = deque()

    def locked(self) -> bool:
        return self._locked

    async def acquire(self) -> bool:
        if not self._locked and not any(not w.done() for w in self._waiters):
            self._locked = True
            return True
        future = get_running_loop().create_future()
        self._waiters.append(future)
        try:
            try:
                await future
            finally:
                self._waiters.remove(future)
        except CancelledError:
            if not self._locked:
                self._wake_first()
            raise
        self._locked = True
        return True

    def release(self) -> None:
        if not self._locked:
            raise RuntimeError("Lock is not acquired")
        self._locked = False
        self._wake_first()

    def _wake_first(self) -> None:
        for future in self._waiters:
            if not future.done():
                future.set_result(True)
                return

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, *exc_info) -> None:
        self.release()


# --- streams ---------------------------------------------------------------------------------

class Stream:
    """One connected non-blocking stream socket: `read`, buffered `write` + `drain`, `close`."""

    __slots__ = ("sock", "_fd", "_loop", "_out", "_reader", "_drained", "_error", "_closed")

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock
        self._fd = sock.fileno()
        self._loop = get_running_loop()
        self._out = bytearray()
        self._reader: Future | None = None
        self._drained: Future | None = None
        self._error: BaseException | None = None
        self._closed = False

    def is_closing(self) -> bool:
        return self._closed

    async def read(self, n: int) -> bytes:
        """Up to n bytes; b"" at EOF. Raises OSError on a broken connection."""
        while True:
            if self._closed:
                raise ConnectionResetError(errno.EBADF, "stream closed")
            try:
                return self.sock.recv(n)
            except (BlockingIOError, InterruptedError):
                pass
            future = self._reader = self._loop.create_future()
            self._loop.add_reader(self._fd, _resolve, future, None)
            try:
                await future
            finally:
                self._reader = None
                if not self._closed:
                    self._loop.remove_reader(self._fd)

    async def readexactly(self, n: int) -> bytes:
        """Exactly n bytes, or IncompleteReadError at EOF."""
        buf = bytearray()
        while len(buf) < n:
            chunk = await self.read(n - len(buf))
            if not chunk:
                raise IncompleteReadError(bytes(buf), n)
            buf += chunk
        return bytes(buf)

    def write(self, data: bytes) -> None:
        """Queue data; sent at once as far as the socket takes it, the rest when writable."""
        if self._closed:
            raise ConnectionResetError(errno.EBADF, "stream closed")
        if self._error is not None:
            raise self._error
        if not self._out:
            try:
                sent = self.sock.send(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError as e:
                self._error = e
                raise
            if sent == len(data):
                return
            data = memoryview(data)[sent:]
            self._loop.add_writer(self._fd, self._on_writable)
        self._out += data

    def _on_writable(self) -> None:
        try:
            sent = self.sock.send(self._out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            self._error = e
            self._out.clear()
            sent = 0
        del self._out[:sent]
        if not self._out:
            self._loop.remove_writer(self._fd)
            if self._drained is not None and not self._drained.done():
                if self._error is not None:
                    self._drained.set_exception(self._error)
                else:
                    self._drained.set_result(None)

    async def drain(self) -> None:
        """Wait until everything written has gone to the socket."""
        if self._error is not None:
            raise self._error
        if not self._out:
            return
        if self._closed:
            raise ConnectionResetError(errno.EBADF, "stream closed")
        self._drained = self._loop.create_future()
        try:
            await self._drained
        finally:
            self._drained = None

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._loop.remove_reader(self._fd)
        self._loop.remove_writer(self._fd)
        self._out.clear()
        error = ConnectionResetError(errno.EBADF, "stream closed")
        for future in (self._reader, self._drained):
            if future is not None and not future.done():
                future.set_exception(error)
        self.sock.close()


async def open_unix_connection(path: str) -> Stream:
    """Connect to a unix stream socket without blocking the loop."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.setblocking(False)
        try:
            sock.connect(path)
        except (BlockingIOError, InterruptedError):  # the listener's backlog is full
            loop = get_running_loop()
            future = loop.create_future()
            loop.add_writer(sock.fileno(), _resolve, future, None)
            try:
                await future
            finally:
                loop.remove_writer(sock.fileno())
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                raise OSError(err, os.strerror(err), path)
        return Stream(sock)
    except BaseException:
        sock.close()
        raise


class Listener:
    """Accepts on a listening unix socket and hands each connection (a Stream) to a callback."""

    def __init__(self, sock: socket.socket, on_connect) -> None:
        sock.setblocking(False)
        self.sock = sock
        self._on_connect = on_connect
        self._loop = get_running_loop()
        self._loop.add_reader(sock.fileno(), self._accept)
        self._closed = False

    def _accept(self) -> None:
        for _ in range(16):  # a burst, then let others run
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # EMFILE and friends: log, keep listening
                log.warning("accept failed: %s", e)
                return
            conn.set_inheritable(False)
            try:
                self._on_connect(Stream(conn))
            except Exception:
                log.exception("connection callback failed")
                conn.close()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._loop.remove_reader(self.sock.fileno())
            self.sock.close()
