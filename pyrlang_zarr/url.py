"""``mnesia://NODE/TABLE/ARRAY_ID`` URLs, for zarr, xarray, dask and anything fsspec opens.

``NODE`` is written ``name@host``; ``TABLE`` the Mnesia table; ``ARRAY_ID`` the array's id
(``%2F`` for a ``/`` in it). A path after the id reaches into the store (``.../survey/temp``
is the array ``temp`` of the group stored under ``survey``). Other settings are query
parameters or ``storage_options`` (the latter win)::

    mnesia://node1@host/zarr_storage/exp1?nodes=node1@host,node2@host&majority=true

========================  ===================================================================
``nodes``                 replicas, comma-separated: calls fail over to them, and a write
                          sets Mnesia and the table up on them first (as ``create`` does)
``ram_copies``            a table created by a write gets RAM replicas (``true``/``false``)
``majority``, ``durable`` as for :func:`pyrlang_zarr.create`
``fragments``             a table created by a write gets N fragments over ``nodes``
``frag_copies``           ... each fragment on this many of them (default 1)
``disc_only_copies``      a table created by a write keeps its records on disc only
``timeout``               seconds per call (``none``: no limit); default 60
``cookie_file``           a file holding the cookie (owner-only access, like erl's)
``cookie``                ``storage_options`` only, never in a URL (URLs end up in logs);
                          default: ``ERLANG_COOKIE``, ``RELEASE_COOKIE``, ``~/.erlang.cookie``
``pickle_cookie``         ``true``: pickles of the file system and its stores carry the
                          cookie (by default they do not: a worker finds it as erl does)
``tls_optfile``           the cluster runs TLS distribution: its ``ssl_dist_optfile`` (or a
                          client's); default ``$PYRLANG_ZARR_SSL_DIST_OPTFILE``
``tls``                   ``storage_options`` only: a ``TlsConfig`` (or ``False``: plain TCP)
========================  ===================================================================

With the package installed, the ``fsspec.specs`` entry point registers
:class:`MnesiaFileSystem` for ``mnesia``, so ``zarr.open("mnesia://...")``,
``xarray.open_zarr("mnesia://...")`` and ``dask.array.from_zarr("mnesia://...")`` work with
nothing imported first. zarr wraps it in its ``FsspecStore``; reads of byte ranges become
``MnesiaStore`` range reads, cut on the server. Reads never set anything up on the cluster.
"""

from __future__ import annotations

import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from fsspec.asyn import AsyncFileSystem
from zarr.abc.store import OffsetByteRequest, RangeByteRequest, SuffixByteRequest
from zarr.core.buffer import Buffer, default_buffer_prototype

from pyrlang_zarr.store import MnesiaStore

__all__ = [
    "MnesiaFileSystem",
    "MnesiaURL",
    "parse_url",
    "read_cookie_file",
    "store_from_url",
    "url_of",
]

SCHEME = "mnesia"
PREFIX = f"{SCHEME}://"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
OPTIONS = (
    "nodes",
    "ram_copies",
    "majority",
    "durable",
    "fragments",
    "frag_copies",
    "disc_only_copies",
    "timeout",
    "cookie_file",
    "pickle_cookie",
    "tls_optfile",
)


def read_cookie_file(path: str | Path) -> str:
    """The cookie in ``path``, which (like ``~/.erlang.cookie`` for erl) only its owner may
    access."""
    p = Path(path).expanduser()
    try:
        mode = p.stat().st_mode
    except FileNotFoundError:
        raise FileNotFoundError(f"cookie file {p} does not exist") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise PermissionError(
            f"cookie file {p} must be accessible by its owner only: chmod 400 {p}"
        )
    cookie = p.read_text(encoding="latin-1").strip()
    if not cookie:
        raise ValueError(f"cookie file {p} is empty")
    return cookie


def _flag(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"{name}={value!r}: expected true or false")


def _options(raw: dict[str, Any]) -> dict[str, Any]:
    """URL/storage options -> keyword arguments of :class:`MnesiaStore` (cookie resolved)."""
    out: dict[str, Any] = {}
    for name, value in raw.items():
        if name == "nodes":
            if isinstance(value, str):
                value = [n for n in (unquote(x).strip() for x in value.split(",")) if n]
            out["nodes"] = (list(value) or None) if value is not None else None
        elif name in ("ram_copies", "majority", "durable", "pickle_cookie", "disc_only_copies"):
            out[name] = _flag(name, value)
        elif name in ("fragments", "frag_copies"):
            if value is not None:
                try:
                    out[name] = value if isinstance(value, int) else int(str(value))
                except ValueError:
                    raise ValueError(f"{name}={value!r}: expected a whole number") from None
        elif name == "timeout":
            if value is None or str(value).lower() == "none":
                out["timeout"] = None
            else:
                try:
                    out["timeout"] = float(value)
                except ValueError:
                    raise ValueError(f"timeout={value!r}: expected seconds or none") from None
                if not out["timeout"] > 0:
                    raise ValueError(f"timeout={value!r}: must be positive")
        elif name == "cookie_file":
            if value is not None and "cookie" not in raw:
                out["cookie"] = read_cookie_file(value)
        elif name == "cookie":
            if value is not None:
                out["cookie"] = value
        elif name == "tls_optfile":
            if value is not None and raw.get("tls") is None:
                out["tls"] = str(value)  # read (and checked) by StoreSettings
        elif name == "tls":
            if value is not None:
                out["tls"] = value
        else:
            raise TypeError(
                f"unknown mnesia:// option {name!r}; known: {', '.join(OPTIONS)} (and "
                "cookie and tls, in storage_options only)"
            )
    return out


def _query(text: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for item in text.split("&"):
        if not item:
            continue
        name, sep, value = item.partition("=")
        name = unquote(name)
        if name == "cookie":
            raise ValueError(
                "a cookie does not go in a URL (URLs end up in logs and shell history): use "
                "storage_options={'cookie': ...}, cookie_file=PATH, ERLANG_COOKIE or "
                "~/.erlang.cookie"
            )
        if name not in OPTIONS:
            raise ValueError(
                f"unknown query parameter {name!r} in a mnesia:// URL; known: {OPTIONS}"
            )
        found[name] = unquote(value) if sep else "true"
    return found


@dataclass(frozen=True)
class MnesiaURL:
    """A parsed ``mnesia://NODE/TABLE/ARRAY_ID[/PATH][?QUERY]``."""

    node: str
    table: str | None = None
    array_id: str | None = None
    path: str = ""
    query: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        text = PREFIX + quote(self.node, safe="@")
        for part in (self.table, self.array_id):
            if part is None:
                return text
            text += "/" + quote(part, safe="")
        if self.path:
            text += "/" + self.path
        return text

    def store(self, *, read_only: bool = False, **overrides: Any) -> MnesiaStore:
        """The :class:`MnesiaStore` of the array (``path`` not included: see :attr:`path`)."""
        if self.table is None or self.array_id is None:
            raise ValueError(f"{self} names no array: expected mnesia://NODE/TABLE/ARRAY_ID")
        options = _options({**self.query, **overrides})
        return MnesiaStore(
            self.array_id, node=self.node, table_name=self.table, read_only=read_only, **options
        )


def _split(path: str) -> tuple[str, dict[str, str]]:
    """``mnesia://a/b?q`` or ``a/b?q`` -> (``a/b``, query)."""
    if path.startswith(PREFIX):
        path = path[len(PREFIX) :]
    elif "://" in path:
        raise ValueError(f"not a mnesia:// URL: {path!r}")
    path, _, query = path.partition("?")
    return path.strip("/"), _query(query)


def parse_url(url: str) -> MnesiaURL:
    """Parse a ``mnesia://`` URL; ``ValueError`` with what is wrong when it is not one."""
    if not isinstance(url, str) or not url.startswith(PREFIX):
        raise ValueError(f"expected mnesia://NODE/TABLE/ARRAY_ID, got {url!r}")
    path, query = _split(url)
    parts = path.split("/") if path else []
    if not parts or not parts[0] or url[len(PREFIX) :].startswith("/"):
        raise ValueError(f"{url!r} names no node: expected mnesia://name@host/TABLE/ARRAY_ID")
    node = unquote(parts[0])
    if node.count("@") != 1 or node.startswith("@") or node.endswith("@"):
        raise ValueError(f"bad node {node!r} in {url!r}: write it name@host, e.g. node1@myhost")
    table = unquote(parts[1]) if len(parts) > 1 else None
    array_id = unquote(parts[2]) if len(parts) > 2 else None
    if table == "" or array_id == "":
        raise ValueError(f"empty table or array id in {url!r}")
    return MnesiaURL(node, table, array_id, "/".join(parts[3:]), query)


def url_of(store: MnesiaStore) -> str:
    """The URL of ``store``'s array (no query: replicas and cookie are not part of it)."""
    return str(MnesiaURL(store.node, store.table_name, store.array_id))


def store_from_url(
    url: str, *, read_only: bool = False, **storage_options: Any
) -> tuple[MnesiaStore, str]:
    """The store a ``mnesia://`` URL names, and the path inside it (``""`` for the root)."""
    parsed = parse_url(url)
    return parsed.store(read_only=read_only, **storage_options), parsed.path


class MnesiaFileSystem(AsyncFileSystem):  # type: ignore[misc]  # fsspec is untyped
    """fsspec file system of the ``mnesia`` protocol: paths are ``NODE/TABLE/ARRAY_ID/KEY``.

    One level per part: ``ls("node1@h")`` lists the node's Mnesia tables,
    ``ls("node1@h/zarr_storage")`` the arrays in the table, below that the keys of the
    array's store. Options (``nodes``, ``cookie``, ...) apply to every path.
    """

    protocol = SCHEME
    root_marker = ""
    async_impl = True

    def __init__(
        self,
        *args: Any,
        cookie: str | None = None,
        cookie_file: str | None = None,
        nodes: Sequence[str] | str | None = None,
        ram_copies: bool | str = False,
        majority: bool | str = False,
        durable: bool | str = False,
        timeout: float | str | None = 60.0,
        pickle_cookie: bool | str = False,
        fragments: int | str | None = None,
        frag_copies: int | str | None = None,
        disc_only_copies: bool | str = False,
        tls: Any = None,
        tls_optfile: str | None = None,
        asynchronous: bool = False,
        loop: Any = None,
        batch_size: int | None = None,
        **kwargs: Any,
    ) -> None:
        known_fsspec = {"use_listings_cache", "listings_expiry_time", "max_paths"}
        unknown = set(kwargs) - known_fsspec
        if unknown:
            raise TypeError(
                f"unknown mnesia:// option(s) {sorted(unknown)}; known: {', '.join(OPTIONS)}, "
                "cookie, tls"
            )
        super().__init__(*args, asynchronous=asynchronous, loop=loop, batch_size=batch_size)
        raw: dict[str, Any] = {
            "nodes": nodes,
            "ram_copies": ram_copies,
            "majority": majority,
            "durable": durable,
            "fragments": fragments,
            "frag_copies": frag_copies,
            "disc_only_copies": disc_only_copies,
            "timeout": timeout,
            "cookie_file": cookie_file,
            "cookie": cookie,
            "pickle_cookie": pickle_cookie,
            "tls_optfile": tls_optfile,
            "tls": tls,
        }
        self._store_options = _options(raw)
        self._stores: dict[tuple[str, str, str, bool], MnesiaStore] = {}

    def __repr__(self) -> str:  # never the cookie
        nodes = self._store_options.get("nodes")
        return f"<MnesiaFileSystem nodes={nodes}>"

    def __reduce__(self) -> tuple[Any, ...]:
        """As fsspec pickles a file system (its constructor's arguments), without the
        cookie unless ``pickle_cookie``; a ``cookie_file`` path stays (the worker reads it)."""
        from fsspec.spec import make_instance

        options = dict(self.storage_options)
        if not self._store_options.get("pickle_cookie"):
            options.pop("cookie", None)
        return make_instance, (type(self), self.storage_args, options)

    # -- paths ----------------------------------------------------------------------------
    @classmethod
    def _strip_protocol(cls, path: Any) -> Any:
        if isinstance(path, list):
            return [cls._strip_protocol(p) for p in path]
        text = str(path)
        if text.startswith(PREFIX):
            text = text[len(PREFIX) :]
        return text.partition("?")[0].strip("/")

    @staticmethod
    def _get_kwargs_from_urls(path: str) -> dict[str, Any]:
        return dict(_split(path)[1]) if "?" in path else {}

    def unstrip_protocol(self, name: str) -> str:
        return PREFIX + str(self._strip_protocol(name))

    def _where(self, path: str) -> tuple[list[str], str]:
        """(``[node, table, array_id]`` as far as given, decoded; the key inside the store)."""
        parts = self._strip_protocol(path).split("/")
        head = [unquote(p) for p in parts[:3] if p]
        return head, "/".join(parts[3:])

    def _store(self, path: str, *, write: bool = False) -> tuple[MnesiaStore, str]:
        head, key = self._where(path)
        if len(head) < 3:
            raise IsADirectoryError(f"{path!r} is not inside an array: expected NODE/TABLE/ID/KEY")
        node, table, array_id = head
        cache_key = (node, table, array_id, write)
        store = self._stores.get(cache_key)
        if store is None:
            store = self._stores[cache_key] = MnesiaStore(
                array_id,
                node=node,
                table_name=table,
                read_only=not write,  # reads never set anything up on the cluster
                **self._store_options,
            )
        return store, key

    # -- reads ----------------------------------------------------------------------------
    async def _cat_file(
        self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any
    ) -> bytes:
        store, key = self._store(path)
        if not key:
            raise IsADirectoryError(path)
        proto = default_buffer_prototype()
        if start is None and end is None:
            buf = await store.get(key, proto)
        elif end is None:
            assert start is not None
            request = OffsetByteRequest(start) if start >= 0 else SuffixByteRequest(-start)
            buf = await store.get(key, proto, request)
        elif (start or 0) >= 0 and end >= 0:
            buf = await store.get(key, proto, RangeByteRequest(start or 0, max(end, start or 0)))
        else:  # negative ends: rare, cut here
            whole = await store.get(key, proto)
            if whole is None:
                raise FileNotFoundError(path)
            return whole.to_bytes()[start:end]
        if buf is None:
            raise FileNotFoundError(path)
        return buf.to_bytes()

    async def _keys(self, path: str) -> tuple[MnesiaStore, str, list[str]]:
        store, key = self._store(path)
        base = key.rstrip("/")
        keys = [k async for k in store.list_prefix(base + "/" if base else "")]
        return store, base, keys

    async def _info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        name = self._strip_protocol(path)
        head, key = self._where(path)
        if len(head) < 3:
            if not head:
                raise FileNotFoundError(path)
            return {"name": name, "size": 0, "type": "directory"}
        store, _ = self._store(path)
        if key:
            try:
                size = await store.getsize(key)
            except FileNotFoundError:
                pass
            else:
                return {"name": name, "size": size, "type": "file"}
        _, _, keys = await self._keys(path)
        if keys:
            return {"name": name, "size": 0, "type": "directory"}
        raise FileNotFoundError(path)

    async def _exists(self, path: str, **kwargs: Any) -> bool:
        try:
            await self._info(path)
        except FileNotFoundError:
            return False
        return True

    async def _ls(self, path: str, detail: bool = True, **kwargs: Any) -> list[Any]:
        name = self._strip_protocol(path)
        head, key = self._where(path)
        if len(head) < 3:
            children = await self._list_level(head)
            entries = [
                {"name": f"{name}/{quote(c, safe='@')}", "size": 0, "type": "directory"}
                for c in children
            ]
        else:
            store, _ = self._store(path)
            info = await self._info(path)
            if info["type"] == "file":
                entries = [info]
            else:
                base = key.rstrip("/")
                entries = []
                async for child in store.list_dir(base):
                    full = f"{base}/{child}" if base else child
                    try:
                        size = await store.getsize(full)
                        entries.append({"name": f"{name}/{child}", "size": size, "type": "file"})
                    except FileNotFoundError:
                        entries.append({"name": f"{name}/{child}", "size": 0, "type": "directory"})
        return entries if detail else [e["name"] for e in entries]

    async def _list_level(self, head: list[str]) -> list[str]:
        """Tables of a node, or array ids in a table."""
        from pyrlang_zarr import admin

        if not head:
            raise FileNotFoundError("mnesia:// needs a node: mnesia://name@host/...")
        cookie = self._store_options.get("cookie")
        tls = self._store_options.get("tls")
        if len(head) == 1:
            return await admin.tables(head[0], cookie=cookie, tls=tls)
        found = await admin.list_arrays(head[0], head[1], cookie=cookie, tls=tls)
        return [a.array_id for a in found]

    async def _find(
        self,
        path: str,
        maxdepth: int | None = None,
        withdirs: bool = False,
        detail: bool = False,
        **kwargs: Any,
    ) -> Any:
        name = self._strip_protocol(path)
        head, _ = self._where(path)
        if len(head) < 3:
            raise NotImplementedError("find works inside one array: NODE/TABLE/ARRAY_ID/...")
        store, base, keys = await self._keys(path)
        root = name[: len(name) - len(base)].rstrip("/") if base else name
        out: dict[str, dict[str, Any]] = {}
        if base and await store.exists(base):
            out[name] = {"name": name, "type": "file", "size": await store.getsize(base)}
        for k in keys:
            if maxdepth is not None and k[len(base) :].strip("/").count("/") >= maxdepth:
                continue
            full = f"{root}/{k}"
            out[full] = {"name": full, "type": "file", "size": None}
            if withdirs:
                parent = k.rsplit("/", 1)[0] if "/" in k else ""
                while parent and len(parent) > len(base):
                    d = f"{root}/{parent}"
                    out.setdefault(d, {"name": d, "type": "directory", "size": 0})
                    parent = parent.rsplit("/", 1)[0] if "/" in parent else ""
        names = sorted(out)
        return {n: out[n] for n in names} if detail else names

    # -- writes ---------------------------------------------------------------------------
    async def _pipe_file(
        self, path: str, value: bytes, mode: str = "overwrite", **kwargs: Any
    ) -> None:
        store, key = self._store(path, write=True)
        if not key:
            raise IsADirectoryError(path)
        buf: Buffer = default_buffer_prototype().buffer.from_bytes(value)
        if mode == "create":
            if await store.exists(key):
                raise FileExistsError(path)
        await store.set(key, buf)

    async def _rm_file(self, path: str, **kwargs: Any) -> None:
        store, key = self._store(path, write=True)
        if key:
            await store.delete(key)
        else:
            await store.clear()

    async def _rm(
        self, path: Any, recursive: bool = False, batch_size: int | None = None, **kwargs: Any
    ) -> None:
        paths = path if isinstance(path, list) else [path]
        for p in paths:
            store, key = self._store(p, write=True)
            if not key:
                if not recursive:
                    raise IsADirectoryError(f"{p}: removing a whole array needs recursive=True")
                await store.clear()
                continue
            if await store.exists(key):
                await store.delete(key)
            if recursive:
                await store.delete_dir(key)

    async def _mkdir(self, path: str, create_parents: bool = True, **kwargs: Any) -> None:
        return None  # keys have no directories

    async def _makedirs(self, path: str, exist_ok: bool = False) -> None:
        return None
