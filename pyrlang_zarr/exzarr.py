"""What ExZarr (Elixir) writes and reads, so that arrays cross between it and Python.

ExZarr's Mnesia backend keeps chunks at ``{Id, {chunk, Idx}}`` and the metadata text at
``{Id, metadata}`` (see :mod:`pyrlang_zarr.keys`). Both sides can then read an array the
other wrote. For an array **both** sides write, ExZarr's own limits apply; an array made with
``pz.create(..., exzarr=True)`` keeps to them:

- zarr v2 (ExZarr 1.0.1 crashes on partial writes into v3 arrays it opened);
- compressor ``zstd`` (default), ``zlib`` or none: ExZarr's lz4 frames are not numcodecs',
  and it cannot read gzip; no filters;
- a dtype ExZarr knows (``int8`` ... ``uint64``, ``float32``, ``float64``), little-endian:
  ExZarr writes little-endian bytes whatever the dtype says; C order;
- a finite numeric fill value (``NaN``/``Infinity`` crash ExZarr on a missing chunk);
- at least one dimension, every one of positive length.

The metadata text is the one ``ExZarr.save/2`` writes, byte for byte (``Jason.encode`` with
``pretty: true`` of a map with sorted keys), so an Elixir application that saves the array
again writes exactly what is there.
"""

from __future__ import annotations

import decimal
import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

#: ExZarr's dtypes (atoms) and their zarr v2 ``dtype`` strings.
DTYPES = {
    "int8": "<i1",
    "int16": "<i2",
    "int32": "<i4",
    "int64": "<i8",
    "uint8": "<u1",
    "uint16": "<u2",
    "uint32": "<u4",
    "uint64": "<u8",
    "float32": "<f4",
    "float64": "<f8",
}
#: Compressors both sides read and write (``None``: no compression).
COMPRESSORS = ("zstd", "zlib", None)
#: The level ExZarr writes into the metadata, whatever it compresses with.
METADATA_LEVEL = 5


def check(
    shape: Sequence[int],
    chunks: Sequence[int],
    dtype: npt.DTypeLike,
    *,
    compressor: str | None = "zstd",
    fill_value: Any = 0,
    order: str = "C",
    zarr_format: int = 2,
    options: Sequence[str] = (),
) -> str:
    """Raise ``ValueError``/``TypeError`` naming what ExZarr cannot share; return ExZarr's
    name of the dtype. ``options`` are other zarr options the caller was given."""
    if zarr_format != 2:
        raise ValueError(
            "an ExZarr-compatible array is zarr v2 (ExZarr cannot write partial chunks of the "
            f"v3 arrays it opens); got zarr_format={zarr_format!r}"
        )
    if options:
        raise ValueError(
            f"an ExZarr-compatible array takes no other zarr options (got {sorted(options)}): "
            "ExZarr knows no filters, shards or codecs besides its compressor"
        )
    if not shape or any(d <= 0 for d in shape):
        raise ValueError(
            "ExZarr needs at least one dimension, each of positive length; got shape "
            f"{tuple(shape)}"
        )
    if len(chunks) != len(shape) or any(c <= 0 for c in chunks):
        raise ValueError(f"chunks {tuple(chunks)} do not fit shape {tuple(shape)}")
    try:
        np_dtype = np.dtype(dtype)
    except TypeError as exc:
        raise TypeError(f"dtype {dtype!r} is not a numpy dtype: {exc}") from None
    name = np_dtype.name
    if name not in DTYPES:
        raise ValueError(f"ExZarr has no dtype {np_dtype.str!r}; it knows {', '.join(DTYPES)}")
    if np_dtype.byteorder == ">":
        raise ValueError(
            f"dtype {np_dtype.str!r} is big-endian: ExZarr writes and reads little-endian "
            f"bytes whatever the metadata says; use {DTYPES[name]!r}"
        )
    if compressor not in COMPRESSORS:
        raise ValueError(
            f"compressor {compressor!r} is not one both sides read: use 'zstd', 'zlib' or None "
            "(ExZarr's lz4 frames differ from numcodecs', and it cannot read gzip)"
        )
    if order != "C":
        raise ValueError(f"ExZarr reads C order only, got order={order!r}")
    if isinstance(fill_value, bool) or not isinstance(fill_value, int | float | np.number):
        raise TypeError(f"fill_value must be a finite number for ExZarr, got {fill_value!r}")
    if not math.isfinite(float(fill_value)):
        raise ValueError(
            f"fill_value {fill_value!r} is not finite: ExZarr fails on every missing chunk"
        )
    if np_dtype.kind in "iu":
        if float(fill_value) != int(fill_value):
            raise ValueError(f"fill_value {fill_value!r} is not an integer of dtype {name}")
        info = np.iinfo(np_dtype)
        if not info.min <= int(fill_value) <= info.max:
            raise ValueError(f"fill_value {fill_value!r} does not fit dtype {name}")
    return name


def zarray_text(
    shape: Sequence[int],
    chunks: Sequence[int],
    dtype: str,
    *,
    compressor: str | None = "zstd",
    fill_value: int | float = 0,
) -> bytes:
    """The ``.zarray`` text ``ExZarr.save/2`` writes for a v2 array (``dtype``: ExZarr's
    name, e.g. ``"float64"``)."""
    meta = {
        "zarr_format": 2,
        "shape": list(shape),
        "chunks": list(chunks),
        "dtype": DTYPES[dtype],
        "compressor": None if compressor is None else {"id": compressor, "level": METADATA_LEVEL},
        "fill_value": fill_value,
        "order": "C",
        "filters": None,
    }
    return jason_pretty(meta).encode()


def zarr_json_text(
    shape: Sequence[int],
    chunks: Sequence[int],
    dtype: str,
    *,
    codec: str | None = "zstd",
    level: int = METADATA_LEVEL,
    fill_value: int | float = 0,
) -> bytes:
    """The ``zarr.json`` text ``ExZarr.save/2`` writes for a v3 array (``zarr_version: 3``)."""
    codecs: list[dict[str, Any]] = [{"name": "bytes", "configuration": {}}]
    if codec is not None:
        codecs.append({"name": codec, "configuration": {"level": level}})
    meta = {
        "zarr_format": 3,
        "node_type": "array",
        "attributes": {},
        "shape": list(shape),
        "data_type": dtype,
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(chunks)}},
        "chunk_key_encoding": {"name": "default"},
        "codecs": codecs,
        "fill_value": fill_value,
        "dimension_names": None,
    }
    return jason_pretty(meta).encode()


def jason_pretty(value: Any) -> str:
    """``Jason.encode!(value, pretty: true)`` of Elixir terms (maps with atom keys, which
    Erlang keeps sorted; lists; numbers; strings; ``nil``): two-space indent, one element a
    line, ``"key": value``, empty maps and lists as ``{}``/``[]``, no final newline."""
    return _pretty(value, 0)


def _pretty(value: Any, depth: int) -> str:
    pad = "  " * (depth + 1)
    end = "\n" + "  " * depth
    if isinstance(value, dict):
        if not value:
            return "{}"
        items = [f"{pad}{json.dumps(k)}: {_pretty(value[k], depth + 1)}" for k in sorted(value)]
        return "{\n" + ",\n".join(items) + end + "}"
    if isinstance(value, list | tuple):
        if not value:
            return "[]"
        return "[\n" + ",\n".join(pad + _pretty(v, depth + 1) for v in value) + end + "]"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        return erlang_float(float(value))
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    raise TypeError(f"cannot encode {value!r} as ExZarr does")


def erlang_float(x: float) -> str:
    """A float as Jason writes it (``io_lib_format:fwrite_g/1``): the shortest digits that
    read back exactly, in plain or ``e`` notation, whichever is shorter."""
    if not math.isfinite(x):
        raise ValueError(f"{x!r} has no JSON form")
    if x == 0.0:
        return "-0.0" if math.copysign(1.0, x) < 0 else "0.0"
    _, digits_t, exp = decimal.Decimal(repr(abs(x))).normalize().as_tuple()
    assert isinstance(exp, int)
    digits = "".join(map(str, digits_t))
    place = len(digits) + exp  # the value is 0.DIGITS * 10**place
    text = _insert_decimal(place, digits)
    return ("-" if x < 0 else "") + text


def _insert_decimal(place: int, s: str) -> str:
    length = len(s)
    if place == 0:
        return "0." + s
    if place < 0 or place >= length:
        exp = str(place - 1)
        exp_cost = len(exp) + 1 + (2 if length == 1 else 1)
        if place < 0:
            if 2 - place <= exp_cost:
                return "0." + "0" * (-place) + s
            return _insert_exp(exp, s)
        if place - length + 2 <= exp_cost:
            return s + "0" * (place - length) + ".0"
        return _insert_exp(exp, s)
    return s[:place] + "." + s[place:]


def _insert_exp(exp: str, s: str) -> str:
    if len(s) == 1:
        return s + ".0e" + exp
    return s[0] + "." + s[1:] + "e" + exp
