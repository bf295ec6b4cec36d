"""Tag bytes and limits of the External Term Format, shared by the encoder and the decoder.

Names follow the ERTS "External Term Format" chapter so the code can be checked against it.
"""

from __future__ import annotations

from typing import Final

VERSION: Final = 131

NEW_FLOAT_EXT: Final = 70
BIT_BINARY_EXT: Final = 77
COMPRESSED: Final = 80
ATOM_CACHE_REF: Final = 82
NEW_PID_EXT: Final = 88
NEW_PORT_EXT: Final = 89
NEWER_REFERENCE_EXT: Final = 90
SMALL_INTEGER_EXT: Final = 97
INTEGER_EXT: Final = 98
FLOAT_EXT: Final = 99
ATOM_EXT: Final = 100
REFERENCE_EXT: Final = 101
PORT_EXT: Final = 102
PID_EXT: Final = 103
SMALL_TUPLE_EXT: Final = 104
LARGE_TUPLE_EXT: Final = 105
NIL_EXT: Final = 106
STRING_EXT: Final = 107
LIST_EXT: Final = 108
BINARY_EXT: Final = 109
SMALL_BIG_EXT: Final = 110
LARGE_BIG_EXT: Final = 111
NEW_FUN_EXT: Final = 112
EXPORT_EXT: Final = 113
NEW_REFERENCE_EXT: Final = 114
SMALL_ATOM_EXT: Final = 115
MAP_EXT: Final = 116
FUN_EXT: Final = 117
ATOM_UTF8_EXT: Final = 118
SMALL_ATOM_UTF8_EXT: Final = 119
V4_PORT_EXT: Final = 120
LOCAL_EXT: Final = 121

#: Containers nested deeper than this are refused both ways: such terms only come from bugs or
#: hostile peers, and refusing them keeps memory and time bounded.
MAX_NESTING: Final = 10_000

#: Largest atom Erlang accepts, in characters; a longer one makes the peer drop the term.
MAX_ATOM_CHARS: Final = 255

#: Largest size a compressed term may inflate to (the field itself allows 4 GiB). ERTS never
#: compresses what it sends over the distribution; compressed terms come from
#: ``term_to_binary(T, [compressed])`` and are usually small.
MAX_INFLATED_SIZE: Final = 64 << 20

#: A compressed term may decode to at most this many values (the elements of its lists, tuples
#: and maps), or :data:`COMPRESSED_VALUES_PER_BYTE` per byte of its compressed form if that is
#: more. Uncompressed, every value takes at least one byte of the data; inflation must not
#: multiply the work a few bytes from a peer can cause by a thousand.
COMPRESSED_MIN_VALUES: Final = 1 << 20
COMPRESSED_VALUES_PER_BYTE: Final = 8

#: A map whose keys share Python hashes costs quadratic time to build (``hash(n)`` is
#: ``n mod (2**61 - 1)`` for ints, so Erlang can send keys that all collide): maps whose keys
#: would cost more than this many same-hash comparisons are refused.
MAX_MAP_COLLISIONS: Final = 1 << 16

TAG_NAMES: Final[dict[int, str]] = {
    value: name
    for name, value in globals().items()
    if name.endswith("_EXT") or name in ("COMPRESSED", "ATOM_CACHE_REF")
}
