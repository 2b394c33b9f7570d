//! Every operation made from this page and what became of it — ok, error, or unknown (the answer was lost: the
//! write may still have been applied) — so a person can follow each write across a failure.

use leptos::prelude::*;

use crate::state::Dashboard;

#[component]
pub fn History() -> impl IntoView {
    let dash = expect_context::<Dashboard>();
    view! {
        <section class="history">
            <h2>"History"</h2>
            <table data-testid="history">
                <thead>
                    <tr>
                        <th>"#"</th>
                        <th>"operation"</th>
                        <th>"sent to"</th>
                        <th>"outcome"</th>
                        <th>"answered by"</th>
                        <th>"revision"</th>
                        <th>"ms"</th>
                        <th>"result"</th>
                    </tr>
                </thead>
                <tbody>
                    {move || {
                        dash.history.with(|h| {
                            h.iter()
                                .rev()
                                .take(100)
                                .map(|r| {
                                    view! {
                                        <tr class=format!("outcome-{}", r.outcome.label())>
                                            <td>{r.seq}</td>
                                            <td class="op">{r.op.clone()}</td>
                                            <td>{r.target.clone()}</td>
                                            <td class="outcome">{r.outcome.label()}</td>
                                            <td>{r.answered_by.map(|n| format!("node {n}")).unwrap_or_default()}</td>
                                            <td>{r.revision.map(|v| v.to_string()).unwrap_or_default()}</td>
                                            <td>{r.millis.map(|m| format!("{m:.1}")).unwrap_or_default()}</td>
                                            <td class="detail">{r.detail.clone()}</td>
                                        </tr>
                                    }
                                })
                                .collect_view()
                        })
                    }}
                </tbody>
            </table>
        </section>
    }
}
