//! The load generator's controls: how fast, how many in flight, to which node; start and stop; and what it has
//! done so far.

use leptos::prelude::*;

use super::NodeSelect;
use crate::{
    lab::{load::wall_ms, model::buckets},
    model::Outcome,
    state::Dashboard,
};

#[component]
pub fn LoadPanel() -> impl IntoView {
    let dash = expect_context::<Dashboard>();
    let load = dash.load;
    let target = RwSignal::new(String::new());
    Effect::new(move |_| {
        let t = target.get();
        load.config.update(|c| c.target = t);
    });
    let number = move |ev: leptos::ev::Event| event_target_value(&ev).trim().parse::<u32>().ok();
    let totals = move || {
        dash.tick.track();
        let now = wall_ms();
        load.with_records(|r| {
            let (mut ok, mut failed, mut unknown) = (0usize, 0usize, 0usize);
            for w in r {
                match w.outcome {
                    Outcome::Ok => ok += 1,
                    Outcome::Failed => failed += 1,
                    Outcome::Unknown => unknown += 1,
                    Outcome::Pending => {}
                }
            }
            let last = buckets(r, now - 1000.0, now, 1000.0).pop().unwrap_or_default();
            let ms = |v: Option<f64>| v.map_or("—".to_string(), |v| format!("{v:.1} ms"));
            format!(
                "{ok} acknowledged · {unknown} unknown · {failed} failed · last second: {} writes/s, p50 {}, p99 {}",
                last.acked,
                ms(last.p50),
                ms(last.p99)
            )
        })
    };
    view! {
        <section class="load">
            <h2>"Load"</h2>
            <form on:submit=|ev| ev.prevent_default()>
                <label>
                    "writes/s "
                    <input
                        type="number"
                        min="0"
                        size="6"
                        data-testid="load-rate"
                        prop:value=move || load.config.with(|c| c.rate.to_string())
                        on:change=move |ev| {
                            if let Some(v) = number(ev) {
                                load.config.update(|c| c.rate = v)
                            }
                        }
                    />
                    " (0 = as fast as they are acknowledged)"
                </label>
                <label>
                    "in flight "
                    <input
                        type="number"
                        min="1"
                        max="256"
                        size="4"
                        data-testid="load-in-flight"
                        prop:value=move || load.config.with(|c| c.in_flight.to_string())
                        on:change=move |ev| {
                            if let Some(v) = number(ev) {
                                load.config.update(|c| c.in_flight = v.clamp(1, 256))
                            }
                        }
                    />
                </label>
                <NodeSelect auto_label="to: the leader" choice=target/>
                <button
                    type="button"
                    data-testid="load-start"
                    disabled=move || load.running.get()
                    on:click=move |_| load.start(dash)
                >
                    "start"
                </button>
                <button type="button" data-testid="load-stop" disabled=move || !load.running.get() on:click=move |_| load.stop()>
                    "stop"
                </button>
                <span class="dim">{move || if load.running.get() { "running" } else { "stopped" }}</span>
            </form>
            <div class="load-totals" data-testid="load-totals">{totals}</div>
        </section>
    }
}
