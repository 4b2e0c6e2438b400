"""Events to containerd: ONE strictly ordered queue -> Events/Forward on $TTRPC_ADDRESS.

Invariants:
- Events leave in exactly the order they were published; the timestamp is taken at publish time.
- An event that fails to send is retried (with backoff) before any later one: nothing is dropped
  or reordered while containerd is briefly unreachable. Only an event containerd rejects as
  invalid (a permanent error code) is dropped, with an error logged, so it cannot block the rest.
- flush() waits, bounded, for the queue to empty (used at shutdown).
"""

from __future__ import annotations

import collections
import time

from proto import wkt_lite as wkt
from proto.containerd.services.events.ttrpc.v1 import events_lite as events_api
from shim import aio
from shim.log import getLogger
from shim.ttrpc import Client, Code, TTRPCError

log = getLogger("pyshim.events")

FORWARD_SERVICE = "containerd.services.events.ttrpc.v1.Events"
_SEND_TIMEOUT = 5.0
_MAX_BACKOFF = 2.0
# containerd's answers that no retry can change; anything else (Unavailable, a timeout, a
# closed connection while it restarts) is retried, in order.
_PERMANENT = {Code.INVALID_ARGUMENT, Code.NOT_FOUND, Code.ALREADY_EXISTS,
              Code.FAILED_PRECONDITION, Code.UNIMPLEMENTED, Code.PERMISSION_DENIED}


def pack_any(message) -> wkt.Any:
    # containerd's typeurl registers its types under the bare full name, no type.googleapis.com/.
    return wkt.Any(type_url=message.DESCRIPTOR.full_name, value=message.SerializeToString())


class EventQueue:
    def __init__(self, address: str, namespace: str):
        self._address = address
        self._namespace = namespace
        self._queue: collections.deque[bytes] = collections.deque()
        self._wakeup = aio.Event()
        self._idle = aio.Event()
        self._idle.set()
        self._client: Client | None = None
        self._task: aio.Task | None = None

    def start(self) -> None:
        self._task = aio.get_running_loop().create_task(self._run())

    def publish(self, topic: str, event) -> None:
        envelope = events_api.Envelope(namespace=self._namespace, topic=topic, event=pack_any(event))
        envelope.timestamp.FromNanoseconds(time.time_ns())
        self._queue.append(events_api.ForwardRequest(envelope=envelope).SerializeToString())
        self._idle.clear()
        self._wakeup.set()
        log.debug("event %s", topic)

    async def flush(self, timeout: float) -> bool:
        try:
            await aio.wait_for(self._idle.wait(), timeout)
            return True
        except TimeoutError:
            log.warning("%d events not delivered at shutdown", len(self._queue))
            return False

    async def close(self) -> None:
        if self._task:
            self._task.cancel()
            await aio.gather(self._task, return_exceptions=True)
        if self._client:
            self._client.close()

    async def _run(self) -> None:
        backoff = 0.05
        while True:
            if not self._queue:
                self._idle.set()
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            try:
                await self._send(self._queue[0])
            except TTRPCError as e:
                if e.code in _PERMANENT:  # retrying cannot help, and would block every later event
                    log.error("containerd refused an event (dropped): %s", e)
                    self._queue.popleft()
                    continue
                log.warning("forwarding event failed (retrying in %.2fs): %s", backoff, e)
                self._drop_client()
                await aio.sleep(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF)
                continue
            except (OSError, ConnectionError, TimeoutError) as e:
                log.warning("forwarding event failed (retrying in %.2fs): %s", backoff, e)
                self._drop_client()
                await aio.sleep(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF)
                continue
            self._queue.popleft()
            backoff = 0.05

    async def _send(self, payload: bytes) -> None:
        if self._client is None:
            self._client = await aio.wait_for(Client.connect(self._address), _SEND_TIMEOUT)
        await self._client.call(FORWARD_SERVICE, "Forward", payload, timeout=_SEND_TIMEOUT)

    def _drop_client(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
