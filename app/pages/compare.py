"""Compare page: several methods on the same request, one leaderboard, an exportable report.

The runs go to the worker like the Unlearn page's (one request, one queued run per method:
queue, progress, Cancel), so a comparison goes on when the page is left or reloaded; the page
finds its latest comparison in the ledger and, once every run ended, rebuilds the leaderboard
from the saved models (`app.state.compared`, kept beside the ledger). The retrain oracle the
ledger records for the request's content is reused, never trained twice, and joins the
leaderboard once it is done (`app.state.comparison_rows`)."""

import streamlit as st

from app.charts import comparison_figures, comparison_report, person_table, screened_table
from app.forms import tuned_entry, tuned_note
from app.state import (
    COMPARE_REASON,
    USER_ERRORS,
    build_request,
    compared,
    comparison_rows,
    current_or_stop,
    describe,
    explain,
    ledger,
    plugins,
    start_summary,
)
from core.evaluation.tuning import tuned_config
from core.importing import oracle_approximation
from core.jobs import recorded_oracle, submit
from core.unlearning import get_unlearner, list_unlearners

st.title("Compare")
start_summary()  # the sidebar line: model, forget set, tasks
loaded = current_or_stop()
tuned = tuned_entry(loaded.path)
ENDED = ("done", "failed", "interrupted")

try:
    request = build_request(loaded)
except USER_ERRORS as error:
    request = None
    st.warning(f"{error}. Pick the instances to forget on the Select page.")
if request is not None:
    st.markdown(describe(request))
    methods = st.multiselect("Methods (each from its settings tuned for this mode, where the model has them)",
                             list_unlearners(), default=["interference_aware", "neggrad_plus", "salun"],
                             key="compare_methods")
    if methods:
        st.caption(tuned_note(tuned, request.mode, [m for m in methods if m != "retrain"]))
    if "retrain" in methods and (approximate := oracle_approximation(loaded.card.training)):
        st.caption(f"The retrain oracle is {approximate}.")
    oracle = recorded_oracle(ledger(), loaded.card.weights_sha256, request.instances, request.tasks,
                             loaded.data_root, done_only=False) if loaded.card.weights_sha256 else None
    if oracle is not None:
        st.caption(f"The retrain oracle of this request is run #L{oracle['run']} ({oracle['status']}): the "
                   "comparison's scores are referenced to it once it is done"
                   + (", and it is not trained again." if "retrain" in methods else "."))
    only_oracle = methods == ["retrain"] and oracle is not None
    if st.button("Run the comparison", type="primary", disabled=not methods or only_oracle):
        try:  # every setting (tuned, else the default) is checked and recorded before anything is queued
            configs = [(m, get_unlearner(m, tuned_config(tuned, request.mode, m, request.tasks) or {})
                        .config.to_dict()) for m in sorted(methods, key=lambda m: m == "retrain")]
            ids = submit(ledger(), loaded.path, loaded.card, request, *configs[0], data_root=loaded.data_root,
                         plugins=plugins(), reason=COMPARE_REASON, more=configs[1:])
        except USER_ERRORS as error:
            st.error(f"The comparison was not queued: {explain(error)}")
            st.stop()
        requests = {run: ledger().runs(run_id=run)[0]["request"] for run in ids}
        st.session_state["compare_request"] = max(requests.values())  # the one just recorded
        st.session_state["compare_oracle"] = next(  # a recorded oracle this comparison reuses
            (run for run in ids if requests[run] != max(requests.values())), None)


@st.cache_resource(max_entries=4, show_spinner="Drawing the charts of the comparison...")
def drawn(ledger_path: str, runs: tuple[int, ...], _comparison) -> dict:
    """The comparison's charts, built once per comparison (its runs), not on every rerun."""
    return comparison_figures(_comparison)


def latest() -> list[dict]:
    """The runs of this session's comparison, else of the latest one on this model (ledger)."""
    return comparison_rows(loaded, st.session_state.get("compare_request"),
                           st.session_state.get("compare_oracle"))


@st.fragment(run_every=1.0)
def progress() -> None:
    """The comparison's runs while they go on in the worker: queue position, step, Cancel; the
    page is drawn again once every run ended (the leaderboard)."""
    rows = latest()
    if not rows:
        return
    if all(r["status"] in ENDED for r in rows):
        if st.session_state.get("compare_shown") != rows[0]["request"]:
            st.rerun()
        return
    st.subheader(f"Comparison of {len(rows)} methods, running in the worker")
    for row in rows:
        name, status = row["method"], row["status"]
        left, right = st.columns([4, 1])
        if status == "queued":
            left.info(f"{name}: queued, position {ledger().queue_position(row['run'])} in the queue")
        elif status == "running":
            steps = ledger().steps(row["run"])
            done, total = (steps[-1]["step"], steps[-1].get("total", 0)) if steps else (0, 0)
            left.progress(min(done / total, 1.0) if total else 0.0,
                          text=f"{name}: step {done} / {total or '?'}")
        elif status == "done":
            left.success(f"{name}: done")
        else:
            left.error(f"{name}: {status}. {row['error']}")
        if status in ("queued", "running"):
            right.button("Cancel", key=f"cancel_{row['run']}", on_click=ledger().cancel, args=(row["run"],))


rows = latest()
ended = bool(rows) and all(r["status"] in ENDED for r in rows)
if ended:  # drawn below by this run: the fragment need not ask for another
    st.session_state["compare_shown"] = rows[0]["request"]
progress()
if not ended:
    st.stop()
first = rows[0]
st.subheader(f"Leaderboard: {first['mode']}-task request of {len(first['instances'])} instances, forget "
             f"{', '.join(first['tasks'])} ({first['created']})")
for row in rows:
    if row["status"] != "done":
        st.warning(f"{row['method']}: {row['status']}, left out of the leaderboard. {row['error'] or ''}")
try:
    comparison = compared(loaded, rows)
except USER_ERRORS as error:
    st.error(f"The comparison cannot be scored: {explain(error)}")
    st.stop()
board = comparison.leaderboard.sort_values("uis2")
approximate_oracle = oracle_approximation(loaded.card.training) is not None
st.dataframe(screened_table(person_table(board, approximate_oracle), board, rows), hide_index=True,
             width="stretch")
st.caption("Sorted by UIS v2 (lower is better); hover over a score on the Interference page for its "
           "definition. Each run (its ledger id, its settings where they differ from the method's "
           "defaults) is also on the Interference and History pages.")
ranked = [row for model in board["model"] for row in rows
          if row["method"] == model != "retrain" and row["status"] == "done"]
if len(ranked) >= 2 and st.button(f"Contrast the two best runs: #L{ranked[0]['run']} ({ranked[0]['method']}) "
                                  f"against #L{ranked[1]['run']} ({ranked[1]['method']})",
                                  help="Every view of a run (attack, twin maps, layer similarity, per class) "
                                  "with these two side by side, on the Contrast page."):
    st.session_state["contrast_pick"] = (f"L{ranked[0]['run']}", f"L{ranked[1]['run']}")
    st.switch_page("pages/contrast.py")
figures = drawn(str(ledger().path), tuple(r["run"] for r in rows), comparison)
for index, figure in enumerate(figures.values()):
    st.plotly_chart(figure, width="stretch", key=f"compare_{index}")
left, right = st.columns(2)
left.download_button("Download the leaderboard (CSV)", board.to_csv(index=False), "leaderboard.csv",
                     "text/csv")
intro = f"{first['mode']}-task request, {len(first['instances'])} instances of {loaded.card.benchmark}"
right.download_button("Download the report (HTML)",  # written when clicked: several MB with plotly.js
                      lambda: comparison_report(person_table(board, approximate_oracle), figures, intro),
                      "comparison.html", "text/html")
