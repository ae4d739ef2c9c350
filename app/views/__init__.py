"""Views of a result, one module per view (attack, twin maps, layer similarity, per class). Each
draws a `Shown`: the models it compares under the names its frames use, with a title and a
colour each. The Interference page shows one run (`run_shown`: the original, the run's model,
the oracle when there is one); the Contrast page shows two runs of one request, A against B
(`pair_shown`), with the original and the oracle as references. A view computes through core/
once per run or pair and draws with `app.charts`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd
import streamlit as st
import torch

from app.charts import contrast_colours, model_colour
from app.state import Run, cached_checkpoint, cached_data, kept_frame, kept_pair_frame, run_models
from core.evaluation.contrast import NAMES
from core.explore import predict
from core.requests import ForgetRequest
from core.unlearning.base import UnlearningData
from core.visual import instance_panels


@dataclass
class Shown:
    """What a view draws.

    models: the compared models in drawing order, named as the frames name them: "original",
        the unlearned model(s) and "retrain" (the oracle) when there is one.
    titles, colours: each name's title and colour in every chart (`app.charts.model_colour`,
        `contrast_colours`); captions: each name's picture caption (before, after, A, oracle).
    focus: the unlearned models (the run's method, or "A" and "B").
    cache: where the views keep their frames and figures (the run's, or the pair's).
    keep: keep(folder, compute, settings) -> the frame `compute()` makes, kept (for a ledger run,
        beside the ledger: `app.state.kept_frame`) and read back while `settings` hold.
    """

    models: dict[str, torch.nn.Module]
    titles: dict[str, str]
    colours: dict[str, str]
    captions: dict[str, str]
    focus: list[str]
    request: ForgetRequest
    model_path: str
    data_root: str | None
    cache: dict[str, Any]
    keep: Callable[[str, Callable[[], pd.DataFrame], dict[str, Any]], pd.DataFrame]

    @property
    def oracle(self) -> bool:
        return "retrain" in self.models

    @property
    def reference(self) -> str:
        """The calibration reference of the attack: the oracle when there is one, else the original."""
        return "retrain" if self.oracle else "original"

    def data(self) -> UnlearningData:
        return cached_data(self.model_path, self.data_root)

    def pictures(self, ids: list[int]) -> dict[int, list[tuple[str, Any]]]:
        """{training id: [(caption, picture)]}: the image, each task's target and every model's
        prediction (`core.visual.instance_panels`), drawn once per id."""
        drawn = self.cache.setdefault("pictures", {})
        missing = [i for i in ids if i not in drawn]
        if missing:
            train = self.data().train
            with st.spinner("Predicting the instances with each model..."):
                predictions = {self.captions[name]: predict(model, train, missing)
                               for name, model in self.models.items()}
            batch = train.batch(missing)
            drawn.update({i: instance_panels(train.tasks, batch, predictions, index)
                          for index, i in enumerate(missing)})
        return {i: drawn[i] for i in ids}


def run_shown(run: Run) -> Shown:
    """One run's views: the original, the run's model and the oracle when the run has one; frames
    kept with the run and beside the ledger (`kept_frame`). Built once per run."""
    if "shown" not in run.cache:
        models = run_models(run)
        titles = {"original": "original", run.method: f"after {run.method}", "retrain": "retrain oracle"}
        captions = {"original": "before", run.method: "after", "retrain": "oracle"}
        run.cache["shown"] = Shown(
            models, {name: titles[name] for name in models}, {name: model_colour(name) for name in models},
            {name: captions[name] for name in models}, [run.method], run.request, run.model_path,
            run.data_root, run.cache,
            lambda folder, compute, settings: kept_frame(run, folder, compute, **settings))
    return run.cache["shown"]


def as_shown(subject: Run | Shown) -> Shown:
    """A view's subject as a `Shown` (a run: `run_shown`)."""
    return subject if isinstance(subject, Shown) else run_shown(subject)


def pair_shown(a: Run, b: Run) -> Shown:
    """Runs `a` and `b` (of one request on one model: `core.evaluation.contrast.run_differences`)
    as "A" and "B", with the original and the oracle of their request (when one is recorded) as
    references; A and B in their methods' colours (`contrast_colours`). Frames are computed once
    per pair, kept in the session and beside the ledger (`kept_pair_frame`)."""
    oracle = a.oracle if a.oracle is not None else b.oracle
    key = (a.id, b.id, a.oracle_sha256 or b.oracle_sha256)
    pairs = st.session_state.setdefault("contrasts", {})
    if key not in pairs:
        original, _ = cached_checkpoint(a.model_path)
        first, second = NAMES
        models = {"original": original, first: a.model, second: b.model,
                  **({"retrain": oracle} if oracle is not None else {})}
        titles = {"original": "original", first: f"A: {a.method} (#{a.id})",
                  second: f"B: {b.method} (#{b.id})", "retrain": "retrain oracle"}
        colours = contrast_colours(a.method, b.method)
        captions = {"original": "before", first: "A", second: "B", "retrain": "oracle"}
        cache: dict[str, Any] = {}

        def keep(folder: str, compute: Callable[[], pd.DataFrame], settings: dict[str, Any]) -> pd.DataFrame:
            if folder not in cache:
                cache[folder] = kept_pair_frame(a, b, folder, compute, **settings)
            return cache[folder]

        pairs[key] = Shown(models, {n: titles[n] for n in models}, {n: colours[n] for n in models},
                           {n: captions[n] for n in models}, [first, second], a.request, a.model_path,
                           a.data_root, cache, keep)
    return pairs[key]
