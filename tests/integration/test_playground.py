"""The playground page at `/`, driven in headless Chromium (Debian's, through Playwright)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.serving import Running, start_server, stop

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Chromium as root on a machine with no network: no sandbox, and none of its background
# connections (each one would be refused).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="Debian chromium is not installed (make setup-browser)"
)


@pytest.fixture(scope="module")
def keyed_server(tiny_build: Path) -> Iterator[Running]:
    running = start_server(
        tiny_build / "model_repository", env={"SENTISERVE_API_KEY": "playground-key-1"}
    )
    yield running
    stop(running)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def test_playground_classifies_a_review_like_the_api(
    keyed_server: Running, browser: object, tmp_path: Path
) -> None:
    page = browser.new_page()  # type: ignore[attr-defined]
    page.goto(keyed_server.url + "/")
    assert page.title() == "sentiserve playground"
    text = "A wonderful, moving film with a great cast."

    page.fill("#text", text)
    page.click("#go")
    page.wait_for_selector("#error:has-text('401')")
    assert page.locator("#result").is_hidden()

    page.fill("#key", "playground-key-1")
    page.click("#go")
    page.wait_for_selector("#result:not([hidden])")
    expected = httpx.post(
        keyed_server.url + "/v1/sentiment",
        json={"text": text},
        headers={"Authorization": "Bearer playground-key-1"},
        timeout=30,
    ).json()
    result = expected["results"][0]
    assert page.inner_text("#label") == result["label"]
    shown = {
        row.get_attribute("data-label"): float(row.locator(".value").inner_text())
        for row in page.locator("#scores .bar").all()
    }
    assert shown.keys() == result["scores"].keys()
    for name, p in result["scores"].items():
        assert shown[name] == pytest.approx(p, abs=1e-4)
    assert float(page.inner_text("#latency")) > 0
    assert page.inner_text("#served") == f"{expected['model']} v{expected['version']}"
    assert len(page.inner_text("#request-id")) >= 16
    page.screenshot(path=str(tmp_path / "playground.png"))

    page.fill("#text", "   ")
    page.click("#go")
    assert "Type some text" in page.inner_text("#error")

    page.fill("#text", "fine")
    page.fill("#model", "no-such-model")
    page.click("#go")
    page.wait_for_selector("#error:has-text('404')")
    page.close()


def test_page_is_open_and_not_in_the_api_schema(keyed_server: Running) -> None:
    response = httpx.get(keyed_server.url + "/", timeout=10)
    assert response.status_code == 200, "the page needs no key; the calls it makes do"
    assert response.headers["content-type"].startswith("text/html")
    schema = httpx.get(keyed_server.url + "/openapi.json", timeout=10).json()
    assert "get" not in schema["paths"].get("/", {}), "the page is not an API operation"
    assert "post" in schema["paths"]["/"], "POST / is (TEI's and the Inference API's)"


def test_playground_lists_a_multi_label_models_labels(browser: object, tmp_path: Path) -> None:
    from sentiserve.pipeline import BuildConfig, build
    from sentiserve.train.tiny import tiny_classifier
    from tests.conftest import FILLER, NEGATIVE_WORDS, POSITIVE_WORDS

    labels = {0: "toxic", 1: "insult", 2: "threat"}
    words = sorted(set(POSITIVE_WORDS + NEGATIVE_WORDS + FILLER))
    ckpt = tiny_classifier(
        tmp_path / "ckpt",
        "bert",
        words,
        labels,
        seed=3,
        problem_type="multi_label_classification",
        initializer_range=0.1,
    )
    repo = tmp_path / "repo"
    build(
        BuildConfig(
            work_dir=tmp_path / "build",
            repository=repo,
            model_name="toxicity",
            checkpoint=str(ckpt),
        )
    )
    running = start_server(repo)
    try:
        page = browser.new_page()  # type: ignore[attr-defined]
        page.goto(running.url + "/")
        text = "a dull film with a bad plot"
        page.fill("#text", text)
        page.click("#go")  # no model typed: the server's only model answers
        page.wait_for_selector("#result:not([hidden])")
        expected = httpx.post(running.url + "/v1/sentiment", json={"text": text}, timeout=30)
        result = expected.json()["results"][0]
        shown = page.inner_text("#label")
        assert shown == (", ".join(result["labels"]) or "none above threshold")
        rows = page.locator("#scores .bar").all()
        assert [row.get_attribute("data-label") for row in rows] == list(labels.values())
        assert page.inner_text("#served").startswith("toxicity v1")
        page.close()
    finally:
        stop(running)
