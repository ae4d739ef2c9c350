"""History page: every recorded run (this session's, other sessions', the CLI's) from the ledger,
the one-page report and the losses per step of a run on the loaded model, and this session's
runs with their settings and results."""

import json

import pandas as pd
import streamlit as st

from app.charts import loss_curves_figure, shown_number
from app.state import ledger, ledger_runs, report_download, run_picker, runs, scores_file, start_summary
from core.ledger import ledger_csv, record_columns

st.title("History")
start_summary()  # the sidebar line: model, forget set, tasks


@st.fragment(run_every=2.0)
def recorded() -> None:
    """Every recorded run, refreshed while the page is open (runs go on in the worker)."""
    rows = ledger_runs()
    table = pd.DataFrame(record_columns(rows))
    st.subheader(f"Ledger: {ledger().path}")
    if table.empty:
        st.info("No run recorded yet, from the dashboard or the CLI.")
        return
    shown = {"run": "run", "created": "requested", "status": "status", "source": "from",
             "reason": "ticket / reason", "method": "method", "mode": "mode", "instances": "instances",
             "tasks": "forgotten tasks", "model_path": "model", "result_path": "unlearned model",
             "error": "error"}
    st.dataframe(table[list(shown)].rename(columns=shown).fillna(""), hide_index=True, width="stretch")
    st.download_button("Download the ledger (CSV)", ledger_csv(rows), "ledger.csv", "text/csv")


recorded()
st.subheader("One-page report of a run on this model")
st.caption("Ticket, request, method and settings, the before / after / oracle scores per task and split, "
           "the charts, the membership attack, the verdict, the checkpoint's hash and lineage: one HTML "
           "page that opens offline and prints to PDF.")
picked = run_picker(key="history_run")
if picked is not None:
    stored = scores_file(picked)
    if ("comparison" in picked.cache or (stored is not None and stored.is_file())
            or st.button("Score this run for its report", key="history_score")):
        report_download(picked, key=f"history_report_{picked.id}")
    if picked.history:  # the losses it reported per step, kept in the ledger (drawn once per run)
        if "history_losses" not in picked.cache:
            picked.cache["history_losses"] = loss_curves_figure(picked.history).update_layout(
                title=f"Losses per step of #{picked.id}")
        st.plotly_chart(picked.cache["history_losses"], width="stretch", key="history_losses")
st.subheader("This session")
if not runs():
    st.info("No run yet in this session. Runs from the Unlearn and Compare pages appear here.")
    st.stop()
rows = []
for run in reversed(runs()):
    board = run.cache.get("comparison")
    scores = board.leaderboard.set_index("model") if board is not None else None
    uis2 = scores.at[run.method, "uis2"] if scores is not None else None
    uis = scores.at[run.method, "uis"] if scores is not None else None
    rows.append({"run": run.id, "created": run.created, "model": run.model_path.rsplit("/", 1)[-1],
                 "method": run.method, "mode": run.request.mode, "instances": len(run.request.instances),
                 "forget tasks": ", ".join(run.request.tasks), "seconds": round(run.seconds, 2),
                 "oracle": run.oracle is not None, "UIS v2": shown_number(uis2),
                 "UIS (v1)": shown_number(uis), "saved as": run.checkpoint or ""})
table = pd.DataFrame(rows)
st.dataframe(table, hide_index=True, width="stretch", key="session_runs")
st.download_button("Download (CSV)", table.to_csv(index=False), "runs.csv", "text/csv")
for run in reversed(runs()):
    with st.expander(run.label):
        st.code(json.dumps({"request": run.request.to_dict(), "config": run.config,
                            "extras": {k: v for k, v in run.extras.items() if k != "subspace_ranks"}},
                           indent=1, default=str), language="json")
