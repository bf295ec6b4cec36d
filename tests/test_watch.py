"""Live arrays: chunk changes pushed from the cluster as they commit, whoever writes them;
bounded on both sides with an explicit resync; nothing left on the cluster afterwards."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import uuid
from typing import Any

import numpy as np
import pytest

import pyrlang_zarr as pz
import pyrlang_zarr.sync as pzs
from pyrlang_zarr import Atom, Node, Pid
from pyrlang_zarr.mnesia.expr import parse_exprs
from pyrlang_zarr.term.encode import encode
from pyrlang_zarr.testing.cluster import LocalCluster
from pyrlang_zarr.watch import FORWARDER, ChangeEvent, Watch, WatchError, watch_store
from tests.erl import parse, spawn_eval

pytestmark = pytest.mark.erlang

TABLE = Atom("zarr_storage")
CHUNK = Atom("chunk")


def new_id() -> str:
    return f"watch-{uuid.uuid4().hex[:8]}"


async def grid_array(c: LocalCluster) -> pz.MnesiaArray:
    """40x40 int32 in 10x10 chunks, replicated on every node of ``c``."""
    return await pz.create(
        new_id(),
        shape=(40, 40),
        chunks=(10, 10),
        dtype="int32",
        node=c.nodes[0],
        cookie=c.cookie,
        nodes=c.nodes,
        exzarr=True,
    )


async def subscribers(node: Node, peer: str) -> list[Any]:
    found = await node.rpc(peer, "mnesia", "table_info", [TABLE, Atom("subscribers")], timeout=10)
    assert isinstance(found, list)
    return found


async def alive(node: Node, pid: Pid) -> bool:
    return bool(await node.rpc(str(pid.node), "erlang", "is_process_alive", [pid], timeout=10))


async def until(check: Any, what: str, tries: int = 200) -> None:
    for _ in range(tries):
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never: {what}")


async def chunk_events(w: Watch, count: int) -> list[ChangeEvent]:
    return [await w.next(timeout=30) for _ in range(count)]


async def test_the_forwarder_parses_here_as_erl_parse_does_there(
    cluster: LocalCluster, node: Node
) -> None:
    texts = [
        FORWARDER,
        "receive {a, X} -> X; b -> 1 after 10 -> 2 end.",
        "receive after 0 -> ok end.",
        "fun Loop(0) -> done; Loop(N) when N > 0 -> Loop(N - 1) end.",
        "P ! {self(), hello}, Q = P ! x.",
    ]
    for text in texts:
        theirs = await parse(node, cluster.nodes[0], text)
        assert encode(parse_exprs(text)) == encode(theirs), text


async def test_own_writes_give_one_event_per_chunk(cluster: LocalCluster) -> None:
    arr = await grid_array(cluster)
    async with arr.watch() as w:
        await arr.set_slice(np.ones((10, 20), dtype=np.int32), (0, 10), (10, 30))
        events = await chunk_events(w, 2)
        assert sorted(e.chunk for e in events if e.chunk) == [(0, 1), (0, 2)]
        assert {e.region for e in events} == {((0, 10), (10, 20)), ((0, 20), (10, 30))}
        assert {e.kind for e in events} == {"write"} and events[0].node in cluster.nodes


async def test_plain_mnesia_write_from_erlang_in_exzarr_form(cluster: LocalCluster) -> None:
    """A process on the other node writes ExZarr's record with plain mnesia calls (no
    library involved); the forwarder runs on the first node."""
    arr = await grid_array(cluster)
    client = await arr.store.client()
    aid = arr.store.mnesia_key(None)[0]
    async with arr.watch() as w:
        assert w.node == cluster.nodes[0]
        await spawn_eval(
            client.node,
            cluster.nodes[1],
            "mnesia:transaction(fun() -> mnesia:write({zarr_storage, {Id, {chunk, {3, 2}}}, "
            "<<1, 2, 3>>}) end), mnesia:dirty_delete(zarr_storage, {Id, {chunk, {3, 2}}}).",
            Id=aid,
        )
        write, delete = await chunk_events(w, 2)
        assert (write.kind, write.chunk, write.region) == ("write", (3, 2), ((30, 20), (40, 30)))
        assert (delete.kind, delete.chunk) == ("delete", (3, 2))


async def test_another_python_process_set_slice(cluster: LocalCluster) -> None:
    arr = await grid_array(cluster)
    script = textwrap.dedent(f"""
        import asyncio, numpy as np, pyrlang_zarr as pz
        async def main():
            arr = await pz.open({arr.array_id!r}, node={cluster.nodes[1]!r})
            await arr.set_slice(np.full((1, 1), 5, dtype=np.int32), (25, 35), (26, 36))
        asyncio.run(main())
    """)
    env = {**os.environ, "ERLANG_COOKIE": cluster.cookie}
    async with arr.watch() as w:
        done = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-c", script], env=env, capture_output=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        (event,) = await chunk_events(w, 1)
        assert (event.kind, event.chunk, event.region) == ("write", (2, 3), ((20, 30), (30, 40)))


async def test_a_region_filter_drops_the_rest_on_the_server(cluster: LocalCluster) -> None:
    arr = await grid_array(cluster)
    one = np.ones((5, 5), dtype=np.int32)
    async with arr.watch(((12, 0), (25, 8))) as w:  # chunks (1, 0) and (2, 0)
        await arr.set_slice(one, (0, 0), (5, 5))  # chunk (0, 0): outside
        await arr.set_slice(one, (20, 0), (25, 5))  # chunk (2, 0): inside
        await arr.set_slice(one, (15, 15), (20, 20))  # chunk (1, 1): outside
        await arr.set_slice(one, (10, 0), (15, 5))  # chunk (1, 0): inside
        # events come in commit order: one for an outside chunk would come before these
        events = await chunk_events(w, 2)
        assert [e.chunk for e in events] == [(2, 0), (1, 0)]
        assert events[0].region == ((20, 0), (30, 10))
    with pytest.raises(IndexError, match="beyond"):
        arr.watch(((0, 0), (50, 5)))
    with pytest.raises(TypeError, match="start, stop"):
        arr.watch(((0, 0),))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="window"):
        arr.watch(window=1)


async def test_metadata_changes_are_events_too(cluster: LocalCluster) -> None:
    arr = await grid_array(cluster)
    async with arr.watch() as w:
        await arr.zarr.update_attributes({"run": 2})
        event = await w.next(timeout=30)
        assert event.kind == "metadata"


async def test_regions_follow_a_resize_made_by_another_client(cluster: LocalCluster) -> None:
    """Another client grows the array: after the metadata event, a chunk beyond the old
    shape comes with its region in the new one (not clipped to the old shape)."""
    arr = await grid_array(cluster)
    other = await pz.open(arr.array_id, node=cluster.nodes[1], cookie=cluster.cookie)
    async with arr.watch() as w:
        await other.zarr.resize((60, 45))
        assert (await w.next(timeout=30)).kind == "metadata"
        other = await pz.open(arr.array_id, node=cluster.nodes[1], cookie=cluster.cookie)
        await other.set_slice(np.ones((5, 5), dtype=np.int32), (50, 40), (55, 45))
        event = await w.next(timeout=30)
        assert (event.kind, event.chunk, event.region) == ("write", (5, 4), ((50, 40), (60, 45)))
        resync = w._resync()
        assert resync.region == ((0, 0), (60, 45))  # the whole array, as it is now


async def test_a_store_watch_names_zarr_keys(cluster: LocalCluster) -> None:
    arr = await grid_array(cluster)  # zarr v2, "." separator (ExZarr's form)
    store = pz.MnesiaStore(arr.array_id, node=cluster.nodes[1], cookie=cluster.cookie)
    async with store.watch() as w:
        await arr.set_slice(np.ones((1, 1), dtype=np.int32), (11, 0), (12, 1))
        await arr.zarr.update_attributes({"k": 1})
        events = await chunk_events(w, 2)
        assert [(e.kind, e.key) for e in events] == [("key", "1.0"), ("key", ".zattrs")]


async def test_a_consumer_that_stops_reading_gets_a_resync_and_memory_stays_bounded(
    cluster: LocalCluster,
) -> None:
    arr = await grid_array(cluster)
    client = await arr.store.client()
    one = np.ones((1, 1), dtype=np.int32)
    async with arr.watch(window=4) as w:
        fwd = w.forwarder
        assert fwd is not None
        for i in range(16):  # 16 chunks written, nobody reading
            await arr.set_slice(
                one, (10 * (i // 4), 10 * (i % 4)), (10 * (i // 4) + 1, 10 * (i % 4) + 1)
            )

        async def forwarder_idle() -> bool:
            _, queued = await client.node.rpc(
                cluster.nodes[0], "erlang", "process_info", [fwd, Atom("message_queue_len")]
            )
            return bool(queued == 0)

        await until(forwarder_idle, "the forwarder's mailbox is empty")
        assert w._proc is not None
        # at most the window of events and one resync crossed to us
        assert len(w._proc.mailbox._messages) <= 4 + 1
        _, memory = await client.node.rpc(
            cluster.nodes[0], "erlang", "process_info", [fwd, Atom("memory")]
        )
        assert memory < 1_000_000
        events = [await w.next(timeout=30) for _ in range(5)]
        assert [e.kind for e in events] == ["write"] * 4 + ["resync"]
        assert events[-1].region == ((0, 0), (40, 40))  # read it all again
        # after the resync, events flow again
        await arr.set_slice(one, (39, 39), (40, 40))
        following = await w.next(timeout=30)
        while following.kind == "resync":  # a resync owed from the burst may come first
            following = await w.next(timeout=30)
        assert following.chunk == (3, 3)


async def test_closing_the_watch_leaves_nothing_on_the_cluster(cluster: LocalCluster) -> None:
    arr = await grid_array(cluster)
    client = await arr.store.client()
    before = {n: await subscribers(client.node, n) for n in cluster.nodes}
    w = arr.watch()
    await w.start()
    fwd = w.forwarder
    assert fwd is not None and await alive(client.node, fwd)
    assert fwd in await subscribers(client.node, str(fwd.node))
    await w.close()

    async def gone() -> bool:
        return not await alive(client.node, fwd)

    await until(gone, "the forwarder exited")
    for n in cluster.nodes:
        assert await subscribers(client.node, n) == before[n]
    with pytest.raises(StopAsyncIteration):
        await w.__anext__()


async def test_killing_the_python_side_leaves_nothing_on_the_cluster(
    cluster: LocalCluster, node: Node
) -> None:
    arr = await grid_array(cluster)
    script = textwrap.dedent(f"""
        import asyncio, sys, pyrlang_zarr as pz
        async def main():
            arr = await pz.open({arr.array_id!r}, node={cluster.nodes[0]!r})
            w = arr.watch()
            await w.start()
            p = w.forwarder
            print(p.node, p.id, p.serial, p.creation, flush=True)
            await asyncio.sleep(600)
        asyncio.run(main())
    """)
    env = {**os.environ, "ERLANG_COOKIE": cluster.cookie}
    proc = subprocess.Popen(
        [sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.to_thread(proc.stdout.readline)
        peer, pid_id, serial, creation = line.split()
        fwd = Pid(Atom(peer), int(pid_id), int(serial), int(creation))
        assert await alive(node, fwd)
        assert fwd in await subscribers(node, peer)
    finally:
        proc.kill()
        proc.wait()

    async def gone() -> bool:
        return not await alive(node, fwd) and fwd not in await subscribers(node, peer)

    await until(gone, "the forwarder of a killed watcher exited and unsubscribed")


def test_the_blocking_twin(cluster: LocalCluster) -> None:
    arr = pzs.create(
        new_id(),
        shape=(4,),
        chunks=(2,),
        node=cluster.nodes[0],
        cookie=cluster.cookie,
        nodes=cluster.nodes,
    )
    with arr.watch() as w:
        arr[2:4] = 1.0
        event = w.next(timeout=30)
        assert (event.kind, event.chunk, event.region) == ("write", (1,), ((2,), (4,)))
    with pytest.raises(StopIteration):
        w.next(timeout=5)  # closed
    assert list(w) == []
    store_watch = pzs.watch_store(arr.store)
    with store_watch:
        arr[0:1] = 2.0
        assert store_watch.next(timeout=30).key == "c/0"


def test_the_command_line_prints_changes_as_they_happen(cluster: LocalCluster) -> None:
    arr = pzs.create(
        new_id(),
        shape=(10, 10),
        chunks=(5, 5),
        node=cluster.nodes[0],
        cookie=cluster.cookie,
        nodes=cluster.nodes,
    )
    url = f"mnesia://{cluster.nodes[1]}/zarr_storage/{arr.array_id}"
    env = {**os.environ, "ERLANG_COOKIE": cluster.cookie}
    command = [sys.executable, "-m", "pyrlang_zarr", "watch", url, "--count", "2"]
    proc = subprocess.Popen(
        [*command, "--region", "0,5:10,10"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        ready = proc.stderr.readline()
        assert ready.startswith(f"watching {url}"), ready + proc.stderr.read()
        arr[0:10, 0:10] = 1.0  # four chunks; two in the region
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 0, err
    lines = out.splitlines()
    assert len(lines) == 2, out
    assert sorted(line.split(" ", 1)[1] for line in lines) == [
        f"write chunk 0,1 [0:5, 5:10] via {cluster.nodes[1]}",
        f"write chunk 1,1 [5:10, 5:10] via {cluster.nodes[1]}",
    ]
    bad = subprocess.run(
        [*command[:4], url.rsplit("/", 1)[0]], env=env, capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 1 and "expected mnesia://NODE/TABLE/ARRAY_ID" in bad.stderr
    bad = subprocess.run(
        [*command, "--region", "0-5"], env=env, capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 1 and "expected START:STOP" in bad.stderr


@pytest.mark.slow
async def test_kill_9_of_the_subscribed_node_moves_the_watch_with_a_resync() -> None:
    with LocalCluster(n=3, ticktime=4) as c:
        arr = await grid_array(c)
        client = await arr.store.client()
        one = np.ones((1, 1), dtype=np.int32)
        async with arr.watch() as w:
            assert w.node == c.nodes[0]
            await arr.set_slice(one, (0, 0), (1, 1))
            assert (await w.next(timeout=30)).chunk == (0, 0)
            c.kill(0)
            resync = await w.next(timeout=60)
            assert resync.kind == "resync" and resync.region == ((0, 0), (40, 40))
            assert w.node in c.nodes[1:] and resync.node == w.node
            fwd = w.forwarder
            assert fwd is not None and fwd in await subscribers(client.node, w.node)
            await arr.set_slice(one, (30, 30), (31, 31))  # through another replica now
            event = await w.next(timeout=30)
            assert (event.kind, event.chunk) == ("write", (3, 3))

        async def gone() -> bool:
            return not await alive(client.node, fwd)

        await until(gone, "the closed watch's forwarder exits")


@pytest.mark.slow
def test_the_live_follow_example() -> None:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run(
        [sys.executable, "examples/live_follow.py", "--rows", "12"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("matches the instrument: True") == 12
    assert "followed 12 rows live" in done.stdout


@pytest.mark.slow
async def test_a_cut_off_subscribed_node_moves_the_watch_and_its_forwarder_exits() -> None:
    """SIGSTOP: the node holding the subscription falls silent without closing anything.
    The watch moves with a resync; once the node runs again, its forwarder finds us gone
    and exits, leaving no subscriber there."""
    with LocalCluster(n=3, ticktime=4) as c:
        arr = await grid_array(c)
        client = await arr.store.client()
        one = np.ones((1, 1), dtype=np.int32)
        async with arr.watch() as w:
            old = w.forwarder
            assert old is not None and w.node == c.nodes[0]
            stopped = c[0].process.pid
            os.kill(stopped, signal.SIGSTOP)
            try:
                resync = await w.next(timeout=60)
                assert resync.kind == "resync" and w.node in c.nodes[1:]
                await arr.set_slice(one, (10, 10), (11, 11))
                event = await w.next(timeout=30)
                while event.kind == "resync":
                    event = await w.next(timeout=30)
                assert event.chunk == (1, 1)
            finally:
                os.kill(stopped, signal.SIGCONT)

            async def old_gone() -> bool:
                try:
                    return not await alive(client.node, old) and not await subscribers(
                        client.node, c.nodes[0]
                    )
                except pz.PyrlangZarrError:
                    return False

            await until(old_gone, "the cut-off node's forwarder exited", tries=600)
            assert w.forwarder in await subscribers(client.node, str(w.node))


async def test_a_sharded_array_reports_shards(cluster: LocalCluster) -> None:
    """The records of a sharded array are its shards: one event per shard, its region the
    shard's box."""
    arr = await pz.create(
        new_id(),
        shape=(40, 40),
        chunks=(5, 5),
        shards=(20, 20),
        dtype="int32",
        node=cluster.nodes[0],
        cookie=cluster.cookie,
        nodes=cluster.nodes,
    )
    async with arr.watch(((20, 20), (40, 40))) as w:
        await arr.set_slice(np.ones((40, 40), dtype=np.int32), (0, 0), (40, 40))
        (event,) = await chunk_events(w, 1)
        assert (event.chunk, event.region) == ((1, 1), ((20, 20), (40, 40)))


async def test_giving_up_on_next_loses_no_event(cluster: LocalCluster) -> None:
    """``next(timeout=...)`` that expires while a message is being handled (its ack on the
    way: with ``window=2`` every event is acked at once) keeps that message. In lockstep,
    one write per event received, every write comes out, once, in order."""
    arr = await pz.create(
        new_id(),
        shape=(40,),
        chunks=(1,),
        dtype="int8",
        node=cluster.nodes[0],
        cookie=cluster.cookie,
        nodes=cluster.nodes,
    )
    expired = 0
    async with arr.watch(window=2) as w:
        ack = w._ack

        async def slow_ack() -> None:  # handling outlasts every next() below
            await asyncio.sleep(0.01)
            await ack()

        w._ack = slow_ack  # type: ignore[method-assign]
        for i in range(40):
            await arr.set_slice(np.ones(1, dtype=np.int8), (i,), (i + 1,))
            for _ in range(20_000):
                try:
                    event = await w.next(timeout=0.001)
                    break
                except TimeoutError:
                    expired += 1
            else:
                raise AssertionError(f"the event of write {i} never came")
            assert (event.kind, event.chunk) == ("write", (i,))
    assert expired >= 40  # every event's handling was cut into at least once


async def test_a_forwarder_that_cannot_keep_up_empties_its_mailbox_and_says_so(
    cluster: LocalCluster,
) -> None:
    """``backlog=``: when table events pile up in the forwarder's own mailbox faster than it
    filters them (an Erlang process making dirty writes in a tight loop), it drops them
    all and sends a resync, instead of letting its mailbox grow."""
    arr = await pz.create(
        new_id(),
        shape=(2000,),
        chunks=(1,),
        dtype="int8",
        node=cluster.nodes[0],
        cookie=cluster.cookie,
        nodes=cluster.nodes,
    )
    client = await arr.store.client()
    aid = arr.store.mnesia_key(None)[0]
    kinds: list[str] = []
    async with arr.watch(window=4096, backlog=8) as w:
        await spawn_eval(
            client.node,
            cluster.nodes[0],
            "[mnesia:dirty_write({zarr_storage, {Id, {chunk, {I}}}, <<1>>})"
            " || I <- lists:seq(0, 1999)].",
            Id=aid,
        )
        while True:
            try:
                kinds.append((await w.next(timeout=3)).kind)
            except TimeoutError:
                break
        fwd = w.forwarder
        _, queued = await client.node.rpc(
            cluster.nodes[0], "erlang", "process_info", [fwd, Atom("message_queue_len")]
        )
        assert queued == 0
    assert "resync" in kinds and kinds.count("write") < 2000


async def test_a_watch_that_cannot_start_says_why_each_time(cluster: LocalCluster) -> None:
    """No such table: the error names the table, and a second try fails the same way
    instead of waiting forever on a watch that never started."""
    await grid_array(cluster)  # Mnesia runs on the cluster
    store = pz.MnesiaStore(
        "anything",
        node=cluster.nodes[0],
        cookie=cluster.cookie,
        nodes=cluster.nodes,
        table_name="no_such_table_here",
        read_only=True,
    )
    w = watch_store(store)
    for _ in range(2):
        with pytest.raises((WatchError, pz.TableNotFound), match="no_such_table_here"):
            await w.next(timeout=60)
    assert w.forwarder is None
