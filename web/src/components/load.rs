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
                <NumberField
                    label="writes/s "
                    hint=" (0 = as fast as they are acknowledged)"
                    testid="load-rate"
                    range=(0, 1_000_000)
                    get=move || load.config.with(|c| c.rate)
                    set=move |v| load.config.update(|c| c.rate = v)
                />
                <NumberField
                    label="in flight "
                    hint=""
                    testid="load-in-flight"
                    range=(1, 256)
                    get=move || load.config.with(|c| c.in_flight)
                    set=move |v| {
                        load.config.update(|c| c.in_flight = v);
                        // The number of writers is fixed when the generator starts.
                        if load.running.get_untracked() {
                            load.stop();
                            load.start(dash);
                        }
                    }
                />
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

/// A labelled number input, clamped to `range`; a value that is not a number is ignored.
#[component]
fn NumberField(
    label: &'static str,
    hint: &'static str,
    testid: &'static str,
    range: (u32, u32),
    get: impl Fn() -> u32 + Send + Sync + 'static,
    set: impl Fn(u32) + 'static,
) -> impl IntoView {
    view! {
        <label>
            {label}
            <input
                type="number"
                min=range.0
                max=range.1
                data-testid=testid
                prop:value=move || get().to_string()
                on:change=move |ev| {
                    if let Ok(v) = event_target_value(&ev).trim().parse::<u32>() {
                        set(v.clamp(range.0, range.1))
                    }
                }
            />
            {hint}
        </label>
    }
}
