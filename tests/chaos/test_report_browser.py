"""The report in a real browser: Debian's Chromium, headless, driven by Playwright (never a
downloaded browser). The page must load from disk with no console error and no other request,
and its charts must be drawn; screenshots (light and dark) are kept as test artefacts."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from playwright.sync_api import ConsoleMessage, Request, sync_playwright

from chaos._report import render_run
from tests.chaos._journals import make_run

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTEFACTS = (
    Path(os.environ.get("ICHAOS_TEST_ARTEFACTS", Path(__file__).resolve().parents[2] / "reports"))
    / "test-artefacts"
)

pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="needs Debian's chromium: ./dev setup installs it where it runs as root with apt-get",
)


def test_the_page_loads_draws_its_charts_and_fetches_nothing(tmp_path: Path) -> None:
    page_file = render_run(make_run(tmp_path, "run-a", stream=True, status="aborted"))
    errors: list[str] = []
    fetched: list[str] = []
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        assert CHROMIUM is not None
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})

            def console(message: ConsoleMessage) -> None:
                if message.type == "error":
                    errors.append(message.text)

            def request(req: Request) -> None:
                fetched.append(req.url)

            page.on("console", console)
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("request", request)
            page.goto(page_file.as_uri(), wait_until="load")

            sizes = page.eval_on_selector_all(
                "svg.chart",
                "els => els.map(e => { const b = e.getBoundingClientRect(); "
                "return [e.id, b.width, b.height]; })",
            )
            assert [s[0] for s in sizes] == [
                "throughput",
                "latency",
                "ttft",
                "itl",
                "tpot",
                "output-tps",
                "budget",
                "burn",
            ]
            assert all(width > 800 and height > 150 for _, width, height in sizes)
            drawn = page.eval_on_selector_all(
                "svg.chart path.line", "els => els.map(e => e.getTotalLength())"
            )
            assert len(drawn) >= 10 and all(length > 100 for length in drawn)
            bands = page.eval_on_selector_all(
                "svg.chart .band rect", "els => els.map(e => e.getBBox().width)"
            )
            assert len(bands) == 8 and all(width > 100 for width in bands)  # the fault, on all 8
            light = page.evaluate("getComputedStyle(document.body).backgroundColor")
            page.screenshot(path=str(ARTEFACTS / "report-light.png"), full_page=True)

            page.emulate_media(color_scheme="dark")
            dark = page.evaluate("getComputedStyle(document.body).backgroundColor")
            assert light == "rgb(255, 255, 255)" and dark != light
            page.screenshot(path=str(ARTEFACTS / "report-dark.png"), full_page=True)
            page.emulate_media(media="print")
            hover = page.eval_on_selector("svg.chart .hover", "e => getComputedStyle(e).display")
            assert hover == "none"
        finally:
            browser.close()
    assert errors == []
    assert fetched == [page_file.as_uri()]
    assert (ARTEFACTS / "report-light.png").stat().st_size > 10_000


def test_the_readme_picture_script_renders_a_run(tmp_path: Path) -> None:
    """docs/screenshot.py (which makes docs/report.png from a real run) keeps working."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "screenshot", Path(__file__).resolve().parents[2] / "docs" / "screenshot.py"
    )
    assert spec is not None and spec.loader is not None
    screenshot = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(screenshot)
    run = make_run(tmp_path, "pictured", stream=True)
    render_run(run)
    out = tmp_path / "report.png"
    screenshot.shoot(run, out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 20_000
