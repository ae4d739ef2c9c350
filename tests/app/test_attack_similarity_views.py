"""Issue 21 parts 1 and 3 on the Interference page: the Attack view (score distributions, a
threshold with its rates, the ROC curve, TPR at 1% and 0.1% FPR, the forget instances that stay
member-like with their pictures) and the Layer similarity view (linear CKA per layer), for a run
with a retrain oracle; both computed once per run and kept beside the ledger."""

import json

import app.views.attack
import app.views.similarity
from core.checkpoints import SAMPLE_MODELS_DIR, load_checkpoint, read_card
from core.ledger import Ledger
from core.unlearning.runner import run_request

STREET = SAMPLE_MODELS_DIR / "synthetic-street"


def _recorded_run_with_oracle() -> dict:
    """A grad_ascent run on the street sample and a done retrain run of the same request content
    (one step of grad_ascent stands in for the oracle's result, as in test_compare_worker)."""
    model, card = load_checkpoint(STREET)
    ledger = Ledger()
    result, weights, _ = run_request(model, card, STREET, [1, 2, 3], None, "grad_ascent", {"steps": 2},
                                     ledger.results_folder() / "oracle", store=True)
    sha = ledger.add_model(STREET, card)
    request = ledger.add_request(sha, result.request, "cli", "", model_path=STREET)
    oracle = ledger.add_run(request, "retrain", {})
    ledger.finish_run(oracle, [], read_card(weights).weights_sha256, weights)
    model, card = load_checkpoint(STREET)
    run_request(model, card, STREET, [1, 2, 3], None, "grad_ascent", {"steps": 1}, ledger.results_folder(),
                ledger=ledger, source="dashboard", store=True)
    return next(row for row in ledger.runs() if row["method"] == "grad_ascent")


def test_attack_and_layer_similarity_views(mtu_home, monkeypatch, interference_page):
    row = _recorded_run_with_oracle()
    calls = []

    def counted(name, compute):
        return lambda *args, **kwargs: calls.append(name) or compute(*args, **kwargs)

    for module, name in ((app.views.attack, "attack_scores"), (app.views.similarity, "layer_similarity")):
        monkeypatch.setattr(module, name, counted(name, getattr(module, name)))

    page = interference_page()
    page.radio(key="interference_view").set_value("Attack").run()
    assert not page.exception and not page.error
    assert len(page.get("plotly_chart")) == 2  # the score distributions and the ROC curve
    histogram, roc = (json.loads(chart.proto.spec) for chart in page.get("plotly_chart"))
    assert {t["name"] for t in histogram["data"]} == {"forget", "retain", "unseen"}
    assert [t["name"] for t in roc["data"]] == ["original", "after grad_ascent", "retrain oracle", "chance"]
    summary = page.dataframe[-2].value
    assert {"AUC", "TPR at 1% FPR", "TPR at 0.1% FPR"} <= set(summary.columns)
    assert set(summary["model"]) == {"original", "after grad_ascent", "retrain oracle"}
    assert summary[["AUC", "TPR at 1% FPR"]].notna().all().all()
    assert any("less than one false positive" in c.value and "1000 would be needed" in c.value
               for c in page.caption)  # 480 unseen instances: 0.1% FPR cannot be measured
    ranked = page.dataframe[-1].value
    assert sorted(ranked["id"]) == [1, 2, 3] and "unseen below" in ranked.columns
    tiles = {m.label: m.value for m in page.metric}
    assert {"TPR on forget", "TPR on retain", "FPR on unseen"} <= set(tiles)
    assert len(page.image) == 1  # the first-ranked instance's picture and predictions
    first = ranked["id"].iloc[0]
    assert page.image[0].captions[:2] == [f"{first} input", f"{first} segmentation truth"]
    assert any(c.endswith("oracle") for c in page.image[0].captions)
    slider = next(s for s in page.slider if s.key.startswith("attack_threshold_"))
    page.slider(key=slider.key).set_value(slider.min).run()  # the lowest score: everyone a member
    tiles = {m.label: m.value for m in page.metric}
    assert tiles["TPR on forget"] == "100.0%" and tiles["FPR on unseen"] == "100.0%"
    page.radio(key="attack_score").set_value("calibrated").run()
    assert not page.exception and len(page.get("plotly_chart")) == 2
    assert any("calibrated by the retrain oracle" in str(o) for o in page.radio(key="attack_score").options)
    page.selectbox(key="attack_instance").set_value(page.selectbox(key="attack_instance").options[-1]).run()
    assert not page.exception and len(page.image) == 1

    page.radio(key="interference_view").set_value("Layer similarity").run()
    assert not page.exception and not page.error
    (heatmap,) = (json.loads(chart.proto.spec) for chart in page.get("plotly_chart"))
    columns = heatmap["data"][0]["x"]
    assert "grad_ascent vs original · retain" in columns and "oracle vs grad_ascent · test" in columns
    assert "segmentation output" in heatmap["data"][0]["y"] and "depth output" in heatmap["data"][0]["y"]
    assert calls == ["attack_scores", "layer_similarity"]

    for folder in ("attack", "similarity"):  # kept beside the ledger by the result's hash
        stored = json.loads((mtu_home / folder / f"{row['result_sha256']}.json").read_text())
        assert stored["inputs"]["oracle"] is not None and stored["frame"]["rows"]
    again = interference_page()  # another session reads both back
    again.radio(key="interference_view").set_value("Attack").run()
    again.radio(key="interference_view").set_value("Layer similarity").run()
    assert not again.exception and calls == ["attack_scores", "layer_similarity"]


def test_the_attack_view_of_a_run_without_an_oracle(street_run, interference_page):
    """No retrain oracle recorded: the distributions and the ROC curve of the original and the
    unlearned model, the original as the calibration reference, and a note that the oracle's
    reference is absent."""
    page = interference_page("Attack")
    assert not page.exception and not page.error
    histogram, roc = (json.loads(chart.proto.spec) for chart in page.get("plotly_chart"))
    assert [note["text"] for note in histogram["layout"]["annotations"]] == ["original", "after grad_ascent"]
    assert [t["name"] for t in roc["data"]] == ["original", "after grad_ascent", "chance"]
    assert set(page.dataframe[-2].value["model"]) == {"original", "after grad_ascent"}
    assert any("no oracle reference" in i.value for i in page.info)
    assert any("calibrated by the original model" in str(o) for o in page.radio(key="attack_score").options)
    page.radio(key="attack_score").set_value("calibrated").run()
    assert not page.exception and len(page.get("plotly_chart")) == 2
    assert all(not c.endswith("oracle") for c in page.image[0].captions)
