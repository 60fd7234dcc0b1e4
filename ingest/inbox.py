"""The inbox between paho's network thread and the writer: bounded in count and in bytes.

`offer` never blocks: the network thread must keep answering the broker (keepalive, resubscribe
after a reconnect) whatever the database does. A delivery the inbox cannot take is refused and
the caller decides: a QoS 0 message is shed (and counted), a QoS > 0 message is left without
PUBACK for the broker to deliver again on the next connection."""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from dataclasses import dataclass
from datetime import UTC, datetime

from ingest.decode import Inbound

# What a delivery costs besides its payload (object, topic, stamps): many tiny messages must
# fill the byte bound too, not only the count bound.
OVERHEAD_BYTES = 256


@dataclass(frozen=True, slots=True)
class Delivery:
    """One message as the network thread received it."""

    topic: str
    payload: bytes  # empty when the message was too large to keep (then `size` tells)
    size: int  # bytes of payload the broker sent
    received: float  # time.time(): cheaper than a datetime on the network thread
    mid: int
    qos: int
    retained: bool
    session: int  # which connection delivered it: a PUBACK is only valid on that one

    @property
    def cost(self) -> int:
        return len(self.payload) + len(self.topic) + OVERHEAD_BYTES

    def inbound(self) -> Inbound:
        kept = len(self.payload) == self.size
        return Inbound(self.topic, self.payload, datetime.fromtimestamp(self.received, UTC),
                       retained=self.retained, size=None if kept else self.size)


class Inbox:
    """A FIFO of deliveries holding at most `max_count` of them and about `max_bytes`."""

    def __init__(self, max_count: int, max_bytes: int) -> None:
        self.max_count = max_count
        self.max_bytes = max_bytes
        self._items: deque[Delivery] = deque()
        self._bytes = 0
        # QoS > 0 deliveries waiting, by session: tells when a session's share is drained.
        self._awaiting_ack: Counter[int] = Counter()
        self._ready = threading.Condition(threading.Lock())
        # Wake the writer only when this many wait: while it lingers to fill a batch, a wake-up
        # per message would hand the GIL back and forth with the network thread.
        self._wake_at = 1

    def __len__(self) -> int:
        return len(self._items)

    @property
    def bytes(self) -> int:
        return self._bytes

    def offer(self, delivery: Delivery) -> bool:
        """Append unless full; never blocks. An empty inbox takes any one delivery, so a
        message larger than the byte bound cannot wedge the worker."""
        with self._ready:
            if self._items and (len(self._items) >= self.max_count
                                or self._bytes + delivery.cost > self.max_bytes):
                return False
            self._items.append(delivery)
            self._bytes += delivery.cost
            if delivery.qos > 0:
                self._awaiting_ack[delivery.session] += 1
            if len(self._items) >= self._wake_at:
                self._ready.notify()
            return True

    def take_batch(self, max_items: int, timeout: float, linger: float) -> list[Delivery]:
        """Up to `max_items` deliveries: waits up to `timeout` for the first, then up to
        `linger` more seconds for the batch to fill."""
        with self._ready:
            if not self._items and not self._ready.wait_for(lambda: bool(self._items), timeout):
                return []
            deadline = time.monotonic() + linger
            self._wake_at = max_items
            try:
                while len(self._items) < max_items:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._ready.wait(remaining)
            finally:
                self._wake_at = 1
            return [self._pop() for _ in range(min(max_items, len(self._items)))]

    def take(self, timeout: float) -> Delivery | None:
        """The oldest delivery, waiting up to `timeout` seconds for one."""
        with self._ready:
            if not self._items and not self._ready.wait_for(lambda: bool(self._items), timeout):
                return None
            return self._pop()

    def take_nowait(self) -> Delivery | None:
        with self._ready:
            return self._pop() if self._items else None

    def purge_before(self, session: int) -> int:
        """Drop the QoS > 0 deliveries of connections older than `session`: the broker
        delivers them again on the new one, and a PUBACK for them would now be wrong."""
        with self._ready:
            kept = deque(d for d in self._items if d.qos == 0 or d.session >= session)
            dropped = len(self._items) - len(kept)
            self._items = kept
            self._bytes = sum(d.cost for d in kept)
            for old in [s for s in self._awaiting_ack if s < session]:
                del self._awaiting_ack[old]
            return dropped

    def holds_session(self, session: int) -> bool:
        """Whether a QoS > 0 delivery of connection `session` still waits here."""
        with self._ready:
            return self._awaiting_ack[session] > 0

    def _pop(self) -> Delivery:
        delivery = self._items.popleft()
        self._bytes -= delivery.cost
        if delivery.qos > 0:
            self._awaiting_ack[delivery.session] -= 1
        return delivery
