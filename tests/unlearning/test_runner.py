"""The run path (`core.unlearning.runner`): what a run records in the unlearned model's card."""

from core.checkpoints import SAMPLE_MODELS_DIR, load_checkpoint, read_card
from core.jobs import submit
from core.ledger import Ledger
from core.requests import ForgetRequest
from core.unlearning.runner import run_request

STREET = SAMPLE_MODELS_DIR / "synthetic-street"


def test_the_reason_goes_into_the_unlearned_models_card(tmp_path):
    model, card = load_checkpoint(STREET)
    _, weights, _ = run_request(model, card, STREET, [1, 2], None, "grad_ascent", {"steps": 1},
                                tmp_path / "forgot", reason="TICKET-1")
    assert read_card(weights).request["reason"] == "TICKET-1"
    _, weights, _ = run_request(model, card, STREET, [1, 2], None, "grad_ascent", {"steps": 1},
                                tmp_path / "plain")
    assert read_card(weights).request["reason"] == ""


def test_a_dashboard_run_carries_its_reason_into_the_card(tmp_path):
    """The worker's path: `jobs.submit` records the reason with the request, and the job gives
    it to `run_request`, so the saved card has it too."""
    card = read_card(STREET)
    request = ForgetRequest.build([1, 2], ["depth"], card.train_ids, ["segmentation", "depth"])
    ledger = Ledger()
    (run_id,) = submit(ledger, STREET, card, request, "grad_ascent", {"steps": 1, "device": "cpu"},
                       reason="TICKET-2")
    row = ledger.runs(run_id=run_id)[0]
    assert row["status"] == "done" and row["reason"] == "TICKET-2"
    assert read_card(row["result_path"]).request["reason"] == "TICKET-2"
