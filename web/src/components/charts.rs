//! Live charts over a rolling 60 s window (ending at the scrubbed moment when replaying): acknowledged writes per
//! second with failures and unknown outcomes below the axis and every gap in the acknowledgements shaded and
//! measured; p50/p99 latency; each node's commit index; the term, with a mark at each election. Plain SVG,
//! redrawn 4 times a second.

use leptos::prelude::*;

use crate::{
    lab::{
        load::wall_ms,
        model::{ack_times, buckets, gaps, show_ms, spans, term_changes, Bucket},
    },
    model::term_color,
    state::Dashboard,
};

const WINDOW_MS: f64 = 60_000.0;
const W: f64 = 560.0;
const H: f64 = 150.0;
const PAD_L: f64 = 46.0;
const PAD_B: f64 = 18.0;
/// A spell this long without an acknowledged write, while the generator runs, is shaded as a gap — or three
/// intervals of a rate-limited generator, if longer.
const GAP_MS: f64 = 300.0;

/// The commit chart spans two columns: twice as wide, same height and text size.
const WIDE: f64 = 2.0 * W;

fn x_of(t: f64, from: f64) -> f64 {
    x_in(t, from, W)
}

fn x_in(t: f64, from: f64, width: f64) -> f64 {
    PAD_L + (t - from) / WINDOW_MS * (width - PAD_L - 4.0)
}

/// A y axis label and grid line.
fn y_axis(max: f64, unit: &str) -> impl IntoView {
    let top = 8.0;
    view! {
        <line class="axis" x1=PAD_L y1=H - PAD_B x2=W - 4.0 y2=H - PAD_B></line>
        <line class="grid" x1=PAD_L y1=top x2=W - 4.0 y2=top></line>
        <text class="tick" x=PAD_L - 4.0 y=top + 4.0 text-anchor="end">{format!("{max:.0}{unit}")}</text>
        <text class="tick" x=PAD_L - 4.0 y=H - PAD_B + 4.0 text-anchor="end">"0"</text>
        <text class="tick" x=PAD_L y=H - 4.0>"−60 s"</text>
        <text class="tick" x=W - 4.0 y=H - 4.0 text-anchor="end">"now"</text>
    }
}

fn nice_max(v: f64) -> f64 {
    let v = v.max(1.0);
    let p = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * p).find(|&m| m >= v).unwrap_or(v)
}

#[component]
pub fn Charts() -> impl IntoView {
    let dash = expect_context::<Dashboard>();
    let load = dash.load;
    // (window start, window end)
    let window = Memo::new(move |_| {
        dash.tick.track();
        let end = dash.scrub.get().unwrap_or_else(wall_ms);
        (end - WINDOW_MS, end)
    });
    let data = Memo::new(move |_| {
        let (from, to) = window.get();
        let rate = load.config.with(|c| c.rate);
        let min_gap = if rate > 0 { GAP_MS.max(3000.0 / f64::from(rate)) } else { GAP_MS };
        load.with_records(|r| {
            let b = buckets(r, from, to, 1000.0);
            let mut g = Vec::new();
            for (a, z) in load.spans_within(from, to) {
                let mut acks = ack_times(r, a, z);
                // A gap also runs from the start of the load, or to now, with no acknowledgement at all.
                acks.insert(0, a);
                acks.push(z);
                g.extend(gaps(&acks, min_gap));
            }
            let longest = g.iter().copied().max_by(|x, y| (x.1 - x.0).total_cmp(&(y.1 - y.0)));
            (b, g, longest)
        })
    });
    let writes = move || {
        let (from, _) = window.get();
        let (b, g, _) = data.get();
        let max = nice_max(b.iter().map(|b| b.acked as f64).fold(0.0, f64::max));
        let bad_max = b.iter().map(|b| (b.failed + b.unknown) as f64).fold(1.0, f64::max).max(max / 4.0);
        let plot = H - PAD_B - 8.0;
        let bar_w = (W - PAD_L - 4.0) / 60.0 - 1.0;
        let bars = b
            .iter()
            .map(|k: &Bucket| {
                let x = x_of(k.start, from);
                let h = k.acked as f64 / max * plot * 0.8;
                let bad = (k.failed + k.unknown) as f64 / bad_max * plot * 0.2;
                let unknown_h =
                    if k.failed + k.unknown > 0 { bad * k.unknown as f64 / (k.failed + k.unknown) as f64 } else { 0.0 };
                let base = H - PAD_B - plot * 0.2;
                view! {
                    <rect class="bar ok" x=x y=base - h width=bar_w height=h>
                        <title>{format!("{} acknowledged, {} unknown, {} failed", k.acked, k.unknown, k.failed)}</title>
                    </rect>
                    <rect class="bar unknown" x=x y=base width=bar_w height=unknown_h></rect>
                    <rect class="bar failed" x=x y=base + unknown_h width=bar_w height=bad - unknown_h></rect>
                }
            })
            .collect_view();
        let shaded = g
            .into_iter()
            .map(|(a, z)| {
                let (x1, x2) = (x_of(a, from), x_of(z, from));
                view! {
                    <rect class="gap" x=x1 y=8.0 width=(x2 - x1).max(2.0) height=H - PAD_B - 8.0></rect>
                    <text class="gap-label" x=(x1 + x2) / 2.0 y=20.0 text-anchor="middle">{show_ms(z - a)}</text>
                }
            })
            .collect_view();
        view! {
            {shaded}
            {bars}
            {y_axis(max / 0.8, "/s")}
        }
    };
    let latency = move || {
        let (from, _) = window.get();
        let (b, _, _) = data.get();
        let max = nice_max(b.iter().filter_map(|b| b.p99).fold(1.0, f64::max));
        let y = |v: f64| H - PAD_B - v / max * (H - PAD_B - 8.0);
        let line = |pick: fn(&Bucket) -> Option<f64>| {
            b.iter()
                .filter_map(|k| pick(k).map(|v| format!("{:.1},{:.1}", x_of(k.start + 500.0, from), y(v))))
                .collect::<Vec<_>>()
                .join(" ")
        };
        view! {
            <polyline class="line p99" points=line(|b| b.p99)></polyline>
            <polyline class="line p50" points=line(|b| b.p50)></polyline>
            {y_axis(max, " ms")}
        }
    };
    let commits = move || {
        let (from, to) = window.get();
        dash.with_samples(|s| {
            // When replaying, nothing after the scrubbed moment.
            let s = &s[s.partition_point(|x| x.at < from)..s.partition_point(|x| x.at <= to)];
            let ids: std::collections::BTreeSet<u64> = s.iter().flat_map(|x| x.nodes.iter().map(|n| n.id)).collect();
            let lo = s.iter().flat_map(|x| x.nodes.iter().map(|n| n.commit)).min().unwrap_or(0) as f64;
            let hi = s.iter().flat_map(|x| x.nodes.iter().map(|n| n.commit)).max().unwrap_or(0) as f64;
            let span = (hi - lo).max(1.0);
            let y = |v: f64| H - PAD_B - (v - lo) / span * (H - PAD_B - 8.0);
            let lines = ids
                .into_iter()
                .enumerate()
                .map(|(i, id)| {
                    let pts: Vec<String> = s
                        .iter()
                        .step_by(2)
                        .filter_map(|x| x.nodes.iter().find(|n| n.id == id).map(|n| (x.at, n.commit)))
                        .map(|(t, c)| format!("{:.1},{:.1}", x_in(t, from, WIDE), y(c as f64)))
                        .collect();
                    let last_y = pts.last().and_then(|p| p.split(',').nth(1)?.parse::<f64>().ok()).unwrap_or(H / 2.0);
                    view! {
                        <polyline class=format!("line node-line n{}", i % 6) points=pts.join(" ")></polyline>
                        <text class="tick" x=WIDE - 8.0 y=last_y - 3.0 - 9.0 * i as f64 text-anchor="end">{format!("node {id}")}</text>
                    }
                })
                .collect_view();
            let terms = spans(s, to, |x| Some(x.term));
            let bands = terms
                .into_iter()
                .map(|sp| {
                    let (x1, x2) = (x_in(sp.from, from, WIDE), x_in(sp.to, from, WIDE));
                    view! { <rect class="term-band" x=x1 y=8.0 width=(x2 - x1).max(0.0) height=H - PAD_B - 8.0 fill=term_color(sp.value)></rect> }
                })
                .collect_view();
            let marks = term_changes(s)
                .into_iter()
                .map(|(t, term)| {
                    let x = x_in(t, from, WIDE);
                    view! {
                        <line class="election" x1=x y1=8.0 x2=x y2=H - PAD_B></line>
                        <text class="tick election-label" x=x + 2.0 y=16.0>{format!("term {term}")}</text>
                    }
                })
                .collect_view();
            view! {
                {bands}
                {marks}
                {lines}
                <line class="axis" x1=PAD_L y1=H - PAD_B x2=WIDE - 4.0 y2=H - PAD_B></line>
                <text class="tick" x=PAD_L - 4.0 y=12.0 text-anchor="end">{format!("{hi:.0}")}</text>
                <text class="tick" x=PAD_L - 4.0 y=H - PAD_B text-anchor="end">{format!("{lo:.0}")}</text>
                <text class="tick" x=PAD_L y=H - 4.0>"−60 s · commit index; bands = terms; lines = elections"</text>
            }
        })
    };
    let longest = move || {
        data.with(|(_, _, l)| match l {
            Some((a, z)) => format!(
                "longest spell without an acknowledged write in the last 60 s: {} (from {} to {})",
                show_ms(z - a),
                crate::components::event_log::clock(*a as i64),
                crate::components::event_log::clock(*z as i64)
            ),
            None => "no gap in acknowledged writes in the last 60 s".to_string(),
        })
    };
    let svg = format!("0 0 {W} {H}");
    view! {
        <section class="charts">
            <h2>"Live charts" <span class="dim">"last 60 s"</span></h2>
            <div class="chart-grid">
                <figure>
                    <figcaption>"acknowledged writes per second (below the line: unknown, failed)"</figcaption>
                    <svg data-testid="writes-chart" viewBox=svg.clone() class="chart">{writes}</svg>
                    <div class="gap-note" data-testid="writes-gap">{longest}</div>
                </figure>
                <figure>
                    <figcaption>"write latency: p50 (solid), p99 (dashed)"</figcaption>
                    <svg data-testid="latency-chart" viewBox=svg.clone() class="chart">{latency}</svg>
                </figure>
                <figure class="wide">
                    <figcaption>"each node's commit index, the term, and elections"</figcaption>
                    <svg data-testid="commit-chart" viewBox=format!("0 0 {WIDE} {H}") class="chart">{commits}</svg>
                </figure>
            </div>
        </section>
    }
}
