"""Issue 21 part 5, "Screen and contrast": any two runs of the ledger, A against B, in every view
(attack, twin maps, layer similarity, per class), with the original (and the oracle when there is
one) as reference and one colour per model; the pick is the address ?a=L1&b=L2&view=...; two runs
of different requests are refused with a message naming what differs."""

import json
from pathlib import Path

from streamlit.testing.v1 import AppTest

from app.charts import ORIGINAL_COLOUR, contrast_colours
from core.checkpoints import SAMPLE_MODELS_DIR, load_checkpoint
from core.ledger import Ledger
from core.unlearning.runner import run_request

MAIN = str(Path(__file__).resolve().parents[2] / "app" / "main.py")
STREET = SAMPLE_MODELS_DIR / "synthetic-street"


def _record(instances: list[int], method: str, config: dict, path: Path = STREET) -> None:
    model, card = load_checkpoint(path)
    ledger = Ledger()
    run_request(model, card, path, instances, None, method, config, ledger.results_folder(), ledger=ledger,
                source="dashboard", store=True)


def _charts(app) -> list[dict]:
    return [json.loads(chart.proto.spec) for chart in app.get("plotly_chart")]


def test_two_runs_of_one_request_in_every_view_a_against_b(street_run):
    _record([1, 2, 3], "neggrad_plus", {"steps": 1})  # L2: the same request, another method
    _record([4, 5], "grad_ascent", {"steps": 1})  # L3: another request
    app = AppTest.from_file(MAIN, default_timeout=900)
    app.query_params.update(a="L1", b="L2", view="attack")  # a shared contrast opens its page
    app.run()
    assert not app.exception and not app.error, app.exception
    assert app.title[0].value == "Contrast"
    assert app.selectbox(key="contrast_a").value == "L1" and app.selectbox(key="contrast_b").value == "L2"
    assert app.radio(key="contrast_view").value == "Attack"
    assert app.query_params == {"a": "L1", "b": "L2", "view": "attack"}
    a, b = "A: grad_ascent (#L1)", "B: neggrad_plus (#L2)"
    colours = contrast_colours("grad_ascent", "neggrad_plus")

    histogram, roc = _charts(app)
    panels = {note["text"]: note["font"]["color"] for note in histogram["layout"]["annotations"]}
    assert panels == {"original": ORIGINAL_COLOUR, a: colours["A"], b: colours["B"]}
    assert [(t["name"], t["line"]["color"]) for t in roc["data"][:3]] == [
        ("original", ORIGINAL_COLOUR), (a, colours["A"]), (b, colours["B"])]
    assert set(app.dataframe[-2].value["model"]) == {"original", a, b}  # AUC and TPR at low FPR
    assert any("no oracle reference" in i.value for i in app.info)  # none recorded for this request
    assert app.image and any(c.endswith(" A") for c in app.image[0].captions)  # each model's predictions

    app.radio(key="contrast_view").set_value("Twin maps").run()
    assert not app.exception and app.query_params["view"] == "maps"
    (maps,) = _charts(app)
    assert [note["text"] for note in maps["layout"]["annotations"]] == ["original", a, b]
    damage = [frame.value for frame in app.dataframe if "worst change" in frame.value.columns]
    assert len(damage) == 2  # the measured retain damage of A and of B

    app.radio(key="contrast_view").set_value("Layer similarity").run()
    assert not app.exception
    (heatmap,) = _charts(app)
    assert {"A vs original · test", "B vs original · test", "A vs B · forget"} <= set(heatmap["data"][0]["x"])

    app.radio(key="contrast_view").set_value("Per class").run()
    assert not app.exception
    bars = _charts(app)[0]
    assert {t["name"]: t["marker"]["color"] for t in bars["data"]}[b] == colours["B"]
    app.selectbox(key="per_class_model").set_value("B").run()
    app.selectbox(key="per_class_against").set_value("A").run()  # B against A
    assert not app.exception and "B: neggrad_plus (#L2) minus A: grad_ascent (#L1)" in str(_charts(app)[1])
    assert {"IoU A", "IoU B", "change A", "change B"} <= set(app.dataframe[-1].value.columns)

    app.selectbox(key="contrast_b").set_value("L3").run()  # another forget request: refused
    assert not app.exception and not app.get("plotly_chart")
    assert "forget instances" in app.error[0].value and "B forgets 2 (4, 5)" in app.error[0].value
    assert app.query_params["b"] == "L3"
    app.selectbox(key="contrast_b").set_value("L1").run()
    assert not app.exception and "same run" in app.warning[0].value


def test_a_contrast_link_to_runs_of_two_models_or_to_no_run_is_a_message(street_run):
    _record([1, 2, 3], "grad_ascent", {"steps": 1}, SAMPLE_MODELS_DIR / "synthetic-indoor")  # L2
    app = AppTest.from_file(MAIN, default_timeout=900)
    app.query_params.update(a="L1", b="L2")
    app.run()
    assert not app.exception and app.title[0].value == "Contrast"
    refusal = app.error[0].value
    assert "#L1 and #L2" in refusal and "the base model" in refusal
    assert "synthetic-street" in refusal and "synthetic-indoor" in refusal
    assert not app.get("plotly_chart")

    app = AppTest.from_file(MAIN, default_timeout=900)
    app.query_params.update(a="L1", b="L9")
    app.run()
    assert not app.exception and "run 'L9'" in app.warning[0].value
    assert any("needs two finished runs" in i.value for i in app.info)  # one run on the street model

    _record([1, 2, 3], "grad_ascent", {"steps": 1})  # L3: a second run on the street model
    app = AppTest.from_file(MAIN, default_timeout=900)
    app.query_params.update(a="L9", b="L1", view="sideways")
    app.run()
    assert not app.exception and app.title[0].value == "Contrast"
    warnings = " ".join(w.value for w in app.warning)
    assert "run 'L9'" in warnings and "view 'sideways'" in warnings and "attack" in warnings
    assert app.selectbox(key="contrast_a").value == "L3" and app.selectbox(key="contrast_b").value == "L1"
    assert app.radio(key="contrast_view").value == "Attack"
    assert app.query_params == {"a": "L3", "b": "L1", "view": "attack"}


def test_a_pairs_view_frames_are_kept_beside_the_ledger_and_read_back(street_run, mtu_home, monkeypatch):
    """Issue 21 part 7 for a contrast: a pair's attack scores and layer similarity are computed
    once, kept by the two results' hashes beside the ledger, and read back by another session."""
    import app.views.similarity

    _record([1, 2, 3], "neggrad_plus", {"steps": 1})  # L2: the same request, another method
    calls = []
    real = app.views.similarity.layer_similarity
    monkeypatch.setattr(app.views.similarity, "layer_similarity",
                        lambda *args, **kwargs: calls.append(1) or real(*args, **kwargs))

    def contrast() -> AppTest:
        page = AppTest.from_file(MAIN, default_timeout=900)
        page.query_params.update(a="L1", b="L2", view="layers")
        page.run()
        assert not page.exception and page.radio(key="contrast_view").value == "Layer similarity"
        return page

    first = contrast()
    rows = {f"L{row['run']}": row for row in Ledger().runs()}
    a, b = rows["L1"]["result_sha256"], rows["L2"]["result_sha256"]
    kept = mtu_home / "similarity" / f"{a[:16]}-{b[:16]}.json"
    assert calls == [1] and kept.is_file()
    assert json.loads(kept.read_text())["inputs"]["result_b"] == rows["L2"]["result_sha256"]
    second = contrast()  # another session: read back, not computed again
    assert calls == [1]
    assert _charts(second) == _charts(first)
    assert (mtu_home / "attack").is_dir() is False  # only the views shown are computed
