//! The timeline: every node's role over the last minutes as a swim lane, the terms as bands behind them, each
//! node's events as ticks; and a scrubber to go back (RaftScope's replay): the graph and the charts then show that
//! moment, from the samples the page recorded.

use leptos::prelude::*;

use crate::{
    components::event_log::clock,
    lab::{load::wall_ms, model::spans},
    model::term_color,
    state::{Dashboard, HISTORY_MS},
};

const W: f64 = 1000.0;
const LANE: f64 = 26.0;
const PAD_L: f64 = 60.0;
const TOP: f64 = 6.0;

#[component]
pub fn Timeline() -> impl IntoView {
    let dash = expect_context::<Dashboard>();
    // The time range shown: from the oldest sample (at most HISTORY_MS ago) to now.
    let range = Memo::new(move |_| {
        dash.tick.track();
        let now = wall_ms();
        let oldest = dash.with_samples(|s| s.first().map_or(now, |s| s.at)).max(now - HISTORY_MS);
        (oldest, now.max(oldest + 1.0))
    });
    let x_of = move |t: f64, (from, to): (f64, f64)| PAD_L + (t - from) / (to - from) * (W - PAD_L - 4.0);
    let ids = Memo::new(move |_| dash.cluster.with(|c| c.nodes.iter().filter_map(|n| n.id).collect::<Vec<_>>()));
    let height = move || TOP + LANE * ids.with(Vec::len).max(1) as f64 + 20.0;
    let drawing = move || {
        let r = range.get();
        let ids = ids.get();
        let h = height();
        dash.with_samples(|s| {
            let bands = spans(s, r.1, |x| Some(x.term))
                .into_iter()
                .map(|sp| {
                    let (x1, x2) = (x_of(sp.from, r), x_of(sp.to, r));
                    view! {
                        <rect class="term-band" x=x1 y=0.0 width=(x2 - x1).max(0.0) height=h - 16.0 fill=term_color(sp.value)></rect>
                        <text class="tick" x=x1 + 2.0 y=h - 4.0>{format!("t{}", sp.value)}</text>
                    }
                })
                .collect_view();
            let lanes = ids
                .iter()
                .enumerate()
                .map(|(lane, &id)| {
                    let y = TOP + lane as f64 * LANE;
                    let selected = move || dash.selected.get() == Some(id);
                    let segments = spans(s, r.1, |x| x.nodes.iter().find(|n| n.id == id).map(|n| n.role))
                        .into_iter()
                        .map(|sp| {
                            let (x1, x2) = (x_of(sp.from, r), x_of(sp.to, r));
                            let label = if x2 - x1 > 46.0 { sp.value.label() } else { "" };
                            view! {
                                <rect class=format!("lane-seg {}", sp.value.class()) x=x1 y=y + 3.0 width=(x2 - x1).max(0.5) height=LANE - 8.0>
                                    <title>{format!("node {id}: {} from {} to {}", sp.value.label(), clock(sp.from as i64), clock(sp.to as i64))}</title>
                                </rect>
                                <text class="lane-label" x=x1 + 3.0 y=y + LANE / 2.0 + 3.0>{label}</text>
                            }
                        })
                        .collect_view();
                    let ticks = dash.events.with(|evs| {
                        evs.iter()
                            .filter(|e| e.node_id == Some(id) && (e.event.unix_millis as f64) >= r.0)
                            .map(|e| {
                                let x = x_of(e.event.unix_millis as f64, r);
                                let title = format!("{} {}", clock(e.event.unix_millis), e.event.message);
                                view! { <line class="event-tick" x1=x y1=y + 1.0 x2=x y2=y + LANE - 3.0><title>{title}</title></line> }
                            })
                            .collect_view()
                    });
                    view! {
                        <g
                            class="lane"
                            class:selected=selected
                            tabindex="0"
                            role="button"
                            aria-label=format!("select node {id}")
                            on:click=move |_| dash.selected.set(Some(id))
                            on:keydown=crate::components::on_activate(move || dash.selected.set(Some(id)))
                        >
                            <text class="lane-name" x=4.0 y=y + LANE / 2.0 + 4.0>{format!("node {id}")}</text>
                            {segments}
                            {ticks}
                        </g>
                    }
                })
                .collect_view();
            let cursor = dash.scrub.get().map(|t| {
                let x = x_of(t, r);
                view! { <line class="cursor" x1=x y1=0.0 x2=x y2=h - 16.0></line> }
            });
            view! {
                {bands}
                {lanes}
                {cursor}
            }
        })
    };
    // The scrubber: 0..=1000 over the range; the far right is "live".
    let position = move || {
        let (from, to) = range.get();
        dash.scrub.get().map_or(1000.0, |t| ((t - from) / (to - from) * 1000.0).clamp(0.0, 1000.0))
    };
    let scrub = move |ev: leptos::ev::Event| {
        let v: f64 = event_target_value(&ev).parse().unwrap_or(1000.0);
        let (from, to) = range.get_untracked();
        dash.scrub.set((v < 1000.0).then(|| from + v / 1000.0 * (to - from)));
    };
    view! {
        <section class="timeline">
            <h2>
                "Timeline"
                <span class="dim">
                    {move || match dash.scrub.get() {
                        Some(t) => format!("showing {}", clock(t as i64)),
                        None => "live".to_string(),
                    }}
                </span>
                <button data-testid="timeline-live" disabled=move || dash.scrub.get().is_none() on:click=move |_| dash.scrub.set(None)>
                    "back to live"
                </button>
            </h2>
            <svg class="timeline-svg" data-testid="timeline" viewBox=move || format!("0 0 {W} {}", height())>
                {drawing}
            </svg>
            <input
                type="range"
                class="scrubber"
                data-testid="timeline-scrubber"
                aria-label="go back in time"
                min="0"
                max="1000"
                step="1"
                prop:value=position
                on:input=scrub
            />
        </section>
    }
}
