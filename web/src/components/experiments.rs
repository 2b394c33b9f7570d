//! The guided experiments: each says what to expect, runs on the real cluster (in control mode), and shows what it
//! measured and why Raft behaves so. One runs at a time.

use leptos::{prelude::*, task::spawn_local};

use crate::{
    lab::experiments::{self, Experiment, Report, Run},
    model::term_color,
    state::Dashboard,
};

#[component]
pub fn Experiments() -> impl IntoView {
    let dash = expect_context::<Dashboard>();
    let busy = RwSignal::new(None::<Experiment>);
    view! {
        <section class="experiments">
            <h2>"Experiments"</h2>
            <Show when=move || !dash.control.get()>
                <p class="dim">"Experiments need a cluster this page controls: run raftkv cluster and open its dashboard."</p>
            </Show>
            <div class="experiment-list">
                {Experiment::ALL.into_iter().map(|e| view! { <ExperimentCard which=e busy=busy/> }).collect_view()}
            </div>
        </section>
    }
}

#[component]
fn ExperimentCard(which: Experiment, busy: RwSignal<Option<Experiment>>) -> impl IntoView {
    let dash = expect_context::<Dashboard>();
    let steps = RwSignal::new(Vec::<String>::new());
    let result = RwSignal::new(None::<Result<Report, String>>);
    let start = move |_| {
        if busy.get_untracked().is_some() {
            return;
        }
        busy.set(Some(which));
        result.set(None);
        spawn_local(async move {
            let r = experiments::run(which, Run::new(dash, steps)).await;
            result.set(Some(r));
            busy.set(None);
        });
    };
    let status = move || match (busy.get() == Some(which), result.get()) {
        (true, _) => "running",
        (false, None) => "not run",
        (false, Some(Ok(r))) if r.passed => "passed",
        (false, Some(Ok(_))) => "FAILED",
        (false, Some(Err(_))) => "could not finish",
    };
    view! {
        <article class="experiment" data-experiment=which.name()>
            <h3>
                <button
                    data-testid=format!("experiment-{}", which.name())
                    disabled=move || busy.get().is_some() || !dash.control.get()
                    on:click=start
                >
                    "▶ "
                    {which.title()}
                </button>
                <span class=move || format!("verdict {}", status().replace(' ', "-"))>{status}</span>
            </h3>
            <p class="expect">{which.expect()}</p>
            <ol class="steps">{move || steps.get().into_iter().map(|s| view! { <li>{s}</li> }).collect_view()}</ol>
            <Show when=move || result.with(Option::is_some)>
                <div
                    class="result"
                    data-testid="experiment-result"
                    data-passed=move || result.with(|r| matches!(r, Some(Ok(r)) if r.passed).to_string())
                >
                    {move || match result.get() {
                        Some(Ok(r)) => report_view(r).into_any(),
                        Some(Err(e)) => view! { <p class="bad">{format!("could not finish: {e}")}</p> }.into_any(),
                        None => ().into_any(),
                    }}
                    <p class="why">{which.why()}</p>
                </div>
            </Show>
        </article>
    }
}

fn report_view(r: Report) -> impl IntoView {
    let figures = r.figures.into_iter().map(|f| view! { <li>{f}</li> }).collect_view();
    // Machine-readable copies of the figures, for tests and scripts.
    let data = r.data.into_iter().map(|(k, v)| view! { <data data-figure=k value=v></data> }).collect_view();
    let logs = r
        .logs
        .into_iter()
        .map(|(label, cells)| {
            view! {
                <div class="log-strip">
                    <span class="dim">{label}</span>
                    <span class="cells">
                        {cells
                            .into_iter()
                            .map(|(i, t)| {
                                view! {
                                    <span class="cell" style=format!("background: {}", term_color(t)) title=format!("index {i}, term {t}")>
                                        {format!("{i}:t{t}")}
                                    </span>
                                }
                            })
                            .collect_view()}
                    </span>
                </div>
            }
        })
        .collect_view();
    let leaders = (!r.leaders.is_empty()).then(|| {
        let rows = r
            .leaders
            .into_iter()
            .map(|(term, ls)| {
                let two = ls.len() > 1;
                let names = ls.iter().map(|l| format!("node {l}")).collect::<Vec<_>>().join(", ");
                view! { <tr class:bad=two><td>{term}</td><td>{names}</td></tr> }
            })
            .collect_view();
        view! {
            <table class="leaders">
                <thead><tr><th>"term"</th><th>"leader(s) named in the events"</th></tr></thead>
                <tbody>{rows}</tbody>
            </table>
        }
    });
    view! {
        <ul class="figures">{figures}</ul>
        {data}
        {logs}
        {leaders}
    }
}
