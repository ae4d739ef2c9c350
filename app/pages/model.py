"""Model page: pick a checkpoint, see its card, device and per-task metrics."""

import pandas as pd
import streamlit as st

from app.charts import metrics_frame, primary_metric_chart
from app.state import USER_ERRORS, current, sample_models, save_upload
from core.checkpoints import SAMPLE_MODELS_DIR, checkpoint_paths
from core.device import describe_device, select_device
from core.models import describe_architecture

st.title("Model")
names = sample_models()
if not names:
    st.error(f"No sample model found in {SAMPLE_MODELS_DIR}.")
    st.stop()
# Before anything that may stop the page, so that these keep their values on every run.
st.text_input("Dataset folder in the .npy layout (empty: the data the model card names)", key="data_root")
st.text_input("Plugin modules (comma-separated) that register your own architectures", key="plugins",
              help="Python modules importable here, e.g. my_models; see README, Your own model")
source = st.radio("Checkpoint", ["Sample model", "Path on this machine", "Upload"], horizontal=True,
                  key="model_source")
if source == "Sample model":
    name = st.selectbox("Sample model", names, key="model_name")
    st.session_state["model_path"] = str(SAMPLE_MODELS_DIR / name)
elif source == "Path on this machine":
    typed = st.text_input("Checkpoint (NAME, NAME.safetensors or NAME.json)", key="model_typed_path",
                          help="e.g. one written by `mtu import`, `mtu train` or `mtu unlearn`")
    if not typed.strip():
        st.info("Type the path of a checkpoint: its weights (.safetensors) and model card (.json).")
        st.stop()
    st.session_state["model_path"] = str(checkpoint_paths(typed.strip())[0].with_suffix(""))
else:
    weights = st.file_uploader("Weights (.safetensors)", type=["safetensors"], key="upload_weights")
    card_file = st.file_uploader("Model card (.json)", type=["json"], key="upload_card")
    if weights is None or card_file is None:
        st.info("Upload both files of a checkpoint saved by `mtu train` or `mtu unlearn`; "
                "pickles are refused.")
        st.stop()
    st.session_state["model_path"] = save_upload(weights.getvalue(), card_file.getvalue())
try:
    loaded = current()
except USER_ERRORS as error:
    st.error(f"{error}")
    st.session_state.pop("model_path")
    st.stop()
model, card = loaded.model, loaded.card



def training_line(training: dict) -> str:
    if "imported_from" in training:
        return f"**Imported from:** {training['imported_from']}"
    if "epochs" not in training:
        return "**Training:** not recorded"
    return (f"**Training:** {training['epochs']} epochs, seed {training.get('seed')}, "
            f"{training.get('seconds', 0):.0f} s")


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
frame = metrics_frame(card.metrics)
with right:
    st.subheader("Primary metric per task")
    primary = {task.name: task.primary for task in card.task_specs()}
    st.plotly_chart(primary_metric_chart(frame, primary), width="stretch")
st.subheader("Per-task metrics")
table = frame.pivot_table(index=["task", "metric"], columns="split", values="value")
st.dataframe(pd.DataFrame(table).style.format("{:.4f}"), width="stretch")
