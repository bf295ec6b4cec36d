"""Zarr keys <-> Mnesia keys, checked against zarr's own chunk key encodings (no Erlang).

For every rank up to 5 and every chunk key encoding, the layout read from a metadata
document zarr wrote must name chunk ``(I0, .., In)`` exactly as zarr does, and map that name
to the tuple ``(I0, .., In)``, in that order: an index swapped or dropped shows here.
"""

from __future__ import annotations

import functools
from typing import Any

import pytest
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

from pyrlang_zarr.keys import (
    METADATA,
    ROOT_METADATA_KEY,
    V2_ARRAY_METADATA_KEY,
    KeyLayout,
    chunk_keys_from_metadata,
)

ENCODINGS = {
    "v3": {"zarr_format": 3},
    "v3-dot": {"zarr_format": 3, "chunk_key_encoding": {"name": "default", "separator": "."}},
    "v3-v2enc": {"zarr_format": 3, "chunk_key_encoding": {"name": "v2", "separator": "."}},
    "v3-v2enc-slash": {"zarr_format": 3, "chunk_key_encoding": {"name": "v2", "separator": "/"}},
    "v2": {"zarr_format": 2},
    "v2-slash": {"zarr_format": 2, "chunk_key_encoding": {"name": "v2", "separator": "/"}},
}


@functools.cache
def written_by_zarr(rank: int, encoding: str) -> tuple[KeyLayout, Any]:
    """The layout from the metadata document zarr writes for a rank-``rank`` array, and
    zarr's own metadata object (whose ``encode_chunk_key`` names its chunks)."""
    store = zarr.storage.MemoryStore()
    arr = zarr.create_array(
        store, shape=(10,) * rank, chunks=(3,) * rank, dtype="u1", **ENCODINGS[encoding]
    )
    key = ROOT_METADATA_KEY if arr.metadata.zarr_format == 3 else V2_ARRAY_METADATA_KEY
    doc = sync(store.get(key, default_buffer_prototype()))
    assert doc is not None
    return KeyLayout(chunk_keys_from_metadata(key, doc.to_bytes())), arr.metadata


@settings(max_examples=25, deadline=None)
@given(data=st.data())
@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("rank", range(6))
def test_chunk_names_and_tuples_agree_with_zarr(rank: int, encoding: str, data: Any) -> None:
    layout, meta = written_by_zarr(rank, encoding)
    index = tuple(data.draw(st.lists(st.integers(0, 10**6), min_size=rank, max_size=rank)))
    name = meta.encode_chunk_key(index)
    assert layout.to_mnesia(name) == index
    assert layout.from_mnesia(index) == name


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_other_keys_stay_paths(encoding: str) -> None:
    layout, meta = written_by_zarr(3, encoding)
    assert layout.to_mnesia(ROOT_METADATA_KEY) == METADATA
    assert layout.from_mnesia(METADATA) == ROOT_METADATA_KEY
    name = meta.encode_chunk_key((1, 2, 3))
    near = [name + "/0", "grp/" + name, name.replace("1", "01", 1), ".zattrs"]
    for key in near:  # not a chunk of this rank-3 array: kept as its path
        assert layout.to_mnesia(key) == key.encode()
        assert layout.from_mnesia(key.encode()) == key
    assert layout.from_mnesia((1, 2)) is None  # a tuple of another rank names nothing
