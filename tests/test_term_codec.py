"""Byte-exact tests of the term codec against terms produced by a real Erlang/OTP 25 node.

The vectors were captured once with ``term_to_binary(T, [{minor_version, 2}])`` (UTF-8 atoms,
what the distribution sends) from a node named ``etfvec@vm``; old or unusual forms were
checked with ``binary_to_term`` on the same node. No Erlang is needed to run these tests.
"""

from __future__ import annotations

import array
import contextlib
import copy
import enum
import pickle
import struct
import tracemalloc
import zlib
from collections import namedtuple
from collections.abc import Iterator
from typing import Any

import pytest

from pyrlang_zarr.errors import DecodeError, EncodeError
from pyrlang_zarr.term import (
    Atom,
    BitBinary,
    ExportFun,
    ImproperList,
    ListKey,
    OpaqueFun,
    Pid,
    Port,
    Reference,
    decode,
    decode_term,
    encode,
    encode_parts,
)

# fmt: off
ERLANG_HEX: dict[str, str] = {
    "pid_ref_port": (
        "83680358770965746676656340766d00000009000000006b050aa65a0003770965746676656340766d6b"
        "050aa60003d11e0fe800019e612e3959770965746676656340766d000000006b050aa6"
    ),
    "pid": "8358770965746676656340766d00000009000000006b050aa6",
    "ref": "835a0003770965746676656340766d6b050aa60003d11e0fe800019e612e39",
    "port": "8359770965746676656340766d000000006b050aa6",
    "gen_call": (
        "83680377092467656e5f63616c6c680258770965746676656340766d00000009000000006b050aa65a00"
        "03770965746676656340766d6b050aa60003d11e0fe800019e612e396805770463616c6c770665726c61"
        "6e6777046e6f64656a770475736572"
    ),
    "fun_new": (
        "83700000006a00d955f6804832c1e5cdd0608d4c28e7dc0000000000000000772c7665635f6573637269"
        "70745f5f657363726970745f5f313739355f5f3439323531375f5f35343231325f5f3261006206caafb4"
        "58770965746676656340766d00000009000000006b050aa6"
    ),
    "fun_closure": (
        "83700000008201d955f6804832c1e5cdd0608d4c28e7dc0000000100000001772c7665635f6573637269"
        "70745f5f657363726970745f5f313739355f5f3439323531375f5f35343231325f5f3261016206caafb4"
        "58770965746676656340766d00000009000000006b050aa658770965746676656340766d000000090000"
        "00006b050aa6"
    ),
    "export": "8371770665726c616e6777046e6f64656100",
    "export_mnesia": "837177066d6e65736961770577726974656101",
    "compressed": "8350000003eb789ccb667e91380a46c12818f6000034547c4e",
    "compressed_bin": (
        "8350000005e7789ccb602a67cacfce656060bd535159358a46d1281a45a368982100df66c826"
    ),
    "float_1_5": "83463ff8000000000000",
    "float_neg": "834681bac9a7b3b7302f",
    "float_big": "83467e37e43c8800759c",
    "float_zero": "83460000000000000000",
    "old_float": "8363332e3235303030303030303030303030303030303030652b30300000000000",
    "small_int_0": "836100",
    "small_int_255": "8361ff",
    "int_256": "836200000100",
    "int_neg1": "8362ffffffff",
    "int_max32": "83627fffffff",
    "int_min32": "836280000000",
    "big_2_31": "836e040000000080",
    "big_neg_2_31_1": "836e040101000080",
    "big_2_64": "836e0900000000000000000001",
    "big_neg_2_100": "836e0d0100000000000000000000000010",
    "large_big_pos": (
        "836f00000107000000000000000000000000000000000000000000000000000000000000000000000000"
        "000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
        "000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
        "000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
        "000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
        "000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
        "000000000000000000000000000000000010"
    ),
    "large_big_neg": (
        "836f00000107013930000000000000000000000000000000000000000000000000000000000000000000"
        "000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
        "000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
        "000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
        "000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
        "000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
        "000000000000000000000000000000000010"
    ),
    "atom_foo": "837703666f6f",
    "atom_utf8": "83770968c3a96c6c6fe28692",
    "atom_latin1_default": "83640004636166e9",
    "atom_foo_default": "83640003666f6f",
    "true": "83770474727565",
    "false": "83770566616c7365",
    "undefined": "837709756e646566696e6564",
    "binary": "836d0000000568656c6c6f",
    "binary_empty": "836d00000000",
    "bitbin_1": "834d000000010180",
    "bitbin_13": "834d000000020555e0",
    "tuple_empty": "836800",
    "tuple_3": "83680361017701616d0000000162",
    "nil": "836a",
    "string": "836b0003616263",
    "string_bytes": "836b000300ff0a",
    "list_mixed": "836c00000003610162000001007701616a",
    "list_unicode": "836c00000006616861e9616c616c616f62000021926a",
    "list_nested": "836c000000036b0001016c000000016a6a68006a",
    "improper": "836c00000001770161770162",
    "improper_2": "836c00000002610161026d0000000174",
    "map_empty": "837400000000",
    "map_small": "8374000000036103680177017877016161016d000000016b6b00020102",
    "map_nested": "83740000000177016d740000000177016e6a",
}
# fmt: on
V = {name: bytes.fromhex(text) for name, text in ERLANG_HEX.items()}

NODE = Atom("etfvec@vm")
CREATION = 0x6B050AA6
PID = Pid(NODE, 9, 0, CREATION)
REF = Reference(NODE, CREATION, (0x0003D11E, 0x0FE80001, 0x9E612E39))
PORT = Port(NODE, 0, CREATION)

#: Vectors that decode to the value and that the value encodes back to, byte for byte.
CANONICAL: dict[str, Any] = {
    "pid": PID,
    "ref": REF,
    "port": PORT,
    "pid_ref_port": (PID, REF, PORT),
    "gen_call": (
        Atom("$gen_call"),
        (PID, REF),
        (Atom("call"), Atom("erlang"), Atom("node"), [], Atom("user")),
    ),
    "export": ExportFun(Atom("erlang"), Atom("node"), 0),
    "export_mnesia": ExportFun("mnesia", "write", 1),
    "float_1_5": 1.5,
    "float_neg": -2.5e-300,
    "float_big": 1.0e300,
    "float_zero": 0.0,
    "small_int_0": 0,
    "small_int_255": 255,
    "int_256": 256,
    "int_neg1": -1,
    "int_max32": 2**31 - 1,
    "int_min32": -(2**31),
    "big_2_31": 2**31,
    "big_neg_2_31_1": -(2**31) - 1,
    "big_2_64": 2**64,
    "big_neg_2_100": -(2**100),
    "large_big_pos": 2**2100,
    "large_big_neg": -(2**2100 + 12345),
    "atom_foo": Atom("foo"),
    "atom_utf8": Atom("héllo→"),
    "true": True,
    "false": False,
    "undefined": Atom("undefined"),
    "binary": b"hello",
    "binary_empty": b"",
    "bitbin_1": BitBinary(b"\x80", 1),
    "bitbin_13": BitBinary(b"\x55\xe0", 5),
    "tuple_empty": (),
    "tuple_3": (1, Atom("a"), b"b"),
    "nil": [],
    "string": [97, 98, 99],
    "string_bytes": [0, 255, 10],
    "list_mixed": [1, 256, Atom("a")],
    "list_unicode": [104, 233, 108, 108, 111, 0x2192],
    "list_nested": [[1], [[]], ()],
    "improper": ImproperList((Atom("a"),), Atom("b")),
    "improper_2": ImproperList((1, 2), b"t"),
    "map_empty": {},
    "map_small": {3: (Atom("x"),), Atom("a"): 1, b"k": [1, 2]},
    "map_nested": {Atom("m"): {Atom("n"): []}},
}


@contextlib.contextmanager
def _peak_allocation() -> Iterator[list[int]]:
    """The most memory Python allocated inside the block (in ``[0]`` after it): a
    measure of work done that a busy machine does not change, unlike a time."""
    peak = [0]
    tracemalloc.start()
    try:
        yield peak
    finally:
        peak[0] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()


def same(a: Any, b: Any) -> bool:
    """Equality that also checks types (``True == 1`` and ``Atom('a') == 'a'`` in Python)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, tuple | list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, ImproperList):
        return same(a.elements, b.elements) and same(a.tail, b.tail)
    return bool(a == b)


@pytest.mark.parametrize("name", sorted(CANONICAL))
def test_decode_erlang_vector(name: str) -> None:
    assert same(decode_term(V[name]), CANONICAL[name])


@pytest.mark.parametrize("name", sorted(CANONICAL))
def test_encode_matches_erlang(name: str) -> None:
    assert encode(CANONICAL[name]) == V[name]


def test_vectors_cover_every_tag_erlang_sends() -> None:
    tags = {b[1] for b in V.values()}
    assert tags >= {70, 77, 80, 88, 89, 90, 97, 98, 99, 100, 104, 106, 107, 108, 109, 110, 111}
    assert tags >= {112, 113, 116, 119}


def test_long_atoms() -> None:
    name = "z" * 255
    assert encode(Atom(name)) == b"\x83\x77\xff" + name.encode()
    arrows = "→" * 100  # 100 characters, 300 bytes: needs ATOM_UTF8_EXT
    data = b"\x83\x76\x01\x2c" + arrows.encode()
    assert encode(Atom(arrows)) == data
    assert same(decode_term(data), Atom(arrows))


def test_large_tuple() -> None:
    body = b"".join(
        bytes((97, i)) if i < 256 else b"\x62" + i.to_bytes(4, "big") for i in range(1, 301)
    )
    data = b"\x83\x69\x00\x00\x01\x2c" + body
    assert encode(tuple(range(1, 301))) == data
    assert decode_term(data) == tuple(range(1, 301))


def test_empty_large_tuple_decodes() -> None:
    assert decode_term(b"\x83\x69\x00\x00\x00\x00") == ()


# --- forms Erlang accepts but no longer sends ---------------------------------------------

A_AT_BC = b"\x64\x00\x04a@bc"  # ATOM_EXT 'a@bc'


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (V["atom_latin1_default"], Atom("café")),
        (V["atom_foo_default"], Atom("foo")),
        (b"\x83\x73\x03foo", Atom("foo")),  # SMALL_ATOM_EXT
        (b"\x83\x64\x00\x04true", True),
        (b"\x83\x73\x05false", False),
        (b"\x83\x76\x00\x04true", True),
        (V["old_float"], 3.25),
        (b"\x83\x67" + A_AT_BC + b"\x00\x00\x00\x01\x00\x00\x00\x02\x03", Pid("a@bc", 1, 2, 3)),
        (
            b"\x83\x58" + A_AT_BC + b"\x00\x00\x00\x01\x00\x00\x00\x02\x00\x00\x00\x03",
            Pid("a@bc", 1, 2, 3),
        ),
        (b"\x83\x65" + A_AT_BC + b"\x00\x00\x00\x01\x03", Reference("a@bc", 3, (1,))),
        (
            b"\x83\x72\x00\x02" + A_AT_BC + b"\x03\x00\x00\x00\x01\x00\x00\x00\x02",
            Reference("a@bc", 3, (1, 2)),
        ),
        (b"\x83\x66" + A_AT_BC + b"\x00\x00\x00\x07\x03", Port("a@bc", 7, 3)),
        (b"\x83\x59" + A_AT_BC + b"\x00\x00\x00\x07\x00\x00\x00\x09", Port("a@bc", 7, 9)),
        (
            b"\x83\x78" + A_AT_BC + b"\x00\x00\x00\x01\x00\x00\x00\x07\x00\x00\x00\x09",
            Port("a@bc", 2**32 + 7, 9),
        ),
        # EXPORT_EXT with the arity as INTEGER_EXT (binary_to_term accepts it)
        (b"\x83\x71\x64\x00\x01m\x64\x00\x01f\x62\x00\x00\x00\x01", ExportFun("m", "f", 1)),
        # LIST_EXT of length 0 is its tail; a list tail is spliced in
        (b"\x83\x6c\x00\x00\x00\x00\x64\x00\x01a", Atom("a")),
        (b"\x83\x6c\x00\x00\x00\x00\x6a", []),
        (b"\x83\x6c\x00\x00\x00\x01\x61\x01\x6b\x00\x02\x02\x03", [1, 2, 3]),
        (
            b"\x83\x6c\x00\x00\x00\x01\x61\x01\x6c\x00\x00\x00\x01\x61\x02\x64\x00\x01a",
            ImproperList((1, 2), Atom("a")),
        ),
        (b"\x83\x6b\x00\x00", []),  # empty STRING_EXT
        # BIT_BINARY_EXT with whole bytes is an ordinary binary
        (b"\x83\x4d\x00\x00\x00\x00\x00", b""),
        (b"\x83\x4d\x00\x00\x00\x01\x08\xff", b"\xff"),
        # non-canonical bigs: any non-zero sign byte is negative, zero digits is 0
        (b"\x83\x6e\x01\x02\x05", -5),
        (b"\x83\x6e\x00\x00", 0),
        (b"\x83\x6f\x00\x00\x00\x01\x00\x05", 5),
    ],
)
def test_decode_old_and_unusual_forms(data: bytes, expected: Any) -> None:
    assert same(decode_term(data), expected)


def test_compressed_terms() -> None:
    assert decode_term(V["compressed"]) == [97] * 1000
    assert decode_term(V["compressed_bin"]) == (Atom("ok"), b"xyz" * 500)
    # Erlang compresses, we do not: the inflated term re-encodes to the uncompressed form.
    inner = zlib.decompress(V["compressed"][6:])
    assert encode([97] * 1000) == b"\x83" + inner


def test_compressed_term_followed_by_another_term() -> None:
    data = V["compressed"] + V["atom_foo"]
    value, end = decode(data)
    assert value == [97] * 1000 and end == len(V["compressed"])
    assert decode(data, end) == (Atom("foo"), len(data))


def test_compressed_size_must_match() -> None:
    body = zlib.compress(b"\x6d\x00\x00\x00\x03abc")
    good = b"\x83\x50" + struct.pack(">I", 8) + body
    assert decode_term(good) == b"abc"
    for size in (0, 7, 9, 1 << 20):
        bad = b"\x83\x50" + struct.pack(">I", size) + body
        with pytest.raises(DecodeError, match="compressed"):
            decode_term(bad)


def test_compressed_bomb_is_refused_without_inflating_it() -> None:
    # 64 MiB of zeros claiming to be 10 bytes: inflation must stop just past the claim.
    body = zlib.compress(bytes(64 << 20), 9)
    data = b"\x83\x50" + struct.pack(">I", 10) + body
    with _peak_allocation() as peak:
        with pytest.raises(DecodeError, match="compressed"):
            decode_term(data)
    assert peak[0] < 1 << 20  # work, not time: 64 MiB inflated would allocate 64 MiB


def test_compressed_garbage_and_trailing_bytes() -> None:
    with pytest.raises(DecodeError, match="compressed"):
        decode_term(b"\x83\x50\x00\x00\x00\x05not zlib at all")
    with pytest.raises(DecodeError, match="compressed"):
        decode_term(b"\x83\x50\x00\x00")
    inner = b"\x61\x01\x61\x02"  # two terms where one is expected
    with pytest.raises(DecodeError, match="left over"):
        decode_term(b"\x83\x50" + struct.pack(">I", 4) + zlib.compress(inner))
    nested = b"\x50" + struct.pack(">I", 2) + zlib.compress(b"\x61\x01")
    with pytest.raises(DecodeError, match="compressed"):
        decode_term(b"\x83\x50" + struct.pack(">I", len(nested)) + zlib.compress(nested))


# --- funs -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["fun_new", "fun_closure"])
def test_new_fun_is_opaque_and_reencodes_identically(name: str) -> None:
    fun = decode_term(V[name])
    assert type(fun) is OpaqueFun
    assert fun.data == V[name][1:]
    assert encode(fun) == V[name]
    wrapped = encode((Atom("f"), fun, [fun]))
    assert decode_term(wrapped) == (Atom("f"), fun, [fun])


def test_new_fun_size_must_match_contents() -> None:
    data = bytearray(V["fun_new"])
    struct.pack_into(">I", data, 2, struct.unpack_from(">I", data, 2)[0] - 1)
    with pytest.raises(DecodeError, match="NEW_FUN_EXT"):
        decode_term(bytes(data))


def test_old_fun_ext_is_opaque() -> None:
    # FUN_EXT: NumFree:4, Pid, Module, Index, Uniq, free vars (one here).
    pid = encode(Pid("a@b", 1, 0, 1))[1:]
    body = b"\x75\x00\x00\x00\x01" + pid + b"\x77\x01m" + b"\x61\x00" + b"\x62\x00\x00\x00\x07"
    body += b"\x61\x2a"
    fun = decode_term(b"\x83" + body)
    assert fun == OpaqueFun(body)
    assert encode(fun) == b"\x83" + body


def test_export_fun_accepts_str() -> None:
    fun = ExportFun("mnesia", "write", 1)
    assert type(fun.module) is Atom and type(fun.function) is Atom
    assert fun == ExportFun(Atom("mnesia"), Atom("write"), 1)
    assert hash(fun) == hash(ExportFun(Atom("mnesia"), Atom("write"), 1))
    with pytest.raises(EncodeError, match="arity"):
        encode(ExportFun("m", "f", 256))
    with pytest.raises(TypeError):
        ExportFun("m", 5, 1)  # type: ignore[arg-type]


# --- Python-side mapping and its asymmetries ------------------------------------------------


def test_true_false_none_and_str() -> None:
    assert encode(True) == V["true"] and encode(False) == V["false"]
    assert encode(None) == V["undefined"]
    assert same(decode_term(encode(None)), Atom("undefined"))  # not None
    assert encode("hello") == V["binary"]
    assert same(decode_term(encode("héllo")), "héllo".encode())  # str comes back as bytes
    assert encode(Atom("hello")) != encode("hello")
    assert same(decode_term(encode([True, None])), [True, Atom("undefined")])


def test_atom_type() -> None:
    a = Atom("foo")
    assert repr(a) == "Atom('foo')"
    assert a == "foo" and hash(a) == hash("foo")
    assert type(str(a)) is str
    assert repr(Atom("it's")) == 'Atom("it\'s")'


def test_bytes_like_values_encode_as_binaries() -> None:
    assert encode(bytearray(b"hello")) == V["binary"]
    assert encode(memoryview(b"xhellox")[1:-1]) == V["binary"]
    assert encode(array.array("H", [0x0102])) == b"\x83\x6d\x00\x00\x00\x02" + bytes(
        array.array("H", [0x0102])
    )
    strided = memoryview(b"hqeqlqlqo")[::2]  # not contiguous: copied
    assert encode(strided) == V["binary"]


def test_subclasses_encode_as_their_base_type() -> None:
    class Color(enum.IntEnum):
        RED = 1

    point = namedtuple("point", "x y")

    class MyStr(str):
        pass

    class MyDict(dict[Any, Any]):
        pass

    class MyAtom(Atom):
        pass

    assert encode(Color.RED) == encode(1)
    assert encode([Color.RED, 2]) == encode([1, 2])
    assert encode(point(1, 2)) == encode((1, 2))
    assert encode(MyStr("hello")) == V["binary"]
    assert encode(MyDict(a=1)) == encode({"a": 1})
    assert encode(MyAtom("foo")) == V["atom_foo"]


def test_unsupported_types_name_the_type() -> None:
    class Thing:
        pass

    for value in (Thing(), {1, 2}, 1j, object()):
        with pytest.raises(EncodeError, match=type(value).__name__):
            encode(value)
    with pytest.raises(EncodeError, match="Thing"):
        encode([1, (2, {3: Thing()})])


def test_encode_refuses_what_erlang_cannot_hold() -> None:
    for value in (float("nan"), float("inf"), -float("inf")):
        with pytest.raises(EncodeError):
            encode(value)
    with pytest.raises(EncodeError, match="255"):
        encode(Atom("x" * 256))
    with pytest.raises(EncodeError):
        encode("\udc80")  # lone surrogate
    with pytest.raises(EncodeError):
        encode(Pid("a@b", 2**32, 0, 1))
    with pytest.raises(EncodeError):
        encode(Reference("a@b", 1, (-1,)))
    with pytest.raises(EncodeError):
        encode(Port("a@b", 2**64, 1))


def test_dict_keys_that_collide_once_encoded() -> None:
    with pytest.raises(EncodeError, match="collide"):
        encode({"a": 1, b"a": 2})
    with pytest.raises(EncodeError, match="collide"):
        encode({None: 1, Atom("undefined"): 2})
    assert decode_term(encode({"a": 1, b"b": 2})) == {b"a": 1, b"b": 2}


# --- integers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "tag"),
    [
        (0, 97),
        (255, 97),
        (256, 98),
        (-1, 98),
        (2**31 - 1, 98),
        (-(2**31), 98),
        (2**31, 110),
        (-(2**31) - 1, 110),
        (2 ** (8 * 255) - 1, 110),
        (2 ** (8 * 255), 111),
        (-(2 ** (8 * 255)), 111),
    ],
)
def test_integer_boundaries(value: int, tag: int) -> None:
    data = encode(value)
    assert data[1] == tag
    assert decode_term(data) == value


# --- lists and strings ---------------------------------------------------------------------


def test_string_ext_is_used_exactly_like_term_to_binary() -> None:
    assert encode([7] * 65535)[:4] == b"\x83\x6b\xff\xff"
    assert encode([7] * 65536)[:6] == b"\x83\x6c\x00\x01\x00\x00"
    assert encode([1, 256])[1] == 108
    assert encode([1, -1])[1] == 108
    assert (
        encode([True, False])
        == b"\x83\x6c\x00\x00\x00\x02" + V["true"][1:] + V["false"][1:] + b"\x6a"
    )
    assert encode([1.0])[1] == 108
    assert decode_term(encode([7] * 65536)) == [7] * 65536


def test_improper_list_rules() -> None:
    with pytest.raises(ValueError):
        ImproperList((), Atom("t"))
    with pytest.raises(ValueError):
        ImproperList((1,), [2])
    with pytest.raises(ValueError):
        ImproperList((1,), ImproperList((2,), 3))
    lst = ImproperList([1, 2], Atom("t"))  # type: ignore[arg-type]
    assert lst.elements == (1, 2)
    assert hash(lst) == hash(ImproperList((1, 2), Atom("t")))


def test_bit_binary_rules() -> None:
    assert BitBinary(b"\xff", 1) == BitBinary(b"\x80", 1)  # unused bits do not count
    assert BitBinary(b"\xff", 1).data == b"\x80"
    for data, bits in ((b"", 1), (b"\x00", 0), (b"\x00", 9)):
        with pytest.raises(ValueError):
            BitBinary(data, bits)
    assert decode_term(encode(BitBinary(b"\x12\x34", 8))) == b"\x12\x34"


# --- identifiers ---------------------------------------------------------------------------


def test_identifiers_are_hashable_and_ordered() -> None:
    a, b = Pid("n@h", 1, 0, 1), Pid("n@h", 2, 0, 1)
    assert a < b and sorted([b, a]) == [a, b]
    assert Reference("n@h", 1, (1, 2)) < Reference("n@h", 1, (1, 3))
    assert Port("n@h", 1, 1) < Port("n@h", 2, 1)
    assert len({a, Pid(Atom("n@h"), 1, 0, 1), b}) == 2
    assert Reference("n@h", 1, [1, 2]).ids == (1, 2)
    with pytest.raises(AttributeError):
        a.id = 5  # type: ignore[misc]
    assert decode_term(encode({a: 1, REF: 2, PORT: 3})) == {a: 1, REF: 2, PORT: 3}


def test_decoded_identifiers_behave_like_constructed_ones() -> None:
    first, second = decode_term(V["pid_ref_port"]), decode_term(V["pid_ref_port"])
    assert first == second == (PID, REF, PORT)
    for decoded, built in zip(first, (PID, REF, PORT), strict=True):
        assert hash(decoded) == hash(built) and repr(decoded) == repr(built)
        assert type(decoded.node) is Atom


def test_types_pickle_and_copy() -> None:
    values = [
        Atom("a"),
        PID,
        REF,
        PORT,
        ExportFun("m", "f", 1),
        ImproperList((1,), 2),
        BitBinary(b"\x80", 1),
        decode_term(V["fun_new"]),
    ]
    for value in values:
        again = pickle.loads(pickle.dumps(value))
        assert again == value and type(again) is type(value)
        assert copy.deepcopy(value) == value


def test_ports_pick_the_smallest_form() -> None:
    assert encode(Port("a@bc", 7, 9))[1] == 89
    big = Port("a@bc", 2**32 + 7, 9)
    assert encode(big) == b"\x83\x78\x77\x04a@bc" + struct.pack(">QI", 2**32 + 7, 9)
    assert decode_term(encode(big)) == big


def test_long_references() -> None:
    ref = Reference("a@b", 7, (1, 2, 3, 4, 5))
    assert decode_term(encode(ref)) == ref


# --- zero copy -----------------------------------------------------------------------------


def test_encode_parts_does_not_copy_big_binaries() -> None:
    big = bytes(range(256)) * 1024  # 256 KiB
    term = (Atom("chunk"), 7, big, [b"small", big])
    parts = encode_parts(term)
    assert b"".join(parts) == encode(term)
    assert sum(p is big for p in parts) == 2
    assert len(parts) == 5  # header, big, middle, big, tail: small pieces are coalesced
    assert all(isinstance(p, bytes | memoryview) for p in parts)


def test_encode_parts_views_callers_buffers() -> None:
    buffer = bytearray(b"x" * (1 << 17))
    array_data = array.array("d", [1.5] * (1 << 14))
    parts = encode_parts([buffer, array_data])
    views = [p for p in parts if isinstance(p, memoryview)]
    assert len(views) == 2
    assert views[0].obj is buffer
    assert views[1].obj is array_data
    assert b"".join(parts) == encode([bytes(buffer), array_data.tobytes()])


def test_encode_parts_small_term_is_one_part() -> None:
    parts = encode_parts((Atom("ok"), b"x" * 100))
    assert len(parts) == 1 and parts[0] == encode((Atom("ok"), b"x" * 100))
    assert encode_parts(b"y" * 65535) == [encode(b"y" * 65535)]


def test_copy_binaries_false_gives_views_of_the_input() -> None:
    payload = b"z" * 1000
    data = encode((Atom("ok"), payload, {b"key": payload}))
    value = decode_term(data, copy_binaries=False)
    view = value[1]
    assert isinstance(view, memoryview) and view.readonly
    assert view.obj is data and view == payload
    assert value[2] == {b"key": payload}
    assert type(next(iter(value[2]))) is bytes  # map keys are copied, so they hash
    assert type(decode_term(data)[1]) is bytes


def test_copy_binaries_false_over_bytearray_and_memoryview() -> None:
    data = bytearray(encode((b"abc", (b"k",))))
    value = decode_term(data, copy_binaries=False)
    assert value[0] == b"abc" and value[0].readonly
    mv_value = decode(memoryview(bytes(data)), copy_binaries=False)[0]
    assert mv_value == (b"abc", (b"k",))
    # map keys are copied even inside tuples: views of a bytearray cannot be hashed
    mapped = decode_term(bytearray(encode({(b"k", (b"j",)): b"v"})), copy_binaries=False)
    assert mapped == {(b"k", (b"j",)): b"v"}
    assert type(mapped[(b"k", (b"j",))]) is memoryview


# --- frames holding several terms ----------------------------------------------------------


def test_decode_consecutive_terms_at_offsets() -> None:
    control = (6, PID, Atom(""), Atom("rex"))
    message: tuple[Any, ...] = (
        Atom("$gen_call"),
        (PID, REF),
        (Atom("call"), Atom("m"), Atom("f"), [], None),
    )
    frame = b"p" + encode(control) + encode(message)
    first, end = decode(frame, 1)
    assert first == control
    second, end2 = decode(frame, end)
    assert second == (*message[:2], (Atom("call"), Atom("m"), Atom("f"), [], Atom("undefined")))
    assert end2 == len(frame)


def test_decode_inputs_of_every_buffer_type() -> None:
    data = V["gen_call"]
    expected = CANONICAL["gen_call"]
    for buf in (data, bytearray(data), memoryview(data), memoryview(b"xx" + data)[2:]):
        assert decode_term(buf) == expected


# --- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "offset 0"),
        (b"\x84\x61\x01", "version"),
        (b"\x83", "end of data"),
        (b"\x83\x61\x01\x00", "left over"),
        (b"\x83\x52\x01", "ATOM_CACHE_REF"),
        (b"\x83\x79\x00", "LOCAL_EXT"),
        (b"\x83\x01", "unknown tag 1"),
        (b"\x83\x68\x02\x61\x01", "end of data at offset 5 inside the term at offset 1"),
        (b"\x83\x6d\x00\x00\x00\x05ab", "BINARY_EXT at offset 1"),
        (b"\x83\x62\x00\x00", "INTEGER_EXT at offset 1"),
        (b"\x83\x6c\xff\xff\xff\xff\x6a", "LIST_EXT at offset 1 claims 4294967295"),
        (b"\x83\x74\xff\xff\xff\xff\x6a", "MAP_EXT"),
        (b"\x83\x69\xff\xff\xff\xff\x6a", "LARGE_TUPLE_EXT"),
        (b"\x83\x6f\xff\xff\xff\xff\x00\x01", "LARGE_BIG_EXT"),
        (b"\x83\x6b\xff\xff\x01", "STRING_EXT"),
        (b"\x83\x77\x02\xff\xfe", "invalid UTF-8"),
        (b"\x83\x76\x00\x05abc", "ATOM_UTF8_EXT"),
        (b"\x83\x46\x7f\xf8\x00\x00\x00\x00\x00\x00", "NEW_FLOAT_EXT"),
        (b"\x83\x63" + b"nan".ljust(31, b"\0"), "FLOAT_EXT"),
        (b"\x83\x63" + b"1.0x".ljust(31, b"\0"), "FLOAT_EXT"),
        (b"\x83\x4d\x00\x00\x00\x01\x00\xff", "BIT_BINARY_EXT"),
        (b"\x83\x4d\x00\x00\x00\x01\x09\xff", "BIT_BINARY_EXT"),
        (b"\x83\x58\x61\x01", "expected an atom"),
        (b"\x83\x71\x77\x01m\x77\x01f\x6a", "EXPORT_EXT"),
        (b"\x83\x71\x77\x01m\x77\x01f\x62\x00\x00\x01\x00", "EXPORT_EXT"),
        (b"\x83\x74\x00\x00\x00\x01\x74\x00\x00\x00\x00\x61\x01", "unhashable"),
        (b"\x83\x74\x00\x00\x00\x02\x61\x01\x61\x01\x61\x01\x61\x02", "duplicate"),
        (
            b"\x83\x74\x00\x00\x00\x02\x61\x01\x61\x01\x46" + struct.pack(">d", 1.0) + b"\x61\x02",
            "duplicate",
        ),
        (b"\x83\x70\x00\x00\x00\x05\x00", "NEW_FUN_EXT"),
        (b"\x83\x5a\xff\xff\x77\x01a\x00\x00\x00\x01", "NEWER_REFERENCE_EXT"),
    ],
)
def test_malformed_input_raises_decode_error(data: bytes, match: str) -> None:
    with pytest.raises(DecodeError, match=match):
        decode_term(data)


def test_decode_error_is_a_value_error_and_encode_error_a_type_error() -> None:
    with pytest.raises(ValueError):
        decode_term(b"\x83")
    with pytest.raises(TypeError):
        encode(object())


def test_decode_offset_out_of_range() -> None:
    with pytest.raises(DecodeError):
        decode(b"\x83\x6a", 2)
    with pytest.raises(DecodeError):
        decode(b"\x83\x6a", -1)


def test_huge_length_fields_fail_fast() -> None:
    with _peak_allocation() as peak:
        for tag in (b"\x6c", b"\x74", b"\x69", b"\x6d", b"\x4d", b"\x6f"):
            with pytest.raises(DecodeError):
                decode_term(b"\x83" + tag + b"\xff\xff\xff\xf0" + b"\x6a" * 5)
    assert peak[0] < 1 << 20  # nothing sized from the announced 4 G elements


# --- nesting -------------------------------------------------------------------------------


def nested_lists(depth: int) -> list[Any]:
    term: list[Any] = []
    for _ in range(depth):
        term = [term]
    return term


def depth_of(term: Any) -> int:
    depth = 0
    while isinstance(term, list | tuple) and term:
        term = term[0]
        depth += 1
    return depth


def test_deep_nesting_within_the_limit_works_both_ways() -> None:
    term = nested_lists(9_000)
    data = encode(term)
    assert depth_of(decode_term(data)) == 9_000
    tuples = b"\x83" + b"\x68\x01" * 9_000 + b"\x6a"
    assert depth_of(decode_term(tuples)) == 9_000
    assert encode(decode_term(tuples)) == tuples


def test_deep_map_keys_are_a_clean_error() -> None:
    key = b"\x68\x01" * 3_000 + b"\x61\x01"
    with pytest.raises(DecodeError, match="MAP_EXT"):
        decode_term(b"\x83\x74\x00\x00\x00\x02" + key + b"\x61\x01" + key + b"\x61\x02")


def test_too_deep_nesting_is_a_clean_error() -> None:
    with pytest.raises(EncodeError, match="nested"):
        encode(nested_lists(20_000))
    nested: Any = 1
    for _ in range(20_000):
        nested = {Atom("k"): (nested,)}
    with pytest.raises(EncodeError, match="nested"):
        encode(nested)
    with pytest.raises(DecodeError, match="nested"):
        decode_term(b"\x83" + b"\x68\x01" * 20_000 + b"\x6a")
    with pytest.raises(DecodeError, match="nested"):
        decode_term(b"\x83" + b"\x6c\x00\x00\x00\x01" * 20_000 + b"\x6a" * 20_001)


# term_to_binary(#{"k" => 1, [1, [2]] => <<"v">>, {a, "b"} => 3}) from OTP 25
STRING_KEYED_MAP = bytes.fromhex(
    "8374000000036802640001616b00016261036c0000000261016b0001026a6d00000001766b00016b6101"
)


def test_list_map_keys_decode_to_list_keys_and_encode_back() -> None:
    m = decode_term(STRING_KEYED_MAP)
    assert m[ListKey(b"k")] == 1  # an Erlang string key, looked up by its characters
    assert m[ListKey([1, ListKey([2])])] == b"v"
    assert m[(Atom("a"), ListKey(b"b"))] == 3
    assert repr(ListKey([1])) == "ListKey([1])"
    assert decode_term(encode(m)) == m
    assert decode_term(encode({ListKey([]): 1})) == {ListKey([]): 1}
    assert encode(ListKey([1, 2])) == encode([1, 2])  # a list, also outside map keys


def test_map_key_edge_cases() -> None:
    deep_key = (
        b"\x83\x74\x00\x00\x00\x01" + b"\x6c\x00\x00\x00\x01" * 3000 + b"\x6a" * 3001 + b"\x61\x01"
    )
    with pytest.raises(DecodeError, match="too deep"):
        decode_term(deep_key)
    with pytest.raises(EncodeError, match="collide"):
        encode({True: 1, Atom("true"): 2})
    two = decode_term(encode({ListKey([1, 2]): b"a", (1, 2): b"b"}))
    assert two == {ListKey([1, 2]): b"a", (1, 2): b"b"} and len(two) == 2
    assert ListKey([1, 2]) != (1, 2)
