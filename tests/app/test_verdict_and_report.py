"""Issue 19, a verdict a person can read and a one-page report per run: the Interference page
opens with the run's verdict, its headline scores are UIS v2 and UIS (v1) with their definitions,
its tables show labels and no raw column names or None cells; the report is one self-contained
HTML page with a print stylesheet, named after the model, the method and the ticket."""

import html
import math
import re
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from app.charts import KPIS, person_table, split_table
from app.report import download_name, run_report
from core.checkpoints import SAMPLE_MODELS_DIR, load_checkpoint
from core.evaluation.verdict import verdict
from core.ledger import Ledger
from core.unlearning.runner import run_request

ROOT = Path(__file__).resolve().parents[2]
MAIN = str(ROOT / "app" / "main.py")
CHROMIUM = "/usr/bin/chromium"
RAW = ("uis_oracle", "mia_auc_low", "mia_auc_high", "oracle_gap", "forget_gap", "mia_ref_auc", "uis2")


def _recorded_run(reason: str) -> dict:
    model, card = load_checkpoint(SAMPLE_MODELS_DIR / "synthetic-street")
    ledger = Ledger()
    run_request(model, card, SAMPLE_MODELS_DIR / "synthetic-street", [1, 2, 3], None, "grad_ascent",
                {"steps": 1}, ledger.results_folder(), ledger=ledger, source="dashboard", reason=reason,
                store=True)
    (row,) = ledger.runs()
    return row


def _cells(frame: pd.DataFrame) -> list[str]:
    return [str(v) for v in frame.astype(object).to_numpy().ravel()]


def test_interference_opens_with_a_verdict_and_labelled_scores():
    _recorded_run("TICKET-7")
    app = AppTest.from_file(MAIN, default_timeout=900)
    app.session_state["model_name"] = "synthetic-street"
    app.run()
    app.switch_page("pages/interference.py").run()
    assert not app.exception
    sentence = app.info[0].value
    assert sentence.startswith("**Verdict.** grad_ascent forgot 3 training instances (ids 1-3) on every "
                               "task (segmentation and depth): on those images segmentation's")
    assert "a membership attack tells the forget images from unseen ones with AUC" in sentence
    assert "0.5 = indistinguishable" in sentence and "closeness to it is not measured" in sentence
    tiles = {m.label: m for m in app.metric}
    assert list(tiles)[:2] == ["UIS v2", "UIS (v1)"]
    assert {"gap to oracle", "MIA AUC", "forget gap", "ILI", "TLI"} <= set(tiles)
    for tile in app.metric:
        meaning = tile.proto.help  # every score says what it is and which way is good
        assert "better" in meaning or "0.5" in meaning or "oracle" in meaning, tile.label
        assert tile.value != "None" and tile.value.lower() != "nan"
    for frame in (app.dataframe[0].value, app.dataframe[1].value):  # scores, per task and split
        assert not set(frame.columns) & set(RAW), list(frame.columns)
        assert not [c for c in _cells(frame) if c in ("None", "nan", "NaN", "<NA>")]
    assert list(app.dataframe[0].value["model"]) == ["original (before unlearning)", "grad_ascent"]
    assert len(app.get("download_button")) == 2  # the report and the unlearned model


def test_person_table_and_split_table_label_everything():
    board = pd.DataFrame({"model": ["original", "ssd", "retrain"], "uis2": [30.0, 10.0, 0.0],
                          "uis": [20.0, 12.0, 5.0], "forget_gap": [1.0, 2.0, 3.0], "ili": [0.0, 1.0, 2.0],
                          "tli": [math.nan] * 3, "uis_oracle": [4.0, 2.0, 0.0], "oracle_gap": [4.0, 1.0, 0.0],
                          "mia_auc": [0.61, 0.52, 0.5], "mia_auc_low": [0.5, 0.45, 0.4],
                          "mia_auc_high": [0.7, 0.6, 0.6], "mia_efficacy": [0.2, 0.5, 0.5],
                          "mia_ref_auc": [math.nan, 0.55, math.nan],
                          "mia_ref_auc_low": [math.nan, 0.5, math.nan],
                          "mia_ref_auc_high": [math.nan, 0.6, math.nan], "seconds": [math.nan, 1.5, 30.0]})
    table = person_table(board, approximate_oracle=True)
    assert list(table.columns) == ["model"] + [KPIS[k][0] for k in KPIS if k != "tli"]  # TLI: none here
    assert list(table["model"]) == ["original (before unlearning)", "ssd", "retrain oracle (approximate)"]
    assert table.loc[1, "MIA AUC"] == "0.520 [0.45, 0.60]" and table.loc[0, "reference MIA AUC"] == "–"
    assert table.loc[0, "time (s)"] == "–" and not [c for c in _cells(table) if c in ("None", "nan")]
    scores = pd.DataFrame([{"model": m, "split": s, "task": "depth", "metric": "delta1", "primary": True,
                            "value": v} for m, v in (("original", 0.8), ("ssd", 0.7))
                           for s in ("test", "forget")])
    splits = split_table(scores, "ssd")
    assert list(splits["split"]) == ["forget images (forgotten tasks)", "test set"]
    assert list(splits.columns) == ["task", "split", "metric", "original (before unlearning)", "after (ssd)",
                                    "change"]
    assert list(splits["change"]) == ["-0.100", "-0.100"]


def _report(**changes) -> str:
    board = pd.DataFrame({"model": ["original", "grad_ascent"], "uis2": [30.0, 10.0], "uis": [20.0, 12.0],
                          "oracle_gap": [math.nan, math.nan], "mia_auc": [0.61, 0.52],
                          "mia_auc_low": [0.5, 0.45], "mia_auc_high": [0.7, 0.6], "seconds": [math.nan, 1.5]})
    scores = pd.DataFrame([{"model": m, "split": s, "task": t, "metric": "score", "primary": True, "value": v}
                           for m, v in (("original", 0.8), ("grad_ascent", 0.6)) for s in ("forget", "test")
                           for t in ("segmentation", "depth")])
    sentence = verdict(board, scores, "grad_ascent", [3, 17], ["segmentation", "depth"])
    from app.charts import metric_shift_figure

    arguments = dict(model="synthetic-street", method="grad_ascent", ticket="TICKET-7",
                     created="2026-12-01 10:00:00", instances=[3, 17], tasks=["segmentation", "depth"],
                     kept_tasks=[], config={"steps": 3, "lr": 0.001}, seconds=1.5, leaderboard=board,
                     scores=scores, verdict=sentence,
                     figures={"Primary metric per split": metric_shift_figure(scores)},
                     checkpoint="/results/abc", sha256="ab" * 32, model_sha256="cd" * 32,
                     lineage=[{"run": 1, "created": "2026-12-01", "method": "grad_ascent", "mode": "full",
                               "instances": [3, 17], "reason": "TICKET-7", "model_sha256": "cd" * 32,
                               "result_sha256": "ab" * 32}])
    arguments.update(changes)
    return run_report(**arguments), sentence


def test_the_report_is_one_self_contained_printable_page():
    page, sentence = _report()
    text = re.sub(r"<script.*?</script>", "", page, flags=re.S)  # the page without plotly.js
    assert f"id='verdict'>{html.escape(sentence)}</p>" in page
    assert "@media print" in page and "@page{size:A4" in page
    assert "<script src" not in page and "cdn" not in text.lower()  # nothing fetched: it opens offline
    assert page.count("Plotly.newPlot") == 1 and len(page) > 1_000_000  # plotly.js inlined
    for expected in ("TICKET-7", "ids 3, 17", "segmentation, depth", "steps", "Before, after and the retrain "
                     "oracle", "Membership attack", "AUC 0.5 = indistinguishable", "ab" * 32, "cd" * 16,
                     "UIS v2", "UIS (v1)"):
        assert expected in text, expected
    assert not re.search(r">\s*(None|nan|NaN)\s*<", text)
    assert not set(re.findall(r"<th>([^<]*)</th>", text)) & set(RAW)
    approximate, _ = _report(oracle_note="approximate: the model's training recipe is unknown")
    assert "Retrain oracle: approximate: the model&#x27;s training recipe is unknown" in approximate


def test_downloads_are_named_after_model_method_and_ticket():
    assert download_name("synthetic-street", "grad_ascent", "TICKET-7", "html") == \
        "synthetic-street-grad_ascent-TICKET-7.html"
    assert download_name("my model", "ssd", "JIRA 12/3: delete", "zip") == "my-model-ssd-JIRA-12-3-delete.zip"
    assert download_name("m", "ssd", "", ".zip") == "m-ssd.zip"


def _largest_report() -> tuple[str, str]:
    """The report of a long run: partial-task on three tasks, interference_aware with every knob,
    an oracle, ids that fill the request line, a lineage of three runs and an approximate oracle."""
    from app.charts import metric_shift_figure, uis_breakdown_figure
    from core.evaluation.compare import LEADERBOARD_COLUMNS
    from core.unlearning import get_unlearner

    models, tasks = ["original", "interference_aware", "retrain"], ["segmentation", "depth", "normal"]
    board = pd.DataFrame([{column: 0.123456 + i for column in LEADERBOARD_COLUMNS[1:]} | {"model": model}
                          for i, model in enumerate(models)])[LEADERBOARD_COLUMNS]
    splits = {"forget": ["depth"], "kept": ["segmentation", "normal"], "retain": tasks, "test": tasks}
    scores = pd.DataFrame([{"model": m, "split": s, "task": t, "metric": "score", "primary": True,
                            "value": 0.5 + 0.1 * i} for i, m in enumerate(models)
                           for s, names in splits.items() for t in names])
    parts = {"forget_part": 0.1, "kept_part": 0.05, "test_part": 0.02, "retain_part": 0.03}
    breakdown = pd.DataFrame([{"model": m, "task": t, **parts} for m in models for t in tasks])
    instances = list(range(0, 400, 3))
    lineage = [{"run": run, "created": "2026-12-01 10:00:00", "method": "interference_aware",
                "mode": "partial", "instances": instances, "reason": f"TICKET-{run}",
                "model_sha256": "cd" * 32, "result_sha256": "ab" * 32} for run in (1, 2, 3)]
    sentence = verdict(board, scores, "interference_aware", instances, ["depth"])
    page = run_report(model="synthetic-indoor", method="interference_aware", ticket="TICKET-19",
                      created="2026-12-01 10:00:00", instances=instances, tasks=["depth"],
                      kept_tasks=["segmentation", "normal"],
                      config=get_unlearner("interference_aware").config.to_dict(), seconds=41.5,
                      leaderboard=board, scores=scores, verdict=sentence,
                      figures={"Primary metric per split": metric_shift_figure(scores),
                               "UIS v2 by task and component": uis_breakdown_figure(breakdown)},
                      checkpoint="/home/someone/.local/share/mtunlearn/results/result/0123456789abcdef.safetensors",
                      sha256="ab" * 32, model_sha256="cd" * 32, lineage=lineage,
                      oracle_note="approximate: the model's training recipe is unknown", source="dashboard")
    return page, sentence


@pytest.mark.browser
@pytest.mark.parametrize("paper", ["A4", "Letter"])
def test_the_longest_report_prints_on_one_page(paper, tmp_path):
    """Issue 19: the report prints to one A4 or Letter page in Chromium, complete: the verdict,
    the ticket, the settings, the tables, both charts, the hash and the lineage."""
    import io

    playwright = pytest.importorskip("playwright.sync_api")
    from pypdf import PdfReader

    if not Path(CHROMIUM).exists():
        pytest.skip(f"needs {CHROMIUM}")
    page, sentence = _largest_report()
    path = tmp_path / "report.html"
    path.write_text(page)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        tab = browser.new_page()
        tab.goto(path.as_uri())
        tab.locator(".js-plotly-plot").nth(1).wait_for(timeout=60_000)
        pdf = tab.pdf(format=paper, print_background=True)
        browser.close()
    pages = PdfReader(io.BytesIO(pdf)).pages
    text = re.sub(r"\s+", "", pages[0].extract_text())
    assert len(pages) == 1, f"{len(pages)} pages"
    for expected in (sentence, "TICKET-19", "memory_budget_mb", "Membership attack", "ab" * 32, "TICKET-3",
                     "Primary metric per split", "UIS v2 by task and component", "What the scores mean"):
        assert re.sub(r"\s+", "", expected) in text, expected
