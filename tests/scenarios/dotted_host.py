"""Long node names with a dotted host name, run where that name resolves to 127.0.0.1.

The test runs this in a private mount namespace whose ``/etc/hosts`` maps the host name
(``unshare --mount``, the file bind-mounted over ``/etc/hosts``), so both the Erlang node
and this process resolve it and the machine's own ``/etc/hosts`` is left alone. The last
line printed is ``RESULT <json>``.

    python -m tests.scenarios.dotted_host <host>
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from pyrlang_zarr import Atom, Node
from pyrlang_zarr.testing.cluster import LocalCluster


async def run(host: str) -> dict[str, Any]:
    with LocalCluster(n=1, long_host=host) as cluster:
        peer = cluster.nodes[0]
        async with Node(cookie=cluster.cookie) as node:
            answered = await node.rpc(peer, "erlang", "node", [])
            proc = node.process()
            await node.rpc(peer, "erlang", "send", [proc.pid, Atom("hello")])
            got = await proc.receive(timeout=10)
            seen = cluster.erl_eval(0, f"lists:member('{node.name}', nodes(hidden)).")
            return {
                "peer": peer,
                "answered": str(answered),
                "ours": node.name,
                "message": str(got),
                "seen_hidden": seen.strip(),
            }


def main() -> None:
    result = asyncio.run(run(sys.argv[1]))
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
