"""What the pages share: cached access to core/ (models and data as resources, shared by every
session and never modified) and a person's own state in `st.session_state` (the loaded model,
the selection, the target tasks and the runs of this session).

Session keys:
- the loaded model, which every page opens: "model_path" (checkpoint path without suffix),
  "model_data_root" (dataset folder, "" for the data its card names), "model_plugins" (plugin
  modules); the Model page sets them once a model opens (`use_model`);
- "model_form": the Model page's choices (`MODEL_FORM` keys). Streamlit drops a widget's value
  while its page is not shown, so the page puts them back into its widgets (`kept`);
- "selection" (training ids to forget), "target_tasks" (tasks to forget; all tasks = full-task),
  "selection_model" (the weights hash and tasks of the model they were picked on: when the
  loaded model changes they are reset, `follow_model`);
- "runs" (list of `Run`), "current_run" (the id the run pickers show);
- "summary_slot": the sidebar line of the page being drawn (`start_summary`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st
import torch

from app.charts import (
    conflict_heatmap,
    conflict_layer_heatmap,
    loss_curves_figure,
    metric_shift_figure,
    subspace_ranks_figure,
    uis_breakdown_figure,
)
from app.report import download_name, run_report
from core import __version__, jobs
from core.checkpoints import (
    SAMPLE_MODELS_DIR,
    ModelCard,
    checkpoint_paths,
    load_checkpoint,
    read_card,
    save_checkpoint,
)
from core.cli import STREAMLIT_OPTIONS
from core.data import DatasetError
from core.evaluation import Comparison, ConflictReport, analyze_conflicts, compare_methods, compare_models
from core.evaluation.compare import LEADERBOARD_COLUMNS
from core.evaluation.verdict import run_verdict as verdict_sentence
from core.importing import oracle_approximation, with_recipe
from core.jobs import allowed_plugins, check_plugins, needed_plugins
from core.ledger import Ledger, default_path
from core.models import load_plugins
from core.requests import ForgetRequest
from core.unlearning.base import UnlearningData

DEFAULT_MODEL = "synthetic-indoor"

USER_ERRORS = (ValueError, OSError, RecursionError)
"""What a bad input raises in core/ (RequestError, ConfigError, CheckpointError, DatasetError are
ValueErrors; a missing file is an OSError; JSON nested deeper than Python's parser goes is a
RecursionError): the pages show these as messages."""


class UploadError(ValueError):
    """An uploaded file that is over the dashboard's upload cap or is not a usable checkpoint."""


def explain(error: BaseException) -> str:
    """An error of USER_ERRORS as one line for a page."""
    if isinstance(error, RecursionError):
        return f"it is nested too deeply to read ({error})"
    return str(error)


def sample_models() -> list[str]:
    return sorted(path.stem for path in SAMPLE_MODELS_DIR.glob("*.json"))


@st.cache_resource(show_spinner="Loading model...")
def cached_checkpoint(path: str):
    """(model, card) for a checkpoint path; shared by every session, never modified."""
    return load_checkpoint(path)


@st.cache_resource(show_spinner="Opening the dataset...")
def cached_data(path: str, data_root: str | None = None) -> UnlearningData:
    """The data of the checkpoint at `path` (or, with `data_root`, that folder in the .npy layout)."""
    _, card = cached_checkpoint(path)
    data = UnlearningData.from_card(card, data_root=data_root)
    if data_root:
        check_data_fits(card, data, data_root)
    return data


def check_data_fits(card: ModelCard, data: UnlearningData, root: str) -> None:
    """Raise DatasetError naming the folder `root` when it lacks some of the model's training ids
    (UnlearningData.from_card has checked its tasks against the model's)."""
    missing = sorted(set(data.train_ids) - set(data.train.ids))
    if missing:
        raise DatasetError(f"the dataset folder {root} lacks {len(missing)} of the model's "
                           f"{len(data.train_ids)} training ids (e.g. {missing[:3]}); accepted: a folder "
                           f"of the model's benchmark ({card.benchmark}) that holds its training split")


@st.cache_resource
def cached_ledger(path: str) -> Ledger:
    """The ledger at `path`, one connection shared by every session."""
    return Ledger(path)


def ledger() -> Ledger:
    """The ledger every page and the CLI write (core.ledger.default_path)."""
    return cached_ledger(str(default_path()))


def ledger_runs(**filters) -> list[dict[str, Any]]:
    """The runs in the ledger (`Ledger.runs(**filters)`: every one by default), newest first; or
    an error message naming the ledger file (and the page stops) when it cannot be opened or read
    (damaged, unreadable)."""
    try:
        return ledger().runs(**filters)
    except USER_ERRORS as error:
        st.error(explain(error))
        st.stop()


def upload_bytes(upload) -> bytes:
    """The content of an uploaded file (st.file_uploader's), refused with UploadError naming it
    when it is over the dashboard's cap (`STREAMLIT_OPTIONS["server.maxUploadSize"]`, MB)."""
    cap = STREAMLIT_OPTIONS["server.maxUploadSize"]
    if upload.size > cap * 2**20:
        raise UploadError(f"{upload.name} is {upload.size / 2**20:.1f} MB; accepted: files up to "
                          f"{cap:g} MB (the dashboard's upload cap); for a larger checkpoint, type its "
                          "path on this machine")
    return upload.getvalue()


def save_upload(weights: bytes, card: bytes) -> str:
    """Store an uploaded checkpoint beside the ledger, in this user's data folder (named by its
    content hash), and return its path; `load_checkpoint` validates it when it is opened (never
    unpickled). A file is written under a temporary name and renamed, so an interrupted write
    leaves no partial checkpoint."""
    digest = hashlib.sha256(weights + card).hexdigest()[:16]
    folder = default_path().parent / "uploads" / digest
    folder.mkdir(parents=True, exist_ok=True)
    try:
        for name, content in (("model.safetensors", weights), ("model.json", card)):
            partial = folder / f".{name}.partial"
            partial.write_bytes(content)
            partial.replace(folder / name)
    except BaseException:
        discard_upload(str(folder / "model"))
        raise
    return str(folder / "model")


def discard_upload(path: str) -> None:
    """Remove a stored upload (`save_upload`'s folder) that was refused; other paths are kept."""
    folder = Path(path).parent
    if folder.parent == default_path().parent / "uploads":
        shutil.rmtree(folder, ignore_errors=True)


@dataclass
class Loaded:
    """The model a session works on: checkpoint path, model (shared, read-only), card, data."""

    path: str
    model: torch.nn.Module
    card: ModelCard
    data: UnlearningData
    data_root: str | None = None

    @property
    def tasks(self) -> list[str]:
        return list(self.model.tasks)


def plugins() -> list[str]:
    """The plugin modules of the loaded model (chosen on the Model page); any module the dashboard
    was not started with (`core.jobs.allowed_plugins`) raises PluginError, and nothing is imported."""
    return check_plugins(st.session_state.get("model_plugins", []))


def model_path() -> str:
    """The loaded model's checkpoint path (NAME without suffix): the default sample model until
    the Model page opens another."""
    return st.session_state.get("model_path") or str(SAMPLE_MODELS_DIR / DEFAULT_MODEL)


def model_label(path: str) -> str:
    """A checkpoint path as a person names the model: its file name, or "upload <hash>" for a
    checkpoint uploaded to the dashboard."""
    return f"upload {Path(path).parent.name}" if is_upload(path) else Path(path).name


def is_upload(path: str) -> bool:
    """Whether `path` is a checkpoint stored by `save_upload`."""
    return Path(path).parent.parent == default_path().parent / "uploads"


SOURCES = ("Sample model", "Path on this machine", "Upload")
MODEL_FORM = ("model_source", "model_name", "model_typed_path", "data_root", "plugins")
"""The widget keys of the Model page whose values the session keeps in "model_form"."""


def model_form(names: list[str]) -> dict[str, Any]:
    """The Model page's choices, kept by the session. The first time, each is the value a caller
    put under its widget key (a test, a link), else what describes the loaded model: its source,
    sample name or path, data folder and plugins (`names`: the sample models)."""
    if "model_form" not in st.session_state:
        path = st.session_state.get("model_path")
        sample = path is None or (Path(path).parent == SAMPLE_MODELS_DIR and Path(path).name in names)
        source = SOURCES[0] if sample else SOURCES[2] if is_upload(path) else SOURCES[1]
        name = Path(path).name if path and sample else DEFAULT_MODEL
        defaults = {"model_source": source, "model_name": name if name in names else names[0],
                    "model_typed_path": path if source == SOURCES[1] else "",
                    "data_root": st.session_state.get("model_data_root", ""),
                    "plugins": list(st.session_state.get("model_plugins", []))}
        st.session_state["model_form"] = {key: st.session_state.get(key, defaults[key]) for key in MODEL_FORM}
    return st.session_state["model_form"]


def kept(key: str) -> dict[str, Any]:
    """Keyword arguments for the Model page widget `key` (one of MODEL_FORM): its value is put back
    from "model_form" before it is drawn (Streamlit forgets it while another page is shown), and
    a change is copied there (on_change)."""
    st.session_state[key] = st.session_state["model_form"][key]
    return {"key": key, "on_change": _remember, "args": (key,)}


def _remember(key: str) -> None:
    st.session_state["model_form"][key] = st.session_state[key]


def open_model(path: str, data_root: str | None, modules: list[str]) -> Loaded:
    """The checkpoint at `path` with its data (the folder `data_root`, or the data its card
    names), after importing the plugin modules `modules` and those the dashboard was started
    with (`mtu app --plugin MODULE`: their methods join the method lists of every page). Raises
    PluginError (a module not allowed), CheckpointError or DatasetError, which the pages show as
    messages."""
    load_plugins(check_plugins(modules) + allowed_plugins())
    model, card = cached_checkpoint(path)
    root = (data_root or "").strip() or None
    return Loaded(path, model, card, cached_data(path, root), root)


def save_with_recipe(loaded: Loaded, recipe: dict[str, Any]) -> str:
    """Save a copy of the loaded checkpoint (the same weights) whose card records the training
    `recipe` (`core.importing.with_recipe`), beside the ledger under recipes/<weights hash>/, and
    return its path (NAME without suffix). The original checkpoint is not touched."""
    card = with_recipe(loaded.card, recipe)
    digest = (loaded.card.weights_sha256 or hashlib.sha256(loaded.path.encode()).hexdigest())[:16]
    folder = default_path().parent / "recipes" / digest
    folder.mkdir(parents=True, exist_ok=True)
    weights = save_checkpoint(loaded.model, card, folder / Path(loaded.path).name, if_exists="beside")
    return str(weights.with_suffix(""))


def use_model(loaded: Loaded, modules: list[str]) -> Loaded:
    """Make `loaded` (opened with the plugin modules `modules`) the model every page works on,
    then `current()` (which resets what does not fit it)."""
    st.session_state.update(model_path=loaded.path, model_data_root=loaded.data_root or "",
                            model_plugins=list(modules))
    return current()


def current() -> Loaded:
    """The session's model and data (the default sample model until the Model page changes it);
    a change of model resets the tasks and drops unknown forget ids, with a note
    (`follow_model`), and the sidebar line is rewritten. Raises CheckpointError / DatasetError /
    PluginError, which the pages show as messages."""
    loaded = open_model(model_path(), st.session_state.get("model_data_root"), plugins())
    note = follow_model(loaded)
    if note:
        st.warning(note)
    show_summary(loaded)
    return loaded


def follow_model(loaded: Loaded) -> str | None:
    """Keep the forget set and the tasks with the model they were picked on. When the loaded
    model is another one (other weights) than last time, the tasks go back to all of its tasks
    (full-task) and the forget ids it has no training instance for are dropped. Returns a note
    of what the person had chosen that changed, or None."""
    before = st.session_state.get("selection_model")
    identity = loaded.card.weights_sha256 or loaded.path
    st.session_state["selection_model"] = {"model": identity, "tasks": list(loaded.tasks)}
    if before is None or before["model"] == identity:
        return None
    chosen = st.session_state.get("target_tasks") or []
    was_partial = bool(chosen) and not set(before["tasks"]) <= set(chosen)
    st.session_state["target_tasks"] = list(loaded.tasks)
    known = set(loaded.data.train_ids)
    dropped = [i for i in selection() if i not in known]
    set_selection(i for i in selection() if i in known)
    changes = []
    if was_partial:
        changes.append(f"the tasks to forget are all of its tasks again (full-task: "
                       f"{', '.join(loaded.tasks)}), not {', '.join(chosen)} picked on the model before")
    if dropped:
        shown = ", ".join(map(str, dropped[:10])) + (", ..." if len(dropped) > 10 else "")
        changes.append(f"{len(dropped)} forget ids it has no training instance for were dropped ({shown})")
    return f"Model changed to {model_label(loaded.path)}: {'; '.join(changes)}." if changes else None


def summary_line(loaded: Loaded) -> str:
    """The sidebar line: the model, the number of forget instances, full or partial and the tasks."""
    tasks = target_tasks(loaded)
    kept_tasks = [t for t in loaded.tasks if t not in tasks]
    mode = (f"partial-task: forget {', '.join(tasks)}, keep {', '.join(kept_tasks)}" if kept_tasks
            else f"full-task: {', '.join(tasks)}")
    return f"**{model_label(loaded.path)}**  \n{len(selection())} forget instances, {mode}"


def start_summary() -> None:
    """Make this run's sidebar line (every page calls it first, under its title): the loaded
    model, or why it cannot be opened; `current()` rewrites it when the page changes the model.
    (Not in main.py: Streamlit's AppTest runs a page without main.py after a page switch.)"""
    st.session_state["summary_slot"] = st.sidebar.empty()
    try:
        current()
    except USER_ERRORS:
        st.session_state["summary_slot"].markdown(
            f"**{model_label(model_path())}**  \nnot opened: see the Model page")


def show_summary(loaded: Loaded) -> None:
    """Write `summary_line` into this run's sidebar slot (none when a page runs on its own)."""
    slot = st.session_state.get("summary_slot")
    if slot is not None:
        slot.markdown(summary_line(loaded))


def current_or_stop() -> Loaded:
    """`current()`, or an error message (and the page stops) when the model or data cannot be
    opened."""
    try:
        return current()
    except USER_ERRORS as error:
        st.error(f"{error}. Choose another model or dataset folder on the Model page.")
        st.stop()


def request_or_stop(loaded: Loaded) -> ForgetRequest:
    """`build_request(loaded)`, or a hint to the Select page (and the page stops)."""
    try:
        return build_request(loaded)
    except USER_ERRORS as error:
        st.warning(f"{error}. Pick the instances to forget on the Select page.")
        st.stop()


def selection() -> list[int]:
    """The training ids this session has picked to forget (sorted, unique)."""
    return list(st.session_state.get("selection", []))


def set_selection(ids) -> None:
    st.session_state["selection"] = sorted({int(i) for i in ids})


def target_tasks(loaded: Loaded) -> list[str]:
    """The tasks to forget; defaults to every task (full-task)."""
    chosen = [t for t in st.session_state.get("target_tasks", loaded.tasks) if t in loaded.tasks]
    return chosen or list(loaded.tasks)


def build_request(loaded: Loaded) -> ForgetRequest:
    """The session's request; raises RequestError (shown as a message) when it is not valid."""
    tasks = target_tasks(loaded)
    return ForgetRequest.build(selection(), None if len(tasks) == len(loaded.tasks) else tasks,
                               loaded.data.train_ids, loaded.tasks)


def describe(request: ForgetRequest) -> str:
    """One line: mode, size, forgotten and kept tasks."""
    kept = f"; keep {', '.join(request.kept_tasks)} on the same images" if request.kept_tasks else ""
    return (f"{request.mode.capitalize()}-task unlearning of {len(request.instances)} instances: "
            f"forget {', '.join(request.tasks)}{kept}")


@dataclass
class Run:
    """One finished unlearning run shown by the result pages. `model` is the unlearned copy; the
    original is never touched. `comparison` and `conflicts` are filled lazily by the pages that
    need them. Runs of the Unlearn and Compare pages live in the ledger (id "L<ledger id>", found
    again after a reload or from another session); int ids are runs held by this session only."""

    id: int | str
    model_path: str
    method: str
    config: dict[str, Any]
    request: ForgetRequest
    model: torch.nn.Module
    seconds: float
    history: list[dict[str, float]]
    extras: dict[str, Any] = field(default_factory=dict)
    oracle: torch.nn.Module | None = None
    oracle_seconds: float | None = None
    data_root: str | None = None
    checkpoint: str | None = None
    """Where the unlearned model was saved (results folder beside the ledger)."""
    sha256: str | None = None
    """The unlearned model's weights hash (ledger runs): its scores are cached under it."""
    oracle_sha256: str | None = None
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%d %H:%M:%S"))
    reason: str = ""
    """The ticket or reason recorded with the request."""
    source: str = ""
    cache: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return (f"#{self.id} {self.method}, {self.request.mode}-task, {len(self.request.instances)} "
                f"instances, forget {', '.join(self.request.tasks)}")


def runs() -> list[Run]:
    return st.session_state.setdefault("runs", [])


def add_run(run: Run) -> Run:
    runs().append(run)
    st.session_state["current_run"] = run.id
    return run


def next_run_id() -> int:
    return max((r.id for r in runs() if isinstance(r.id, int)), default=0) + 1


def _checkpoint_name(path: str) -> str:
    """A checkpoint path as the pages key it: NAME without suffix."""
    return str(checkpoint_paths(path)[0].with_suffix(""))


def recorded_runs(loaded: Loaded, limit: int = 50) -> list[dict[str, Any]]:
    """The ledger's runs on the loaded model, newest first (every session's and the CLI's): found
    by its weights hash, so whatever path recorded them (NAME or NAME.safetensors, a copy)."""
    return ledger_runs(model=loaded.card.weights_sha256 or loaded.path)[:limit]


def missing_result(result_path: str) -> Path | None:
    """The first file of a saved result (weights, card) that is no longer on disk, else None."""
    return next((path for path in checkpoint_paths(result_path) if not path.is_file()), None)


def show_record(row: dict[str, Any]) -> None:
    """What the ledger still knows of a run whose saved model cannot be opened: its request and
    settings, the metrics before and after, and the losses per step."""
    st.markdown(f"**{row['method']}**, {row['mode']}-task, forget {', '.join(row['tasks'])} on "
                f"{len(row['instances'])} instances ({row['created']}); settings: `{row['config']}`")
    if row["metrics"]:
        st.dataframe(row["metrics"], hide_index=True, width="stretch")
    steps = ledger().steps(row["run"])
    if steps:
        st.plotly_chart(loss_curves_figure(steps), width="stretch", key=f"record_curves_{row['run']}")


def from_ledger(row: dict[str, Any], loaded: Loaded) -> Run:
    """A done ledger run as a `Run` (its model read from the saved checkpoint), once per session;
    the retrain oracle of its request's content (`core.jobs.recorded_oracle`: the same model,
    instances, tasks and data, whichever request trained it) is attached when it is done, also
    after the run was first read (its scores are then computed again, with the oracle)."""
    run_id = f"L{row['run']}"
    run = next((r for r in runs() if r.id == run_id), None)
    if run is None:
        model, card = cached_checkpoint(_checkpoint_name(row["result_path"]))
        request = ForgetRequest.build(row["instances"], None if row["mode"] == "full" else row["tasks"],
                                      loaded.data.train_ids, loaded.tasks)
        seconds = float(card.request.get("seconds", 0.0))
        run = Run(run_id, loaded.path, row["method"], row["config"], request, model, seconds,
                  ledger().steps(row["run"]), card.request.get("extras", {}), data_root=loaded.data_root,
                  checkpoint=row["result_path"], created=row["created"], sha256=row["result_sha256"],
                  reason=row.get("reason") or "", source=row.get("source") or "")
        runs().append(run)
    if run.oracle is None:  # one oracle per request content, whichever request trained it
        oracle = jobs.recorded_oracle(ledger(), row["model_sha256"], row["instances"], row["tasks"],
                                      row.get("data_root"))
        if oracle is not None:
            oracle_model, oracle_card = cached_checkpoint(_checkpoint_name(oracle["result_path"]))
            run.oracle, run.oracle_seconds = oracle_model, float(oracle_card.request.get("seconds", 0.0))
            run.oracle_sha256 = oracle["result_sha256"]
            run.cache.clear()  # scored without the oracle until now
    return run


LINK_HELP = "accepted: the id of a finished unlearning run, such as L3 (the History page lists them)"


def linked_run(loaded: Loaded, name: str = "run") -> tuple[Loaded, str | None]:
    """The run the page's address names (?run=L3, a shared result; `name`: the query parameter,
    e.g. "a" and "b" on the Contrast page) and the model to show it on:
    when the run was made on another model than the loaded one, that model is opened (its data
    folder and the plugin its card records) and becomes the session's model. (loaded, None), with
    a message naming the value, when the address names no run or one that cannot be shown."""
    value = st.query_params.get(name)
    if value is None:
        return loaded, None
    found = re.fullmatch(r"L?(\d{1,18})", value.strip())
    rows = ledger_runs(run_id=int(found[1])) if found else []
    if not rows:
        st.warning(f"The address names run '{value}', which the ledger does not have; {LINK_HELP}.")
        return loaded, None
    row = rows[0]
    if row["status"] != "done" or row["method"] == "retrain" or not row["result_path"]:
        what = "a retrain oracle" if row["method"] == "retrain" else row["status"]
        st.warning(f"The address names run '{value}', which is {what}, not a finished unlearning run; "
                   f"{LINK_HELP}.")
        return loaded, None
    if row["model_sha256"] != loaded.card.weights_sha256:
        path = _checkpoint_name(row["model_path"])
        try:
            modules = needed_plugins(read_card(path), st.session_state.get("model_plugins", []))
            loaded = use_model(open_model(path, row.get("data_root"), modules), modules)
        except USER_ERRORS as error:
            st.warning(f"The address names run '{value}', made on {model_label(path)}, which cannot be "
                       f"opened here: {explain(error)}")
            return loaded, None
        st.info(f"Opened {model_label(path)}, the model of run #L{row['run']} that the address names.")
    return loaded, f"L{row['run']}"


def share(**values: str | None) -> None:
    """Write `values` into the page's address (st.query_params), so that it opens what is shown
    (`linked_run`); None removes a value."""
    for name, value in values.items():
        if value is None:
            st.query_params.pop(name, None)
        elif st.query_params.get(name) != value:
            st.query_params[name] = value


def ledger_label(row: dict[str, Any]) -> str:
    """A ledger run in a picker: its id, method, request and date."""
    return (f"#L{row['run']} {row['method']}, {row['mode']}-task, {len(row['instances'])} instances, "
            f"forget {', '.join(row['tasks'])} ({row['created']})")


def done_runs(loaded: Loaded) -> dict[str, dict[str, Any]]:
    """{"L<id>": row}: the ledger's finished unlearning runs on the loaded model (not the oracles),
    newest first, as the run pickers list them."""
    return {f"L{row['run']}": row for row in recorded_runs(loaded)
            if row["status"] == "done" and row["method"] != "retrain" and row["result_path"]}


def linked_view(addresses: dict[str, str], key: str) -> None:
    """When the page was just opened (the view picker `key` not drawn yet) from an address naming a
    view (?view=attack; `addresses`: {address: view name}), make it the picker's value; a name it
    does not know is a warning naming the accepted ones."""
    asked = st.query_params.get("view")
    if key in st.session_state or asked is None:
        return
    if asked.strip().lower() in addresses:
        st.session_state[key] = addresses[asked.strip().lower()]
    else:
        st.warning(f"The address names view '{asked}'; accepted: {', '.join(addresses)}. Showing "
                   f"{next(iter(addresses.values()))}.")


def run_picker(key: str = "run_picker") -> Run | None:
    """A selectbox over the finished runs on the loaded model: those of the ledger (every
    session's, newest first) and this session's own; None (with a hint) when there are none.
    Until the selectbox is used, the run the address names (`linked_run`) is picked; the pick
    is written into the address (`share`)."""
    loaded = current_or_stop()
    if key not in st.session_state:  # the page was just opened: from a link, maybe
        loaded, linked = linked_run(loaded)
        if linked is not None:
            st.session_state["current_run"] = linked
    recorded = done_runs(loaded)
    labels = {key_: ledger_label(row) for key_, row in recorded.items()}
    labels.update({r.id: r.label for r in runs() if r.model_path == loaded.path})
    if not labels:
        st.info("No run yet: pick instances on the Select page, then run a method on the Unlearn page.")
        return None
    options = list(labels)
    chosen = st.session_state.get("current_run")
    run_id = st.selectbox("Run", options, index=options.index(chosen) if chosen in labels else 0,
                          format_func=labels.get, key=key)
    st.session_state["current_run"] = run_id
    share(run=run_id if run_id in recorded else None)  # this session's own runs have no address
    if run_id in recorded:
        row = recorded[run_id]
        missing = missing_result(row["result_path"])
        try:
            if missing:
                raise FileNotFoundError(f"its unlearned model {missing} is missing (deleted from the results "
                                        "folder?)")
            return from_ledger(row, loaded)
        except USER_ERRORS as error:
            st.warning(f"Run #{run_id}: {explain(error)}. The ledger keeps its record: what it knows "
                       "is below.")
            show_record(row)
            return None
    return next(r for r in runs() if r.id == run_id)


def run_results(run: Run) -> tuple[Comparison, ConflictReport]:
    """The scores of a run (original vs unlearned vs oracle when there is one) and the conflict
    analysis of its request on the original model. Kept with the run, and for a run of the
    ledger in a JSON file beside it (`scores_file`), so that a later visit, from any session,
    reads them back; computed under a status line when neither has them."""
    if "comparison" in run.cache:
        return run.cache["comparison"], run.cache["conflicts"]
    original, card = cached_checkpoint(run.model_path)
    inputs = score_inputs(run, card.weights_sha256)
    path = scores_file(run)
    stored = read_scores(path, inputs) if path is not None else None
    if stored is None:
        data = cached_data(run.model_path, run.data_root)
        models = {"original": original, run.method: run.model}
        seconds = {run.method: run.seconds}
        if run.oracle is not None:
            models["retrain"], seconds["retrain"] = run.oracle, run.oracle_seconds
        with st.status(f"Scoring run #{run.id} (once: the scores are kept beside the ledger)...",
                       expanded=True) as status:
            status.write(f"Scoring {', '.join(models)} on the forget, kept, retain and test instances, "
                         "with the membership attack...")
            comparison = compare_models(models, run.request, data, seconds)
            status.write("Measuring the gradient conflicts of the request on the original model...")
            conflicts = analyze_conflicts(original, run.request, data)
            status.update(label=f"Scored run #{run.id}", state="complete", expanded=False)
        if path is not None:
            write_scores(path, inputs, comparison, conflicts)
        stored = comparison, conflicts
    run.cache["comparison"], run.cache["conflicts"] = stored
    return stored


def scores_file(run: Run) -> Path | None:
    """Where the scores of a ledger run are kept: `scores/<result hash>.json` beside the ledger
    (None for a run without a recorded result)."""
    return ledger().path.parent / "scores" / f"{run.sha256}.json" if run.sha256 else None


def score_inputs(run: Run, original_sha256: str | None) -> dict[str, Any]:
    """What a run's scores are computed from: the three models' hashes, the request, the data
    folder, and the scoring code (mtunlearn's version, the leaderboard's columns)."""
    return {"original": original_sha256, "result": run.sha256, "oracle": run.oracle_sha256,
            "instances": list(run.request.instances), "tasks": list(run.request.tasks),
            "data_root": run.data_root, "mtunlearn": __version__, "columns": LEADERBOARD_COLUMNS}


_CONFLICT_FRAMES = ("overall", "by_layer", "at_risk")


def read_scores(path: Path, inputs: dict[str, Any]) -> tuple[Comparison, ConflictReport] | None:
    """The scores stored at `path` when they were computed from `inputs`; None when there are
    none, when they are of other inputs, or when the file cannot be read or parsed (they are
    then computed again and the file rewritten). JSON only: nothing is unpickled."""
    try:
        stored = json.loads(path.read_text())
        if stored["inputs"] != inputs:
            return None
        conflicts = stored["conflicts"]
        return (Comparison.from_dict(stored["comparison"]),
                ConflictReport(*(_frame(conflicts[name]) for name in _CONFLICT_FRAMES),
                               retain_ids=[int(i) for i in conflicts["retain_ids"]]))
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError):
        return None


def write_scores(path: Path, inputs: dict[str, Any], comparison: Comparison,
                 conflicts: ConflictReport) -> None:
    """Store a run's scores at `path` as JSON, written to a temporary name and renamed (a reader
    never sees half a file). A folder that cannot be written is passed over: the scores are
    then computed again on the next visit."""
    _write_json(path, {"inputs": inputs, "comparison": comparison.to_dict(),
                       "conflicts": {**{name: _table(getattr(conflicts, name)) for name in _CONFLICT_FRAMES},
                                     "retain_ids": [int(i) for i in conflicts.retain_ids]}})


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """`data` as strict JSON at `path`, written to a temporary name and renamed; a folder that
    cannot be written is passed over."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial.write_text(json.dumps(data, allow_nan=False, default=_plain))
        partial.replace(path)
    except (OSError, ValueError, TypeError):
        partial.unlink(missing_ok=True)


def run_models(run: Run) -> dict[str, torch.nn.Module]:
    """The models a run's views compare: "original", the run's method and, when the run has one,
    "retrain" (the oracle), as the scores name them."""
    original, _ = cached_checkpoint(run.model_path)
    return {"original": original, run.method: run.model,
            **({"retrain": run.oracle} if run.oracle is not None else {})}


def kept_frame(run: Run, folder: str, compute: Callable[[], pd.DataFrame], **settings: Any) -> pd.DataFrame:
    """A frame that a view computes from a run, once: kept with the run and, for a run of the
    ledger, in `<folder>/<result hash>.json` beside the ledger (as `run_results` keeps the
    scores), read back when it was computed from the same inputs (`score_inputs` and the
    view's JSON-able `settings`); else `compute()` makes it and it is stored."""
    if folder not in run.cache:
        _, card = cached_checkpoint(run.model_path)
        inputs = {**score_inputs(run, card.weights_sha256), **settings}
        path = ledger().path.parent / folder / f"{run.sha256}.json" if run.sha256 else None
        run.cache[folder] = stored_frame(path, inputs, compute)
    return run.cache[folder]


def kept_pair_frame(a: Run, b: Run, folder: str, compute: Callable[[], pd.DataFrame],
                    **settings: Any) -> pd.DataFrame:
    """`kept_frame` for a contrast of ledger runs `a` and `b` (one request on one model), in
    `<folder>/<A's result hash>-<B's>.json` (16 hex digits each; the inputs hold both in full and
    the oracle the pair is shown with); not kept on disk unless both have a recorded result."""
    _, card = cached_checkpoint(a.model_path)
    inputs = {**score_inputs(a, card.weights_sha256), "result_b": b.sha256,
              "oracle": a.oracle_sha256 or b.oracle_sha256, **settings}
    path = (ledger().path.parent / folder / f"{a.sha256[:16]}-{b.sha256[:16]}.json"
            if a.sha256 and b.sha256 else None)
    return stored_frame(path, inputs, compute)


def stored_frame(path: Path | None, inputs: dict[str, Any],
                 compute: Callable[[], pd.DataFrame]) -> pd.DataFrame:
    """The frame stored at `path` when it was computed from `inputs`; else (a missing, damaged
    or outdated file, or no path) `compute()`'s, stored there."""
    if path is not None:
        try:
            stored = json.loads(path.read_text())
            if stored["inputs"] == inputs:
                return _frame(stored["frame"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError):
            pass
    frame = compute()
    if path is not None:
        _write_json(path, {"inputs": inputs, "frame": _table(frame)})
    return frame


def _table(frame: pd.DataFrame) -> dict[str, list]:
    """A frame as {"columns", "rows"}, missing values as None (strict JSON)."""
    rows = [[None if isinstance(v, float) and math.isnan(v) else v for v in row]
            for row in frame.astype(object).itertuples(index=False)]
    return {"columns": [str(c) for c in frame.columns], "rows": rows}


def _frame(table: dict[str, list]) -> pd.DataFrame:
    return pd.DataFrame(table["rows"], columns=table["columns"]).infer_objects()


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python number json writes."""
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON")


def oracle_note(path: str) -> str | None:
    """Why the retrain oracle of the model at `path` is approximate (its card records no
    training recipe, or one the engine does not run), or None when it is exact."""
    _, card = cached_checkpoint(path)
    return oracle_approximation(card.training)


def run_verdict(run: Run) -> str:
    """The run's result in one plain sentence (`core.evaluation.verdict`), from its scores."""
    comparison, _ = run_results(run)
    if "verdict" not in run.cache:
        run.cache["verdict"] = verdict_sentence(comparison, run.method, run.request,
                                                oracle_exact=oracle_note(run.model_path) is None)
    return run.cache["verdict"]


def result_figures(run: Run) -> dict[str, Any]:
    """The charts of a run's result, built once per run (Plotly Express takes about 0.5 s for
    them): the metric shifts, the UIS v2 breakdown, the conflict heatmaps and, for
    interference_aware, the subspace ranks."""
    if "figures" not in run.cache:
        comparison, conflicts = run_results(run)
        primary = comparison.scores[comparison.scores["primary"]]
        vs_oracle = " vs retrain oracle" if run.oracle is not None else ""
        with st.spinner("Drawing the charts..."):
            run.cache["figures"] = {
                "shifts": metric_shift_figure(
                    primary, f"Primary metric per split: original vs unlearned{vs_oracle}"),
                "breakdown": uis_breakdown_figure(
                    comparison.breakdown, "UIS v2 by task, stacked by component"),
                "conflicts": conflict_heatmap(conflicts.overall, "Forget vs retain gradient angle"),
                "layers": conflict_layer_heatmap(conflicts.by_layer, "Per shared layer"),
                **({"ranks": subspace_ranks_figure(run.extras["subspace_ranks"])}
                   if run.extras.get("subspace_ranks") else {})}
    return run.cache["figures"]


def report_inputs(run: Run) -> dict[str, Any]:
    """What the run's one-page report shows (`app.report.run_report`'s arguments), gathered in
    the page's script: its scores, verdict, charts, the original's hash and the lineage."""
    comparison, _ = run_results(run)
    figures = result_figures(run)
    _, card = cached_checkpoint(run.model_path)
    return dict(model=model_label(run.model_path), method=run.method, ticket=run.reason, created=run.created,
                instances=list(run.request.instances), tasks=list(run.request.tasks),
                kept_tasks=list(run.request.kept_tasks), config=dict(run.config), seconds=run.seconds,
                leaderboard=comparison.leaderboard, scores=comparison.scores, verdict=run_verdict(run),
                figures={"Primary metric per split": figures["shifts"],
                         "UIS v2 by task and component": figures["breakdown"]},
                checkpoint=run.checkpoint, sha256=run.sha256, model_sha256=card.weights_sha256,
                lineage=ledger().lineage(run.sha256) if run.sha256 else [],
                oracle_note=oracle_note(run.model_path) if run.oracle is not None else None,
                source=run.source)


def report_html(run: Run) -> str:
    """The one-page report of a run (`app.report.run_report`), built once per run."""
    if "report" not in run.cache:
        run.cache["report"] = run_report(**report_inputs(run))
    return run.cache["report"]


def report_download(run: Run, key: str) -> None:
    """A download button for the run's one-page report, named after the model, the method and
    the ticket. The page (about 4 MB with plotly.js) is written when the button is clicked,
    from inputs gathered now."""
    if "report" in run.cache:
        data: Any = run.cache["report"]
    else:
        inputs = report_inputs(run)

        def data() -> str:
            return run.cache.setdefault("report", run_report(**inputs))

    st.download_button("Download the one-page report (HTML, prints to PDF)", data,
                       download_name(model_label(run.model_path), run.method, run.reason or f"run{run.id}",
                                     "html"), "text/html", key=key,
                       help="Self-contained: opens offline; print it from the browser for a PDF.")


COMPARE_REASON = "Compare page"
"""The reason recorded with the Compare page's requests: how the page finds its comparisons in
the ledger again (after a reload, from another session)."""


def comparison_rows(loaded: Loaded, request_id: int | None = None,
                    oracle_run: int | None = None) -> list[dict[str, Any]]:
    """The ledger's runs of one comparison on the loaded model (the request `request_id`, else the
    latest request the Compare page submitted), oldest first; empty when there is none. When the
    comparison has no retrain run of its own, the oracle the ledger records for its content
    (`core.jobs.recorded_oracle`) joins it last: once it is done (the scores are referenced to
    it), or while it goes on when it is `oracle_run` (the oracle this session's comparison asked
    for and reused)."""
    rows = [r for r in ledger_runs(model=loaded.card.weights_sha256 or loaded.path)
            if r["reason"] == COMPARE_REASON and r["source"] == "dashboard"]
    if request_id is None and rows:
        request_id = max(r["request"] for r in rows)
    chosen = sorted((r for r in rows if r["request"] == request_id), key=lambda r: r["run"])
    if chosen and all(r["method"] != jobs.ORACLE for r in chosen):
        first = chosen[0]
        oracle = jobs.recorded_oracle(ledger(), first["model_sha256"], first["instances"], first["tasks"],
                                      first["data_root"], done_only=False)
        if oracle is not None and (oracle["status"] == "done" or oracle["run"] == oracle_run):
            chosen.append(oracle)
    return chosen


def compared(loaded: Loaded, rows: list[dict[str, Any]]) -> Comparison:
    """The leaderboard of a comparison's finished runs (`comparison_rows`), rebuilt from the
    ledger: the original and every done run's saved model scored on the request
    (`core.evaluation.compare_methods`, as a benchmark cell scores its methods, with the
    retrain oracle as the reference when it is among them). Kept in the
    session and as JSON beside the ledger (`scores/compare-<request>.json`, with the inputs it
    came from), so that any later visit or session reads it back; computed under a status."""
    done = [r for r in rows
            if r["status"] == "done" and r["result_path"] and not missing_result(r["result_path"])]
    first = rows[0]
    inputs = {"original": loaded.card.weights_sha256,
              "results": {r["method"]: r["result_sha256"] for r in done},
              "instances": list(first["instances"]), "tasks": list(first["tasks"]), "mode": first["mode"],
              "data_root": loaded.data_root, "mtunlearn": __version__, "columns": LEADERBOARD_COLUMNS}
    kept_here = st.session_state.setdefault("comparisons", {})
    if first["request"] in kept_here and kept_here[first["request"]][0] == inputs:
        return kept_here[first["request"]][1]
    path = ledger().path.parent / "scores" / f"compare-{first['request']}.json"
    try:
        stored = json.loads(path.read_text())
        comparison = Comparison.from_dict(stored["comparison"]) if stored["inputs"] == inputs else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError):
        comparison = None
    if comparison is None:
        request = ForgetRequest.build(first["instances"], None if first["mode"] == "full" else first["tasks"],
                                      loaded.data.train_ids, loaded.tasks)
        saved: dict[str, tuple[torch.nn.Module, float]] = {}  # what the worker's runs saved
        for row in done:
            model, card = cached_checkpoint(_checkpoint_name(row["result_path"]))
            saved[row["method"]] = model, float((card.request or {}).get("seconds", float("nan")))
        references = {jobs.ORACLE: saved[jobs.ORACLE]} if jobs.ORACLE in saved else {}
        methods = {row["method"]: row["config"] for row in done if row["method"] != jobs.ORACLE}
        with st.status("Scoring the compared models (once: the leaderboard is kept beside the ledger)...",
                       expanded=True) as status:
            status.write(f"Scoring original, {', '.join([*references, *methods])} on the forget, kept, "
                         "retain and test instances, with the membership attack...")
            comparison = compare_methods(loaded.model, request, loaded.data, methods, references,
                                         run=lambda method, _: saved[method])
            status.update(label="Scored the comparison", state="complete", expanded=False)
        partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            partial.write_text(json.dumps({"inputs": inputs, "comparison": comparison.to_dict()},
                                          allow_nan=False, default=_plain))
            partial.replace(path)
        except (OSError, ValueError, TypeError):
            partial.unlink(missing_ok=True)
    kept_here[first["request"]] = (inputs, comparison)
    return comparison
