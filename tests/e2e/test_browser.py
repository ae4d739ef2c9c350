"""End to end in a real browser: Debian's Chromium driven by Playwright for Python.

Starts `streamlit run app/main.py` on a free port, selects instances on the Select page, runs a
few steps of grad_ascent on the Unlearn page, and checks the Interference page draws its charts;
then a second method on the same request and the Contrast page, A against B, in each view;
also the two paths AppTest cannot drive: a lasso on the instance map, and checkpoint upload; and
a model of the user's own (examples/own_model), imported from a torch.save state dict.
Screenshots go to test-artifacts/. Outside CI the test is skipped when Chromium or Playwright is
missing; in CI (`CI` set) that is a failure, since .ci/run installs both.
"""

from __future__ import annotations

import os
import re
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from core.cli import STREAMLIT_OPTIONS

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = ROOT / "test-artifacts"
EXAMPLE = ROOT / "examples" / "own_model"
OPENED: list[float] = []
"""Seconds from opening the dashboard to its Model page, per browser session (the first on a
server that has not drawn a page yet)."""
BLANK_WATCH = """
window.__blank = {since: null, stretches: [], frames: 0};
const SHOWN = '[data-testid=stMain] [data-testid=stHeading], [data-testid=stSpinner], '
    + '[data-testid=stExpanderIconSpinner], [data-testid=stSkeleton], [data-testid=stAppSkeleton]';
const frame = () => {
    const now = performance.now(), watch = window.__blank;
    watch.frames += 1;
    if (!document.querySelector(SHOWN)) {
        if (watch.since === null) watch.since = now;
    } else if (watch.since !== null) {
        watch.stretches.push([(now - watch.since) / 1000, location.pathname]);
        watch.since = null;
    }
    requestAnimationFrame(frame);
};
requestAnimationFrame(frame);
"""
"""Issue 19's "no blank page for more than 0.5 s without a status", watched in every frame the
browser draws: a frame is blank when its main area shows neither a title nor a status (spinner,
running status, skeleton); each run of blank frames, in seconds from its first frame to the next
frame that shows something (a main thread busy between them keeps the blank frame on screen), is
kept in window.__blank.stretches with the page's path."""
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
         "--disable-background-networking", "--disable-component-update"]


def _require_browser():
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing = "playwright (pip)"
    else:
        missing = None if Path(CHROMIUM).exists() else f"{CHROMIUM} (apt-get install chromium)"
    if missing:
        (pytest.fail if os.environ.get("CI") else pytest.skip)(f"needs {missing}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The dashboard and its worker, as `mtu app` starts them, on a ledger of their own."""
    _require_browser()
    port = _free_port()
    ARTIFACTS.mkdir(exist_ok=True)
    log = open(ARTIFACTS / "streamlit.log", "w")  # noqa: SIM115  (closed with the server)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(EXAMPLE),  # its plugin
           "MTU_HOME": str(tmp_path_factory.mktemp("e2e-home"))}
    env.pop("MTU_QUEUE", None)
    env["MTU_APP_PLUGINS"] = "my_models"  # as `mtu app --plugin my_models` allows it
    worker = subprocess.Popen([sys.executable, "-m", "core.cli", "worker", "--plugin", "my_models"],
                              cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
    options = {**STREAMLIT_OPTIONS, "server.address": "127.0.0.1", "server.port": port}  # as mtu app
    flags = [arg for name, value in options.items()
             for arg in (f"--{name}", str(value).lower() if isinstance(value, bool) else str(value))]
    process = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(ROOT / "app" / "main.py"),
                                *flags], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                    break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("the dashboard did not answer on /_stcore/health within 60 s")
        yield url
    finally:
        for child in (process, worker):
            child.terminate()
            child.wait(timeout=30)
        log.close()


@pytest.fixture()
def page(server):
    """A fresh browser session on the dashboard, once its Model page shows."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.add_init_script(BLANK_WATCH)
        start = time.perf_counter()
        page.goto(server)
        page.get_by_role("heading", name="Model", exact=True).wait_for(timeout=120_000)
        OPENED.append(time.perf_counter() - start)
        yield page
        browser.close()


def _goto(page, name: str) -> float:
    """Click a page in the sidebar; seconds until its title shows."""
    start = time.perf_counter()
    page.get_by_test_id("stSidebarNavItems").get_by_role("link", name=name, exact=True).click()
    page.get_by_role("heading", name=name, exact=True).wait_for(timeout=120_000)
    return time.perf_counter() - start


def _choose(page, label: str, option: str) -> None:
    """Pick `option` in the selectbox `label`. A click that lands while the page is still
    rerunning can leave the list closed, so the list is opened again (three tries)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    for attempt in range(3):
        page.get_by_role("combobox", name=label).click()
        page.keyboard.type(option)  # the list is virtualised: an option out of sight is not there
        try:
            page.get_by_role("option", name=re.compile(rf"^{re.escape(option)}(:|$)")).click(timeout=10_000)
            return
        except PlaywrightTimeout:
            if attempt == 2:
                raise
            page.keyboard.press("Escape")


def _set_number(page, name: str, value: str) -> None:
    """Type `value` into the Unlearn form's number field `name` (under "Advanced", opened when
    the field is hidden), again until it holds: a rerun after the method change can reset a
    value typed too early or close the expander."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    field = page.get_by_role("spinbutton", name=name, exact=True)
    advanced = page.get_by_text("Advanced: the settings of").first
    for _ in range(5):
        advanced.wait_for(timeout=60_000)
        if not field.is_visible():
            advanced.click()
        try:
            field.fill(value, timeout=10_000)
        except PlaywrightTimeout:  # the click landed while the form was redrawn: open it again
            continue
        field.press("Tab")
        page.wait_for_timeout(1_000)
        if field.input_value() == value:
            return
    raise AssertionError(f"the field {name} does not keep {value}: {field.input_value()}")


def _view(page, name: str) -> None:
    """Pick one of the Interference page's views."""
    page.locator("[data-testid=stRadio] label").filter(has_text=name).click()


def _forget(page, ids: str, count: int, go: bool = True) -> None:
    """On the Select page (`go`: go there first), type `ids` and add them to the forget set of
    `count` instances."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    if go:
        _goto(page, "Select")
    box = page.get_by_label("Add ids")
    box.fill(ids)
    box.press("Enter")
    heading = page.get_by_text(f"Forget set: {count} instances")
    for attempt in range(6):  # a click during the rerun of the typed ids adds what the button had
        page.get_by_role("button", name="Add to forget set").click()
        try:
            heading.wait_for(timeout=10_000)
            return
        except PlaywrightTimeout:
            if attempt == 5:
                raise


def test_select_unlearn_and_see_interference(page, server, tmp_path):
    first_select = _timed(lambda: _goto(page, "Select"), page, page.locator(".js-plotly-plot").first)
    print(f"\nfirst visit of Select {first_select:.2f} s until its instance map shows")
    _forget(page, "3, 17, 40-42", 5, go=False)
    page.locator("[data-testid=stImage] img").nth(4).wait_for(timeout=60_000)
    page.get_by_text("Forget set: 5 instances").scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "select.png"), full_page=True)

    _goto(page, "Unlearn")
    page.get_by_text("Full-task unlearning of 5 instances").wait_for(timeout=60_000)
    _choose(page, "Method", "grad_ascent")
    _set_number(page, "steps", "3")
    lr = page.get_by_role("spinbutton", name="lr", exact=True).input_value()
    assert re.fullmatch(r"\d\.\d\de-\d", lr), lr  # tuned 5.278361765968518e-07, shown rounded
    page.get_by_label("Reason (kept in the ledger)").fill("TICKET-19")
    page.get_by_role("button", name="Run").click()
    page.get_by_text("grad_ascent, full-task, 5 instances): finished").wait_for(timeout=120_000)
    verdict = page.get_by_test_id("stAlertContentInfo").filter(has_text="Verdict.")
    verdict.wait_for(timeout=180_000)  # the run's verdict, once it is scored
    sentence = verdict.inner_text().removeprefix("Verdict.").strip()
    assert sentence.startswith("grad_ascent forgot 5 training instances (ids 3, 17, 40-42) on every task")
    page.screenshot(path=str(ARTIFACTS / "unlearn-verdict.png"), full_page=True)

    seconds = _goto(page, "Interference")
    page.locator(".js-plotly-plot").nth(1).wait_for(timeout=120_000)  # shifts, UIS breakdown
    page.screenshot(path=str(ARTIFACTS / "interference.png"), full_page=True)
    assert page.get_by_text("Traceback").count() == 0
    page.get_by_test_id("stAlertContentInfo").filter(has_text=sentence).wait_for(timeout=60_000)
    _print_the_report(page, sentence, tmp_path)
    _measure_switches(page, first_interference=seconds)
    _open_a_shared_result(page, server, sentence)
    _contrast_two_runs(page, server)
    _print_blank_stretches(page)


def _print_blank_stretches(page) -> None:
    """The blank stretches BLANK_WATCH saw in this browser session (opening the dashboard,
    first visits, the measured switches), longest first. Printed, never asserted (the host's
    load sets them); that the watch runs is asserted."""
    watch = page.evaluate("window.__blank")
    assert watch["frames"] > 0, "the blank watch saw no frame: it does not run"
    stretches = sorted(watch["stretches"], reverse=True) or [[0.0, "-"]]
    over = [f"{seconds:.2f} s on {path}" for seconds, path in stretches if seconds > 0.5]
    print(f"blank stretches (no title, no status) in {watch['frames']} frames: longest "
          f"{stretches[0][0]:.2f} s; "
          f"over 0.5 s (target: none): {', '.join(over) or 'none'}")


def _open_a_shared_result(page, server: str, sentence: str) -> None:
    """Issue 19: the address of a result opens it in a new session (its run and view); the page
    writes a change of view into the address; a page switch leaves the run behind."""
    run = re.search(r"run=(L\d+)", page.url)
    assert run, page.url  # the Interference page wrote its run into the address
    shared = page.context.browser.new_page(viewport={"width": 1400, "height": 1000})
    seconds = _timed(lambda: shared.goto(f"{server}/?run={run[1]}&view=conflicts"), shared,
                     "Forget vs retain gradient angle", "Per shared layer")
    shared.get_by_role("heading", name="Interference", exact=True).wait_for(timeout=60_000)
    shared.get_by_test_id("stAlertContentInfo").filter(has_text=sentence).wait_for(timeout=60_000)
    _view(shared, "Instances")
    shared.get_by_text("At-risk retain instances").wait_for(timeout=60_000)
    shared.wait_for_url(re.compile(r"view=instances"), timeout=30_000)
    assert f"run={run[1]}" in shared.url, shared.url
    shared.screenshot(path=str(ARTIFACTS / "shared-result.png"), full_page=True)
    _goto(shared, "Model")
    shared.get_by_text("Benchmark:").wait_for(timeout=60_000)
    shared.wait_for_timeout(1_000)  # stays on the Model page: the address no longer names a run
    assert shared.get_by_role("heading", name="Model", exact=True).is_visible() and "run=" not in shared.url
    shared.goto(f"{server}/interference?run=L999&view=sideways")
    shared.get_by_text("The address names run 'L999'").wait_for(timeout=60_000)
    assert shared.get_by_text("Traceback").count() == 0
    shared.close()
    print(f"a shared result (?run={run[1]}&view=conflicts) opened in a new session in {seconds:.2f} s")


CONTRAST_VIEWS = {"Attack": ("Forget instances that remain most member-like", "TPR on forget"),
                  "Twin maps": ("Measured damage on the retain sample",),
                  "Layer similarity": ("Linear CKA per layer",),
                  "Per class": ("Prediction matrix on",)}


def _run_in_worker(page, method: str, count: int) -> None:
    """On the Unlearn page, a full-task run of `method` (2 steps) on the forget set of `count`
    instances, until the worker has finished it."""
    _goto(page, "Unlearn")
    page.get_by_text(f"Full-task unlearning of {count} instances").wait_for(timeout=60_000)
    _choose(page, "Method", method)
    _set_number(page, "steps", "2")
    page.get_by_role("button", name="Run").click()
    page.get_by_text(f"{method}, full-task, {count} instances): finished").wait_for(timeout=300_000)


def _contrast_two_runs(page, server: str) -> None:
    """Issue 21 part 5: a second method on the same request, then the Contrast page draws the two
    runs, A against B, in each view (a screenshot of each, the seconds of the first draw, which
    computes, and the median of three switches on cached data, printed); its address opens it in
    a new session."""
    _run_in_worker(page, "neggrad_plus", 5)
    _goto(page, "Contrast")
    first: dict[str, float] = {}
    cached: dict[str, list[float]] = {name: [] for name in CONTRAST_VIEWS}
    start = time.perf_counter()  # the page opens on the Attack view
    for round_ in range(4):
        for name, texts in CONTRAST_VIEWS.items():
            if round_ or name != "Attack":
                start = time.perf_counter()
                _view(page, name)
            for text in texts:
                page.get_by_text(text).first.wait_for(timeout=300_000)
            seconds = time.perf_counter() - start
            if round_ == 0:
                first[name] = seconds
                shot = ARTIFACTS / f"contrast-{name.split()[0].lower()}.png"
                _shoot_view(page, texts[0], shot)
            else:
                cached[name].append(seconds)
    assert page.get_by_text("cannot be contrasted").count() == 0
    assert page.get_by_text("Traceback").count() == 0
    page.wait_for_url(re.compile(r"a=L\d+.*b=L\d+|b=L\d+.*a=L\d+"), timeout=30_000)
    query = page.url.split("?", 1)[1]
    shared = page.context.browser.new_page(viewport={"width": 1400, "height": 1000})
    shared.goto(f"{server}/?{query}")
    shared.get_by_role("heading", name="Contrast", exact=True).wait_for(timeout=120_000)
    shared.get_by_text(CONTRAST_VIEWS["Per class"][0]).wait_for(timeout=300_000)  # the view it names
    assert shared.get_by_text("Traceback").count() == 0
    shared.close()
    print("contrast of two runs, first draw of each view (computes): "
          + ", ".join(f"{name} {s:.2f}" for name, s in first.items()))
    print("contrast view switches on cached data, median of 3: "
          + ", ".join(f"{name} {statistics.median(s):.2f}" for name, s in cached.items()))


PAGES = {  # a page's title and what shows once it is drawn, on the data the test has made
    "History": ("Ledger: ",),
    "Select": ("Forget set: 5 instances",),
    "Unlearn": ("Recent runs on this model", "grad_ascent, full-task, 5 instances): finished"),
    "Compare": ("Run the comparison",),
    "Explain": ("Instance id",),
    "Model": ("Benchmark:",),
    "Interference": ("Primary metric per split", "UIS v2 by task, stacked by component"),
}
VIEWS = {"Conflicts": ("Forget vs retain gradient angle", "Per shared layer"),
         "Instances": ("At-risk retain instances", "Predictions before"),
         "Shifts and UIS": ("Primary metric per split", "UIS v2 by task, stacked by component"),
         "Attack": ("Forget instances that remain most member-like", "TPR on forget"),
         "Layer similarity": ("Linear CKA per layer",),
         "Twin maps": CONTRAST_VIEWS["Twin maps"], "Per class": CONTRAST_VIEWS["Per class"]}
ROUNDS = 5


def _measure_switches(page, first_interference: float) -> None:
    """Issue 19's speed targets, measured: every view of the Interference page and every page,
    ROUNDS times on cached data (the run is scored), the medians printed: for a page the
    seconds until its title shows (until then the page is blank) and until its content shows.
    Printed, never asserted: the host is shared and its load varies."""
    views: dict[str, list[float]] = {name: [] for name in VIEWS}
    titles: dict[str, list[float]] = {name: [] for name in PAGES}
    drawn: dict[str, list[float]] = {name: [] for name in PAGES}
    for round_ in range(ROUNDS):
        for name, texts in VIEWS.items():
            views[name].append(_timed(lambda name=name: _view(page, name), page, *texts))
            if name == "Instances":
                page.locator("[data-testid=stImage] img").nth(3).wait_for(timeout=60_000)
            if round_ == 0:
                _shoot_view(page, texts[0], ARTIFACTS / f"view-{name.split()[0].lower()}.png")
        for name, texts in PAGES.items():
            title: list[float] = []
            drawn[name].append(_timed(lambda name=name, title=title: title.append(_goto(page, name)), page,
                                      *texts))
            titles[name].append(title[0])
    assert page.get_by_text("Traceback").count() == 0

    def medians(times: dict[str, list[float]]) -> str:
        return ", ".join(f"{name} {statistics.median(seconds):.2f}" for name, seconds in times.items())

    print(f"\nfirst open of the dashboard {OPENED[0]:.2f} s; first visit of Interference "
          f"{first_interference:.2f} s to its title")
    print(f"median seconds over {ROUNDS} rounds on cached data (targets: under 0.5 s)")
    print(f"  view switches, until drawn: {medians(views)}")
    print(f"  page switches, until the title shows: {medians(titles)}")
    print(f"  page switches, until drawn: {medians(drawn)}")


def _print_the_report(page, sentence: str, folder: Path) -> None:
    """Download the run's one-page report, open it with every network request refused, and
    print it to PDF in Chromium: one A4 page, whose text holds the verdict sentence."""
    import io

    from pypdf import PdfReader

    with page.expect_download(timeout=120_000) as download:
        page.get_by_role("button", name="Download the one-page report (HTML, prints to PDF)").click()
    name = download.value.suggested_filename
    assert name == "synthetic-indoor-grad_ascent-TICKET-19.html", name
    path = folder / name
    download.value.save_as(path)
    report = page.context.browser.new_page()
    fetched: list[str] = []

    def offline(route):
        if route.request.url.startswith("file:"):
            return route.continue_()
        fetched.append(route.request.url)
        return route.abort()

    report.route("**/*", offline)
    report.goto(path.as_uri())
    report.locator(".js-plotly-plot").nth(1).wait_for(timeout=60_000)  # drawn by the inlined plotly.js
    assert not fetched, fetched
    pdf = report.pdf(format="A4", print_background=True)
    (ARTIFACTS / "report.pdf").write_bytes(pdf)
    pages = PdfReader(io.BytesIO(pdf)).pages
    assert len(pages) == 1, f"the report prints to {len(pages)} pages"
    text = "".join(p.extract_text() for p in pages)
    assert re.sub(r"\s+", "", sentence) in re.sub(r"\s+", "", text), text[:2000]
    assert "TICKET-19" in text
    print(f"report: {len(path.read_bytes()) / 1e6:.1f} MB of HTML, {len(pages)} PDF pages")
    report.close()


def _shoot_view(page, text: str, path: Path) -> None:
    """A screenshot of a view, scrolled to `text` (the app scrolls inside its own container, so a
    full-page screenshot shows only the page's top)."""
    page.get_by_text(text).first.scroll_into_view_if_needed()
    page.screenshot(path=str(path))


def _timed(action, page, *shown) -> float:
    """Seconds from `action` until every one of `shown` (a text or a locator) shows on the page."""
    start = time.perf_counter()
    action()
    for item in shown:
        (page.get_by_text(item).first if isinstance(item, str) else item).wait_for(timeout=60_000)
    return time.perf_counter() - start


def test_upload_a_checkpoint_and_refuse_a_tampered_one(page, tmp_path):
    """The Model page's upload path, which AppTest cannot drive: a good checkpoint opens and
    shows its card; one whose weights do not match the card's checksum is refused with a
    message, and the page stays usable."""

    good = ROOT / "sample_models" / "synthetic-street"
    tampered = tmp_path / "tampered.safetensors"
    weights = bytearray(good.with_suffix(".safetensors").read_bytes())
    weights[-1] ^= 0xFF  # one byte of the last tensor
    tampered.write_bytes(bytes(weights))
    page.locator("[data-testid=stRadio] label").filter(has_text="Upload").click()
    inputs = page.locator("[data-testid=stFileUploaderDropzoneInput]")
    inputs.nth(1).wait_for(state="attached", timeout=60_000)
    inputs.nth(0).set_input_files(str(good.with_suffix(".safetensors")))
    inputs.nth(1).set_input_files(str(good.with_suffix(".json")))
    page.get_by_text("synthetic-street", exact=False).first.wait_for(timeout=120_000)
    page.get_by_text("Benchmark:").wait_for(timeout=60_000)
    assert page.get_by_text("Traceback").count() == 0

    inputs.nth(0).set_input_files(str(tampered))  # replaces the good weights
    page.get_by_test_id("stAlertContentError").wait_for(timeout=60_000)
    message = page.get_by_test_id("stAlertContentError").inner_text()
    assert "checksum" in message.lower() or "sha" in message.lower(), message
    assert page.get_by_text("Traceback").count() == 0
    page.screenshot(path=str(ARTIFACTS / "upload-refused.png"), full_page=True)


def test_lasso_on_the_map_picks_instances(page):
    """The Select page's lasso, which AppTest cannot drive: a loop drawn over the middle of the
    instance map selects the points inside it, the page counts them at once, and "Replace
    forget set" makes them the forget set."""
    _goto(page, "Select")
    area = page.locator(".js-plotly-plot .nsewdrag").first
    area.wait_for(timeout=120_000)
    box = area.bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    rx, ry = box["width"] / 3, box["height"] / 3
    page.mouse.move(cx - rx, cy - ry)
    page.mouse.down()
    for x, y in [(cx + rx, cy - ry), (cx + rx, cy + ry), (cx - rx, cy + ry), (cx - rx, cy - ry)]:
        page.mouse.move(x, y, steps=8)
    page.mouse.up()
    live = page.get_by_text(re.compile(r"Picked: \d+ instances \([1-9]\d* on the map"))
    live.wait_for(timeout=60_000)  # the lasso's count, before anything is added (issue 19)
    picked = int(re.search(r"(\d+)", live.inner_text()).group(1))
    page.get_by_role("button", name="Replace forget set").click()  # its ids are the button's now
    heading = page.get_by_text(re.compile(r"Forget set: [1-9]\d* instances"))
    heading.wait_for(timeout=60_000)
    count = int(re.search(r"(\d+)", heading.inner_text()).group(1))
    assert 0 < count < 800 and count == picked, (count, picked)  # some of the map, not all of it
    assert page.get_by_text("Traceback").count() == 0
    page.screenshot(path=str(ARTIFACTS / "lasso.png"), full_page=True)


def test_open_an_imported_model_of_a_plugin_architecture(page, tmp_path):
    """examples/own_model's architecture, imported from a plain torch.save state dict, opens
    from its path once its plugin module is named, and its instance map draws; a run on it (in
    the worker, which loads the plugin) shows the Attack, Twin maps, Layer similarity and Per
    class views."""
    import torch

    sys.path.insert(0, str(EXAMPLE))
    try:
        from my_models import TwoScaleNet

        from core.cli import main
        from core.data import generate

        data = generate("synthetic-street", tmp_path / "data", seed=0, n_train=16, n_val=12, size=(32, 32))
        torch.save(TwoScaleNet({"segmentation": 7, "depth": 1}).state_dict(), tmp_path / "plain.pt")
        assert main(["import", str(tmp_path / "plain.pt"), "--plugin", "my_models", "--arch",
                     "two_scale_net", "--data", str(data), "--rename", "decoders.=heads.",
                     "--out", str(tmp_path / "imported")]) == 0
    finally:
        sys.path.remove(str(EXAMPLE))
    _choose(page, "Plugin modules that register your own architectures", "my_models")
    page.keyboard.press("Escape")
    page.locator("[data-testid=stRadio] label").filter(has_text="Path on this machine").click()
    path = page.get_by_role("textbox", name="Checkpoint (NAME, NAME.safetensors or NAME.json)")
    path.fill(str(tmp_path / "imported"))
    path.press("Enter")
    page.get_by_text("two_scale_net (width=8) from plugin my_models").wait_for(timeout=120_000)
    assert page.get_by_text("Traceback").count() == 0
    page.screenshot(path=str(ARTIFACTS / "imported-model.png"), full_page=True)
    _goto(page, "Select")
    page.locator(".js-plotly-plot").first.wait_for(timeout=120_000)
    assert page.get_by_text("Traceback").count() == 0
    # issue 21: the run's views on the plugin architecture, a screenshot of each
    _forget(page, "1-3", 3, go=False)
    _run_in_worker(page, "grad_ascent", 3)
    _goto(page, "Interference")
    page.locator(".js-plotly-plot").nth(1).wait_for(timeout=300_000)
    for name, texts in CONTRAST_VIEWS.items():
        _view(page, name)
        for text in texts:
            page.get_by_text(text).first.wait_for(timeout=300_000)
        _shoot_view(page, texts[0], ARTIFACTS / f"imported-view-{name.split()[0].lower()}.png")
    assert page.get_by_text("Traceback").count() == 0


def test_the_chosen_model_holds_across_pages_and_the_sidebar_says_so(page):
    """Issue 19, defects 1 and 6 and the sidebar line, in a real session, where main.py runs on
    every page (AppTest runs a page without it after a switch)."""
    sidebar = page.get_by_test_id("stSidebar")

    def says(pattern: str) -> None:
        sidebar.get_by_text(re.compile(pattern)).first.wait_for(timeout=120_000)

    says(r"synthetic-indoor")
    _forget(page, "3, 17", 2)
    says(r"2 forget instances, full-task: segmentation, depth, normal$")
    _goto(page, "Model")
    _choose(page, "Sample model", "synthetic-street")
    says(r"synthetic-street")
    says(r"2 forget instances, full-task: segmentation, depth$")
    for name in ("History", "Select", "Model"):
        _goto(page, name)
        says(r"synthetic-street")
    page.get_by_text("Benchmark: synthetic-street").wait_for(timeout=120_000)
    assert page.get_by_role("combobox", name="Sample model").input_value() == "synthetic-street"
    assert page.get_by_text("Traceback").count() == 0


def test_a_run_outlives_a_reload_of_the_tab(page):
    """The run goes on in the worker while the tab reloads; the page finds it running, then
    finished, from the ledger."""
    _forget(page, "5-9", 5)
    _goto(page, "Unlearn")
    page.get_by_text("Full-task unlearning of 5 instances").wait_for(timeout=60_000)
    _choose(page, "Method", "grad_ascent")
    _set_number(page, "steps", "300")
    page.get_by_role("button", name="Run").click()
    page.get_by_text(re.compile(r"grad_ascent, full-task, 5 instances\): step \d+ / \d+")).first.wait_for(
        timeout=120_000)
    page.reload()  # a new session: the selection is gone, the run is not
    page.get_by_role("heading", name="Unlearn", exact=True).wait_for(timeout=120_000)
    page.get_by_text("Pick the instances to forget on the Select page").wait_for(timeout=60_000)
    run = page.get_by_text(re.compile(r"Run #L\d+ \(grad_ascent, full-task, 5 instances\): (step|finished)"))
    run.first.wait_for(timeout=60_000)
    page.screenshot(path=str(ARTIFACTS / "reloaded-unlearn.png"), full_page=True)
    page.get_by_text("grad_ascent, full-task, 5 instances): finished").first.wait_for(timeout=180_000)
    _goto(page, "History")
    page.get_by_text("Ledger: ").wait_for(timeout=60_000)
    page.get_by_test_id("stDataFrame").first.wait_for(timeout=60_000)  # the recorded runs
    assert page.get_by_text("No run recorded yet").count() == 0
    assert page.get_by_text("Traceback").count() == 0
