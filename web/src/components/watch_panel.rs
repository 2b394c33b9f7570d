//! A live watch on a key prefix: every change under it, as the chosen node applies it.

use leptos::{prelude::*, task::spawn_local};
use raftkv_proto::event::EventType;

use super::NodeSelect;
use crate::{api::Node, model::show_bytes, state::Dashboard};

#[component]
pub fn WatchPanel() -> impl IntoView {
    let dash = expect_context::<Dashboard>();
    let prefix = RwSignal::new(String::new());
    let node = RwSignal::new(String::new());
    // Bumped to stop the running watch (its loop checks the generation it started with).
    let generation = RwSignal::new(0u64);
    let watching = RwSignal::new(false);
    let lines = RwSignal::new(Vec::<String>::new());

    let start = move || {
        let Some(target) = dash.target(&node.get_untracked()) else {
            lines.update(|l| l.push("no node is answering".into()));
            return;
        };
        generation.update(|g| *g += 1);
        let mine = generation.get_untracked();
        let p = prefix.get_untracked();
        watching.set(true);
        lines.set(vec![format!("watching {p:?}* on {target}")]);
        spawn_local(async move {
            match Node::new(target.clone()).watch(&p).await {
                Err(e) => lines.update(|l| l.push(format!("watch failed: {e}"))),
                Ok(mut stream) => loop {
                    if generation.get_untracked() != mine {
                        break;
                    }
                    // Wait for the next message or a stop, whichever is first; dropping the stream on a stop
                    // aborts its fetch (a browser allows only six connections per node).
                    let stopped = async {
                        while generation.get_untracked() == mine {
                            gloo_timers::future::sleep(std::time::Duration::from_millis(200)).await;
                        }
                    };
                    let next = match futures::future::select(Box::pin(stream.message()), Box::pin(stopped)).await {
                        futures::future::Either::Left((m, _)) => m,
                        futures::future::Either::Right(_) => break,
                    };
                    match next {
                        Ok(Some(resp)) => {
                            if generation.get_untracked() != mine {
                                break;
                            }
                            let rev = resp.header.as_ref().map_or(0, |h| h.revision);
                            for ev in resp.events {
                                let kv = ev.kv.unwrap_or_default();
                                let line = match EventType::try_from(ev.r#type) {
                                    Ok(EventType::Delete) => format!("rev {rev}: DELETE {}", show_bytes(&kv.key)),
                                    _ => format!("rev {rev}: PUT {} = {}", show_bytes(&kv.key), show_bytes(&kv.value)),
                                };
                                lines.update(|l| {
                                    l.push(line);
                                    if l.len() > 200 {
                                        l.remove(1);
                                    }
                                });
                            }
                        }
                        Ok(None) => {
                            lines.update(|l| l.push("the node ended the watch".into()));
                            break;
                        }
                        Err(e) => {
                            lines.update(|l| l.push(format!("watch ended: {}: {}", e.code(), e.message())));
                            break;
                        }
                    }
                },
            }
            if generation.get_untracked() == mine {
                watching.set(false);
            }
        });
    };
    let stop = move || {
        generation.update(|g| *g += 1);
        watching.set(false);
        lines.update(|l| l.push("stopped".into()));
    };

    view! {
        <section class="watch">
            <h2>"Watch"</h2>
            <form on:submit=move |ev| {
                ev.prevent_default();
                if watching.get_untracked() { stop() } else { start() }
            }>
                <input placeholder="key prefix (empty = everything)" bind:value=prefix/>
                <NodeSelect auto_label="on: leader" choice=node/>
                <button type="submit">{move || if watching.get() { "stop" } else { "watch" }}</button>
            </form>
            <ol class="watch-lines">
                {move || lines.get().into_iter().rev().map(|l| view! { <li>{l}</li> }).collect_view()}
            </ol>
        </section>
    }
}
