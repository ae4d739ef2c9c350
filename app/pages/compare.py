"""Compare page: several methods on the same request, one leaderboard, an exportable report."""

import streamlit as st

from app.charts import comparison_figures, comparison_report
from app.forms import tuned_entry, tuned_note
from app.state import (
    USER_ERRORS,
    Run,
    add_run,
    current_or_stop,
    describe,
    ledger,
    request_or_stop,
    start_summary,
)
from core.evaluation import compare_models
from core.evaluation.tuning import tuned_config
from core.importing import oracle_approximation
from core.unlearning import list_unlearners
from core.unlearning.runner import run_request

st.title("Compare")
start_summary()  # the sidebar line: model, forget set, tasks
loaded = current_or_stop()
request = request_or_stop(loaded)
st.markdown(describe(request))
methods = st.multiselect("Methods (each from its settings tuned for this mode, where the model has them)",
                         list_unlearners(), default=["interference_aware", "neggrad_plus", "salun"],
                         key="compare_methods")
tuned = tuned_entry(loaded.path)
if methods:
    st.caption(tuned_note(tuned, request.mode, [m for m in methods if m != "retrain"]))
if "retrain" in methods and (approximate := oracle_approximation(loaded.card.training)):
    st.caption(f"The retrain oracle is {approximate}.")
if st.button("Run the comparison", type="primary", disabled=not methods):
    bar, models, seconds = st.progress(0.0), {"original": loaded.model}, {}
    for index, method in enumerate(methods):
        bar.progress(index / len(methods), text=f"running {method} ({index + 1} / {len(methods)})")
        try:  # recorded in the ledger, the result kept in its content-addressed store
            result, weights, _ = run_request(
                loaded.model, loaded.card, loaded.path, request.instances,
                None if request.mode == "full" else request.tasks, method,
                tuned_config(tuned, request.mode, method, request.tasks), ledger().results_folder(),
                data_root=loaded.data_root, ledger=ledger(), source="dashboard", reason="Compare page",
                data=loaded.data, store=True)
        except USER_ERRORS as error:
            st.error(f"{method} stopped: {error}")
            st.stop()
        models[method], seconds[method] = result.model, result.seconds
        (row,) = ledger().runs(run_id=result.extras["ledger_run"])
        add_run(Run(f"L{row['run']}", loaded.path, method, result.config, request, result.model,
                    result.seconds, result.history, result.extras, data_root=loaded.data_root,
                    checkpoint=str(weights), sha256=row["result_sha256"]))
    bar.progress(1.0, text="scoring every model")
    st.session_state["comparison"] = compare_models(models, request, loaded.data, seconds)
    bar.empty()

comparison = st.session_state.get("comparison")
if comparison is None:
    st.stop()
board = comparison.leaderboard.sort_values("uis")
st.dataframe(board.style.format(precision=3).highlight_min(subset=["uis"], color="#bbf7d0"),
             hide_index=True, width="stretch")
figures = comparison_figures(comparison)
for index, figure in enumerate(figures.values()):
    st.plotly_chart(figure, width="stretch", key=f"compare_{index}")
left, right = st.columns(2)
left.download_button("Download the leaderboard (CSV)", board.to_csv(index=False), "leaderboard.csv",
                     "text/csv")
intro = f"{request.mode}-task request, {len(request.instances)} instances of {loaded.card.benchmark}"
right.download_button("Download the report (HTML)", comparison_report(board, figures, intro),
                      "comparison.html", "text/html")
