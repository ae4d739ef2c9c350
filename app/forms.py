"""Widgets generated from data: a method's config form from its dataclass, started from the
settings tuned for the model when it has them (`core.evaluation.tuning`)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import streamlit as st

from app.charts import config_fields
from core.evaluation.tuning import tuned_settings


@st.cache_data(show_spinner=False)
def tuned_entry(path: str) -> dict[str, Any] | None:
    """The tuned settings of the checkpoint at `path` (tuned.json beside it), or None."""
    return tuned_settings(path)


def tuned_note(entry: Mapping[str, Any] | None, mode: str, methods: list[str]) -> str:
    """What the forms start from, in words: which of `methods` have settings tuned for `mode` on
    this model, how they were tuned and by which command; the others start from defaults."""
    tuned = [m for m in methods if entry and m in entry.get("modes", {}).get(mode, {})]
    untuned = [m for m in methods if m not in tuned]
    parts = []
    if tuned:
        where = entry.get("source") or "this model"
        unit = "setting and ratio" if entry.get("source") else "mode"
        parts.append(f"{', '.join(tuned)} start{'s' if len(tuned) == 1 else ''} from the settings tuned for "
                     f"{mode}-task unlearning of {where} ({entry['trials']} trials per method and {unit} "
                     f"on tuning seed {entry['seed']}, scored by UIS on the tuning part of the val split, "
                     f"never on test; {entry['date']}, `{entry['command']}`).")
    if untuned:
        parts.append(f"{', '.join(untuned)}: no tuned settings for {mode}-task unlearning of this model, "
                     "so the method's defaults (untuned).")
    return " ".join(parts)


def shown_format(value: float) -> str:
    """The printf format (sprintf.js, as st.number_input takes it) that shows `value` to three
    significant digits: "%.2e" below 0.01 or from 10 000 on (0.00019285 shows as 1.93e-4),
    else decimals as needed (0.663, 0.0500, 25.0, 1234); "%g" (every digit) for 0. Only the
    display is rounded: the widget's value stays exact."""
    size = abs(value)
    if size == 0:
        return "%g"
    if not 1e-2 <= size < 1e4:
        return "%.2e"
    return f"%.{max(0, 2 - math.floor(math.log10(size)))}f"


def config_form(config_class, key: str, initial: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """One widget per field of `config_class` (a bool: checkbox; choices: selectbox; numbers:
    number inputs within the field's range, a float shown to three significant digits,
    `shown_format`), each starting from `initial` where it names the field, else from the
    field's default; returns {name: value}, the exact values. Call inside a st.form."""
    values = {}
    for spec in config_fields(config_class):
        name, widget_key = spec["name"], f"cfg_{key}_{spec['name']}"
        default = (initial or {}).get(name, spec["default"])
        label, help_text = name.replace("_", " "), spec["help"] or None
        if spec["kind"] == "bool":
            values[name] = st.checkbox(label, value=default, help=help_text, key=widget_key)
        elif spec["choices"]:
            choices = list(spec["choices"])
            values[name] = st.selectbox(label, choices, index=choices.index(default), help=help_text,
                                        key=widget_key)
        elif spec["kind"] == "int":
            values[name] = int(st.number_input(label, value=int(default), step=1, help=help_text,
                                               min_value=_bound(spec["low"], int),
                                               max_value=_bound(spec["high"], int), key=widget_key))
        elif spec["kind"] == "float":
            shown = float(st.session_state.get(widget_key, default))  # the format follows what it holds
            values[name] = float(st.number_input(label, value=float(default), format=shown_format(shown),
                                                 help=help_text,
                                                 min_value=_bound(spec["low"], float),
                                                 max_value=_bound(spec["high"], float), key=widget_key))
        else:
            values[name] = st.text_input(label, value=str(default), help=help_text, key=widget_key)
    return values


def _bound(value, kind):
    return None if value is None else kind(value)
