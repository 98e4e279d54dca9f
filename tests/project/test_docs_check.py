"""tools/docs_check.py, the look at the built docs site in headless Chromium: a
page whose stylesheet is missing, one that logs a console error, one that loads a
script from another host and one whose script throws each fail it; a sound page
passes with its screenshot written (beside the tests in a clone or an unpacked
sdist only; needs Chromium and websockets, which the docs extra installs)."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest
from conftest import REPO, needs_source_tree, run_python

TOOL = REPO / "tools" / "docs_check.py"

pytestmark = [
    needs_source_tree,
    pytest.mark.skipif(
        not any(shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome")),
        reason="needs Chromium (apt-get install chromium)",
    ),
    pytest.mark.skipif(
        importlib.util.find_spec("websockets") is None,
        reason='needs websockets (pip install ".[docs]")',
    ),
]

SOUND = """<!doctype html><html><head><meta charset="utf-8"><title>t</title>
<link rel="stylesheet" href="assets/style.css"></head>
<body><h1>A sound page</h1><p>Its stylesheet is here and nothing goes wrong.</p></body></html>
"""
PAGES = {
    "sound.html": SOUND,
    "missing-asset.html": SOUND.replace("assets/style.css", "assets/gone.css"),
    "console-error.html": SOUND.replace("</body>", "<script>console.error('boom')</script></body>"),
    "remote-asset.html": SOUND.replace(
        "</head>", '<script src="https://cdn.example.com/lib.js"></script></head>'
    ),
    "throws.html": SOUND.replace("</body>", "<script>null.x</script></body>"),
}


def make_site(root: Path) -> Path:
    site = root / "site"
    (site / "assets").mkdir(parents=True)
    (site / "assets" / "style.css").write_text("h1 { color: #123456; }\n", encoding="utf-8")
    for name, html in PAGES.items():
        (site / name).write_text(html, encoding="utf-8")
    return site


def run_tool(site: Path, shots: Path, *pages: str) -> tuple[int, str]:
    args = [str(TOOL), "--site", str(site), "--screenshots", str(shots), "--settle", "0.5"]
    for page in pages:
        args += ["--page", page]
    proc = run_python(args, cwd=site.parent, timeout=180)
    return proc.returncode, proc.stdout + proc.stderr


def test_a_sound_page_passes_with_its_screenshot(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    code, out = run_tool(site, tmp_path / "shots", "sound.html")
    assert code == 0, out
    assert "ok   sound.html" in out
    png = (tmp_path / "shots" / "sound.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 1000


def test_broken_pages_fail_and_say_why(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    code, out = run_tool(
        site,
        tmp_path / "shots",
        "sound.html",
        "missing-asset.html",
        "console-error.html",
        "remote-asset.html",
        "throws.html",
    )
    assert code == 1, out
    assert "ok   sound.html" in out
    blocks = out.split("\nFAIL ")
    said = {block.split(":", 1)[0]: block for block in blocks[1:]}
    assert set(said) == {
        "missing-asset.html",
        "console-error.html",
        "remote-asset.html",
        "throws.html",
    }, out
    assert "HTTP 404" in said["missing-asset.html"] and "gone.css" in said["missing-asset.html"]
    assert "console error: boom" in said["console-error.html"]
    assert "request failed: https://cdn.example.com/lib.js" in said["remote-asset.html"]
    assert "uncaught exception" in said["throws.html"]
    # every page, failing or not, has its screenshot
    assert len(list((tmp_path / "shots").glob("*.png"))) == 5


def test_a_page_missing_from_the_site_is_a_usage_error(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    code, out = run_tool(site, tmp_path / "shots", "nowhere.html")
    assert code == 2 and "nowhere.html" in out and "mkdocs build" in out
