"""A person's view: Debian's chromium (through Playwright) loads the app, runs PGD on a test image, sees results."""
from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright
from test_app_server import ROOT, server  # noqa: F401 - the fixture: one app process shared with those tests

pytestmark = pytest.mark.e2e
CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
ARTIFACTS = ROOT / "test-artifacts"
WAIT_MS = 120_000  # shared CPUs: the first attack also imports torch and loads the model


def test_pgd_attack_in_the_browser(server):  # noqa: F811
    assert Path(CHROMIUM).is_file(), "install Debian's chromium (apt-get install chromium); .ci/run does"
    ARTIFACTS.mkdir(exist_ok=True)
    url = server[0]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page_errors = []
            page.on("pageerror", lambda exc: page_errors.append(str(exc)))
            page.goto(url)
            # the preselected checkpoint's card and the preselected test image
            expect(page.get_by_text("trained with").first).to_be_visible(timeout=WAIT_MS)
            expect(page.get_by_text("MNIST test image #0").first).to_be_visible(timeout=WAIT_MS)

            index = page.get_by_label("index in the test set")
            index.fill("7")
            index.press("Enter")
            expect(page.get_by_text("MNIST test image #7").first).to_be_visible(timeout=WAIT_MS)
            expect(page.get_by_text("Cost before running").first).to_be_visible(timeout=WAIT_MS)

            page.click("#run-attack")
            expect(page.locator("#attack-summary")).to_contain_text("PGD (Linf)", timeout=WAIT_MS)
            adversarial = page.locator("#adv-image img").first
            expect(adversarial).to_be_visible(timeout=WAIT_MS)
            assert adversarial.evaluate("img => img.complete && img.naturalWidth") == 224
            for plot in ("#topk-plot", "#trace-plot", "#scaling-plot", "#token-plot"):
                expect(page.locator(f"{plot} .js-plotly-plot").first).to_be_visible(timeout=WAIT_MS)
            expect(page.locator("#attack-summary")).to_contain_text("survives 8-bit PNG")
            page.screenshot(path=str(ARTIFACTS / "app_attack.png"), full_page=True)
            assert page.locator(".toast-body.error").count() == 0
            assert not page_errors, page_errors
        finally:
            browser.close()
