"""A read's reply taken as it arrives, its records' data received in place: bytes only.

The reply is built with the general encoder, as a node sends it; the taker must give what
the general decoder gives (placed data standing for the landing it went to), for any way
the bytes are cut, and leave the packets after it to the reader as they were.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyrlang_zarr.erldist import control as C
from pyrlang_zarr.erldist.calls import _owned
from pyrlang_zarr.erldist.framing import PacketReader
from pyrlang_zarr.erldist.handoff import Pending
from pyrlang_zarr.erldist.sinks import Unreadable
from pyrlang_zarr.errors import DecodeError
from pyrlang_zarr.mnesia.arriving import MAX_FIELDS, SCRATCH, ReadReply, ReadSink
from pyrlang_zarr.rawchunks import SliceLanding
from pyrlang_zarr.term import Atom, Reference, decode, encode
from tests.test_call_fast_paths import reply_session, words
from tests.test_dist_sansio import events, framed

TAB = Atom("zarr_storage")
PREFIX = b"p" + b"\x07" * 40  # stands for the control message and `{Ref, ` of a reply
TAG = 7
START = len(PREFIX) + 12


class Landing:
    """Places the data of the indices it is given, each in a buffer of its own."""

    def __init__(self, indices: set[int]) -> None:
        self.indices = indices
        self.placed: dict[int, bytearray] = {}

    def place(self, index: int, nbytes: int) -> memoryview | None:
        if index not in self.indices:
            return None
        self.placed[index] = bytearray(nbytes)
        return memoryview(self.placed[index])


class Placement:
    def __init__(self, indices: set[int]) -> None:
        self.indices = indices
        self.landings: list[Landing] = []

    def begin(self) -> Landing:
        self.landings.append(Landing(self.indices))
        return self.landings[-1]


def reply_packet(result: Any) -> bytes:
    return PREFIX + TAG.to_bytes(12, "big") + encode(result)[1:]


def items(sizes: list[int | None]) -> list[Any]:
    """What ``lists:map(fun mnesia:read/1, Oids)`` gives: a record per size, ``[]`` for
    ``None``."""
    return [
        [] if n is None else [(TAB, (b"arr", (i, 0)), bytes([i % 251]) * n)]
        for i, n in enumerate(sizes)
    ]


def take(packet: bytes, count: int, placement: Placement, cuts: list[int]) -> Any:
    """Feed ``packet`` then a small packet through a reader whose offers go to a read's
    sink, as a socket would (packets asked for after each read): cut at ``cuts`` and
    every 700 bytes; return the taker (``None``: not taken) and the packets read as usual."""
    reader = PacketReader(4, buffer_size=1024)
    sink = ReadSink(count, placement)
    reader.offer = lambda first, size: sink.taker(TAG, START, first, size)
    stream = framed(packet) + framed(b"next")
    bounds = sorted({0, *range(700, len(stream), 700), len(stream)})
    bounds = sorted({*bounds, *(c % len(stream) for c in cuts)})
    taken: Any = None
    packets: list[bytes] = []
    for a, b in itertools.pairwise(bounds):
        reader.feed(stream[a:b])
        while True:
            t = reader.taken_packet()
            if t is not None:
                taken = t
                continue
            p = reader.next_packet()
            if p is None:
                break
            packets.append(bytes(p))
    return taken, packets


def expected(result: Any, landing: Landing | None) -> Any:
    """The general decoder's result, with the data of the placed indices as the landing."""
    tag, found = decode(encode(result))[0]
    if landing is None:
        return (tag, found)
    return (
        tag,
        [
            [(*r[0][:2], landing, *r[0][3:]), *r[1:]] if i in landing.placed else r
            for i, r in enumerate(found)
        ],
    )


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.one_of(st.none(), st.integers(0, 3000)), min_size=1, max_size=6),
    placed=st.sets(st.integers(0, 5)),
    cuts=st.lists(st.integers(0, 1 << 16), max_size=12),
)
def test_a_taken_read_gives_what_the_general_decoder_gives(
    sizes: list[int | None], placed: set[int], cuts: list[int]
) -> None:
    result = (Atom("atomic"), items(sizes))
    placement = Placement(placed)
    packet = reply_packet(result)
    taken, packets = take(packet, len(sizes), placement, cuts)
    stream = len(packet) + 4 + 8  # both packets, framed
    first_read = min([700, stream, *(c % stream for c in cuts if c % stream)])
    head = 4 + START + len(ReadSink(len(sizes), placement)._head)
    if len(packet) >= 256 and head <= first_read < len(packet) + 4:
        assert taken is not None  # big, cut after its head: it must have been taken
    if taken is None:  # small, or too few of its first bytes came together: as usual
        assert placement.landings == [] and packets == [packet, b"next"]
        return
    assert packets == [b"next"]  # the packet after it is left as it was
    assert isinstance(taken, ReadReply) and taken.tag == TAG
    [landing] = placement.landings
    assert taken.result() == expected(result, landing)
    for i, data in landing.placed.items():
        assert bytes(data) == bytes([i % 251]) * (sizes[i] or 0)
    assert set(landing.placed) == {i for i in placed if i < len(sizes) and sizes[i] is not None}


def test_bags_and_records_with_more_fields() -> None:
    """An item of several records (a bag table) and records with fields after their data:
    only an item's first record is placed; the rest is as decoded."""
    found = [
        [(TAB, b"k0", b"a" * 2000, 17, [1, 2]), (TAB, b"k0", b"b" * 900, 18, [])],
        [],
        [(TAB, (b"k", 2), b"c" * 3000, Atom("x"), b"y" * 70000)],  # a field past SCRATCH
    ]
    result = (Atom("atomic"), found)
    placement = Placement({0, 2})
    taken, packets = take(reply_packet(result), 3, placement, [300, 5000, 9000])
    [landing] = placement.landings
    assert packets == [b"next"]
    assert taken.result() == expected(result, landing)
    assert bytes(landing.placed[0]) == b"a" * 2000 and bytes(landing.placed[2]) == b"c" * 3000


@pytest.mark.parametrize(
    "result",
    [
        (Atom("aborted"), (Atom("no_exists"), TAB)),
        (Atom("atomic"), [[]] * 2),  # another count than the read's
        (Atom("atomic"), "not a list" * 200),
    ],
)
def test_another_reply_is_declined_at_its_first_bytes(result: Any) -> None:
    """An abort, or a reply to a read of another length, is read as usual."""
    placement = Placement({0})
    padded = reply_packet((result, b"z" * 600))  # big enough to be offered
    taken, packets = take(padded, 3, placement, [])
    assert taken is None and placement.landings == []
    assert packets == [padded, b"next"]


@pytest.mark.parametrize(
    ("found", "why"),
    [
        ([[(TAB, b"k", b"a" * 700)], Atom("oops")], "not a list"),
        ([[(TAB, b"k", 5)], []], "not a binary"),
        ([[(TAB, b"k")], []], "something else than a record"),
    ],
)
def test_a_reply_that_goes_wrong_fails_its_call_and_no_more(found: Any, why: str) -> None:
    """Accepted at its head, then not a read's reply: its call fails with DecodeError; the
    framing holds (the next packet is read)."""
    result = (Atom("atomic"), [*found, [(TAB, b"pad", b"p" * 800)]])
    taken, packets = take(reply_packet(result), len(found) + 1, Placement({0, 1, 2}), [])
    assert packets == [b"next"]
    with pytest.raises(DecodeError, match=why):
        taken.result()


def test_a_reply_cut_short_or_with_bytes_after_its_term() -> None:
    reply = reply_packet((Atom("atomic"), items([900, None])))
    taken, packets = take(reply + b"j", 2, Placement({0}), [])  # a byte too many
    with pytest.raises(DecodeError, match="bytes after the term"):
        taken.result()
    assert packets == [b"next"]
    reader = ReadSink(2, Placement({0})).taker(TAG, START, memoryview(reply), len(reply))
    assert reader is not None
    view = reader.get_buffer()
    view[:500] = reply[:500]
    reader.buffer_updated(500)
    with pytest.raises(DecodeError, match="ended before"):
        reader.result()


def test_fields_bigger_than_the_limit_fail_without_growing_further() -> None:
    key = b"k" * (MAX_FIELDS + 10)
    result = (Atom("atomic"), [[(TAB, key, b"d")]])
    taken, packets = take(reply_packet(result), 1, Placement({0}), [SCRATCH])
    assert packets == [b"next"]
    with pytest.raises(DecodeError, match="fields take more than"):
        taken.result()


def test_a_late_reply_lands_apart_from_the_one_used() -> None:
    """Each reply gets a landing of its own: an attempt's late reply cannot write into the
    result another attempt's reply filled."""
    placement = Placement({0})
    reply = reply_packet((Atom("atomic"), items([900])))
    first = ReadSink(1, placement).taker(TAG, START, memoryview(reply), len(reply))
    second = ReadSink(1, placement).taker(TAG, START, memoryview(reply), len(reply))
    assert first is not None and second is not None
    assert placement.landings[0] is not placement.landings[1]


def test_slice_landing_places_a_chunk_once_and_only_whole() -> None:
    """The array's landing: a chunk key read under two forms (old and new record keys)
    lands once (the first present); a size other than the chunk's does not land."""
    runs = {"c/0/0": (slice(0, 2), slice(0, 4)), "c/1/0": (slice(2, 4), slice(0, 4))}
    keys: list[str | None] = [None, None, "c/0/0", "c/0/0", "c/1/0"]
    landing = SliceLanding((4, 4), np.dtype("<f8"), runs, keys)
    assert landing.place(0, 64) is None  # the root's records
    view = landing.place(2, 64)
    assert view is not None and view.nbytes == 64
    view[:] = np.arange(8.0).tobytes()
    assert landing.place(3, 64) is None  # its second form: not again
    assert landing.place(4, 63) is None  # not a whole chunk's bytes
    assert landing.place(9, 64) is None
    np.testing.assert_array_equal(landing.out[:2], np.arange(8.0).reshape(2, 4))


def test_an_unreadable_taken_reply_fails_its_call_with_decode_error() -> None:
    """What a taker could not parse reaches the call as DecodeError (the Reply event is
    the session's; the call is failed by the table of calls)."""
    call = Pending(None, None, "peer@host", "mnesia:sync_transaction/2")  # type: ignore[arg-type]
    result, error = _owned(call, Unreadable(DecodeError("item 0 is not a list")), False)
    assert result is None and isinstance(error, DecodeError)
    assert "mnesia:sync_transaction/2 on peer@host" in str(error) and "not a list" in str(error)


def test_a_session_offers_a_big_reply_to_its_calls_sink_only() -> None:
    """Through a connected session: a big reply to a call with a sink is taken (its Reply
    carries the parsed result), the same reply to a call without one is read as usual."""
    identity, calls, session = reply_session()
    pid = calls.pid
    assert pid is not None
    placement = Placement({0})
    found = items([300_000, None])
    with_sink, _ = calls._tagged_head()
    without, _ = calls._tagged_head()
    calls._pending[with_sink] = Pending(
        None,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        "peer@host",
        sink=ReadSink(2, placement),
    )
    to_us = b"p" + encode((C.SEND, Atom(""), pid))

    def reply(tag: int) -> bytes:
        ref = Reference(identity.name or "", identity.creation, words(tag))
        return framed(to_us + encode((ref, (Atom("atomic"), found))))

    stream = reply(with_sink) + reply(without)
    got: list[Any] = []
    for at in range(0, len(stream), 65536):  # as a socket gives it: events after each read
        session.receive_data(stream[at : at + 65536], now=1.0)
        got += events(session)
    taken, usual = got
    [landing] = placement.landings
    assert isinstance(taken, C.Reply) and taken.tag == with_sink
    assert taken.result == expected((Atom("atomic"), found), landing)
    assert bytes(landing.placed[0]) == found[0][0][2]
    assert isinstance(usual, C.Reply) and usual.tag == without
    assert usual.result == decode(encode((Atom("atomic"), found)))[0]


def test_a_record_claiming_more_than_its_packet_fails_without_allocating_it() -> None:
    """Memory follows what the peer sent: data claimed 4 GiB long in a small packet fails
    the read at once (nothing that size is allocated) and the framing holds."""
    import tracemalloc

    head = bytes(ReadSink(2, Placement(set()))._head)
    record = b"l\x00\x00\x00\x01h\x03" + encode(TAB)[1:] + encode(b"k")[1:] + b"m\xff\xff\xff\xff"
    packet = PREFIX + TAG.to_bytes(12, "big") + head + record + b"x" * 2000
    tracemalloc.start()
    try:
        taken, packets = take(packet, 2, Placement(set()), [])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 10 << 20 and packets == [b"next"]
    with pytest.raises(DecodeError, match="longer than the packet"):
        taken.result()


class Raising(Placement):
    """Its landings raise on the second record (a bug, or memory running out)."""

    def begin(self) -> Landing:
        landing = super().begin()
        real = landing.place

        def place(index: int, nbytes: int) -> memoryview | None:
            if index == 1:
                raise MemoryError("no room")
            return real(index, nbytes)

        landing.place = place  # type: ignore[method-assign]
        return landing


class RaisingSink:
    def taker(self, tag: int, start: int, first: memoryview, size: int) -> Any:
        raise RuntimeError("the sink broke")


@pytest.mark.parametrize("broken", ["landing", "sink"])
def test_a_failing_taker_fails_its_call_alone_and_the_connection_goes_on(broken: str) -> None:
    """An exception in a landing (on the reading thread) fails that call with DecodeError;
    one in the sink itself leaves the reply to the usual path. Either way the packets after
    it are read as they should be."""
    identity, calls, session = reply_session()
    pid = calls.pid
    assert pid is not None
    found = items([200_000, 200_000, None])
    tag, _ = calls._tagged_head()
    sink = ReadSink(3, Raising({0, 1})) if broken == "landing" else RaisingSink()
    calls._pending[tag] = Pending(None, None, "peer@host", sink=sink)  # type: ignore[arg-type]
    to_us = b"p" + encode((C.SEND, Atom(""), pid))
    ref = Reference(identity.name or "", identity.creation, words(tag))
    stream = framed(to_us + encode((ref, (Atom("atomic"), found)))) + framed(
        b"p" + encode((C.SEND, Atom(""), pid)) + encode(Atom("after"))
    )
    got: list[Any] = []
    for at in range(0, len(stream), 65536):
        session.receive_data(stream[at : at + 65536], now=1.0)
        got += events(session)
    reply, after = got
    assert isinstance(reply, C.Reply) and reply.tag == tag
    if broken == "landing":
        assert isinstance(reply.result, Unreadable) and "no room" in str(reply.result.error)
    else:
        assert reply.result == decode(encode((Atom("atomic"), found)))[0]
    assert after == C.Send(pid, Atom("after"))


def test_a_taken_packets_bytes_count_as_buffered_until_it_is_returned() -> None:
    reader = PacketReader(4, buffer_size=1024)
    sink = ReadSink(1, Placement({0}))
    reader.offer = lambda first, size: sink.taker(TAG, START, first, size)
    stream = framed(reply_packet((Atom("atomic"), items([3000]))))
    reader.feed(stream[:700])
    assert reader.next_packet() is None and reader.buffered == 696  # taken: 696 of its bytes
    reader.feed(stream[700:])
    assert reader.buffered == len(stream) - 4
    assert reader.taken_packet() is not None and reader.buffered == 0
