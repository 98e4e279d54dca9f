#!/usr/bin/env python3
"""Check in headless Chromium that the published asv dashboard renders offline.

Serves the html dir (``.asv/html``, written by ``tools/publish_offline.py``)
from ``http.server`` on 127.0.0.1 (a random free port) and loads it in headless
Chromium with every host name other than 127.0.0.1 made unresolvable, so a page
that still needs a CDN fails here exactly as it would on a machine without
internet. It then checks, and exits non-zero naming what failed:

1. static: no ``src``/``href`` of a published page names an http(s) URL;
2. the graph page of one benchmark (``#<name>?x-axis=<first param>``; by default
   ``bench_peers.GetHit.time_get_hit`` when published, else the first benchmark
   with parameters) as a DOM dump: it is not asv's error page ("Can not determine
   continental origin of swallow", shown when a JavaScript library fails to load),
   asv's error dialog did not open, ``#main-graph`` holds flot's ``flot-base``
   canvas with tick labels and the axis label, and the benchmark tree lists the
   benchmark;
3. the same page as a PNG screenshot (saved, default
   ``/tmp/embcache-dashboard.png``), decoded with zlib: the plot area right of the
   sidebar must hold at least ``--min-pixels`` coloured (non-grey) pixels, i.e. the
   series were really drawn (the legend is switched off so that it cannot count);
4. the "Benchmark list" page (``#/summarylist``): its table lists the benchmark;
5. the local server answered no request with 404 (a missing vendored file).

Usage::

    python tools/publish_offline.py         # publish + make self-contained
    python tools/check_dashboard.py         # ~5 s; needs Debian's chromium

Exit status: 0 all checks passed; 1 a check failed; 2 nothing to check (no
published dashboard, no results, or no Chromium found).
"""

from __future__ import annotations

import argparse
import json
import re
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any
from urllib.parse import quote

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tools.local_site import find_browser, serve  # noqa: E402

ERROR_PAGE_TEXT = "Can not determine continental origin of swallow"
PREFERRED = "bench_peers.GetHit.time_get_hit"
WINDOW = (1400, 900)
SIDEBAR_PX = 220  # asv's left panel is ~185 px wide at this window size
NAVBAR_PX = 70


class CheckFailed(Exception):
    """A dashboard check failed; the message says which."""


def run_browser(browser: str, profile: Path, url: str, *extra: str, budget_ms: int) -> str:
    """Run headless Chromium on ``url`` and return its stdout."""
    cmd = [
        browser,
        "--headless",
        "--disable-gpu",
        "--no-sandbox",  # CI runs as root
        "--no-first-run",
        "--disable-extensions",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        # Offline for real: nothing but the local server resolves.
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        f"--virtual-time-budget={budget_ms}",
        *extra,
        url,
    ]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    except subprocess.TimeoutExpired as exc:
        raise CheckFailed(f"chromium timed out on {url}") from exc
    if out.returncode != 0:
        tail = "\n".join(out.stderr.strip().splitlines()[-5:])
        raise CheckFailed(f"chromium exited {out.returncode} on {url}:\n{tail}")
    return out.stdout


def read_png(path: Path) -> tuple[int, int, int, bytes]:
    """Decode an 8-bit non-interlaced RGB/RGBA PNG: (width, height, channels, pixels)."""
    data = path.read_bytes()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise CheckFailed(f"{path} is not a PNG")
    pos, idat, width, height, channels = 8, bytearray(), 0, 0, 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, height, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", body)
            channels = {2: 3, 6: 4}.get(ctype, 0)
            if depth != 8 or not channels or interlace:
                raise CheckFailed(f"{path}: unsupported PNG (depth {depth}, type {ctype})")
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            break
    raw = zlib.decompress(bytes(idat))
    stride = width * channels
    out = bytearray(height * stride)
    prev = bytearray(stride)
    for y in range(height):
        ftype = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - channels] if i >= channels else 0
            b = prev[i]
            c = prev[i - channels] if i >= channels else 0
            if ftype == 1:
                line[i] = (line[i] + a) & 0xFF
            elif ftype == 2:
                line[i] = (line[i] + b) & 0xFF
            elif ftype == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif ftype == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[i] = (line[i] + pred) & 0xFF
        out[y * stride : (y + 1) * stride] = line
        prev = line
    return width, height, channels, bytes(out)


def coloured_pixels(path: Path, left: int, top: int) -> int:
    """Count pixels right of ``left`` and below ``top`` that are clearly not grey."""
    width, height, ch, px = read_png(path)
    scale = width / WINDOW[0]  # device pixel ratio, if any
    x0, y0 = int(left * scale), int(top * scale)
    count = 0
    for y in range(y0, height):
        row = px[y * width * ch : (y + 1) * width * ch]
        for x in range(x0, width):
            r, g, b = row[x * ch], row[x * ch + 1], row[x * ch + 2]
            if max(r, g, b) - min(r, g, b) >= 40:
                count += 1
    return count


def remote_refs(html_dir: Path) -> list[str]:
    """Every src/href of a published page that names a remote URL."""
    found = []
    pattern = re.compile(r"""\b(?:src|href)\s*=\s*["']?\s*((?:https?:)?//[^"'\s>]+)""", re.I)
    for page in sorted(html_dir.rglob("*.html")):
        for m in pattern.finditer(page.read_text(encoding="utf-8", errors="replace")):
            found.append(f"{page}: {m.group(1)}")
    return found


def pick_benchmark(index: dict[str, Any], wanted: str | None) -> tuple[str, str | None]:
    """Choose the benchmark whose graph to open, and the parameter for its x axis."""
    benchmarks: dict[str, Any] = index.get("benchmarks", {})
    if wanted:
        if wanted not in benchmarks:
            raise CheckFailed(f"benchmark {wanted!r} is not in the published index.json")
        name = wanted
    elif PREFERRED in benchmarks:
        name = PREFERRED
    else:
        with_params = [n for n, b in sorted(benchmarks.items()) if b.get("param_names")]
        if not (with_params or benchmarks):
            raise CheckFailed("the published index.json lists no benchmark")
        name = (with_params or sorted(benchmarks))[0]
    params = benchmarks[name].get("param_names") or []
    return name, (params[0] if params else None)


def check(args: argparse.Namespace) -> list[str]:
    """Run every check; return the lines to report. Raise CheckFailed on failure."""
    html_dir: Path = args.html_dir
    report: list[str] = []
    left = remote_refs(html_dir)
    if left:
        raise CheckFailed(
            "published pages still load from the internet (run publish_offline.py):\n  "
            + "\n  ".join(left)
        )
    report.append("static: no src/href names an http(s) URL")

    index = json.loads((html_dir / "index.json").read_text(encoding="utf-8"))
    name, x_param = pick_benchmark(index, args.benchmark)
    state = "show-legend=false" + (f"&x-axis={quote(x_param)}" if x_param else "")

    server, failures = serve(html_dir)
    base = f"http://127.0.0.1:{server.server_address[1]}/"
    url = f"{base}#{name}?{state}"
    try:
        with tempfile.TemporaryDirectory(prefix="embcache-chromium-") as profile:
            dom = run_browser(
                args.browser, Path(profile), url, "--dump-dom", budget_ms=args.budget_ms
            )
            if ERROR_PAGE_TEXT in dom or "<title>airspeed velocity error" in dom:
                raise CheckFailed(f"{url} shows asv's error page: a JavaScript library failed")
            if re.search(r'id="error"[^>]*style="[^"]*display:\s*block', dom):
                message = re.search(r'id="error-message"[^>]*>(.*?)</div>', dom, re.S)
                text = re.sub(r"<[^>]+>", " ", message.group(1)).strip() if message else ""
                raise CheckFailed(f"{url}: asv's error dialog is open: {text}")
            graph = dom.split('id="main-graph"', 1)
            if len(graph) < 2 or 'class="flot-base"' not in graph[1]:
                raise CheckFailed(f"{url}: no flot canvas in #main-graph (graph not drawn)")
            ticks = len(re.findall(r'class="flot-tick-label', graph[1]))
            if ticks < 3:
                raise CheckFailed(f"{url}: only {ticks} axis tick labels (axes not drawn)")
            if "axisLabels" not in graph[1]:
                raise CheckFailed(f"{url}: no axis label in the graph")
            short = name.rsplit(".", 1)[-1]
            if short not in dom:
                raise CheckFailed(f"{url}: the benchmark tree does not list {short}")
            report.append(
                f"graph page {url}: flot canvas drawn, {ticks} tick labels, no error page"
            )

            shot = args.screenshot
            shot.parent.mkdir(parents=True, exist_ok=True)
            shot.unlink(missing_ok=True)
            run_browser(
                args.browser,
                Path(profile),
                url,
                f"--screenshot={shot}",
                budget_ms=args.budget_ms,
            )
            if not shot.is_file():
                raise CheckFailed(f"chromium wrote no screenshot {shot}")
            pixels = coloured_pixels(shot, SIDEBAR_PX, NAVBAR_PX)
            if pixels < args.min_pixels:
                raise CheckFailed(
                    f"screenshot {shot}: only {pixels} coloured pixels in the plot area "
                    f"(< {args.min_pixels}): the series were not drawn"
                )
            report.append(f"screenshot {shot}: {pixels} coloured pixels in the plot area")

            list_url = f"{base}#/summarylist"
            dom = run_browser(
                args.browser, Path(profile), list_url, "--dump-dom", budget_ms=args.budget_ms
            )
            if ERROR_PAGE_TEXT in dom:
                raise CheckFailed(f"{list_url} shows asv's error page")
            if "<table" not in dom or name not in dom:
                raise CheckFailed(f"{list_url}: the benchmark table does not list {name}")
            report.append(f"benchmark list {list_url}: table lists {name}")
    finally:
        server.shutdown()
        server.server_close()
    if failures:
        raise CheckFailed("the local server answered with errors: " + ", ".join(failures))
    report.append("local server: no 404")
    return report


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(
        description="Serve the published asv dashboard on 127.0.0.1 and check in headless "
        "Chromium (no network but the local server) that its graphs render.",
    )
    parser.add_argument(
        "--html-dir",
        type=Path,
        default=Path(".asv/html"),
        help="published dashboard (default: %(default)s)",
    )
    parser.add_argument(
        "--benchmark",
        default=None,
        help=f"benchmark whose graph page to open (default: {PREFERRED} if published, "
        "else the first parameterised benchmark)",
    )
    parser.add_argument(
        "--screenshot",
        type=Path,
        default=Path("/tmp/embcache-dashboard.png"),
        help="where to save the screenshot of the graph page (default: %(default)s)",
    )
    parser.add_argument("--browser", default=None, help="Chromium executable (default: found)")
    parser.add_argument(
        "--budget-ms",
        type=int,
        default=15000,
        help="Chromium --virtual-time-budget per page load (default: %(default)s)",
    )
    parser.add_argument(
        "--min-pixels",
        type=int,
        default=500,
        help="coloured pixels the plot area must hold (default: %(default)s)",
    )
    args = parser.parse_args(argv)

    started = time.monotonic()
    if not (args.html_dir / "index.html").is_file() or not (args.html_dir / "index.json").is_file():
        print(
            f"check_dashboard: no published dashboard in {args.html_dir} "
            "(run tools/publish_offline.py)",
            file=sys.stderr,
        )
        return 2
    if not (args.html_dir / "graphs").is_dir():
        print(
            f"check_dashboard: {args.html_dir} has no graphs: publish some results first "
            "(asv run ... --set-commit-hash, then publish_offline.py)",
            file=sys.stderr,
        )
        return 2
    browser = find_browser(args.browser)
    if browser is None:
        print("check_dashboard: no Chromium found (apt-get install chromium)", file=sys.stderr)
        return 2
    args.browser = browser
    try:
        report = check(args)
    except CheckFailed as exc:
        print(f"check_dashboard: FAILED: {exc}", file=sys.stderr)
        return 1
    for line in report:
        print(f"ok  {line}")
    print(f"check_dashboard: dashboard renders offline ({time.monotonic() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
