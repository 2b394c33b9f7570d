# Helpers shared by the raftkv VM tests. The test's .nix file puts this file in front of the test's own script, and
# the NixOS test driver runs the result with its globals: start_all, subtest and the machines node1, node2, node3.
# Every node serves clients (gRPC) on port 7001 and its peers (Raft) on port 7201; the `raftkv` CLI is installed on
# every VM.

import json
import time
from typing import Any

NODES: dict[int, Any] = {1: node1, 2: node2, 3: node3}
PORT = 7001
PEER_PORT = 7201


def endpoint(node_id: int) -> str:
    return f"node{node_id}:{PORT}"


def cli(via: Any, node_ids: list[int], args: str, timeout: str = "5s") -> tuple[int, str]:
    """Runs `raftkv ARGS` on machine `via` against the given nodes only; returns (exit status, stdout).

    A node asked from its own VM is reached at localhost, which still works while block() has cut its network.
    """
    endpoints = ",".join(f"localhost:{PORT}" if NODES[i] is via else endpoint(i) for i in node_ids)
    return via.execute(f"raftkv --endpoints {endpoints} --timeout {timeout} {args} 2>/dev/null")


def status(node_id: int, via: Any = None) -> dict[str, Any] | None:
    """Node `node_id`'s own view of the cluster (role, leader, log indexes), or None if it does not answer."""
    rc, out = cli(via or NODES[node_id], [node_id], "status -o json", timeout="2s")
    if rc != 0:
        return None
    rows = json.loads(out)
    return rows[0] if rows else None


def wait_for_leader(node_ids: list[int], timeout: float = 90) -> int:
    """Waits until every node in `node_ids` names the same leader, one of them, and that node says it leads."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        views = [status(i) for i in node_ids]
        leaders = {v["leader"] for v in views if v is not None}
        if None not in views and len(leaders) == 1:
            (leader,) = leaders
            own = status(leader) if leader in node_ids else None
            if own is not None and own["role"] == "leader":
                return leader
        time.sleep(0.5)
    raise AssertionError(f"no leader that nodes {node_ids} agree on within {timeout}s")


def put_all(via: Any, node_ids: list[int], pairs: dict[str, str]) -> dict[str, str]:
    """Writes every pair through the given nodes; returns the pairs whose write was acknowledged (exit 0)."""
    acked = {}
    for key, value in pairs.items():
        rc, _ = cli(via, node_ids, f"put {key} {value}")
        if rc == 0:
            acked[key] = value
    return acked


def local_view(node_id: int) -> dict[str, str]:
    """Every key and value in node `node_id`'s own state machine (a serializable scan answered by that node)."""
    rc, out = cli(NODES[node_id], [node_id], "-o json scan --serializable", timeout="3s")
    if rc != 0:
        return {}
    return {kv["key"]: kv["value"] for kv in json.loads(out)["kvs"]}


def wait_for_values(node_id: int, expected: dict[str, str], timeout: float = 60) -> None:
    """Waits until node `node_id` itself holds every expected key with its expected value."""
    deadline = time.monotonic() + timeout
    missing: dict[str, Any] = dict(expected)
    while time.monotonic() < deadline:
        view = local_view(node_id)
        missing = {k: (v, view.get(k)) for k, v in expected.items() if view.get(k) != v}
        if not missing:
            return
        time.sleep(0.5)
    sample = dict(list(missing.items())[:5])
    raise AssertionError(f"node{node_id} lacks {len(missing)} acknowledged keys, e.g. (expected, got): {sample}")


def start_cluster() -> int:
    """Boots the three VMs and waits for their services and a leader; returns the leader's id."""
    start_all()
    for node in NODES.values():
        node.wait_for_unit("raftkv.service")
        node.wait_for_open_port(PORT)
        node.wait_for_open_port(PEER_PORT)
    return wait_for_leader(list(NODES))
