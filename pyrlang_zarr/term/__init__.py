"""Erlang's External Term Format (ETF): the bytes terms travel as between nodes.

``encode``/``encode_parts`` turn Python values into terms, ``decode``/``decode_term`` turn terms
back into Python values. Both are sans-IO pure functions.

Python to Erlang (``encode``)
=============================

==============================================  =============================================
Python                                          Erlang (tag)
==============================================  =============================================
``Atom``                                        atom (SMALL_ATOM_UTF8_EXT, ATOM_UTF8_EXT)
``True`` / ``False``                            atoms ``true`` / ``false``
``None``                                        atom ``undefined``
``int``                                         integer (SMALL_INTEGER_EXT for 0..255,
                                                INTEGER_EXT for 32-bit, SMALL_BIG_EXT /
                                                LARGE_BIG_EXT beyond)
``float`` (finite only)                         float (NEW_FLOAT_EXT)
``str``                                         UTF-8 **binary** (BINARY_EXT), not a string
``bytes`` / ``bytearray`` / ``memoryview`` /    binary (BINARY_EXT)
any buffer
``tuple``                                       tuple (SMALL_TUPLE_EXT, LARGE_TUPLE_EXT)
``list``                                        ``[]`` (NIL_EXT) when empty; STRING_EXT when
                                                every element is an int in 0..255 and there
                                                are fewer than 65536 (as ``term_to_binary``
                                                does); else LIST_EXT
``dict``                                        map (MAP_EXT)
``ImproperList(elements, tail)``                improper list ``[E1, E2 | Tail]`` (LIST_EXT)
``BitBinary(data, bits)``                       bitstring (BIT_BINARY_EXT)
``Pid``                                         pid (NEW_PID_EXT)
``Reference``                                   reference (NEWER_REFERENCE_EXT)
``Port``                                        port (NEW_PORT_EXT, V4_PORT_EXT if the id
                                                needs more than 32 bits)
``ExportFun(module, function, arity)``          ``fun M:F/A`` (EXPORT_EXT)
``OpaqueFun(data)``                             its bytes, unchanged
==============================================  =============================================

Subclasses (``IntEnum``, named tuples, ...) encode as their base type. Anything else raises
``EncodeError``, as do atoms over 255 characters, NaN and infinities, and nesting deeper than
10 000 levels.

Erlang to Python (``decode``)
=============================

==============================================  =============================================
Erlang (tag)                                    Python
==============================================  =============================================
atom, all four forms (ATOM_EXT, SMALL_ATOM_EXT  ``Atom``
latin-1; ATOM_UTF8_EXT, SMALL_ATOM_UTF8_EXT)
atoms ``true`` / ``false``                      ``True`` / ``False``
atom ``undefined``                              ``Atom('undefined')``, **not** ``None``
integer (SMALL_INTEGER_EXT, INTEGER_EXT,        ``int``
SMALL_BIG_EXT, LARGE_BIG_EXT)
float (NEW_FLOAT_EXT, old FLOAT_EXT)            ``float``
binary (BINARY_EXT)                             ``bytes`` (a read-only ``memoryview`` of the
                                                input with ``copy_binaries=False``)
bitstring (BIT_BINARY_EXT)                      ``BitBinary`` (``bytes`` if whole bytes)
tuple (SMALL_TUPLE_EXT, LARGE_TUPLE_EXT)        ``tuple``
``[]`` (NIL_EXT)                                ``[]``
string (STRING_EXT)                             ``list`` of ``int`` (it *is* a list: ``[1, 2]``
                                                and ``"ab"`` both travel as STRING_EXT)
list (LIST_EXT)                                 ``list``; ``ImproperList`` if the tail is not
                                                ``[]``
map (MAP_EXT)                                   ``dict``; a list key (an Erlang string) is a
                                                ``ListKey`` (hashable, encodes as a list);
                                                ``DecodeError`` if a key is a map, or if keys
                                                collide in Python (``1``, ``1.0``, ``true``)
pid (PID_EXT, NEW_PID_EXT)                      ``Pid``
reference (REFERENCE_EXT, NEW_REFERENCE_EXT,    ``Reference``
NEWER_REFERENCE_EXT)
port (PORT_EXT, NEW_PORT_EXT, V4_PORT_EXT)      ``Port``
``fun M:F/A`` (EXPORT_EXT)                      ``ExportFun``
closure (NEW_FUN_EXT, FUN_EXT)                  ``OpaqueFun`` holding the term's bytes
compressed term (tag 80, zlib)                  whatever the inflated term decodes to
ATOM_CACHE_REF, LOCAL_EXT, unknown tags         ``DecodeError``
==============================================  =============================================

The two directions are not inverses everywhere: ``str`` comes back as ``bytes``, ``None`` as
``Atom('undefined')`` (``undefined`` is an ordinary atom that Erlang code matches like any
other, so it decodes to an ``Atom``; ``None`` is only a convenient way to send it),
``bytearray``/``memoryview`` as ``bytes``, and a ``list`` of small ints stays a ``list``.
Everything else round-trips exactly.
Malformed, truncated or hostile input raises ``DecodeError``, never anything else, and costs
work and memory in proportion to its size: a compressed term may inflate to 64 MiB
(``max_inflated=``) and decode to a number of values bounded by its compressed size, and a
map whose keys collide in Python's hash (Erlang integers ``k * (2**61 - 1)`` apart do) is
refused rather than built in quadratic time.
"""

# Eager on purpose, unlike the package above: it costs no third-party import, and ``decode`` and
# ``encode`` name both a submodule and a function here, so a lazy ``__getattr__`` would hand out
# the submodule once anything imported ``pyrlang_zarr.term.decode`` directly.
from pyrlang_zarr.errors import DecodeError, EncodeError
from pyrlang_zarr.term.decode import decode, decode_element, decode_term
from pyrlang_zarr.term.encode import encode, encode_atom, encode_parts
from pyrlang_zarr.term.types import (
    Atom,
    BitBinary,
    ExportFun,
    ImproperList,
    ListKey,
    OpaqueFun,
    Pid,
    Port,
    Reference,
)

__all__ = [
    "Atom",
    "BitBinary",
    "DecodeError",
    "EncodeError",
    "ExportFun",
    "ImproperList",
    "ListKey",
    "OpaqueFun",
    "Pid",
    "Port",
    "Reference",
    "decode",
    "decode_element",
    "decode_term",
    "encode",
    "encode_atom",
    "encode_parts",
]
