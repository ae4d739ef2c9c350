"""Unlearn page: pick a method, set its knobs, preview the interference, run with live losses;
every run is recorded in the ledger and its model saved beside it, ready to download."""

import secrets
import time

import streamlit as st

from app.charts import conflict_heatmap, loss_curves_figure
from app.forms import config_form
from app.state import (
    USER_ERRORS,
    Run,
    add_run,
    current_or_stop,
    describe,
    ledger,
    next_run_id,
    request_or_stop,
)
from core.checkpoints import checkpoint_paths, checkpoint_zip
from core.evaluation import analyze_conflicts
from core.unlearning import get_unlearner, list_unlearners
from core.unlearning.base import REGISTRY
from core.unlearning.runner import run_request

st.title("Unlearn")
loaded = current_or_stop()
request = request_or_stop(loaded)
st.markdown(describe(request))

methods = [m for m in list_unlearners() if m != "retrain"]
method = st.selectbox("Method", methods, index=methods.index("interference_aware"), key="method",
                      format_func=lambda m: f"{m}: {REGISTRY[m].summary}")

if st.button("Preview interference", help="conflict analysis on the original model; nothing changes"):
    report = analyze_conflicts(loaded.model, request, loaded.data)
    st.plotly_chart(conflict_heatmap(report.overall, "Angle between forget and retain gradients"),
                    width="stretch")
    st.caption("Over 90° (cosine < 0): forgetting that task pushes the retained task the other way. "
               "Below: the retain instances most aligned with and most opposed to the forget update.")
    st.dataframe(report.at_risk, width="stretch", hide_index=True)

retain_share = len(request.retain_ids) / len(loaded.data.train_ids)
oracle_seconds = retain_share * float(loaded.card.training.get("seconds", 0))
with st.form("config"):
    values = config_form(REGISTRY[method].config_class, key=method)
    reason = st.text_input("Reason (kept in the ledger)", key="reason",
                           placeholder="e.g. the deletion request's ticket number")
    with_oracle = st.checkbox(f"Also train the retrain oracle (about {oracle_seconds:.0f} s on the "
                              "machine that trained the model)", key="with_oracle")
    submitted = st.form_submit_button("Run", type="primary")

if submitted:
    try:
        unlearner = get_unlearner(method, values)
    except ValueError as error:
        st.error(str(error))
        st.stop()
    bar, chart, history, shown = st.progress(0.0, text=method), st.empty(), [], [0.0]

    def progress(event):
        history.append(event.record())
        bar.progress(min(event.step / max(event.total, 1), 1.0),
                     text=f"{method}: step {event.step} / {event.total}")
        if time.perf_counter() - shown[0] > 0.25:
            chart.plotly_chart(loss_curves_figure(history), width="stretch", key=f"curves_{event.step}")
            shown[0] = time.perf_counter()

    out = ledger().results_folder() / f"{time.strftime('%Y%m%dT%H%M%S')}-{method}-{secrets.token_hex(3)}"
    try:
        result, weights, _ = run_request(
            loaded.model, loaded.card, checkpoint_paths(loaded.path)[0], request.instances,
            None if request.mode == "full" else request.tasks, method, values, out, data=loaded.data,
            ledger=ledger(), source="dashboard", reason=reason, progress=progress)
    except USER_ERRORS as error:  # e.g. a device that is not there, or a run that diverged
        st.error(f"{method} stopped: {error}. It is recorded as failed in the ledger; nothing was "
                 "saved and the original model is unchanged.")
        st.stop()
    chart.plotly_chart(loss_curves_figure(result.history), width="stretch", key="curves")
    oracle = None
    if with_oracle:
        bar.progress(0.0, text="retrain oracle")
        oracle = get_unlearner("retrain").run(loaded.model, request, loaded.data, lambda e: bar.progress(
            min(e.step / max(e.total, 1), 1.0), text=f"retrain oracle: epoch {e.step} / {e.total}"))
    run = add_run(Run(next_run_id(), loaded.path, method, result.config, request, result.model,
                      result.seconds, result.history, result.extras, data_root=loaded.data_root,
                      oracle=oracle and oracle.model, oracle_seconds=oracle and oracle.seconds,
                      checkpoint=str(weights)))
    bar.progress(1.0, text=f"done in {result.seconds:.1f} s")
    st.success(f"Run #{run.id} finished in {result.seconds:.1f} s (ledger run "
               f"{result.extras['ledger_run']}). The original model is unchanged; the unlearned one is "
               f"saved as {weights}.")
    st.download_button("Download the unlearned model (.zip: safetensors + card)", checkpoint_zip(weights),
                       f"{weights.stem}.zip", "application/zip", key="download_new")
    st.page_link("pages/interference.py", label="See what changed on the Interference page", icon="📊")
