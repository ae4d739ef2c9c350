"""Model page: pick a checkpoint, see its card, device and per-task metrics."""

import pandas as pd
import streamlit as st

from app.charts import metrics_frame, primary_metric_chart
from app.state import cached_checkpoint, sample_models
from core.checkpoints import SAMPLE_MODELS_DIR, CheckpointError
from core.device import describe_device, select_device

st.title("Model")
names = sample_models()
if not names:
    st.error(f"No sample model found in {SAMPLE_MODELS_DIR}.")
    st.stop()
name = st.selectbox("Sample model", names, key="model_name")
try:
    model, card = cached_checkpoint(str(SAMPLE_MODELS_DIR / name))
except CheckpointError as error:
    st.error(str(error))
    st.stop()

st.caption(f"Device in use: {describe_device(select_device())}")
left, right = st.columns(2)
with left:
    st.subheader("Model card")
    parameters = sum(p.numel() for p in model.parameters())
    tasks = ", ".join(f"{task['name']} ({task['kind']})" for task in card.tasks)
    st.markdown(
        f"**Benchmark:** {card.benchmark}  \n"
        f"**Backbone:** {card.architecture['backbone']} (width {card.architecture.get('width')}), "
        f"{parameters / 1e6:.2f} M parameters  \n"
        f"**Tasks:** {tasks}  \n"
        f"**Training instances:** {len(card.train_ids)}  \n"
        f"**Training:** {card.training.get('epochs')} epochs, seed {card.training.get('seed')}, "
        f"{card.training.get('seconds', 0):.0f} s  \n"
        f"**Created:** {card.created}"
    )
    with st.expander("Library versions"):
        st.json(card.versions)
frame = metrics_frame(card.metrics)
with right:
    st.subheader("Primary metric per task")
    primary = {task.name: task.primary for task in card.task_specs()}
    st.plotly_chart(primary_metric_chart(frame, primary), use_container_width=True)
st.subheader("Per-task metrics")
table = frame.pivot_table(index=["task", "metric"], columns="split", values="value")
st.dataframe(pd.DataFrame(table).style.format("{:.4f}"), use_container_width=True)
