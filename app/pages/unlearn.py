"""Unlearn page: pick a method, set its knobs, preview the interference, and submit the run to the
worker; the page follows it (queue position, live losses, cancel) from the ledger, and once it
(and its oracle) ended shows its verdict in one sentence, with the one-page report and the
unlearned model, saved beside the ledger, as downloads."""


import streamlit as st

from app.charts import KPIS, conflict_heatmap, loss_curves_figure, shown_number
from app.forms import config_form, tuned_entry, tuned_note
from app.report import download_name
from app.state import (
    USER_ERRORS,
    build_request,
    current_or_stop,
    describe,
    explain,
    from_ledger,
    ledger,
    missing_result,
    model_label,
    plugins,
    recorded_runs,
    report_download,
    run_results,
    run_verdict,
    start_summary,
)
from core.checkpoints import checkpoint_zip
from core.evaluation import analyze_conflicts
from core.evaluation.geometry import method_outlook, task_geometry
from core.evaluation.tuning import tuned_config
from core.importing import oracle_approximation, oracle_seconds
from core.jobs import recorded_oracle, submit
from core.unlearning import get_unlearner, list_unlearners
from core.unlearning.base import REGISTRY
from core.unlearning.interference_aware import InterferenceAwareConfig

st.title("Unlearn")
start_summary()  # the sidebar line: model, forget set, tasks
loaded = current_or_stop()


@st.cache_data(max_entries=4, show_spinner="Packing the unlearned model for its download...")
def zipped(path: str) -> bytes:
    return checkpoint_zip(path)


@st.cache_resource(max_entries=16, show_spinner=False)
def ended_curves(ledger_path: str, run: int):
    """The losses per step of an ended run of the ledger (they no longer change), or None: built
    once, not every second of the fragment below."""
    steps = ledger().steps(run)
    return loss_curves_figure(steps).update_layout(title="Losses per step") if steps else None


@st.fragment(run_every=1.0)
def recent_runs() -> None:
    """The latest runs on this model, from the ledger: they run in the worker, so they go on
    (and are found here again) when the tab is left or reloaded."""
    rows = recorded_runs(loaded, limit=5)
    if not rows:
        return
    submitted = st.session_state.get("submitted")
    if submitted and st.session_state.get("verdict_for") != submitted and ended(submitted):
        st.session_state["verdict_for"] = submitted
        st.rerun()  # the whole page: the verdict of the runs that just ended
    st.subheader("Recent runs on this model")
    for row in rows:
        name = f"Run #L{row['run']} ({row['method']}, {row['mode']}-task, {len(row['instances'])} instances)"
        status = row["status"]
        if status == "queued":
            left, right = st.columns([4, 1])
            left.info(f"{name}: queued, position {ledger().queue_position(row['run'])} in the queue")
            right.button("Cancel", key=f"cancel_{row['run']}", on_click=ledger().cancel, args=(row["run"],))
        elif status == "running":
            steps = ledger().steps(row["run"])
            done, total = (steps[-1]["step"], steps[-1].get("total", 0)) if steps else (0, 0)
            left, right = st.columns([4, 1])
            left.progress(min(done / total, 1.0) if total else 0.0, text=f"{name}: {stage(done, total)}")
            right.button("Cancel", key=f"cancel_{row['run']}", on_click=ledger().cancel, args=(row["run"],))
            if steps:
                st.plotly_chart(loss_curves_figure(steps), width="stretch", key=f"curves_{row['run']}_{done}")
        elif status == "done" and (missing := missing_result(row["result_path"])):
            st.warning(f"{name}: finished, but its unlearned model {missing} is missing (deleted from the "
                       "results folder?); the ledger keeps its record: the request, settings, losses per "
                       "step and metrics before and after (History and Interference pages).")
        elif status == "done":
            st.success(f"{name}: finished; the original model is unchanged, the unlearned one is saved as "
                       f"{row['result_path']}.")
            if row["method"] != "retrain":
                try:
                    archive = zipped(row["result_path"])
                except USER_ERRORS as error:
                    st.warning(f"{name}: its saved model cannot be downloaded: {explain(error)}")
                else:
                    name = download_name(model_label(loaded.path), row["method"],
                                         row["reason"] or f"run{row['run']}", "zip")
                    st.download_button("Download the unlearned model (.zip: safetensors + card)", archive,
                                       name, "application/zip", key=f"download_{row['run']}",
                                       help=f"saved as {row['result_path']}")
        else:
            st.error(f"{name}: {status}. {row['error']}")
        if status not in ("queued", "running") and row["run"] in (submitted or ()):
            if (curves := ended_curves(str(ledger().path), row["run"])) is not None:  # they stay
                st.plotly_chart(curves, width="stretch", key=f"curves_{row['run']}")
    if any(row["status"] == "done" for row in rows):
        st.page_link("pages/interference.py", label="See what changed on the Interference page", icon="📊")


def stage(done: int, total: int) -> str:
    """Where a running run is: its step, or, once past its last step, the evaluation and saving
    that follow (silent for a while on a large model)."""
    if total and done >= total:
        return f"step {done} / {total}: evaluating the unlearned model and saving it"
    return f"step {done} / {total or '?'}" if done else "loading the model and the data"


def ended(ids: list[int]) -> bool:
    """Whether every run of `ids` has ended (done, failed or interrupted) in the ledger (a reused
    oracle may be older than the latest runs)."""
    rows = [row for run in ids for row in ledger().runs(run_id=run)]
    return len(rows) == len(ids) and all(row["status"] not in ("queued", "running") for row in rows)


def verdict() -> None:
    """The verdict of the runs this session submitted last, once they (the method's run and its
    oracle) have ended: one sentence, the headline scores and the one-page report. The scores
    are computed here once, under a status line, and kept beside the ledger for the
    Interference page."""
    submitted = st.session_state.get("submitted")
    if not submitted or not ended(submitted):
        return
    st.session_state["verdict_for"] = submitted
    row = next(r for r in recorded_runs(loaded) if r["run"] == submitted[0])
    if row["status"] != "done" or missing_result(row["result_path"]):
        return  # the run's line below says what happened
    try:
        run = from_ledger(row, loaded)
        comparison, _ = run_results(run)
        sentence = run_verdict(run)
    except USER_ERRORS as error:
        st.warning(f"Run #L{row['run']} cannot be scored: {explain(error)}")
        return
    st.subheader(f"Result of run #L{row['run']} ({row['method']})")
    st.info(f"**Verdict.** {sentence}")
    board = comparison.leaderboard.set_index("model")
    keys = ["uis2", "uis"] + (["oracle_gap"] if "retrain" in board.index else []) + ["mia_auc"]
    for column, key in zip(st.columns(len(keys)), keys):
        value = board.at[row["method"], key]
        column.metric(KPIS[key][0], shown_number(value, 3 if key == "mia_auc" else 2), help=KPIS[key][1])
    left, right = st.columns(2)
    with left:
        report_download(run, key=f"report_{run.id}")
    right.page_link("pages/interference.py", label="Every score and chart on the Interference page",
                    icon="📊")


try:
    request = build_request(loaded)
except USER_ERRORS as error:
    st.warning(f"{error}. Pick the instances to forget on the Select page.")
    verdict()
    recent_runs()
    st.stop()
st.markdown(describe(request))

methods = [m for m in list_unlearners() if m != "retrain"]
method = st.selectbox("Method", methods, index=methods.index("interference_aware"), key="method",
                      format_func=lambda m: f"{m}: {REGISTRY[m].summary}")

retain_share = len(request.retain_ids) / len(loaded.data.train_ids)
expected = oracle_seconds(loaded.card.training, retain_share)
approximate = oracle_approximation(loaded.card.training)
oracle = recorded_oracle(ledger(), loaded.card.weights_sha256, request.instances, request.tasks,
                         loaded.data_root, done_only=False) if loaded.card.weights_sha256 else None
tuned = tuned_entry(loaded.path)
with st.form("config"):  # what a person sets every time first, the method's knobs under Advanced
    reason = st.text_input("Reason (kept in the ledger)", key="reason",
                           placeholder="e.g. the deletion request's ticket number")
    about = (f"The retrain oracle is {approximate}." if approximate else
             "Retrains the model from scratch with the model's own recipe, the forget pairs masked: the "
             "exact reference.")
    if oracle is not None:  # jobs.submit reuses it: no training time to promise
        label = (f"Use this request's retrain oracle, run #L{oracle['run']} ({oracle['status']}): it is not "
                 "trained again")
        about += (" The ledger keeps one oracle per request content (the same weights, instances, tasks and "
                  "data), whichever page or command trained it.")
    else:
        when = (f"about {expected:.0f} s on the machine that trained the model" if expected is not None
                else "time unknown: the model's card records no training time")
        label = f"Also train the retrain oracle ({'approximate; ' if approximate else ''}{when})"
    with_oracle = st.checkbox(label, key="with_oracle", help=about)
    submitted = st.form_submit_button("Run", type="primary")
    with st.expander(f"Advanced: the settings of {method}"):
        st.caption(tuned_note(tuned, request.mode, [method]) + " Numbers show three significant digits; "
                   "the exact value is what runs.",
                   help="mtu tune writes these settings; benchmarks/DECISIONS.md says how "
                        "sample_models/tuned.json was made")
        values = config_form(REGISTRY[method].config_class, key=f"{method}_{request.mode}",
                             initial=tuned_config(tuned, request.mode, method, request.tasks))

if st.button("Preview interference", help="conflict analysis on the original model; nothing changes"):
    with st.spinner("Measuring the gradient conflicts of the request on the original model..."):
        report = analyze_conflicts(loaded.model, request, loaded.data)
    st.plotly_chart(conflict_heatmap(report.overall, "Angle between forget and retain gradients"),
                    width="stretch")
    st.caption("Over 90° (cosine < 0): forgetting that task pushes the retained task the other way. "
               "Below: the retain instances most aligned with and most opposed to the forget update.")
    st.dataframe(report.at_risk, width="stretch", hide_index=True)

if st.button("Will task-aware projection help here?",
             help="the task geometry of the original model on this request (per-image gradients on 32 "
                  "retain images, and for interference_aware the bases TGP would build): which of its parts "
                  "will act; nothing changes"):
    try:
        config = get_unlearner(method, values).config
    except ValueError as error:
        st.error(str(error))
        st.stop()
    ours = isinstance(config, InterferenceAwareConfig)
    outlook = config if ours else InterferenceAwareConfig()
    tgp = ours and config.tgp in ("always", request.mode) and not (
        request.mode == "full" and config.output_basis == "kept")
    targets = list(request.tasks) if request.mode == "partial" else None
    with st.spinner("Measuring the task geometry of the original model on this request..."):
        geometry = task_geometry(loaded.model, loaded.data, request.instances, retain_sample=32,
                                 config=outlook, saturation=tgp, targets=targets)
    lines = method_outlook(geometry, outlook, request.mode, targets or [])
    if ours:
        bullets = "\n".join(f"- {line}" for line in lines)
        st.markdown(f"**What {method} will do on this request**\n\n{bullets}")
    else:
        st.markdown(lines[0])

if submitted:
    try:
        get_unlearner(method, values)  # a bad value is named here, before anything is queued
    except ValueError as error:
        st.error(str(error))
        st.stop()
    ids = submit(ledger(), loaded.path, loaded.card, request, method, values, data_root=loaded.data_root,
                 plugins=plugins(), reason=reason, with_oracle=with_oracle)
    st.session_state["current_run"] = f"L{ids[0]}"
    st.session_state["submitted"] = ids

verdict()
recent_runs()
