"""A person's view: chromium (through Playwright) loads the app, runs PGD on a test image, sees results."""
from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright
from test_app_server import ROOT, server  # noqa: F401 - the fixture: one app process shared with those tests

pytestmark = pytest.mark.e2e
DEBIAN_CHROMIUM = "/usr/bin/chromium"  # what scripts/setup.sh installs as root; else Playwright's own download
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
ARTIFACTS = ROOT / "test-artifacts"
WAIT_MS = 120_000  # shared CPUs: the first attack also imports torch and loads the model


@contextlib.contextmanager
def app_page(url: str):
    """Chromium on the app, once the preselected checkpoint's card shows; at the end, no error toast and no page
    error."""
    with sync_playwright() as pw:
        debian = Path(DEBIAN_CHROMIUM).is_file()
        assert debian or Path(pw.chromium.executable_path).is_file(), (
            "no chromium: run scripts/setup.sh (Debian's chromium as root, else `playwright install chromium`)")
        browser = pw.chromium.launch(executable_path=DEBIAN_CHROMIUM if debian else None, headless=True, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page_errors = []
            page.on("pageerror", lambda exc: page_errors.append(str(exc)))
            page.goto(url)
            expect(page.get_by_text("trained with").first).to_be_visible(timeout=WAIT_MS)
            yield page
            assert page.locator(".toast-body.error").count() == 0
            assert not page_errors, page_errors
        finally:
            browser.close()


def test_pgd_attack_in_the_browser(server):  # noqa: F811
    ARTIFACTS.mkdir(exist_ok=True)
    with app_page(server[0]) as page:
        # the preselected checkpoint's card (app_page waits for it) and the preselected test image
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


def test_upload_an_image_and_attack_it_in_the_browser(server, tmp_path):  # noqa: F811
    from ssm_lab.image_fit import FITS
    from testkit.photo_digits import make_corpus

    photo = tmp_path / "photo.jpg"  # a colour JPEG of a digit on paper: the model sees it framed as a 1x28x28 digit
    photo.write_bytes(make_corpus(1, seed=5)[0].jpeg)
    with app_page(server[0]) as page:
        page.get_by_role("tab", name="Upload").click()
        page.locator("#upload-image input[type=file]").first.set_input_files(str(photo))
        expect(page.locator("#preview-note")).to_contain_text("framed as a digit", timeout=WAIT_MS)
        expect(page.get_by_label("upload", exact=True)).to_be_checked(timeout=WAIT_MS)
        page.click("#run-attack")
        expect(page.locator("#attack-summary")).to_contain_text("the clean prediction", timeout=WAIT_MS)
        page.get_by_label(FITS["squash"]).check()  # the visible way out of digit framing
        expect(page.locator("#preview-note")).to_contain_text("used as it is", timeout=WAIT_MS)


def test_compare_and_evaluate_tabs_in_the_browser(server):  # noqa: F811
    ARTIFACTS.mkdir(exist_ok=True)
    with app_page(server[0]) as page:
        page.get_by_role("tab", name="Compare").click()
        page.get_by_role("button", name="Attack on every model").click()
        # two preselected models: an adversarial image and a perturbation each
        expect(page.locator("#compare-gallery img")).to_have_count(4, timeout=WAIT_MS)
        expect(page.locator("#compare-table")).to_contain_text("mnist-s4-st", timeout=WAIT_MS)

        page.get_by_role("tab", name="Evaluate").click()
        page.get_by_role("button", name="Evaluate robust accuracy").click()
        report = page.locator("#eval-report")
        expect(report).to_contain_text("worst case over the attacks", timeout=WAIT_MS)
        expect(report).to_contain_text("95% CI")
        expect(page.locator("#confusion-plot .js-plotly-plot").first).to_be_visible(timeout=WAIT_MS)
        page.get_by_role("button", name="Plot accuracy vs eps (same images and settings as above)").click()
        curves = page.locator("#curve-plot .js-plotly-plot").first
        expect(curves).to_be_visible(timeout=WAIT_MS)
        expect(curves).to_contain_text("Robust accuracy vs eps (n=64")
        page.screenshot(path=str(ARTIFACTS / "app_compare_evaluate.png"), full_page=True)
