# VM test "partition" (the steps of server/tests/vm_mirror.rs `partition`, with the VM's network really cut):
# block() the leader; the majority elects a new leader and accepts writes; the isolated old leader cannot commit;
# after unblock() it rejoins as a follower and converges. Runs after helpers.py (see partition.nix).

with subtest("three nodes elect a leader"):
    leader = start_cluster()
    majority = [i for i in NODES if i != leader]
    client = NODES[majority[0]]
    old = NODES[leader]

with subtest("writes are acknowledged"):
    before = put_all(client, list(NODES), {f"before-{i:03d}": f"value-{i}" for i in range(20)})
    assert len(before) == 20, f"only {len(before)} of 20 writes acknowledged by a healthy cluster"
    for i in NODES:
        wait_for_values(i, before)

with subtest(f"cut node{leader} off the network"):
    old.block()

with subtest("the majority elects a new leader and accepts writes"):
    new_leader = wait_for_leader(majority)
    assert new_leader != leader
    during = put_all(client, majority, {f"during-{i:03d}": f"value-{i}" for i in range(20)})
    assert len(during) == 20, f"only {len(during)} of 20 writes acknowledged by the majority"

with subtest(f"the isolated node{leader} cannot commit"):
    # Asked directly, the old leader cannot reach a quorum: the write must not be acknowledged.
    rc, out = cli(old, [leader], "put isolated-write lost", timeout="4s")
    assert rc != 0, f"node{leader} acknowledged a write while cut off from the majority: {out!r}"
    # Nor can it serve a linearizable read.
    rc, out = cli(old, [leader], "get before-000", timeout="4s")
    assert rc != 0, f"node{leader} served a linearizable read while cut off: {out!r}"

with subtest(f"node{leader} rejoins as a follower and converges"):
    old.unblock()
    now = wait_for_leader(list(NODES))
    assert now in majority, f"the old leader node{leader} leads again (leader: node{now})"
    expected = {**before, **during}
    for i in NODES:
        wait_for_values(i, expected)
        assert "isolated-write" not in local_view(i), f"node{i} has the write the isolated leader could not commit"
    view = status(leader)
    assert view is not None and view["role"] == "follower", f"node{leader} after the partition: {view}"
