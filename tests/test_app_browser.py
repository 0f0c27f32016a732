"""rag_app in a real browser: Debian's headless Chromium, driven by selenium through the system
chromedriver, against the app served on a free local port (the demo store as scripts/demo.sh builds
it, the tiny random-weight AF1 for Chat). Never skipped: without the browser they fail saying how to
install it (scripts/test.sh installs it).

``RAG_APP_SCREENSHOTS=docs python -m pytest tests/test_app_browser.py`` also saves the screenshots of
the four tabs the README shows (docs/app_*.png).
"""

from __future__ import annotations

import os
import shutil
import socket
import time
from pathlib import Path

import pytest
import soundfile as sf

from rag_flamingo.app.context import primary_store
from rag_flamingo.app.main import load_config, serve
from rag_flamingo.datasets import demo
from rag_flamingo.datasets.manifest import read_manifest
from support.clips import SR, synth

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

TINY_MODEL = ["model=tiny", "model.audio_encoder={_target_:support.engine.TinyWindowEncoder}"]
INSTALL = "apt-get install -y chromium chromium-driver (scripts/test.sh installs them when missing)"
SHOTS = os.environ.get("RAG_APP_SCREENSHOTS")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """The app over a copy of the demo store (New labels appends to it), with an evaluate folder."""
    from index_builder.cli import main as build_index
    from rag_flamingo.evaluate import main as evaluate

    assert build_index(["progress=false", "num_workers=0"]) == 0  # what scripts/demo.sh builds
    work = tmp_path_factory.mktemp("app")
    store = work / "demo-train-aisfx"
    shutil.copytree(primary_store(load_config([])), store)
    runs = work / "runs"
    argv = ["dataset=demo", "task=classification", "predictor=knn,prototype", "shots=1,4", "limit=12"]
    assert evaluate([*argv, f"store={store}", f"output_dir={runs / 'demo-knn'}", "progress=false"]) == 0
    port = free_port()
    overrides = [f"store={store}", f"port={port}", f"results_dir={runs}", f"clips_dir={work / 'clips'}", *TINY_MODEL]
    old = os.environ.get("GRADIO_TEMP_DIR")
    (work / "uploads").mkdir()
    page, _ = serve(load_config(overrides), block=False, upload_dir=str(work / "uploads"))
    yield {"url": f"http://127.0.0.1:{port}/", "work": work, "demo": demo.ensure_demo()}
    page.close()
    if old is None:
        os.environ.pop("GRADIO_TEMP_DIR", None)
    else:
        os.environ["GRADIO_TEMP_DIR"] = old


@pytest.fixture(scope="module")
def browser():
    missing = [name for name in ("chromium", "chromedriver") if shutil.which(name) is None]
    if missing:
        pytest.fail(f"the browser tests need {' and '.join(missing)}: {INSTALL}")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail("the browser tests need selenium: pip install -e '.[dev,app]'")
    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(arg)
    options.binary_location = str(shutil.which("chromium"))
    driver = webdriver.Chrome(service=Service(str(shutil.which("chromedriver"))), options=options)
    yield driver
    driver.quit()


@pytest.fixture
def page(app, browser):
    browser.get(app["url"])
    wait(browser, lambda d: d.find_elements("css selector", "#ask-audio input[type=file]"))
    return browser


def wait(driver, condition, seconds: float = 120):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, seconds).until(condition)


def text_of(driver, css: str) -> str:
    return driver.find_element("css selector", css).text


def wait_text(driver, css: str, seconds: float = 120) -> str:
    wait(driver, lambda d: text_of(d, css).strip(), seconds)
    return text_of(driver, css)


def upload(driver, css: str, *files: Path) -> None:
    driver.find_element("css selector", f"{css} input[type=file]").send_keys("\n".join(str(f) for f in files))
    time.sleep(1.5)  # the upload reaches the server before the button is pressed


def open_tab(driver, name: str) -> None:
    driver.find_element("xpath", f"//button[@role='tab' and contains(., '{name}')]").click()
    time.sleep(0.5)


def screenshot(driver, name: str) -> None:
    if SHOTS:
        driver.execute_script("window.scrollTo(0, 0)")
        height = driver.execute_script("return document.body.scrollHeight")
        driver.set_window_size(1400, max(1000, min(int(height) + 40, 2400)))
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(SHOTS) / f"app_{name}.png"))
        driver.set_window_size(1400, 1000)


def demo_clip(app, label: str) -> Path:
    rows = read_manifest(app["demo"] / "test.jsonl")
    return app["demo"] / next(r["path"] for r in rows if r["label"] == label)


def test_ask_a_demo_clip_gives_an_answer_and_playable_shots(app, page):
    clip = app["work"] / "query.wav"
    shutil.copy(demo_clip(app, "bell"), clip)
    upload(page, "#ask-audio", clip)
    page.find_element("css selector", "#ask-button").click()
    answer = wait_text(page, "#ask-answer")
    assert answer.startswith("bell") and "knn, 4 shots" in answer and "demo-train-aisfx" in answer
    labels = [e.text for e in page.find_elements("css selector", "#ask-shots td.shot-label")]
    assert len(labels) == 4 and labels.count("bell") >= 3
    # the browser decodes a shot's player: its duration is the clip's (at most player_seconds)
    duration = page.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "const a = document.querySelector('#ask-shots audio');"
        "a.preload = 'auto'; a.onloadedmetadata = () => done(a.duration); a.onerror = () => done(-1); a.load();"
    )
    assert 0.5 < duration <= 10.0
    screenshot(page, "ask")


def test_a_bad_upload_shows_an_error_in_the_page(app, page):
    junk = app["work"] / "notes.wav"
    junk.write_text("not audio at all\n" * 40)
    upload(page, "#ask-audio", junk)
    page.find_element("css selector", "#ask-button").click()
    status = wait_text(page, "#ask-status")
    assert status.startswith("Error:") and "not an audio file" in status and "Traceback" not in page.page_source
    assert text_of(page, "#ask-answer").strip() == ""


def test_results_of_an_evaluate_folder(app, page):
    open_tab(page, "Results")
    page.find_element("css selector", "#results-open").click()
    table = wait_text(page, "#results-table")
    assert "12 queries" in table and "knn" in table and "prototype" in table and "chance" in table
    wait(page, lambda d: d.find_elements("css selector", "#results-plot img"))
    page.find_element("css selector", "#results-pick input").click()
    option = "#results-pick [data-testid=dropdown-option]"
    wait(page, lambda d: d.find_elements("css selector", option))
    page.find_elements("css selector", option)[0].click()
    detail = wait_text(page, "#results-detail")
    assert "knn, 1 shot," in detail and "target" in detail
    wait(page, lambda d: d.find_elements("css selector", "#results-query audio"))
    assert len(page.find_elements("css selector", "#results-shots tr.shot audio")) == 1
    screenshot(page, "results")


# every text the last assistant message of the Chat log shows, recorded as the page changes it
WATCH_CHAT = """
window.chatTexts = [];
const log = document.querySelector('#chat-log');
new MutationObserver(() => {
    const bots = log.querySelectorAll('[data-testid="bot"]');
    const text = bots.length ? bots[bots.length - 1].innerText.trim() : '';
    if (text && window.chatTexts[window.chatTexts.length - 1] !== text) window.chatTexts.push(text);
}).observe(log, {childList: true, subtree: true, characterData: true});
"""


def test_two_chat_rounds_with_the_tiny_model(app, page):
    """Two rounds; the answer streams in: the page shows it growing, each text a prefix of the last."""
    open_tab(page, "Chat")
    upload(page, "#chat-audio", demo_clip(app, "rain"))
    for i, message in enumerate(["What do you hear?", "Is it loud?"], 1):
        page.execute_script(WATCH_CHAT)
        page.find_element("css selector", "#chat-msg textarea").send_keys(message)
        page.find_element("css selector", "#chat-send").click()
        wait(page, lambda d, i=i: f"{4 - i} round" in text_of(d, "#chat-status"))
        shown = page.execute_script("return window.chatTexts")
        assert len(shown) >= 2, shown  # at least one partial answer before the whole one
        assert all(shown[-1].startswith(t) for t in shown[:-1]), shown
    log = text_of(page, "#chat-log")
    assert "What do you hear?" in log and "Is it loud?" in log
    assert len(page.find_elements("css selector", "#chat-log .message-row, #chat-log [data-testid='bot']")) >= 2
    screenshot(page, "chat")


def test_a_new_label_from_three_clips_then_a_fourth_is_classified(app, page):
    clips = []
    for i in range(4):
        clips.append(app["work"] / f"kettle_{i}.wav")
        sf.write(clips[-1], synth("whistle", 500 + i), SR)
    open_tab(page, "New labels")
    page.find_element("css selector", "#labels-name textarea").send_keys("kettle whistle")
    upload(page, "#labels-files", *clips[:3])
    page.find_element("css selector", "#labels-add").click()
    status = wait_text(page, "#labels-status", 300)
    assert status.startswith("appended: 3 clips of 'kettle whistle' added"), status
    assert "kettle whistle\n3" in text_of(page, "#labels-counts")
    upload(page, "#labels-query", clips[3])
    page.find_element("css selector", "#labels-classify").click()
    answer = wait_text(page, "#labels-answer")
    assert answer.startswith("kettle whistle"), answer
    screenshot(page, "labels")
