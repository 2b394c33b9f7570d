# VM test "join" (see join.nix): node4 joins the running three-node cluster as a learner through
# services.raftkv.join, reachable at the address it advertises (it listens on the wildcard); it catches up, is
# promoted and votes; clean restarts (`systemctl restart`) of the leader and of node4, whose unit still says
# `join`, lose no acknowledged write; node4 keeps its data in a sub-directory of `dataDir` (whose root holds a
# lost+found) and serves the dashboard. Runs after helpers.py.

JOINER = 4


def member(node_id: int) -> dict[str, Any] | None:
    """Node `node_id`'s entry in the member list, as the three founding members report it, or None."""
    rc, out = cli(node1, [1, 2, 3], "-o json members list")
    if rc != 0:
        return None
    return next((m for m in json.loads(out) if m["id"] == node_id), None)


def wait_for(what: str, check: Any, timeout: float = 90) -> Any:
    """Polls `check()` until it returns something truthy; returns that."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.5)
    raise AssertionError(f"not within {timeout}s: {what}")


def restart(node_id: int) -> None:
    """A clean restart (SIGTERM, then start), as `systemctl restart` does it."""
    NODES[node_id].succeed("systemctl restart raftkv.service")
    NODES[node_id].wait_for_unit("raftkv.service")
    NODES[node_id].wait_for_open_port(PORT)
    NODES[node_id].wait_for_open_port(PEER_PORT)


with subtest("three nodes elect a leader; node4 starts and asks to join"):
    leader = start_cluster()
    node4.wait_for_unit("raftkv.service")
    node4.wait_for_open_port(PORT)

with subtest("writes before the join are acknowledged"):
    before = put_all(NODES[leader], list(NODES), {f"before-{i:03d}": f"value-{i}" for i in range(20)})
    assert len(before) == 20, f"only {len(before)} of 20 writes acknowledged by a healthy cluster"

with subtest("node4 is a learner, reachable at the address it advertises"):
    joined = wait_for("node4 in the member list", lambda: member(JOINER))
    assert not joined["voter"], f"node4 joined as a voter: {joined}"
    # Not the wildcard it listens on: the address reaches node4 itself, from another machine.
    rc, out = NODES[leader].execute(f"raftkv --endpoints {joined['addr']} --timeout 2s -o json status 2>/dev/null")
    assert rc == 0, f"node4's advertised client address {joined['addr']} does not answer"
    assert json.loads(out)[0]["id"] == JOINER, f"{joined['addr']} is not node4: {out}"

with subtest("node4 catches up, is promoted and votes"):
    NODES[JOINER] = node4
    wait_for_values(JOINER, before)
    wait_for("node4 promoted", lambda: cli(NODES[leader], [1, 2, 3], f"members promote {JOINER}")[0] == 0)
    promoted = member(JOINER)
    assert promoted is not None and promoted["voter"], f"node4 after the promotion: {promoted}"
    after = put_all(node4, list(NODES), {f"after-{i:03d}": f"value-{i}" for i in range(20)})
    assert len(after) == 20, f"only {len(after)} of 20 writes acknowledged by the four voters"
    expected = {**before, **after}
    for i in NODES:
        wait_for_values(i, expected)

with subtest(f"a clean restart of the leader, node{leader}, loses nothing"):
    restart(leader)
    wait_for_leader(list(NODES))
    for i in NODES:
        wait_for_values(i, expected)

with subtest("a clean restart of node4 (its unit still says join) loses nothing"):
    restart(JOINER)
    wait_for_leader(list(NODES))
    wait_for_values(JOINER, expected)
    again = member(JOINER)
    assert again is not None and again["voter"], f"node4 after its restart: {again}"

with subtest("node4's data is in dataDir's sub-directory, beside a lost+found"):
    node4.succeed("test -f /srv/raftkv/data/meta.json && test -d /srv/raftkv/lost+found")

with subtest("node4 serves the dashboard"):
    node4.succeed("curl -sf http://localhost:7101/ | grep -q '<title>raftkv dashboard</title>'")
