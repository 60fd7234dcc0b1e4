"""The inbox between the network thread and the writer: bounded in count and bytes, never
blocking the thread that offers."""

import threading
import time

from ingest.inbox import OVERHEAD_BYTES, Delivery, Inbox


def _delivery(size: int = 10, *, qos: int = 1, session: int = 1, mid: int = 1) -> Delivery:
    return Delivery("t/v1/d/readings", b"x" * size, size, time.time(), mid, qos, False, session)


def test_the_count_bound_refuses_without_blocking() -> None:
    inbox = Inbox(max_count=3, max_bytes=10**9)
    assert all(inbox.offer(_delivery(mid=m)) for m in range(3))
    started = time.monotonic()
    assert not inbox.offer(_delivery(mid=4))
    assert time.monotonic() - started < 0.05
    assert len(inbox) == 3


def test_the_byte_bound_counts_payload_and_overhead() -> None:
    one = _delivery(1000)
    inbox = Inbox(max_count=100, max_bytes=2 * one.cost)
    assert inbox.offer(one) and inbox.offer(_delivery(1000))
    assert not inbox.offer(_delivery(1000))
    assert not inbox.offer(_delivery(0))  # tiny messages fill it too, by their overhead
    assert inbox.bytes == 2 * one.cost
    assert one.cost == 1000 + len(one.topic) + OVERHEAD_BYTES


def test_an_empty_inbox_takes_one_delivery_larger_than_its_bound() -> None:
    inbox = Inbox(max_count=10, max_bytes=100)
    assert inbox.offer(_delivery(5000))
    assert not inbox.offer(_delivery(1))
    assert inbox.take(0) is not None and inbox.bytes == 0


def test_take_is_first_in_first_out_and_waits_for_an_offer() -> None:
    inbox = Inbox(max_count=10, max_bytes=10**6)
    assert inbox.take(0.01) is None
    threading.Timer(0.05, lambda: inbox.offer(_delivery(mid=7))).start()
    got = inbox.take(2)
    assert got is not None and got.mid == 7
    for mid in (1, 2, 3):
        inbox.offer(_delivery(mid=mid))
    assert [d.mid for d in (inbox.take_nowait(), inbox.take_nowait(), inbox.take_nowait())
            if d is not None] == [1, 2, 3]
    assert inbox.take_nowait() is None


def test_purge_drops_qos1_of_older_connections_and_keeps_qos0_and_the_current_one() -> None:
    inbox = Inbox(max_count=10, max_bytes=10**6)
    inbox.offer(_delivery(mid=1, session=1))
    inbox.offer(_delivery(mid=2, session=1, qos=0))
    inbox.offer(_delivery(mid=3, session=2))
    assert inbox.holds_session(1) and inbox.holds_session(2)
    assert inbox.purge_before(2) == 1
    assert not inbox.holds_session(1) and inbox.holds_session(2)
    assert inbox.bytes == sum(_delivery().cost for _ in range(2))
    assert [d.mid for d in (inbox.take_nowait(), inbox.take_nowait()) if d] == [2, 3]
    assert not inbox.holds_session(2)


def test_a_kept_payload_is_inbound_as_is_and_a_dropped_one_tells_its_size() -> None:
    kept = _delivery(10).inbound()
    assert kept.payload == b"x" * 10 and kept.size is None
    dropped = Delivery("t/v1/d/readings", b"", 11_000_000, time.time(), 1, 1, False, 1)
    assert dropped.inbound().size == 11_000_000 and dropped.inbound().payload == b""
    assert dropped.cost < 1000
    assert Delivery("t/v1/d/status", b"", 0, time.time(), 1, 1, True, 1).inbound().size is None


def test_a_batch_waits_for_its_first_delivery_then_lingers_to_fill() -> None:
    inbox = Inbox(max_count=100, max_bytes=10**6)
    assert inbox.take_batch(10, timeout=0.01, linger=0.01) == []
    for mid in range(3):
        inbox.offer(_delivery(mid=mid))
    started = time.monotonic()
    assert [d.mid for d in inbox.take_batch(10, timeout=1, linger=0.05)] == [0, 1, 2]
    assert time.monotonic() - started >= 0.05  # lingered for more
    for mid in range(12):
        inbox.offer(_delivery(mid=mid))
    started = time.monotonic()
    assert len(inbox.take_batch(10, timeout=1, linger=5)) == 10  # full: no lingering
    assert time.monotonic() - started < 1 and len(inbox) == 2


def test_a_lingering_batch_ends_as_soon_as_it_is_full() -> None:
    inbox = Inbox(max_count=100, max_bytes=10**6)
    inbox.offer(_delivery(mid=0))

    def fill() -> None:
        for mid in range(1, 5):
            inbox.offer(_delivery(mid=mid))

    threading.Timer(0.05, fill).start()
    started = time.monotonic()
    assert [d.mid for d in inbox.take_batch(5, timeout=1, linger=5)] == [0, 1, 2, 3, 4]
    assert time.monotonic() - started < 2
