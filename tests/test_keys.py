"""Chunk keys <-> integer tuples (pyrlang_zarr.keys), pure: every chunk key round-trips, and
only the canonical spelling of an index parses."""

from __future__ import annotations

import json

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from pyrlang_zarr.keys import (
    METADATA,
    ROOT_METADATA_KEY,
    V2_ARRAY_METADATA_KEY,
    ChunkKeys,
    KeyLayout,
    chunk_keys_from_metadata,
)

encodings = st.builds(
    ChunkKeys,
    ndim=st.integers(0, 4),
    separator=st.sampled_from(["/", "."]),
    prefix=st.sampled_from(["c", ""]),
)
coordinates = st.integers(0, 10**30)  # Mnesia keys are Erlang integers: no upper bound


@st.composite
def keys_and_indices(draw: st.DrawFn) -> tuple[ChunkKeys, tuple[int, ...]]:
    ck = draw(encodings)
    return ck, tuple(draw(st.lists(coordinates, min_size=ck.ndim, max_size=ck.ndim)))


@given(keys_and_indices())
@example((ChunkKeys(0, "/", "c"), ()))
@example((ChunkKeys(0, ".", ""), ()))
@example((ChunkKeys(3, ".", ""), (0, 10, 0)))
def test_format_parse_round_trip(case: tuple[ChunkKeys, tuple[int, ...]]) -> None:
    ck, index = case
    key = ck.format(index)
    assert ck.parse(key) == index
    assert KeyLayout(ck).to_mnesia(key) == index
    assert KeyLayout(ck).from_mnesia(index) == key


@pytest.mark.parametrize(
    ("ck", "key", "index"),
    [
        (ChunkKeys(2, "/", "c"), "c/0/1", (0, 1)),
        (ChunkKeys(2, ".", "c"), "c.0.1", (0, 1)),
        (ChunkKeys(2, ".", ""), "0.1", (0, 1)),
        (ChunkKeys(2, "/", ""), "0/1", (0, 1)),
        (ChunkKeys(0, "/", "c"), "c", ()),
        (ChunkKeys(0, ".", ""), "0", ()),
        (ChunkKeys(1, "/", "c"), "c/12345678901234567890", (12345678901234567890,)),
    ],
)
def test_spellings_of_the_seed_schema(ck: ChunkKeys, key: str, index: tuple[int, ...]) -> None:
    assert ck.format(index) == key and ck.parse(key) == index


@pytest.mark.parametrize(
    ("ck", "key"),
    [
        (ChunkKeys(2, "/", "c"), "c/01/0"),  # leading zero
        (ChunkKeys(2, "/", "c"), "c/0/00"),
        (ChunkKeys(1, ".", ""), "007"),
        (ChunkKeys(2, "/", "c"), "c.0.0"),  # the other separator
        (ChunkKeys(2, ".", "c"), "c/0/0"),
        (ChunkKeys(2, "/", "c"), "0/0"),  # prefix missing
        (ChunkKeys(2, "/", ""), "c/0/0"),  # prefix where there is none
        (ChunkKeys(2, "/", "c"), "c/0"),  # too few
        (ChunkKeys(2, "/", "c"), "c/0/0/0"),  # too many
        (ChunkKeys(2, "/", "c"), "c//0"),
        (ChunkKeys(2, "/", "c"), "c/0/"),
        (ChunkKeys(2, "/", "c"), "c/-1/0"),
        (ChunkKeys(2, "/", "c"), "c/+1/0"),
        (ChunkKeys(2, "/", "c"), "c/ 1/0"),
        (ChunkKeys(2, "/", "c"), "c/1_0/0"),  # int() would take it
        (ChunkKeys(1, "/", "c"), "c/\u0661"),  # an Arabic-Indic one: isdigit(), not ASCII
        (ChunkKeys(1, "/", "c"), "c/\u00b2"),  # superscript two: isdigit(), int() refuses
        (ChunkKeys(2, "/", "c"), "C/0/0"),
        (ChunkKeys(0, "/", "c"), "c/0"),
        (ChunkKeys(0, "/", "c"), "0"),
        (ChunkKeys(0, "/", "c"), ""),
        (ChunkKeys(0, ".", ""), "c"),
        (ChunkKeys(0, ".", ""), "00"),
        (ChunkKeys(1, "/", "c"), ".zattrs"),
        (ChunkKeys(1, "/", "c"), "c/0/zarr.json"),
    ],
)
def test_non_canonical_keys_parse_to_none(ck: ChunkKeys, key: str) -> None:
    assert ck.parse(key) is None
    assert KeyLayout(ck).to_mnesia(key) == key.encode()  # stays a path record


@given(encodings, st.text(alphabet="c0123456789./-+ _", max_size=20))
def test_whatever_parses_is_the_canonical_spelling(ck: ChunkKeys, key: str) -> None:
    index = ck.parse(key)
    if index is not None:
        assert len(index) == ck.ndim and ck.format(index) == key


@given(keys_and_indices(), st.integers(0, len(str(10**30))))
def test_zero_padding_any_coordinate_is_refused(
    case: tuple[ChunkKeys, tuple[int, ...]], which: int
) -> None:
    ck, index = case
    if not index:
        return
    padded = list(map(str, index))
    padded[which % len(padded)] = "0" + padded[which % len(padded)]
    body = ck.separator.join(padded)
    key = f"{ck.prefix}{ck.separator}{body}" if ck.prefix else body
    assert ck.parse(key) is None


@given(st.one_of(st.none(), encodings), st.text())
def test_every_key_survives_the_mnesia_layout(ck: ChunkKeys | None, key: str) -> None:
    layout = KeyLayout(ck)
    assert layout.from_mnesia(layout.to_mnesia(key)) == key


def test_metadata_keys() -> None:
    layout = KeyLayout(ChunkKeys(1, "/", "c"))
    assert layout.to_mnesia(ROOT_METADATA_KEY) == METADATA
    assert layout.from_mnesia(METADATA) == ROOT_METADATA_KEY
    assert layout.to_mnesia(V2_ARRAY_METADATA_KEY) == b".zarray"
    assert KeyLayout(None).from_mnesia((0,)) is None  # no encoding known: cannot name it
    assert layout.from_mnesia((0, 0)) is None  # wrong rank


def _doc(**meta: object) -> bytes:
    return json.dumps(meta).encode()


@pytest.mark.parametrize(
    ("key", "document", "expected"),
    [
        (
            ROOT_METADATA_KEY,
            _doc(zarr_format=3, node_type="array", shape=[4, 4]),
            ChunkKeys(2, "/", "c"),
        ),
        (
            ROOT_METADATA_KEY,
            _doc(
                zarr_format=3,
                node_type="array",
                shape=[4],
                chunk_key_encoding={"name": "default", "configuration": {"separator": "."}},
            ),
            ChunkKeys(1, ".", "c"),
        ),
        (
            ROOT_METADATA_KEY,
            _doc(zarr_format=3, node_type="array", shape=[], chunk_key_encoding={"name": "v2"}),
            ChunkKeys(0, ".", ""),
        ),
        (V2_ARRAY_METADATA_KEY, _doc(zarr_format=2, shape=[3, 3, 3]), ChunkKeys(3, ".", "")),
        (
            V2_ARRAY_METADATA_KEY,
            _doc(zarr_format=2, shape=[3], dimension_separator="/"),
            ChunkKeys(1, "/", ""),
        ),
        (ROOT_METADATA_KEY, _doc(zarr_format=3, node_type="group"), None),
        (ROOT_METADATA_KEY, _doc(zarr_format=2, shape=[3]), None),
        (ROOT_METADATA_KEY, b"not json", None),
        (ROOT_METADATA_KEY, b"\xff", None),
        (ROOT_METADATA_KEY, b"[1, 2]", None),
        (ROOT_METADATA_KEY, _doc(zarr_format=3, node_type="array"), None),  # no shape
        ("grp/zarr.json", _doc(zarr_format=3, node_type="array", shape=[1]), None),
    ],
)
def test_chunk_keys_from_metadata(key: str, document: bytes, expected: ChunkKeys | None) -> None:
    assert chunk_keys_from_metadata(key, document) == expected
    assert chunk_keys_from_metadata(key, memoryview(document)) == expected
