"""Zarr keys <-> Mnesia keys (pyrlang_zarr.keys), pure: no Erlang.

- Chunk keys <-> integer tuples (:class:`ChunkKeys`): every chunk key of ranks 0-5 round-trips
  for both separators and both prefixes, and only the canonical spelling of an index parses.
- The layout (:class:`KeyLayout` over a :class:`Root`, the metadata records as read): a chunk
  key maps to ExZarr's record ``{Id, {chunk, Idx}}`` and back, this project's earlier
  ``{Id, Idx}`` records are still named, every other key stays a path record, and every key
  a store writes is named back as itself.
- The layout is read from metadata documents: ``zarr.json`` (v3) and ``.zarray`` (v2), in
  ExZarr's ``{Id, metadata}`` record or an earlier ``{Id, <<".zarray">>}`` path record.
- Against zarr's own chunk key encodings, for every rank up to 5: the layout read from a
  metadata document zarr wrote names chunk ``(I0, .., In)`` exactly as zarr does, and maps
  that name to the index ``(I0, .., In)``, in that order: an index swapped or dropped shows.
"""

from __future__ import annotations

import functools
import json
from typing import Any

import pytest
import zarr
from hypothesis import example, given, settings
from hypothesis import strategies as st
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

from pyrlang_zarr.keys import (
    METADATA,
    METADATA_NAMES,
    ROOT_METADATA_KEY,
    V2_ARRAY_METADATA_KEY,
    ChunkKeys,
    KeyLayout,
    Root,
    chunk_keys_from_metadata,
    metadata_name_of,
    metadata_plan,
    other_metadata_name,
    root_after,
    root_of,
)
from pyrlang_zarr.term import Atom

Index = tuple[int, ...]


def _doc(**meta: object) -> bytes:
    return json.dumps(meta).encode()


def chunk(index: Index) -> tuple[Atom, Index]:
    """``X`` of ExZarr's chunk record ``{Id, {chunk, Idx}}``."""
    return (Atom("chunk"), index)


def assert_chunk_record(x: object, index: Index) -> None:
    """``x`` is ExZarr's ``{chunk, Idx}`` for ``index``. An :class:`Atom` is a ``str`` and
    ``0 == 0.0``, so equality alone would also take ``("chunk", ...)`` (an Erlang string, not
    the atom) or float indices: the types are checked too."""
    assert x == chunk(index)
    assert isinstance(x, tuple) and type(x[0]) is Atom and type(x[1]) is tuple
    assert all(type(i) is int for i in x[1])


def assert_metadata_record(x: object) -> None:
    """``x`` is ExZarr's ``metadata`` atom (not a string that equals it)."""
    assert x == Atom("metadata") and type(x) is Atom


def roots_spelling(ck: ChunkKeys) -> list[Root]:
    """Every kind of root metadata whose chunk keys are spelt as ``ck`` says: a v3
    ``zarr.json`` in ``{Id, metadata}`` (default encoding for prefix ``c``, the v2 encoding
    for none) and, for the prefix-less spellings, a v2 ``.zarray`` in ``{Id, metadata}`` and
    in an earlier ``{Id, <<".zarray">>}`` path record with no metadata record."""
    shape = [3] * ck.ndim
    name = "default" if ck.prefix == "c" else "v2"
    encoding = {"name": name, "configuration": {"separator": ck.separator}}
    v3 = _doc(zarr_format=3, node_type="array", shape=shape, chunk_key_encoding=encoding)
    roots = [Root(v3)]
    if not ck.prefix:
        v2 = _doc(zarr_format=2, shape=shape, dimension_separator=ck.separator)
        roots += [Root(v2), Root(None, v2)]
    return roots


encodings = st.builds(
    ChunkKeys,
    ndim=st.integers(0, 5),
    separator=st.sampled_from(["/", "."]),
    prefix=st.sampled_from(["c", ""]),
)
coordinates = st.integers(0, 10**30)  # Mnesia keys are Erlang integers: no upper bound
roots = st.one_of(
    st.just(Root(None)), encodings.flatmap(lambda ck: st.sampled_from(roots_spelling(ck)))
)


@st.composite
def keys_and_indices(draw: st.DrawFn) -> tuple[ChunkKeys, Index]:
    ck = draw(encodings)
    return ck, tuple(draw(st.lists(coordinates, min_size=ck.ndim, max_size=ck.ndim)))


@st.composite
def layouts_and_indices(draw: st.DrawFn) -> tuple[ChunkKeys, Root, Index]:
    ck, index = draw(keys_and_indices())
    return ck, draw(st.sampled_from(roots_spelling(ck))), index


# ---------------------------------------------------------------------------------------
# ChunkKeys: spellings <-> indices


@given(layouts_and_indices())
@example((ChunkKeys(0, "/", "c"), roots_spelling(ChunkKeys(0, "/", "c"))[0], ()))
@example((ChunkKeys(0, ".", ""), roots_spelling(ChunkKeys(0, ".", ""))[1], ()))
@example((ChunkKeys(3, ".", ""), roots_spelling(ChunkKeys(3, ".", ""))[2], (0, 10, 0)))
@example((ChunkKeys(5, "/", "c"), roots_spelling(ChunkKeys(5, "/", "c"))[0], (1, 0, 2, 0, 3)))
def test_format_parse_round_trip(case: tuple[ChunkKeys, Root, Index]) -> None:
    ck, root, index = case
    key = ck.format(index)
    assert ck.parse(key) == index
    layout = KeyLayout(root)
    assert layout.chunks == ck
    x = layout.to_mnesia(key)
    assert_chunk_record(x, index)  # ExZarr's {Id, {chunk, Idx}}
    assert layout.from_mnesia(x) == key
    assert layout.from_mnesia(index) == key  # this project's earlier {Id, Idx} records
    # a read serves the first present of these, a delete deletes them all
    assert root.candidates(key) == (chunk(index), index, key.encode())


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
def test_spellings_of_the_seed_schema(ck: ChunkKeys, key: str, index: Index) -> None:
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
    for root in roots_spelling(ck):
        assert KeyLayout(root).chunks == ck
        assert KeyLayout(root).to_mnesia(key) == key.encode()  # stays a path record
        assert root.candidates(key) == (key.encode(),)  # and no chunk record is consulted


@given(encodings, st.text(alphabet="c0123456789./-+ _", max_size=20))
def test_whatever_parses_is_the_canonical_spelling(ck: ChunkKeys, key: str) -> None:
    index = ck.parse(key)
    if index is not None:
        assert len(index) == ck.ndim and ck.format(index) == key


@given(keys_and_indices(), st.integers(0, len(str(10**30))))
def test_zero_padding_any_coordinate_is_refused(case: tuple[ChunkKeys, Index], which: int) -> None:
    ck, index = case
    if not index:
        return
    padded = list(map(str, index))
    padded[which % len(padded)] = "0" + padded[which % len(padded)]
    body = ck.separator.join(padded)
    key = f"{ck.prefix}{ck.separator}{body}" if ck.prefix else body
    assert ck.parse(key) is None


# ---------------------------------------------------------------------------------------
# KeyLayout: zarr keys <-> records


#: A document of each metadata key's kind (what :func:`metadata_name_of` serves it as).
DOCUMENT_OF_KIND = {
    ROOT_METADATA_KEY: _doc(zarr_format=3, node_type="array", shape=[2]),
    V2_ARRAY_METADATA_KEY: _doc(zarr_format=2, shape=[2]),
}


def assert_survives(root: Root, key: str) -> None:
    """The record a write of ``key`` uses is named ``key`` again. A metadata record is named
    by the document it holds, so a metadata key is checked once a document of its kind is
    written where :meth:`KeyLayout.to_mnesia` says (as :func:`metadata_plan` writes it)."""
    layout = KeyLayout(root)
    x = layout.to_mnesia(key)
    if key in METADATA_NAMES:
        document = DOCUMENT_OF_KIND[key]
        assert metadata_name_of(document) == key
        plan = metadata_plan(key, document, root.m, None)
        assert ("write", x, document) in plan
        layout = KeyLayout(root_after(root, key, plan))
    assert layout.from_mnesia(x) == key


@given(roots, st.text())
def test_every_key_survives_the_mnesia_layout(root: Root, key: str) -> None:
    assert_survives(root, key)


@pytest.mark.parametrize("key", METADATA_NAMES)
@pytest.mark.parametrize(
    "root",
    [Root(None), *roots_spelling(ChunkKeys(2, "/", "c")), *roots_spelling(ChunkKeys(2, ".", ""))],
)
def test_metadata_keys_survive_the_mnesia_layout(root: Root, key: str) -> None:
    assert_survives(root, key)


def test_metadata_keys() -> None:
    """The root metadata is ExZarr's ``{Id, metadata}`` record, served as the key its
    document's kind says; the other metadata key is a path record."""
    v3 = Root(_doc(zarr_format=3, node_type="array", shape=[4]))
    layout = KeyLayout(v3)
    assert layout.chunks == ChunkKeys(1, "/", "c")
    assert_metadata_record(layout.to_mnesia(ROOT_METADATA_KEY))
    assert layout.from_mnesia(METADATA) == ROOT_METADATA_KEY
    assert layout.to_mnesia(V2_ARRAY_METADATA_KEY) == b".zarray"
    assert layout.from_mnesia(b".zarray") == V2_ARRAY_METADATA_KEY

    v2 = KeyLayout(Root(_doc(zarr_format=2, shape=[4])))
    assert v2.chunks == ChunkKeys(1, ".", "")
    assert_metadata_record(v2.to_mnesia(V2_ARRAY_METADATA_KEY))
    assert v2.from_mnesia(METADATA) == V2_ARRAY_METADATA_KEY
    assert v2.to_mnesia(ROOT_METADATA_KEY) == b"zarr.json"

    empty = KeyLayout(None)  # no metadata record: either document would go into it
    assert empty.chunks is None
    assert_metadata_record(empty.to_mnesia(ROOT_METADATA_KEY))
    assert_metadata_record(empty.to_mnesia(V2_ARRAY_METADATA_KEY))
    assert empty.from_mnesia(METADATA) is None  # no record, no name
    assert empty.from_mnesia((0,)) is None  # no encoding known: cannot name it
    assert empty.from_mnesia(chunk((0,))) is None
    assert layout.from_mnesia((0, 0)) is None  # wrong rank
    assert layout.from_mnesia(chunk((0, 0))) is None


@pytest.mark.parametrize(
    "x",
    [
        chunk((-1,)),  # not an index
        (Atom("chunk"), (0.0,)),
        (Atom("chunk"), [0]),
        (Atom("chunk"), Atom("foo")),
        (Atom("chunk"), (0, Atom("x"))),
        (Atom("chunks"), (0,)),
        (Atom("chunk"), (0,), (1,)),
        42,
        (Atom("a"), Atom("b")),
        (True,),  # an Erlang atom true, not the integer 1
        (0.0,),
    ],
)
def test_records_of_other_forms_name_nothing(x: Any) -> None:
    """Records the store cannot name are never listed (keys.py's docstring)."""
    assert KeyLayout(Root(_doc(zarr_format=3, node_type="array", shape=[4]))).from_mnesia(x) is None


def test_record_names_that_are_not_utf8_still_list() -> None:
    """A record written by someone else under a key that is not UTF-8 is listed (with
    surrogate escapes, as Python names undecodable file names), not an error."""
    assert KeyLayout(None).from_mnesia(b"caf\xe9") == "caf\udce9"


# ---------------------------------------------------------------------------------------
# The layout read from metadata documents


GROUP = b'{"zarr_format": 3, "node_type": "group"}'
V3_4x4 = b'{"zarr_format": 3, "node_type": "array", "shape": [4, 4]}'


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
        # each encoding's default separator
        (ROOT_METADATA_KEY, V3_4x4, ChunkKeys(2, "/", "c")),
        (
            ROOT_METADATA_KEY,
            V3_4x4[:-1] + b', "chunk_key_encoding": {"name": "v2"}}',
            ChunkKeys(2, ".", ""),
        ),
        (
            V2_ARRAY_METADATA_KEY,
            b'{"zarr_format": 2, "shape": [4, 4], "dimension_separator": null}',
            ChunkKeys(2, ".", ""),
        ),
        (  # the encoding by name alone
            ROOT_METADATA_KEY,
            V3_4x4[:-1] + b', "chunk_key_encoding": "default"}',
            ChunkKeys(2, "/", "c"),
        ),
        (V2_ARRAY_METADATA_KEY, _doc(zarr_format=2, shape=[3, 3, 3]), ChunkKeys(3, ".", "")),
        (
            V2_ARRAY_METADATA_KEY,
            _doc(zarr_format=2, shape=[3], dimension_separator="/"),
            ChunkKeys(1, "/", ""),
        ),
        # documents that name no chunk layout
        (ROOT_METADATA_KEY, _doc(zarr_format=3, node_type="group"), None),
        (ROOT_METADATA_KEY, GROUP, None),
        (ROOT_METADATA_KEY, _doc(zarr_format=2, shape=[3]), None),
        (ROOT_METADATA_KEY, b'{"zarr_format": 2, "node_type": "array", "shape": [1]}', None),
        (ROOT_METADATA_KEY, b"not json", None),
        (ROOT_METADATA_KEY, b"\xff", None),
        (ROOT_METADATA_KEY, b"\xff\xfe", None),
        (ROOT_METADATA_KEY, b"[1, 2]", None),
        (ROOT_METADATA_KEY, _doc(zarr_format=3, node_type="array"), None),  # no shape
        (
            ROOT_METADATA_KEY,
            b'{"zarr_format": 3, "node_type": "array", "shape": [1],'
            b' "chunk_key_encoding": {"name": "other"}}',
            None,
        ),
        (V2_ARRAY_METADATA_KEY, b'{"zarr_format": 3, "shape": [1]}', None),
        (V2_ARRAY_METADATA_KEY, b'{"zarr_format": 2}', None),
        ("grp/zarr.json", _doc(zarr_format=3, node_type="array", shape=[1]), None),
        (".zattrs", b'{"zarr_format": 2, "shape": [1]}', None),
    ],
)
def test_chunk_keys_from_metadata(key: str, document: bytes, expected: ChunkKeys | None) -> None:
    assert chunk_keys_from_metadata(key, document) == expected
    assert chunk_keys_from_metadata(key, memoryview(document)) == expected
    # the layout of a store whose records hold the document where it is served as ``key``
    if key in METADATA_NAMES and metadata_name_of(document) == key:
        assert KeyLayout(Root(document)).chunks == expected
    if key == V2_ARRAY_METADATA_KEY:  # an earlier .zarray path record, no metadata record
        assert KeyLayout(Root(None, document)).chunks == expected


def test_the_metadata_record_wins_over_an_earlier_zarray_record() -> None:
    v3 = _doc(zarr_format=3, node_type="array", shape=[4, 4])
    v2 = _doc(zarr_format=2, shape=[4])
    assert KeyLayout(Root(v3, v2)).chunks == ChunkKeys(2, "/", "c")
    assert KeyLayout(Root(GROUP, v2)).chunks is None


# ---------------------------------------------------------------------------------------
# Against zarr's own chunk key encodings


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


def layouts_of(rank: int, encoding: str) -> tuple[list[KeyLayout], Any]:
    """The layouts of a store holding zarr's document: in ``{Id, metadata}`` and, for a v2
    ``.zarray``, in an earlier path record too; and zarr's metadata object."""
    key, doc, meta = written_by_zarr(rank, encoding)
    layouts = [KeyLayout(Root(doc))]
    if key == V2_ARRAY_METADATA_KEY:
        layouts.append(KeyLayout(Root(None, doc)))
    return layouts, meta


@settings(max_examples=25, deadline=None)
@given(data=st.data())
@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("rank", range(6))
def test_chunk_names_and_tuples_agree_with_zarr(rank: int, encoding: str, data: Any) -> None:
    layouts, meta = layouts_of(rank, encoding)
    index = tuple(data.draw(st.lists(st.integers(0, 10**6), min_size=rank, max_size=rank)))
    name = meta.encode_chunk_key(index)
    for layout in layouts:
        x = layout.to_mnesia(name)
        assert_chunk_record(x, index)
        assert layout.from_mnesia(x) == name
        assert layout.from_mnesia(index) == name  # this project's earlier {Id, Idx} records


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_other_keys_stay_paths(encoding: str) -> None:
    key, doc, _ = written_by_zarr(3, encoding)
    layouts, meta = layouts_of(3, encoding)
    layout = KeyLayout(Root(doc))
    # the metadata zarr wrote is ExZarr's {Id, metadata}, served as the key zarr wrote it to
    assert_metadata_record(layout.to_mnesia(key))
    assert layout.from_mnesia(METADATA) == key
    other = other_metadata_name(key)
    assert layout.to_mnesia(other) == other.encode()
    assert layout.from_mnesia(other.encode()) == other
    name = meta.encode_chunk_key((1, 2, 3))
    near = [name + "/0", "grp/" + name, name.replace("1", "01", 1), ".zattrs"]
    for each in layouts:
        for k in near:  # not a chunk of this rank-3 array: kept as its path
            assert each.to_mnesia(k) == k.encode()
            assert each.from_mnesia(k.encode()) == k
        assert each.from_mnesia((1, 2)) is None  # a tuple of another rank names nothing
        assert each.from_mnesia(chunk((1, 2))) is None


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_a_0d_array_has_one_chunk_name(encoding: str) -> None:
    layouts, meta = layouts_of(0, encoding)
    name = meta.encode_chunk_key(())
    for layout in layouts:
        assert_chunk_record(layout.to_mnesia(name), ())
        assert layout.from_mnesia(chunk(())) == name
        for key in ["c/0", "0/0", "x", ".zattrs", "grp/c", name + "/"]:
            assert layout.to_mnesia(key) == key.encode()


def test_a_roots_shape_and_chunk_grid_for_a_watch() -> None:
    """What a watch takes from changed metadata: the shape and the outer grid (shards when
    sharded), in either record and either format; nothing from a group or a broken text."""
    from pyrlang_zarr.watch import shape_and_grid

    v3 = {
        "zarr_format": 3,
        "node_type": "array",
        "shape": [60, 45],
        "data_type": "int32",
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [20, 15]}},
        "codecs": [{"name": "sharding_indexed", "configuration": {"chunk_shape": [10, 5]}}],
    }
    v2 = {"zarr_format": 2, "shape": [7], "chunks": [3], "dtype": "<f8"}
    assert shape_and_grid(root_of(json.dumps(v3).encode())) == ((60, 45), (20, 15))
    assert shape_and_grid(root_of(json.dumps(v2).encode())) == ((7,), (3,))
    assert shape_and_grid(root_of(None, json.dumps(v2).encode())) == ((7,), (3,))
    group = {"zarr_format": 3, "node_type": "group"}
    assert shape_and_grid(root_of(json.dumps(group).encode())) is None
    assert shape_and_grid(root_of(b"{not json")) is None
    assert shape_and_grid(root_of(None)) is None
    bad = {**v2, "chunks": [0]}
    assert shape_and_grid(root_of(json.dumps(bad).encode())) is None
