"""Explain page: captum attributions of one instance and one task, before and after unlearning."""

import streamlit as st

from app.charts import attribution_figure
from app.state import current_or_stop, run_picker, start_summary
from core.evaluation.explain import METHODS, explain_pair, takes_class, takes_region
from core.models import explain_layer
from core.visual import image_rgb

st.title("Explain")
start_summary()  # the sidebar line: model, forget set, tasks
run = run_picker("explain_run")
if run is None:
    st.stop()
loaded = current_or_stop()
if loaded.path != run.model_path:
    st.info(f"Run #{run.id} was made on {run.model_path}; open that model on the Model page to explain it.")
    st.stop()

left, right = st.columns(2)
forget = run.request.instances
instance = left.number_input("Instance id", min_value=0, step=1, value=forget[0],
                             key=f"explain_instance_{run.id}",
                             help=f"Forgotten by this run: {', '.join(map(str, forget))}")
task = right.selectbox("Task", loaded.tasks, index=loaded.tasks.index(run.request.tasks[0]),
                       key=f"explain_task_{run.id}")
spec = loaded.model.tasks[task]
methods = list(METHODS) if explain_layer(loaded.model) is not None else ["integrated_gradients"]
if len(methods) < len(METHODS):
    st.caption("This model declares no layer for LayerGradCam (`explain_layer`, see "
               "core/models/protocol.py): Integrated Gradients only.")
method = left.selectbox("Method", methods, format_func=lambda name: name.replace("_", " ").title(),
                        key="explain_method")
target_class = None
if takes_class(spec):
    names = spec.class_names or [f"class {c}" for c in range(spec.channels)]
    target_class = right.selectbox("Class", range(spec.channels), format_func=names.__getitem__,
                                   key=f"explain_class_{task}")
region = None
if takes_region(spec) and left.radio("Region", ["Whole image", "Rectangle"], horizontal=True,
                                     key="explain_region") == "Rectangle":
    height, width = loaded.data.train.image_size
    fields = zip(st.columns(4), ("Top", "Left", "Height", "Width"), (0, 0, 1, 1),
                 (height // 4, width // 4, height // 2, width // 2))
    region = tuple(int(column.number_input(label, min_value=low, value=default, step=1,
                                           key=f"explain_{label}"))
                   for column, label, low, default in fields)

key = ("explain", int(instance), task, method, target_class, region)
if st.button("Explain", type="primary") and key not in run.cache:
    try:
        image = loaded.data.train.batch([int(instance)])["image"]  # (1, 3, H, W)
        with st.spinner("Computing the attributions before and after unlearning..."):
            pair = explain_pair(loaded.model, run.model, image, spec, method, target_class, region)
    except ValueError as error:  # unknown instance (DatasetError), class or region
        st.error(str(error))
        st.stop()
    run.cache[key] = {**pair, "image": image_rgb(image[0])}
result = run.cache.get(key)
if result is not None:
    title = f"{method.replace('_', ' ')} of {task} on instance {instance}"
    st.plotly_chart(attribution_figure(result["image"], result["before"], result["after"], title),
                    width="stretch")
    before, after = st.columns(2)
    before.metric("Score before", f"{result['score_before']:.4f}")
    after.metric("Score after", f"{result['score_after']:.4f}",
                 delta=f"{result['score_after'] - result['score_before']:+.4f}")
    st.caption("Red pixels raise the score, blue ones lower it. Score: the logit of the chosen class, or the "
               "mean predicted value, averaged over the region.")
