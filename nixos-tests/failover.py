# VM test "failover" (the steps of server/tests/vm_mirror.rs `failover`, with a real power loss): crash the
# leader's VM; a new leader is elected; every acknowledged key is readable on the survivors; new writes succeed;
# the old leader boots again and catches up. Runs after helpers.py (see failover.nix).

with subtest("three nodes elect a leader"):
    leader = start_cluster()
    survivors = [i for i in NODES if i != leader]
    client = NODES[survivors[0]]

with subtest("writes are acknowledged"):
    before = put_all(client, list(NODES), {f"before-{i:03d}": f"value-{i}" for i in range(40)})
    assert len(before) == 40, f"only {len(before)} of 40 writes acknowledged by a healthy cluster"

with subtest(f"crash the leader, node{leader}"):
    NODES[leader].crash()

with subtest("the survivors elect a new leader"):
    new_leader = wait_for_leader(survivors)
    assert new_leader != leader, f"node{leader} was crashed but is still named leader"

with subtest("every acknowledged write is readable on the survivors"):
    for i in survivors:
        wait_for_values(i, before)
        # Linearizable reads through each survivor agree.
        for key in ("before-000", "before-039"):
            rc, out = cli(client, [i], f"get {key}")
            assert rc == 0 and out.strip() == before[key], f"get {key} via node{i}: rc={rc} out={out!r}"

with subtest("new writes succeed"):
    after = put_all(client, survivors, {f"after-{i:03d}": f"value-{i}" for i in range(20)})
    assert len(after) == 20, f"only {len(after)} of 20 writes acknowledged after the failover"

with subtest(f"node{leader} boots again and catches up"):
    NODES[leader].start()
    NODES[leader].wait_for_unit("raftkv.service")
    NODES[leader].wait_for_open_port(PORT)
    NODES[leader].wait_for_open_port(PEER_PORT)
    wait_for_values(leader, {**before, **after})
    now = wait_for_leader(list(NODES))
    assert now in survivors, f"the restarted node{leader} leads again (leader: node{now})"
    view = status(leader)
    assert view is not None and view["role"] == "follower", f"node{leader} after restart: {view}"
