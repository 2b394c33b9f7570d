//! PUT / GET / DELETE / prefix scan from the browser: choose the node to send to and the read consistency; the
//! result says which node answered, at what revision, and how long it took. Every operation lands in the
//! history.

use leptos::{prelude::*, task::spawn_local};

use super::NodeSelect;
use crate::{
    api::{self, Node},
    model::show_bytes,
    state::Dashboard,
};

#[derive(Copy, Clone, PartialEq, Eq)]
enum Op {
    Put,
    Get,
    Delete,
    Scan,
}

impl Op {
    fn parse(s: &str) -> Self {
        match s {
            "get" => Op::Get,
            "delete" => Op::Delete,
            "scan" => Op::Scan,
            _ => Op::Put,
        }
    }
}

#[component]
pub fn KvConsole() -> impl IntoView {
    let dash = expect_context::<Dashboard>();
    let op = RwSignal::new(Op::Put);
    let key = RwSignal::new(String::new());
    let value = RwSignal::new(String::new());
    // A lease id to attach a PUT to, in hexadecimal as etcdctl and `raftkv lease` print it (empty = none).
    let lease = RwSignal::new(String::new());
    let node = RwSignal::new(String::new());
    let serializable = RwSignal::new(false);
    let result = RwSignal::new(String::new());

    let run = move || {
        let (op, key, value, serializable) = (op.get(), key.get(), value.get(), serializable.get());
        if key.is_empty() && op != Op::Scan {
            result.set("a key is required".into());
            return;
        }
        let lease_text = lease.get();
        let lease_id = match lease_text.trim() {
            "" => 0,
            t => match i64::from_str_radix(t.trim_start_matches("0x"), 16) {
                Ok(id) if id > 0 => id,
                _ => {
                    result.set(format!("lease {t:?} is not a lease id (hexadecimal, as `raftkv lease grant` prints)"));
                    return;
                }
            },
        };
        let Some(target) = dash.target(&node.get()) else {
            result.set("no node is answering".into());
            return;
        };
        let consistency = if serializable { "serializable" } else { "linearizable" };
        let label = match op {
            Op::Put if lease_id != 0 => format!("PUT {key} = {value} (lease {lease_id:x})"),
            Op::Put => format!("PUT {key} = {value}"),
            Op::Get => format!("GET {key} ({consistency})"),
            Op::Delete => format!("DELETE {key}"),
            Op::Scan => format!("SCAN {key}* ({consistency})"),
        };
        let is_write = matches!(op, Op::Put | Op::Delete);
        let seq = dash.begin(label.clone(), &target, is_write);
        result.set(format!("{label}: sent to {target}…"));
        spawn_local(async move {
            let started = api::now_ms();
            let n = Node::new(target.clone());
            let outcome = match op {
                Op::Put => n.put(&key, &value, lease_id).await.map(|r| {
                    let prev = r.prev_kv.map_or("new key".to_string(), |p| format!("was {:?}", show_bytes(&p.value)));
                    (format!("stored ({prev})"), r.header)
                }),
                Op::Get => n.get(&key, serializable).await.map(|r| {
                    let found = match r.kv {
                        Some(kv) => format!("{:?} (mod revision {})", show_bytes(&kv.value), kv.mod_revision),
                        None => "not found".to_string(),
                    };
                    (found, r.header)
                }),
                Op::Delete => n.delete(&key).await.map(|r| (format!("deleted {} key(s)", r.deleted), r.header)),
                Op::Scan => n.scan(&key, serializable, 100).await.map(|r| {
                    let kvs: Vec<String> =
                        r.kvs.iter().map(|kv| format!("{} = {}", show_bytes(&kv.key), show_bytes(&kv.value))).collect();
                    let more = if r.more { " (more…)" } else { "" };
                    (format!("{} key(s){more}: {}", kvs.len(), kvs.join(", ")), r.header)
                }),
            };
            let millis = api::now_ms() - started;
            result.set(match &outcome {
                Ok((detail, header)) => {
                    let (by, rev) = header.as_ref().map_or((0, 0), |h| (h.member_id, h.revision));
                    format!("{label}: {detail} · answered by node {by} · revision {rev} · {millis:.1} ms")
                }
                Err(e) => format!("{label}: {e} · {millis:.1} ms"),
            });
            dash.finish(seq, millis, outcome.as_ref().map(|(d, h)| (d.as_str(), h.as_ref())));
        });
    };

    view! {
        <section class="kv">
            <h2>"Key-value console"</h2>
            <form on:submit=move |ev| {
                ev.prevent_default();
                run();
            }>
                <select data-testid="kv-op" on:change=move |ev| op.set(Op::parse(&event_target_value(&ev)))>
                    <option value="put">"PUT"</option>
                    <option value="get">"GET"</option>
                    <option value="delete">"DELETE"</option>
                    <option value="scan">"SCAN prefix"</option>
                </select>
                <input data-testid="kv-key" placeholder=move || if op.get() == Op::Scan { "prefix" } else { "key" } bind:value=key/>
                <Show when=move || op.get() == Op::Put>
                    <input data-testid="kv-value" placeholder="value" bind:value=value/>
                    <input data-testid="kv-lease" placeholder="lease id (optional)" size="16" bind:value=lease/>
                </Show>
                <NodeSelect auto_label="send to: leader" choice=node/>
                <Show when=move || matches!(op.get(), Op::Get | Op::Scan)>
                    <label>
                        <input type="checkbox" bind:checked=serializable/>
                        "serializable (local, may be stale)"
                    </label>
                </Show>
                <button type="submit" data-testid="kv-send">"send"</button>
            </form>
            <pre class="result" data-testid="kv-result">{move || result.get()}</pre>
        </section>
    }
}
