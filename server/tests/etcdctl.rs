//! etcd's own command-line client against a raftkv cluster: every etcdctl command raftkv serves, asserting on
//! what etcdctl prints (not just its exit code). Uses `RAFTKV_ETCDCTL_BIN`, else `etcdctl` on PATH (CI installs
//! Debian's etcd-client, 3.4); skipped with a message when there is none.

mod harness;

use std::{
    io::{BufRead, BufReader, Write},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use harness::TestCluster;

fn etcdctl_bin() -> Option<String> {
    let bin = std::env::var("RAFTKV_ETCDCTL_BIN").unwrap_or_else(|_| "etcdctl".into());
    let ok = Command::new(&bin).arg("version").env("ETCDCTL_API", "3").output().is_ok_and(|o| o.status.success());
    ok.then_some(bin)
}

struct Etcdctl {
    bin: String,
    endpoints: String,
}

impl Etcdctl {
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.env("ETCDCTL_API", "3").args(["--endpoints", &self.endpoints, "--command-timeout", "10s"]).args(args);
        c
    }

    /// Runs etcdctl; returns (success, stdout, stderr).
    fn run_with_input(&self, args: &[&str], input: &str) -> (bool, String, String) {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("etcdctl runs");
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
    }

    /// Runs etcdctl, which must succeed; returns what it printed.
    fn ok(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.run_with_input(args, "");
        assert!(ok, "etcdctl {args:?} failed:\n{out}\n{err}");
        out
    }

    /// Runs etcdctl, which must fail; returns its error output.
    fn fails(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.run_with_input(args, "");
        assert!(!ok, "etcdctl {args:?} should have failed, printed:\n{out}");
        err
    }

    fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut args = args.to_vec();
        args.extend(["-w", "json"]);
        let out = self.ok(&args);
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("etcdctl {args:?}: not JSON ({e}): {out}"))
    }
}

/// Standard base64, as etcdctl's JSON output encodes keys and values.
fn b64(s: &str) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in s.as_bytes().chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | (*b as u32) << (16 - 8 * i));
        for i in 0..4 {
            out.push(if i <= chunk.len() { ABC[(n >> (18 - 6 * i) & 63) as usize] as char } else { '=' });
        }
    }
    out
}

/// A 3-node cluster with a leader, and etcdctl on all of its endpoints; `None` (the test is skipped, saying so)
/// without an etcdctl.
async fn cluster_and_etcdctl() -> Option<(TestCluster, Etcdctl)> {
    let Some(bin) = etcdctl_bin() else {
        eprintln!("skipped: no etcdctl (install Debian's etcd-client, or set RAFTKV_ETCDCTL_BIN)");
        return None;
    };
    let cluster = TestCluster::start(3);
    cluster.wait_for_leader(Duration::from_secs(20)).await;
    let endpoints = cluster.running().iter().map(|id| cluster.addr(*id)).collect::<Vec<_>>().join(",");
    Some((cluster, Etcdctl { bin, endpoints }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_works_against_raftkv() {
    kv_watch_and_maintenance().await;
}

/// Membership through etcdctl: add a learner (the server picks the id), start it, promote it once it caught up,
/// remove it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_changes_membership() {
    let Some((mut cluster, ctl)) = cluster_and_etcdctl().await else { return };
    let endpoints = ctl.endpoints.clone();
    ctl.ok(&["put", "before", "the new member"]);
    cluster.add_joining_node(4, &endpoints);
    let peer = format!("http://{}", cluster.peer_addr(4));
    assert!(ctl.fails(&["member", "add", "four", "--peer-urls", &peer]).contains("learners only"));
    let added = ctl.ok(&["member", "add", "four", "--learner", "--peer-urls", &peer]);
    assert!(added.contains(" 4 added to cluster"), "the server picked id 4: {added}");
    assert!(ctl
        .fails(&["member", "add", "again", "--learner", "--peer-urls", &peer])
        .contains("Peer URLs already exists"));
    // Not running yet: it cannot be in sync.
    assert!(ctl
        .fails(&["member", "promote", "4"])
        .contains("can only promote a learner member which is in sync with leader"));
    cluster.spawn(4);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (ok, out, err) = ctl.run_with_input(&["member", "promote", "4"], "");
        if ok {
            assert!(out.contains("promoted"), "{out}");
            break;
        }
        assert!(err.contains("in sync with leader"), "{err}");
        assert!(Instant::now() < deadline, "member 4 never caught up: {err}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let members = ctl.json(&["member", "list"]);
    let four = members["members"].as_array().unwrap().iter().find(|m| m["ID"] == 4).cloned().unwrap();
    assert!(!four.get("isLearner").and_then(|v| v.as_bool()).unwrap_or(false), "promoted: {four}");
    let ctl4 = Etcdctl { bin: ctl.bin.clone(), endpoints: cluster.addr(4) };
    assert_eq!(ctl4.ok(&["get", "before", "--print-value-only", "--consistency", "s"]), "the new member\n");
    assert!(ctl.fails(&["member", "promote", "4"]).contains("can only promote a learner member"));
    assert!(ctl.ok(&["member", "remove", "4"]).contains("removed"));
    assert!(ctl.fails(&["member", "remove", "4"]).contains("member not found"));
    assert_eq!(ctl.json(&["member", "list"])["members"].as_array().unwrap().len(), 3);

    // move-leader: leadership moves to the member named (in hex, as etcdctl takes it).
    let leader = || -> u64 { ctl.json(&["endpoint", "status"])[0]["Status"]["leader"].as_u64().unwrap() };
    let from = leader();
    let to = (1..=3u64).find(|id| *id != from).unwrap();
    assert!(ctl.fails(&["move-leader", "63"]).contains("bad leader transferee"), "0x63 is no member");
    let moved = ctl.run_with_input(&["move-leader", &format!("{to:x}")], "");
    assert!(moved.0 && format!("{}{}", moved.1, moved.2).contains("Leadership transferred"), "{moved:?}");
    assert_eq!(leader(), to, "node {to} leads now");
    ctl.ok(&["put", "after", "the move"]);
    assert_eq!(ctl.ok(&["get", "after", "--print-value-only"]), "the move\n");

    // member update: a follower restarted on another peer port, then its address updated.
    let follower = (1..=3u64).find(|id| *id != to).unwrap();
    let dead = format!("http://127.0.0.1:{}", harness::free_port());
    assert!(ctl
        .fails(&["member", "update", &format!("{follower:x}"), "--peer-urls", &dead])
        .contains("does not answer"));
    cluster.stop(follower);
    let new_peer = format!("127.0.0.1:{}", harness::free_port());
    let old_peer = std::mem::replace(&mut cluster.nodes.get_mut(&follower).unwrap().peer, new_peer.clone());
    // Its own flags name the new address, as an operator moving it would write them.
    cluster.initial_cluster = cluster.initial_cluster.replace(&old_peer, &new_peer);
    cluster.spawn(follower);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (ok, out, err) = ctl.run_with_input(
            &["member", "update", &format!("{follower:x}"), "--peer-urls", &format!("http://{new_peer}")],
            "",
        );
        if ok {
            assert!(out.contains("updated"), "{out}");
            break;
        }
        assert!(Instant::now() < deadline, "member update never succeeded: {err}");
        std::thread::sleep(Duration::from_millis(200));
    }
    ctl.ok(&["put", "moved", "peer"]);
    let on_follower = Etcdctl { bin: ctl.bin.clone(), endpoints: cluster.addr(follower) };
    let deadline = Instant::now() + Duration::from_secs(20);
    while on_follower.ok(&["get", "moved", "--print-value-only", "--consistency", "s"]) != "peer\n" {
        assert!(Instant::now() < deadline, "node {follower} never got the write at its new peer address");
        std::thread::sleep(Duration::from_millis(100));
    }
    let members = ctl.json(&["member", "list"]);
    let m = members["members"].as_array().unwrap().iter().find(|m| m["ID"] == follower).cloned().unwrap();
    assert_eq!(m["peerURLs"][0], format!("http://{new_peer}"), "{m}");
}

/// put/get/del with their flags, txn, watch, member list, endpoint status/health/hashkv, alarm, defrag, compaction.
async fn kv_watch_and_maintenance() {
    let Some((cluster, ctl)) = cluster_and_etcdctl().await else { return };
    let version = ctl.ok(&["version"]);
    eprintln!("{}", version.trim());

    // put / get, with their flags.
    assert_eq!(ctl.ok(&["put", "greeting", "hello"]).trim(), "OK");
    assert_eq!(ctl.ok(&["get", "greeting"]), "greeting\nhello\n");
    assert_eq!(ctl.ok(&["put", "greeting", "bonjour", "--prev-kv"]), "OK\ngreeting\nhello\n");
    let got = ctl.json(&["get", "greeting"]);
    let kv = &got["kvs"][0];
    assert_eq!(kv["value"], b64("bonjour"));
    assert_eq!(
        (kv["version"].as_i64(), kv["create_revision"].as_i64(), kv["mod_revision"].as_i64()),
        (Some(2), Some(2), Some(3))
    );
    assert_eq!(got["header"]["revision"].as_i64(), Some(3), "a fresh store is at 1, the first write is 2: {got}");
    for (k, v) in [("dir/a", "1"), ("dir/b", "2"), ("dir/c", "3"), ("zzz", "last")] {
        ctl.ok(&["put", k, v]);
    }
    assert_eq!(ctl.ok(&["get", "dir/", "--prefix"]), "dir/a\n1\ndir/b\n2\ndir/c\n3\n");
    assert_eq!(
        ctl.ok(&["get", "dir/", "--prefix", "--keys-only"]).split_whitespace().collect::<Vec<_>>(),
        ["dir/a", "dir/b", "dir/c"]
    );
    assert_eq!(ctl.ok(&["get", "dir/", "--prefix", "--limit", "2", "--print-value-only"]), "1\n2\n");
    assert_eq!(
        ctl.ok(&["get", "dir/", "--prefix", "--sort-by", "KEY", "--order", "DESCEND", "--keys-only"])
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["dir/c", "dir/b", "dir/a"]
    );
    assert_eq!(
        ctl.ok(&["get", "dir/c", "--from-key", "--keys-only"]).split_whitespace().collect::<Vec<_>>(),
        ["dir/c", "greeting", "zzz"]
    );
    assert_eq!(
        ctl.json(&["get", "dir/", "--prefix", "--limit", "1"])["count"].as_i64(),
        Some(3),
        "count is the whole range"
    );
    let rev = ctl.json(&["get", "zzz"])["header"]["revision"].as_i64().unwrap();
    assert_eq!(ctl.ok(&["get", "zzz", "--rev", &rev.to_string()]), "zzz\nlast\n");
    // The MVCC history: an old version at its revision.
    assert_eq!(ctl.ok(&["get", "greeting", "--rev", "2", "--print-value-only"]), "hello\n");
    assert!(ctl
        .fails(&["get", "zzz", "--rev", &(rev + 100).to_string()])
        .contains("required revision is a future revision"));
    assert!(ctl.fails(&["put", "k", "v", "--lease", "1234"]).contains("requested lease not found"));
    ctl.ok(&["put", "greeting", "--ignore-value"]);
    assert_eq!(ctl.json(&["get", "greeting"])["kvs"][0]["version"].as_i64(), Some(3));
    assert!(ctl.fails(&["put", "nope", "--ignore-value"]).contains("key not found"));

    // del.
    assert_eq!(ctl.ok(&["del", "zzz", "--prev-kv"]), "1\nzzz\nlast\n");
    assert_eq!(ctl.ok(&["del", "zzz"]).trim(), "0");

    // txn (etcdctl reads compares, then success ops, then failure ops from stdin, separated by blank lines).
    let (ok, out, err) = ctl.run_with_input(
        &["txn"],
        "value(\"greeting\") = \"bonjour\"\n\nput swapped yes\nget dir/a\n\nput swapped no\n\n",
    );
    assert!(ok, "txn: {out}{err}");
    assert_eq!(out, "SUCCESS\n\nOK\n\ndir/a\n1\n");
    let (ok, out, _) =
        ctl.run_with_input(&["txn"], "mod(\"greeting\") < \"1\"\n\nput swapped yes\n\nput swapped no\n\n");
    assert!(ok);
    assert_eq!(out, "FAILURE\n\nOK\n");
    assert_eq!(ctl.ok(&["get", "swapped", "--print-value-only"]), "no\n");

    // watch: events as they happen, and from a past revision.
    let mut watch = Guard(
        ctl.command(&["watch", "w/", "--prefix", "--prev-kv"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stdout = watch.0.stdout.take().unwrap();
    let lines = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for l in BufReader::new(stdout).lines() {
            let Ok(l) = l else { break };
            lines.push(l);
            if lines.len() == 9 {
                break;
            }
        }
        lines
    });
    // The watch is in place once a write made after it shows up; keep writing until then.
    let first_rev = ctl.json(&["get", "w/none"])["header"]["revision"].as_i64().unwrap() + 1;
    let deadline = Instant::now() + Duration::from_secs(20);
    ctl.ok(&["put", "w/1", "one"]);
    ctl.ok(&["put", "w/1", "uno"]);
    ctl.ok(&["del", "w/1"]);
    while !lines.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(watch);
    let lines = lines.join().unwrap();
    assert_eq!(lines, ["PUT", "w/1", "one", "PUT", "w/1", "one", "w/1", "uno", "DELETE"], "watch printed {lines:?}");
    let mut past = Guard(
        ctl.command(&["watch", "w/1", "--rev", &first_rev.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut reader = BufReader::new(past.0.stdout.take().unwrap());
    let mut got = Vec::new();
    while got.len() < 5 {
        let mut l = String::new();
        if reader.read_line(&mut l).unwrap() == 0 {
            break;
        }
        got.push(l.trim_end().to_string());
    }
    assert_eq!(got, ["PUT", "w/1", "one", "PUT", "w/1"], "watch --rev printed {got:?}");
    drop(past);

    // Cluster and maintenance.
    let members = ctl.json(&["member", "list"]);
    let members = members["members"].as_array().unwrap();
    assert_eq!(members.len(), 3, "{members:?}");
    for m in members {
        let id = m["ID"].as_u64().unwrap();
        assert_eq!(m["clientURLs"][0].as_str().unwrap(), format!("http://{}", cluster.addr(id)));
        assert_eq!(m["peerURLs"][0].as_str().unwrap(), format!("http://{}", cluster.peer_addr(id)));
    }
    let status = ctl.json(&["endpoint", "status"]);
    let status = status.as_array().unwrap();
    assert_eq!(status.len(), 3);
    let leaders: Vec<u64> = status.iter().map(|s| s["Status"]["leader"].as_u64().unwrap()).collect();
    assert!(leaders.iter().all(|l| *l == leaders[0] && *l != 0), "{status:?}");
    assert!(status.iter().all(|s| s["Status"]["version"] == "3.5.0"), "{status:?}");
    // etcdctl prints health and defrag results on stderr.
    let (ok, out, err) = ctl.run_with_input(&["endpoint", "health"], "");
    assert!(ok, "endpoint health: {out}{err}");
    assert_eq!(format!("{out}{err}").matches("is healthy").count(), 3, "{out}{err}");
    assert_eq!(ctl.ok(&["alarm", "list"]), "");
    // hashkv: every member hashes the same history alike.
    let hashes = ctl.json(&["endpoint", "hashkv"]);
    let hashes: Vec<u64> = hashes.as_array().unwrap().iter().map(|h| h["HashKV"]["hash"].as_u64().unwrap()).collect();
    assert!(hashes.len() == 3 && hashes.iter().all(|h| *h == hashes[0]), "{hashes:?}");
    // compaction: older revisions are gone afterwards, newer ones stay.
    let now = ctl.json(&["get", "greeting"])["header"]["revision"].as_i64().unwrap();
    assert_eq!(ctl.ok(&["compaction", &now.to_string()]).trim(), format!("compacted revision {now}"));
    assert!(ctl.fails(&["get", "greeting", "--rev", "2"]).contains("required revision has been compacted"));
    assert!(ctl.fails(&["compaction", &now.to_string()]).contains("required revision has been compacted"));
    assert_eq!(ctl.ok(&["get", "greeting", "--rev", &now.to_string(), "--print-value-only"]), "bonjour\n");
    // snapshot save: etcdctl saves raftkv's backup stream, which raftkv's restore reads.
    let backup = cluster.dir.path().join("etcdctl-backup.db");
    let one = Etcdctl { bin: ctl.bin.clone(), endpoints: cluster.addr(cluster.running()[0]) };
    let (ok, out, err) = one.run_with_input(&["snapshot", "save", backup.to_str().unwrap()], "");
    assert!(ok && format!("{out}{err}").contains("Snapshot saved at"), "snapshot save: {out}{err}");
    let status = Command::new(harness::BIN).args(["snapshot", "status"]).arg(&backup).output().unwrap();
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(status.contains("revision"), "raftkv reads what etcdctl saved: {status}");
    let (ok, out, err) = ctl.run_with_input(&["defrag"], "");
    assert!(ok, "defrag: {out}{err}");
    assert_eq!(format!("{out}{err}").matches("Finished defragmenting").count(), 3, "{out}{err}");
}

/// Leases through etcdctl (grant, put --lease, timetolive --keys, list, keep-alive, revoke, expiry), and its
/// lock and election recipes — against raftkv's own `raftkv lock` / `raftkv elect` on the same names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_leases_locks_and_elections() {
    let Some((_cluster, ctl)) = cluster_and_etcdctl().await else { return };
    let endpoints = ctl.endpoints.clone();

    let granted = ctl.ok(&["lease", "grant", "60"]);
    let id = granted.split_whitespace().nth(1).unwrap().to_string();
    assert_eq!(granted, format!("lease {id} granted with TTL(60s)\n"));
    ctl.ok(&["put", "--lease", &id, "svc/a", "10.0.0.1"]);
    ctl.ok(&["put", "--lease", &id, "svc/b", "10.0.0.2"]);
    let got = ctl.json(&["get", "svc/a"]);
    assert_eq!(got["kvs"][0]["lease"].as_i64(), i64::from_str_radix(&id, 16).ok(), "{got}");
    let ttl = ctl.ok(&["lease", "timetolive", "--keys", &id]);
    assert!(ttl.starts_with(&format!("lease {id} granted with TTL(60s), remaining(")), "{ttl}");
    assert!(ttl.ends_with("attached keys([svc/a svc/b])\n"), "{ttl}");
    assert!(ctl.ok(&["lease", "list"]).contains(&id));
    assert_eq!(ctl.ok(&["lease", "keep-alive", "--once", &id]), format!("lease {id} keepalived with TTL(60)\n"));
    assert_eq!(ctl.ok(&["lease", "timetolive", "1234"]), "lease 0000000000001234 already expired\n");
    assert!(ctl.fails(&["lease", "keep-alive", "--once", "1234"]).contains("requested lease not found"));
    assert!(ctl.fails(&["put", "k", "v", "--lease", "1234"]).contains("requested lease not found"));
    assert_eq!(ctl.ok(&["lease", "revoke", &id]), format!("lease {id} revoked\n"));
    assert_eq!(ctl.ok(&["get", "svc/", "--prefix"]), "", "revoking deleted the lease's keys");
    assert!(ctl.fails(&["lease", "revoke", &id]).contains("requested lease not found"));
    // Expiry: a short lease nobody renews.
    let short = ctl.ok(&["lease", "grant", "1"]).split_whitespace().nth(1).unwrap().to_string();
    ctl.ok(&["put", "--lease", &short, "ephemeral", "x"]);
    let deadline = Instant::now() + Duration::from_secs(15);
    while !ctl.ok(&["get", "ephemeral"]).is_empty() {
        assert!(Instant::now() < deadline, "the key of an expired lease is still there");
        std::thread::sleep(Duration::from_millis(100));
    }

    // etcdctl's lock runs a command while holding it.
    assert_eq!(ctl.ok(&["lock", "job", "echo", "inside"]), "inside\n");
    // raftkv lock and etcdctl lock on one name exclude each other: etcdctl waits while raftkv holds it.
    let mut holder = Command::new(harness::BIN)
        .args(["--endpoints", &endpoints, "lock", "job", "--ttl", "5"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(holder.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
    assert!(line.starts_with("job/"), "raftkv lock printed its key: {line}");
    let holder = Guard(holder);
    let waiter = Guard(ctl.command(&["lock", "job", "echo", "second"]).stdout(Stdio::piped()).spawn().unwrap());
    std::thread::sleep(Duration::from_secs(2));
    let mut waiter = waiter;
    assert!(waiter.0.try_wait().unwrap().is_none(), "etcdctl acquired a lock raftkv holds");
    // The holder dies without releasing (kill -9): its lease expires and etcdctl gets the lock.
    drop(holder);
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = waiter.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "etcdctl never got the lock after its holder died");
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut out = String::new();
    std::io::Read::read_to_string(waiter.0.stdout.as_mut().unwrap(), &mut out).unwrap();
    assert!(status.success() && out == "second\n", "{status:?} {out:?}");

    // Elections: etcdctl campaigns, raftkv observes who leads.
    let campaign = Guard(ctl.command(&["elect", "pick", "etcdctl-was-first"]).stdout(Stdio::piped()).spawn().unwrap());
    let mut observer = Command::new(harness::BIN)
        .args(["--endpoints", &endpoints, "elect", "pick", "--listen"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(observer.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
    assert_eq!(line, "etcdctl-was-first\n");
    let _observer = Guard(observer);
    drop(campaign);
}

/// Kills a child process when dropped.
struct Guard(std::process::Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
