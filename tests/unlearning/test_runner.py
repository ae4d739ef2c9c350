"""The run path (`core.unlearning.runner`): what a run records in the unlearned model's card, its
observers (the ledger's steps, the caller's, a cancel check) and a run that records nothing."""

import pytest

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


def _queued_run(ledger: Ledger, card, instances=(1, 2)) -> int:
    request = ForgetRequest.build(list(instances), None, card.train_ids, ["segmentation", "depth"])
    request_id = ledger.add_request(ledger.add_model(STREET, card), request, "dashboard", "")
    return ledger.add_run(request_id, "grad_ascent", {}, status="queued")


def test_every_observer_sees_each_step_in_order(tmp_path):
    """"Run and record" is one `run_request` whose observers see every step: the ledger's own
    (each step in the `steps` table) and any the caller gives, in the order given."""
    model, card = load_checkpoint(STREET)
    ledger = Ledger()
    seen: list[tuple[str, int]] = []
    result, weights, _ = run_request(
        model, card, STREET, [1, 2], None, "grad_ascent", {"steps": 3, "device": "cpu"}, tmp_path / "out",
        ledger=ledger, observers=[lambda event: seen.append(("a", event.step)),
                                  lambda event: seen.append(("b", event.step))])
    assert seen == [(name, step) for step in (1, 2, 3) for name in "ab"]
    run_id = result.extras["ledger_run"]
    assert [s["step"] for s in ledger.steps(run_id)] == [1, 2, 3]
    assert ledger.runs(run_id=run_id)[0]["status"] == "done" and weights is not None


def test_a_cancel_observer_stops_the_run_and_the_ledger_says_interrupted(tmp_path):
    """Cancellation is an observer (`CancelCheck`): once the ledger's run is asked to stop it
    raises `RunCancelled` at the next step; the run is recorded interrupted and nothing is
    written."""
    from core.ledger import RunCancelled
    from core.unlearning.runner import CancelCheck

    model, card = load_checkpoint(STREET)
    ledger = Ledger()
    run_id = _queued_run(ledger, card)

    def ask_at_step_2(event):
        if event.step == 2:
            ledger.cancel(run_id)

    with pytest.raises(RunCancelled, match="cancelled from the dashboard at step 2"):
        run_request(model, card, STREET, [1, 2], None, "grad_ascent", {"steps": 4, "device": "cpu"},
                    tmp_path / "out", ledger=ledger, run_id=run_id,
                    observers=[ask_at_step_2, CancelCheck(ledger, run_id)])
    row = ledger.runs(run_id=run_id)[0]
    assert row["status"] == "interrupted" and "at step 2" in row["error"], row
    assert [s["step"] for s in ledger.steps(run_id)] == [1, 2]
    assert list(tmp_path.iterdir()) == []


def test_a_run_without_ledger_or_output_records_and_writes_nothing(tmp_path, mtu_home):
    """The benchmark's use: no ledger, no output, the data given, no before/after rows asked:
    the result comes back and nothing is recorded or written."""
    from core.unlearning.base import UnlearningData

    model, card = load_checkpoint(STREET)
    data = UnlearningData.from_card(card)
    before = sorted(mtu_home.rglob("*"))
    result, weights, summary = run_request(model, None, None, [1, 2], ["depth"], "grad_ascent",
                                           {"steps": 1, "device": "cpu"}, None, data=data,
                                           summarised=False)
    assert weights is None and summary == [] and "ledger_run" not in result.extras
    assert list(result.request.tasks) == ["depth"]
    assert sorted(mtu_home.rglob("*")) == before
