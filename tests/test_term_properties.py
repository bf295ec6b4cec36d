"""Property tests of the term codec: round trips over arbitrary terms, and fuzzing.

The decoder faces bytes from the network, so whatever it is given it must return a value or
raise ``DecodeError``, nothing else. When ``erl`` is installed, a batch of generated terms is
also checked against Erlang's own ``binary_to_term`` (with ``$PZ_ERL`` if set: another OTP).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyrlang_zarr.errors import DecodeError
from pyrlang_zarr.term import (
    Atom,
    BitBinary,
    ExportFun,
    ImproperList,
    OpaqueFun,
    Pid,
    Port,
    Reference,
    decode,
    decode_term,
    encode,
    encode_parts,
)
from pyrlang_zarr.term.tags import NEW_FUN_EXT

# Real closures captured from OTP 25 (term_to_binary(fun() -> ok end) and a closure with two
# free variables), without the version byte.
FUNS = [
    OpaqueFun(
        bytes.fromhex(
            "700000006a00d955f6804832c1e5cdd0608d4c28e7dc0000000000000000772c7665635f6573637269"
            "70745f5f657363726970745f5f313739355f5f3439323531375f5f35343231325f5f3261006206caafb4"
            "58770965746676656340766d00000009000000006b050aa6"
        )
    ),
    OpaqueFun(
        bytes.fromhex(
            "700000008201d955f6804832c1e5cdd0608d4c28e7dc0000000100000001772c7665635f6573637269"
            "70745f5f657363726970745f5f313739355f5f3439323531375f5f35343231325f5f3261016206caafb4"
            "58770965746676656340766d00000009000000006b050aa658770965746676656340766d000000090000"
            "00006b050aa6"
        )
    ),
]

u32 = st.integers(0, 2**32 - 1)
unicode_text = st.text(st.characters(codec="utf-8"), max_size=12)  # no lone surrogates
atoms = (
    st.one_of(unicode_text, st.sampled_from(["ok", "error", "undefined", "a@b", "", "x" * 255]))
    .filter(lambda name: name not in ("true", "false"))
    .map(Atom)
)
node_names = st.sampled_from(["a@b", "etfvec@vm", "other@host", "zarr@h\u00f6st"]).map(Atom)
pids = st.builds(Pid, node_names, u32, u32, u32)
references = st.builds(Reference, node_names, u32, st.lists(u32, min_size=1, max_size=5))
ports = st.builds(Port, node_names, st.integers(0, 2**64 - 1), u32)
export_funs = st.builds(ExportFun, atoms, atoms, st.integers(0, 255))
bit_binaries = st.builds(BitBinary, st.binary(min_size=1, max_size=16), st.integers(1, 7))
integers = st.one_of(
    st.integers(),
    st.integers(-(2**64), 2**64),
    st.integers(2**2030, 2**2100),
    st.integers(-(2**2100), -(2**2030)),
)
floats = st.floats(allow_nan=False, allow_infinity=False)

#: Leaves that decode to themselves and can be map keys.
hashable_leaves = st.one_of(
    atoms,
    st.booleans(),
    integers,
    floats,
    st.binary(max_size=40),
    pids,
    references,
    ports,
    export_funs,
    bit_binaries,
    st.sampled_from(FUNS),
)
#: Leaves that encode fine but come back normalised (see ``normalised``).
other_leaves = st.one_of(
    st.none(),
    unicode_text,
    st.binary(max_size=40).map(bytearray),
    st.binary(max_size=40).map(lambda b: memoryview(b)),
    st.lists(st.integers(0, 255), max_size=10),  # STRING_EXT
)
map_keys = st.recursive(hashable_leaves, lambda inner: st.tuples(inner, inner), max_leaves=4)


def _containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.lists(inner, max_size=6),
        st.lists(inner, max_size=6).map(tuple),
        st.dictionaries(map_keys, inner, max_size=5),
        st.builds(
            ImproperList,
            st.lists(inner, min_size=1, max_size=4).map(tuple),
            st.one_of(hashable_leaves, st.lists(inner, max_size=2).map(tuple)),
        ),
    )


terms = st.recursive(st.one_of(hashable_leaves, other_leaves), _containers, max_leaves=25)


def normalised(term: Any) -> Any:
    """What ``term`` decodes back to: the documented one-way conversions applied."""
    if term is None:
        return Atom("undefined")
    if type(term) is str:
        return term.encode()
    if isinstance(term, bytearray | memoryview):
        return bytes(term)
    if type(term) is list:
        return [normalised(x) for x in term]
    if type(term) is tuple:
        return tuple(normalised(x) for x in term)
    if type(term) is dict:
        return {k: normalised(v) for k, v in term.items()}
    if type(term) is ImproperList:
        return ImproperList(normalised(term.elements), normalised(term.tail))
    return term


def same(a: Any, b: Any) -> bool:
    """Equality that also checks types (``True == 1`` and ``1 == 1.0`` in Python)."""
    if type(a) is not type(b):
        return False
    if type(a) in (tuple, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if type(a) is dict:
        return (
            list(a) == list(b)
            and all(same(k, j) for k, j in zip(a, b, strict=True))
            and all(same(a[k], b[k]) for k in a)
        )
    if type(a) is ImproperList:
        return same(a.elements, b.elements) and same(a.tail, b.tail)
    if type(a) is float:
        return a.hex() == b.hex()  # tells 0.0 from -0.0
    return bool(a == b)


QUICK = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@QUICK
@given(terms)
def test_round_trip(term: Any) -> None:
    data = encode(term)
    expected = normalised(term)
    assert same(decode_term(data), expected)
    # zero-copy decoding gives the same values (views compare equal to bytes)
    assert decode_term(data, copy_binaries=False) == expected
    # the encoding of a decoded term is canonical: it re-encodes to the same bytes
    assert encode(decode_term(data)) == data
    assert b"".join(encode_parts(term)) == data


big_binaries = st.builds(
    lambda size, pattern: (pattern * (size // len(pattern) + 1))[:size],
    st.integers(65536, 200_000),
    st.binary(min_size=1, max_size=16),
)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(big_binaries, min_size=1, max_size=3), terms)
def test_parts_join_to_encode_with_big_binaries(blobs: list[bytes], term: Any) -> None:
    value = (term, blobs, {Atom("b"): blobs[0]})
    parts = encode_parts(value)
    assert b"".join(parts) == encode(value)
    assert sum(1 for p in parts if p is blobs[0]) == 2


def check_decode(data: bytes) -> None:
    """Decoding arbitrary bytes yields a value or ``DecodeError``, never another exception."""
    try:
        decode_term(data)
    except DecodeError:
        pass
    try:
        decode(data, 0, copy_binaries=False)
    except DecodeError:
        pass


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_random_bytes(data: bytes) -> None:
    check_decode(b"\x83" + data)
    check_decode(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=1, max_size=60))
def test_fuzz_random_compressed_streams(data: bytes) -> None:
    import zlib

    check_decode(b"\x83\x50" + len(data).to_bytes(4, "big") + zlib.compress(data))
    check_decode(b"\x83\x50\x00\x00\x01\x00\x78\x9c" + data)


@pytest.mark.slow
@settings(max_examples=120, deadline=None)
@given(terms, st.data())
def test_fuzz_truncations(term: Any, data: st.DataObject) -> None:
    encoded = encode(term)
    cuts: range | list[int] = range(len(encoded))
    if len(encoded) > 200:
        cuts = sorted(data.draw(st.sets(st.integers(0, len(encoded) - 1), max_size=200)))
    for cut in cuts:
        with pytest.raises(DecodeError):
            decode_term(encoded[:cut])


@pytest.mark.slow
@settings(max_examples=250, deadline=None)
@given(terms, st.data())
def test_fuzz_bit_flips_and_byte_changes(term: Any, data: st.DataObject) -> None:
    encoded = bytearray(encode(term))
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(encoded) - 1))
        if data.draw(st.booleans()):
            encoded[position] ^= 1 << data.draw(st.integers(0, 7))
        else:
            encoded[position] = data.draw(st.sampled_from([0, 1, 0x7F, 0x80, 0xFF, 106, 104]))
    check_decode(bytes(encoded))


def test_fuzz_corrupted_real_compressed_term() -> None:
    import zlib

    inner = encode([b"abc"] * 300)[1:]
    original = b"\x83\x50" + len(inner).to_bytes(4, "big") + zlib.compress(inner)
    assert decode_term(original) == [b"abc"] * 300
    for position in range(2, len(original)):
        for bit in (0, 3, 7):
            corrupted = bytearray(original)
            corrupted[position] ^= 1 << bit
            check_decode(bytes(corrupted))


# --- agreement with Erlang itself ----------------------------------------------------------

# The same erl as LocalCluster's nodes: $PZ_ERL (another OTP, e.g. .ci/otp27-erl) or PATH's.
ERL = shutil.which(os.environ.get("PZ_ERL") or "erl")

# Reads length-prefixed terms, answers term_to_binary of [{ok, Reencoded} | {error, Reason}].
ERLANG_CHECK = """
{ok, In} = file:read_file(os:getenv("ETF_IN")),
Check = fun(B) ->
    try {ok, term_to_binary(binary_to_term(B), [{minor_version, 2}])}
    catch C:R -> {error, iolist_to_binary(io_lib:format("~p:~p", [C, R]))}
    end
end,
Out = [Check(B) || <<N:32, B:N/binary>> <= In],
ok = file:write_file(os:getenv("ETF_OUT"), term_to_binary(Out)),
halt().
"""


def _skip_term(rest: bytes) -> bytes:
    """``rest`` after the term it starts with (a term body, no version byte)."""
    _, stop = decode(b"\x83" + rest)
    return rest[stop - 1 :]


def _fun_less_creator(data: bytes) -> bytes:
    """A NEW_FUN_EXT's bytes without its creator pid (nor the size field, which counts it).

    OTP 27 dropped the pid of the process that made a fun: decoding drops it and encoding
    writes the encoding node's ``init`` (``<0.0.0>``), so only OTP 25 and 26 give it back.
    Uniq, index, arity, module and free variables still have to come back byte for byte.
    """
    fields = data[30:]  # after tag, Size:4, Arity:1, Uniq:16, Index:4, NumFree:4
    before_pid = _skip_term(_skip_term(_skip_term(fields)))  # Module, OldIndex, OldUniq
    after_pid = _skip_term(before_pid)
    return data[:1] + data[5:30] + fields[: len(fields) - len(before_pid)] + after_pid


def creators_dropped(term: Any) -> Any:
    """``term`` with every fun replaced by its bytes less the creator pid, for comparison."""
    if type(term) is OpaqueFun and term.data[0] == NEW_FUN_EXT:
        return ("fun less creator", _fun_less_creator(term.data))
    if type(term) is list:
        return [creators_dropped(x) for x in term]
    if type(term) is tuple:
        return tuple(creators_dropped(x) for x in term)
    if type(term) is dict:
        return {creators_dropped(k): creators_dropped(v) for k, v in term.items()}
    if type(term) is ImproperList:
        return ImproperList(creators_dropped(term.elements), creators_dropped(term.tail))
    return term


# FUNS[0] as OTP 27 gives it back: term_to_binary(binary_to_term(B)) on a node not distributed.
FUN0_FROM_OTP27 = OpaqueFun(
    bytes.fromhex(
        "700000006e00d955f6804832c1e5cdd0608d4c28e7dc0000000000000000772c7665635f6573637269"
        "70745f5f657363726970745f5f313739355f5f3439323531375f5f35343231325f5f3261006206caafb4"
        "58770d6e6f6e6f6465406e6f686f7374000000000000000000000000"
    )
)


def test_creators_dropped_keeps_all_but_the_pid() -> None:
    assert creators_dropped(FUN0_FROM_OTP27) == creators_dropped(FUNS[0])
    assert creators_dropped(FUNS[0]) != creators_dropped(FUNS[1])
    _, kept = creators_dropped(FUNS[1])
    assert kept.count(bytes.fromhex("58770965746676656340766d")) == 1  # the free variable
    assert creators_dropped({(FUNS[1],): [FUNS[0]]}) == {
        (creators_dropped(FUNS[1]),): [creators_dropped(FUN0_FROM_OTP27)]
    }


@pytest.mark.erlang
def test_erlang_reads_what_we_encode(tmp_path: Any) -> None:
    """Erlang decodes every term we produce to the same value (up to map key order)."""
    assert ERL is not None
    batch: list[Any] = []

    @settings(max_examples=150, deadline=None, database=None)
    @given(terms)
    def collect(term: Any) -> None:
        batch.append(term)

    collect()
    encoded = [encode(term) for term in batch]
    (tmp_path / "in").write_bytes(b"".join(len(e).to_bytes(4, "big") + e for e in encoded))
    env = {**os.environ, "ETF_IN": str(tmp_path / "in"), "ETF_OUT": str(tmp_path / "out")}
    subprocess.run(
        [ERL, "-noshell", "-noinput", "-eval", ERLANG_CHECK],
        env=env,
        check=True,
        timeout=60,
        capture_output=True,
    )
    answers = decode_term((tmp_path / "out").read_bytes())
    assert len(answers) == len(batch)
    for term, ours, (status, theirs) in zip(batch, encoded, answers, strict=True):
        assert status == Atom("ok"), (term, theirs)
        assert creators_dropped(decode_term(theirs)) == creators_dropped(decode_term(ours)), term
