"""Model page: pick a checkpoint, see its card, device and per-task metrics; for a model trained
elsewhere, give its training recipe, so that the retrain oracle retrains as it was trained."""

import pandas as pd
import streamlit as st

from app.charts import metrics_frame, primary_metric_chart
from app.state import (
    SOURCES,
    USER_ERRORS,
    discard_upload,
    explain,
    is_upload,
    kept,
    model_form,
    model_label,
    model_path,
    open_model,
    sample_models,
    save_upload,
    save_with_recipe,
    start_summary,
    upload_bytes,
    use_model,
)
from core.checkpoints import SAMPLE_MODELS_DIR, checkpoint_paths
from core.data import DatasetError
from core.device import describe_device, select_device
from core.importing import oracle_approximation, parse_recipe
from core.jobs import allowed_plugins, check_plugins
from core.models import describe_architecture

st.title("Model")
start_summary()  # the sidebar line: model, forget set, tasks
names = sample_models()
if not names:
    st.error(f"No sample model found in {SAMPLE_MODELS_DIR}.")
    st.stop()
# The choices live in the session (model_form): each widget is filled from there, so going to
# another page and back finds them as they were.
form = model_form(names)
st.text_input("Dataset folder in the .npy layout (empty: the data the model card names)", **kept("data_root"))
try:
    check_plugins(form["plugins"])
except USER_ERRORS as error:
    st.error(explain(error))
    form["plugins"] = [m for m in form["plugins"] if m in allowed_plugins()]
st.multiselect("Plugin modules that register your own architectures", allowed_plugins(), **kept("plugins"),
               help="those named when the dashboard started (`mtu app --plugin MODULE`) and installed "
                    "packages' entry points; see README, Your own model")
source = st.radio("Checkpoint", SOURCES, horizontal=True, **kept("model_source"))
if source == "Sample model":
    if form["model_name"] not in names:
        form["model_name"] = names[0]
    path = str(SAMPLE_MODELS_DIR / st.selectbox("Sample model", names, **kept("model_name")))
elif source == "Path on this machine":
    typed = st.text_input("Checkpoint (NAME, NAME.safetensors or NAME.json)", **kept("model_typed_path"),
                          help="e.g. one written by `mtu import`, `mtu train` or `mtu unlearn`")
    if not typed.strip():
        st.info("Type the path of a checkpoint: its weights (.safetensors) and model card (.json).")
        st.stop()
    path = str(checkpoint_paths(typed.strip())[0].with_suffix(""))
else:
    weights = st.file_uploader("Weights (.safetensors)", type=["safetensors"], key="upload_weights")
    card_file = st.file_uploader("Model card (.json)", type=["json"], key="upload_card")
    if (weights is None or card_file is None) and is_upload(model_path()):
        st.caption(f"In use: the checkpoint uploaded before, stored as {model_path()}; upload both files "
                   "of another one to replace it.")
        path = model_path()
    elif weights is None or card_file is None:
        st.info("Upload both files of a checkpoint saved by `mtu train` or `mtu unlearn`; "
                "pickles are refused.")
        st.stop()
    else:
        try:
            path = save_upload(upload_bytes(weights), upload_bytes(card_file))
        except USER_ERRORS as error:
            st.error(f"The upload was not stored: {explain(error)}")
            st.stop()
try:
    loaded = open_model(path, form["data_root"], form["plugins"])
    frame = metrics_frame(loaded.card.metrics)
except USER_ERRORS as error:
    if source == "Upload" and path != model_path():
        st.error(f"The uploaded {weights.name} and {card_file.name}: {explain(error)}")
        if not isinstance(error, DatasetError):  # the checkpoint itself is refused: not kept
            discard_upload(path)
    else:
        st.error(explain(error))
    if path != model_path() or form["data_root"].strip() != st.session_state.get("model_data_root", ""):
        st.caption(f"The other pages keep working on {model_label(model_path())} as before.")
    st.stop()
loaded = use_model(loaded, form["plugins"])
model, card = loaded.model, loaded.card



@st.cache_resource(max_entries=8, show_spinner=False)
def metric_chart(path: str, weights: str | None, _frame: pd.DataFrame, _primary: dict[str, str]):
    """The chart of a model's recorded metrics, built once per checkpoint, not on every rerun."""
    return primary_metric_chart(_frame, _primary)


def training_line(training: dict) -> str:
    origin = f"**Imported from:** {training['imported_from']}  \n" if "imported_from" in training else ""
    if "epochs" not in training:
        return f"{origin}**Training recipe:** unknown (the retrain oracle is approximate)"
    parts = [f"{training['epochs']} epochs"]
    parts += [f"{label} {training[key]:g}" for key, label in (("batch_size", "batch"), ("lr", "lr"),
                                                              ("weight_decay", "weight decay"))
              if isinstance(training.get(key), int | float)]
    parts += [str(training[key]) for key in ("optimizer",) if training.get(key)]
    if training.get("loss_weights"):
        parts.append("loss weights " + ", ".join(f"{k} {v:g}" for k, v in training["loss_weights"].items()))
    if "seed" in training:
        parts.append(f"seed {training['seed']}")
    seconds = training.get("seconds")
    parts.append(f"{seconds:.0f} s" if isinstance(seconds, int | float) else "time not recorded")
    return f"{origin}**Training:** {', '.join(parts)}"


def recipe_form() -> None:
    """For a model whose retrain oracle is approximate (its recipe is unknown, or one the engine
    does not run): a form for the recipe it was trained with; saving it writes a copy of the
    checkpoint (the same weights) whose card records it, and opens that copy."""
    note = oracle_approximation(card.training)
    if note is None:
        return
    unknown = "epochs" not in card.training
    title = "Training recipe unknown" if unknown else "Training recipe"
    with st.expander(f"{title}: the retrain oracle is approximate", expanded=unknown):
        st.caption(f"The retrain oracle is {note}. Give how the model was trained: a copy of the "
                   "checkpoint (the same weights, so the same runs in the ledger) is saved beside the "
                   "ledger with the recipe in its card, and opened.")
        training = card.training
        with st.form("recipe"):
            cols = st.columns(3)
            epochs = cols[0].number_input("epochs", 1, 100_000, int(training.get("epochs", 60)),
                                          key="recipe_epochs")
            batch = cols[1].number_input("batch size", 1, 100_000, int(training.get("batch_size", 32)),
                                         key="recipe_batch")
            lr = cols[2].number_input("learning rate", 1e-8, 10.0, float(training.get("lr", 2e-3)),
                                      format="%g", key="recipe_lr")
            decay = cols[0].number_input("weight decay", 0.0, 10.0, float(training.get("weight_decay", 0.0)),
                                         format="%g", key="recipe_decay")
            seed = cols[1].number_input("training seed", 0, 2**31 - 1, int(training.get("seed", 0)),
                                        key="recipe_seed")
            optimizer = cols[2].text_input("optimiser", str(training.get("optimizer", "adam")),
                                           key="recipe_optimizer", help="the oracle trains with Adam")
            weights = {task["name"]: st.number_input(
                f"loss weight of {task['name']}", 0.0, 1000.0,
                float((training.get("loss_weights") or {}).get(task["name"], 1.0)), format="%g",
                key=f"recipe_weight_{task['name']}") for task in card.tasks}
            seconds = st.number_input("training time in seconds (0: unknown)", 0.0, 1e9,
                                      float(training.get("seconds", 0.0)), key="recipe_seconds",
                                      help="the oracle's time estimate: this x the share of instances kept")
            saved = st.form_submit_button("Save a copy of the model with this recipe")
        if saved:
            try:
                recipe = parse_recipe(int(epochs), int(batch), float(lr), float(decay), int(seed),
                                      optimizer or None, weights, float(seconds) or None)
                copy = save_with_recipe(loaded, recipe)
            except USER_ERRORS as error:
                st.error(f"The recipe was not saved: {explain(error)}")
                return
            form.update(model_source=SOURCES[1], model_typed_path=copy)
            st.rerun()


st.caption(f"Device in use: {describe_device(select_device())}")
left, right = st.columns(2)
with left:
    st.subheader("Model card")
    parameters = sum(p.numel() for p in model.parameters())
    tasks = ", ".join(f"{task['name']} ({task['kind']})" for task in card.tasks)
    st.markdown(
        f"**Benchmark:** {card.benchmark}  \n"
        f"**Architecture:** {describe_architecture(model.architecture)}, "
        f"{parameters:,} parameters  \n"
        f"**Tasks:** {tasks}  \n"
        f"**Training instances:** {len(loaded.data.train_ids)}  \n"
        f"{training_line(card.training)}  \n"
        f"**Created:** {card.created}"
    )
    with st.expander("Library versions"):
        st.json(card.versions)
    recipe_form()
with right:
    st.subheader("Primary metric per task")
    primary = {task.name: task.primary for task in card.task_specs()}
    st.plotly_chart(metric_chart(loaded.path, card.weights_sha256, frame, primary), width="stretch")
st.subheader("Per-task metrics")
table = frame.pivot_table(index=["task", "metric"], columns="split", values="value")
st.dataframe(pd.DataFrame(table).style.format("{:.4f}"), width="stretch")
