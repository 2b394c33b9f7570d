"""Python's etcd3 client library (PyPI etcd3 0.12, unmodified) against a raftkv node: run by etcd3_python.rs.

Usage: python etcd3_client.py HOST:PORT. Prints "ok" when every check passed; any failure raises.
"""
import sys

import etcd3
import etcd3.exceptions
import grpc


def main() -> None:
    host, port = sys.argv[1].rsplit(":", 1)
    c = etcd3.client(host=host, port=int(port), timeout=10)

    c.put("py/a", "1")
    value, meta = c.get("py/a")
    assert value == b"1" and meta.version == 1, (value, meta.version)
    c.put("py/b", "2")
    items = sorted((m.key, v) for v, m in c.get_prefix("py/"))
    assert items == [(b"py/a", b"1"), (b"py/b", b"2")], items

    # Compare-and-swap and transactions.
    assert c.replace("py/a", "1", "one")
    assert not c.replace("py/a", "1", "uno")
    ok, responses = c.transaction(
        compare=[c.transactions.value("py/a") == "one", c.transactions.version("py/b") > 0],
        success=[c.transactions.put("py/t", "yes"), c.transactions.get("py/b")],
        failure=[c.transactions.put("py/t", "no")],
    )
    assert ok, responses
    assert c.get("py/t")[0] == b"yes"
    assert responses[1][0][0] == b"2", responses

    # A watch from a past revision replays what happened since.
    rev_b = c.get("py/b")[1].mod_revision
    c.put("py/b", "3")
    events, cancel = c.watch("py/b", start_revision=rev_b)
    first, second = next(events), next(events)
    cancel()
    assert (first.value, second.value) == (b"2", b"3"), (first.value, second.value)

    # Compaction: the watch from before it is no longer possible afterwards.
    c.compact(rev_b + 1)
    try:
        events, cancel = c.watch("py/b", start_revision=rev_b)
        next(events)
        cancel()
    except etcd3.exceptions.RevisionCompactedError as e:
        assert e.compacted_revision == rev_b + 1, e.compacted_revision
    else:
        raise AssertionError("a watch below the compacted revision should have been refused")

    # Deletes.
    assert c.delete("py/a")
    assert c.get("py/a")[0] is None
    assert not c.delete("py/a")

    # Cluster and maintenance.
    assert c.status().version == "3.5.0"
    members = list(c.members)
    assert len(members) == 3, members
    assert all(m.client_urls for m in members), [m.client_urls for m in members]

    # Leases: grant, attach, time to live, refresh, revoke (which deletes the attached keys).
    lease = c.lease(30)
    c.put("py/leased", "v", lease=lease)
    assert c.get("py/leased")[1].lease_id == lease.id
    assert 0 < lease.remaining_ttl <= 30, lease.remaining_ttl
    assert lease.granted_ttl == 30
    assert [k for k in lease.keys] == [b"py/leased"], lease.keys
    assert lease.refresh()[0].TTL == 30
    lease.revoke()
    assert c.get("py/leased")[0] is None
    assert lease.remaining_ttl == -1
    # The client's lock recipe (a lease, and a key created only if absent).
    # (Without contention: etcd3 0.12's retry loop for a held lock does not run with current tenacity.)
    lock = c.lock("py-lock", ttl=5)
    assert lock.acquire(timeout=5)
    assert lock.is_acquired()
    held = c.get("/locks/py-lock")[1]
    assert held is not None and held.lease_id == lock.lease.id, held
    lock.release()
    assert not lock.is_acquired()
    assert c.get("/locks/py-lock")[0] is None

    print("ok")


if __name__ == "__main__":
    main()
