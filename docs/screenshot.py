"""Render the README's picture of a report, docs/report.png, from a real run.

    .venv/bin/python docs/screenshot.py                 # runs scenarios/worker-kill.yaml first
    .venv/bin/python docs/screenshot.py --run reports/20261202-063111-worker-kill

Without ``--run`` it runs ``scenarios/worker-kill.yaml`` on the local stack into a temporary
report directory (about 40 s), then opens that run's ``index.html`` in Debian's chromium
(through Playwright, as the report's browser test does) and saves the top of the page: the
verdict, the expectations and the first timelines. Needs ``./dev setup`` and ``chromium``
(``apt-get install chromium``).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WIDTH, HEIGHT = 1100, 1500


def real_run(report_dir: Path) -> Path:
    ichaos = ROOT / ".venv" / "bin" / "ichaos"
    if not ichaos.is_file():
        sys.exit("error: no .venv/bin/ichaos: run ./dev setup first")
    done = subprocess.run(
        [str(ichaos), "run", "scenarios/worker-kill.yaml", "--report-dir", str(report_dir),
         "--quiet"],
        cwd=ROOT, check=False,
    )  # fmt: skip
    runs = sorted(p for p in report_dir.iterdir() if (p / "index.html").is_file())
    if done.returncode != 0 or not runs:
        sys.exit(f"error: the run did not pass (exit {done.returncode}): no picture of it")
    return runs[-1]


def shoot(run: Path, out: Path) -> None:
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("error: needs chromium (apt-get install chromium)")
    page_file = run / "index.html"
    if not page_file.is_file():
        sys.exit(f"error: {run} has no index.html: not a run directory")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": WIDTH, "height": HEIGHT})
            page.emulate_media(color_scheme="light")
            page.goto(page_file.as_uri())
            page.screenshot(path=str(out), clip={"x": 0, "y": 0, "width": WIDTH,
                                                 "height": HEIGHT})  # fmt: skip
        finally:
            browser.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, help="a run directory (default: make a real run)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "report.png")
    args = parser.parse_args()
    if args.run is not None:
        shoot(args.run, args.out)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            shoot(real_run(Path(tmp)), args.out)
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
