"""Contrast page: any two finished runs of the ledger on the loaded model, A against B, in every
view of a run (attack, twin maps, layer similarity, per class), with the original and the retrain
oracle as references and one colour per model (`app.views.pair_shown`). Two runs are contrasted
only when their views read the same instances (`core.evaluation.contrast.run_differences`);
otherwise the page names what differs. The pick is the page's address: ?a=L1&b=L2&view=attack."""

import pandas as pd
import streamlit as st

from app.charts import settings_text, shown_number
from app.state import (
    USER_ERRORS,
    current_or_stop,
    done_runs,
    explain,
    from_ledger,
    ledger_label,
    ledger_runs,
    linked_run,
    linked_view,
    share,
    start_summary,
)
from app.views import pair_shown
from app.views.attack import attack_view
from app.views.maps import twin_maps_view
from app.views.per_class import per_class_view
from app.views.similarity import similarity_view
from core.evaluation.contrast import run_differences

st.title("Contrast")
start_summary()
loaded = current_or_stop()
picked = st.session_state.pop("contrast_pick", None)  # the Compare page's two best runs
if picked is not None:
    st.session_state["contrast_a"], st.session_state["contrast_b"] = picked
elif "contrast_a" not in st.session_state:  # the page was just opened: from a link, maybe
    linked = {}
    for name in ("a", "b"):
        model = loaded.card.weights_sha256
        loaded, linked[name] = linked_run(loaded, name)  # opens the run's model when it is another
        if name == "b" and linked["a"] and linked["b"] and loaded.card.weights_sha256 != model:
            rows = [ledger_runs(run_id=int(linked[n][1:]))[0] for n in ("a", "b")]
            st.error(f"Runs #{linked['a']} and #{linked['b']} of the address cannot be contrasted: they "
                     f"differ in {'; '.join(run_differences(*rows))}. Showing B's model: pick two runs of "
                     "one request below.")
            linked["a"] = None
    for name, run_id in linked.items():
        if run_id is not None:
            st.session_state[f"contrast_{name}"] = run_id

recorded = done_runs(loaded)
if len(recorded) < 2:
    st.info(f"A contrast needs two finished runs on this model; the ledger has {len(recorded)}. Run "
            "methods on the Unlearn or Compare page (one request, two methods or two settings).")
    st.stop()
options = list(recorded)
chosen = [st.session_state.get(f"contrast_{name}") for name in ("a", "b")]
free = [o for o in options if o not in chosen]
for name in ("b", "a"):  # a run not picked yet: B the newest free run, A the next (older) one
    if st.session_state.get(f"contrast_{name}") not in recorded:
        st.session_state[f"contrast_{name}"] = free.pop(0)
left, right = st.columns(2)


def label(run_id: str) -> str:
    return ledger_label(recorded[run_id])


a_id = left.selectbox("Run A", options, format_func=label, key="contrast_a",
                      help="Runs on the loaded model, newest first (the History page lists them).")
b_id = right.selectbox("Run B", options, format_func=label, key="contrast_b")
share(run=None, a=a_id, b=b_id)
if a_id == b_id:
    st.warning("A and B are the same run: pick two runs to contrast.")
    st.stop()
differences = run_differences(recorded[a_id], recorded[b_id])
if differences:
    st.error(f"Runs #{a_id} and #{b_id} cannot be contrasted: each view reads the forget, retain and test "
             f"instances of one request on one model, and they differ in {'; '.join(differences)}. Pick "
             "two runs of one request (same instances and tasks), e.g. from one Compare page comparison.")
    st.stop()
pair = {}
for name, run_id in (("A", a_id), ("B", b_id)):
    try:
        pair[name] = from_ledger(recorded[run_id], loaded)
    except USER_ERRORS as error:
        st.warning(f"Run #{run_id} cannot be opened: {explain(error)}. Pick another run.")
        st.stop()
shown = pair_shown(pair["A"], pair["B"])
st.dataframe(pd.DataFrame([{"": name, "run": f"#{run.id}", "method": run.method,
                            "settings": settings_text(run.method, run.config),
                            "time (s)": shown_number(run.seconds, 1), "created": run.created}
                           for name, run in pair.items()]), hide_index=True, width="stretch")
st.caption("Both runs forget the same request: "
           f"{len(shown.request.instances)} instances, {shown.request.mode}-task, forget "
           f"{', '.join(shown.request.tasks)}. In every chart: the original in dark blue, "
           + ("the retrain oracle in grey, " if shown.oracle else "")
           + "A and B each in its own colour."
           + ("" if shown.oracle else " No retrain oracle is recorded for this request: the views show A "
              "and B against the original only."))

VIEWS = {"Attack": "per-instance membership scores, a threshold, the ROC curve, TPR at 1% and 0.1% FPR",
         "Twin maps": "the images on one map per model: does the forget set move toward unseen data?",
         "Layer similarity": "linear CKA per layer and head: A and B against the original and each other",
         "Per class": "IoU per class and the change of the prediction matrix (segmentation-like tasks)"}
ADDRESSES = dict(zip(("attack", "maps", "layers", "classes"), VIEWS))  # ?view=maps, as on Interference
linked_view(ADDRESSES, "contrast_view")


@st.fragment
def views() -> None:
    """One view at a time, in a fragment: a change of view redraws only this part."""
    view = st.radio("View", list(VIEWS), horizontal=True, key="contrast_view",
                    help=". ".join(f"{name}: {what}" for name, what in VIEWS.items()))
    share(view=next(address for address, name in ADDRESSES.items() if name == view))
    {"Attack": attack_view, "Twin maps": twin_maps_view, "Layer similarity": similarity_view,
     "Per class": per_class_view}[view](shown)


views()
