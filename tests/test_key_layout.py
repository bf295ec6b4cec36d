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
    ChunkKeys,
    KeyLayout,
    chunk_keys_from_metadata,
)

ENCODINGS: dict[str, dict[str, Any]] = {
    "v3": {"zarr_format": 3},
    "v3-dot": {"zarr_format": 3, "chunk_key_encoding": {"name": "default", "separator": "."}},
    "v3-v2enc": {"zarr_format": 3, "chunk_key_encoding": {"name": "v2", "separator": "."}},
    "v3-v2enc-slash": {"zarr_format": 3, "chunk_key_encoding": {"name": "v2", "separator": "/"}},
    "v2": {"zarr_format": 2},
    "v2-slash": {"zarr_format": 2, "chunk_key_encoding": {"name": "v2", "separator": "/"}},
}


@functools.cache
def written_by_zarr(rank: int, encoding: str) -> tuple[str, bytes, Any]:
    """The metadata document zarr writes for a rank-``rank`` array (its key and bytes), and
    zarr's own metadata object, whose ``encode_chunk_key`` names its chunks. Only zarr's
    output is cached: the code under test runs in each test (a mutation run forks after a
    first pass, and would otherwise keep results from the unmutated code)."""
    store = zarr.storage.MemoryStore()
    arr = zarr.create_array(
        store, shape=(10,) * rank, chunks=(3,) * rank, dtype="u1", **ENCODINGS[encoding]
    )
    key = ROOT_METADATA_KEY if arr.metadata.zarr_format == 3 else V2_ARRAY_METADATA_KEY
    doc = sync(store.get(key, default_buffer_prototype()))
    assert doc is not None
    return key, doc.to_bytes(), arr.metadata


def layout_of(rank: int, encoding: str) -> tuple[KeyLayout, Any]:
    key, doc, meta = written_by_zarr(rank, encoding)
    return KeyLayout(chunk_keys_from_metadata(key, doc)), meta


@settings(max_examples=25, deadline=None)
@given(data=st.data())
@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("rank", range(6))
def test_chunk_names_and_tuples_agree_with_zarr(rank: int, encoding: str, data: Any) -> None:
    layout, meta = layout_of(rank, encoding)
    index = tuple(data.draw(st.lists(st.integers(0, 10**6), min_size=rank, max_size=rank)))
    name = meta.encode_chunk_key(index)
    assert layout.to_mnesia(name) == index
    assert layout.from_mnesia(index) == name


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_other_keys_stay_paths(encoding: str) -> None:
    layout, meta = layout_of(3, encoding)
    assert layout.to_mnesia(ROOT_METADATA_KEY) == METADATA
    assert layout.from_mnesia(METADATA) == ROOT_METADATA_KEY
    name = meta.encode_chunk_key((1, 2, 3))
    near = [name + "/0", "grp/" + name, name.replace("1", "01", 1), ".zattrs"]
    for key in near:  # not a chunk of this rank-3 array: kept as its path
        assert layout.to_mnesia(key) == key.encode()
        assert layout.from_mnesia(key.encode()) == key
    assert layout.from_mnesia((1, 2)) is None  # a tuple of another rank names nothing


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_a_0d_array_has_one_chunk_name(encoding: str) -> None:
    layout, meta = layout_of(0, encoding)
    name = meta.encode_chunk_key(())
    assert layout.to_mnesia(name) == ()
    for key in ["c/0", "0/0", "x", ".zattrs", "grp/c", name + "/"]:
        assert layout.to_mnesia(key) == key.encode()


def test_record_names_that_are_not_utf8_still_list() -> None:
    """A record written by someone else under a key that is not UTF-8 is listed (with
    surrogate escapes, as Python names undecodable file names), not an error."""
    assert KeyLayout(None).from_mnesia(b"caf\xe9") == "caf\udce9"


GROUP = b'{"zarr_format": 3, "node_type": "group"}'


@pytest.mark.parametrize(
    "key,doc",
    [
        (ROOT_METADATA_KEY, b"not json"),
        (ROOT_METADATA_KEY, b"\xff\xfe"),
        (ROOT_METADATA_KEY, b"[1, 2]"),
        (ROOT_METADATA_KEY, GROUP),
        (ROOT_METADATA_KEY, b'{"zarr_format": 3, "node_type": "array"}'),  # no shape
        (ROOT_METADATA_KEY, b'{"zarr_format": 2, "node_type": "array", "shape": [1]}'),
        (
            ROOT_METADATA_KEY,
            b'{"zarr_format": 3, "node_type": "array", "shape": [1],'
            b' "chunk_key_encoding": {"name": "other"}}',
        ),
        (V2_ARRAY_METADATA_KEY, b'{"zarr_format": 3, "shape": [1]}'),
        (V2_ARRAY_METADATA_KEY, b'{"zarr_format": 2}'),
        (".zattrs", b'{"zarr_format": 2, "shape": [1]}'),
    ],
)
def test_documents_that_name_no_chunk_layout(key: str, doc: bytes) -> None:
    assert chunk_keys_from_metadata(key, doc) is None


def test_defaults_of_each_encoding() -> None:
    v3 = b'{"zarr_format": 3, "node_type": "array", "shape": [4, 4]}'
    v3_v2 = v3[:-1] + b', "chunk_key_encoding": {"name": "v2"}}'
    v2 = b'{"zarr_format": 2, "shape": [4, 4], "dimension_separator": null}'
    assert chunk_keys_from_metadata(ROOT_METADATA_KEY, v3) == ChunkKeys(2, "/", "c")
    assert chunk_keys_from_metadata(ROOT_METADATA_KEY, v3_v2) == ChunkKeys(2, ".", "")
    assert chunk_keys_from_metadata(V2_ARRAY_METADATA_KEY, v2) == ChunkKeys(2, ".", "")
    assert chunk_keys_from_metadata(ROOT_METADATA_KEY, memoryview(v3)) == ChunkKeys(2, "/", "c")
    named = v3[:-1] + b', "chunk_key_encoding": "default"}'  # the encoding by name alone
    assert chunk_keys_from_metadata(ROOT_METADATA_KEY, named) == ChunkKeys(2, "/", "c")
