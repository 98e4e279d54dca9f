"""Look at the built documentation site in headless Chromium.

    mkdocs build --strict && python tools/docs_check.py

serves the built site (``site/``) on 127.0.0.1, opens each page (by default the home,
a guide page and a reference page) in headless Chromium driven over the DevTools
protocol, with every host but 127.0.0.1 unreachable (the site must work offline),
and fails (exit 1) on:

- a request that failed or was answered with an HTTP error (a missing stylesheet,
  script, font or image, or anything asked of another host);
- an error on the page's console, or an uncaught JavaScript exception;
- a page with no visible text.

It saves a screenshot of each page (``site-screenshots/`` by default) and prints one
line per page. Needs Debian's ``chromium`` and the ``websockets`` package (the docs
extra: ``pip install ".[docs]"``). Exit 2: the browser could not be run.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tools.local_site import find_browser, serve  # noqa: E402

PAGES = ("index.html", "guide/keys.html", "reference/caches.html")
WINDOW = (1280, 900)


class CheckError(Exception):
    """The browser could not be run or driven (not a finding about the site)."""


@dataclass
class PageResult:
    """What one page did in the browser."""

    url: str
    problems: list[str] = field(default_factory=list)
    requests: int = 0
    text_length: int = 0
    screenshot: Path | None = None


class Browser:
    """Headless Chromium with its DevTools endpoint, and one websocket to it."""

    def __init__(self, executable: str, profile: Path) -> None:
        self.process = subprocess.Popen(
            [
                executable,
                "--headless",
                "--disable-gpu",
                "--no-sandbox",  # CI runs as root
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-dev-shm-usage",
                "--hide-scrollbars",
                "--remote-debugging-port=0",
                "--remote-allow-origins=*",
                f"--user-data-dir={profile}",
                f"--window-size={WINDOW[0]},{WINDOW[1]}",
                # offline for real: nothing but the local server resolves
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,  # its helper processes too are ended in close()
        )
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not port_file.is_file() or len(port_file.read_text().splitlines()) < 2:
            if self.process.poll() is not None or time.monotonic() > deadline:
                err = (
                    self.process.stderr.read().decode(errors="replace")
                    if self.process.stderr
                    else ""
                )
                self.close()
                raise CheckError(f"chromium did not open its DevTools port: {err[-500:]}")
            time.sleep(0.05)
        port, path = port_file.read_text().splitlines()[:2]
        from websockets.sync.client import connect

        # entered by hand (closed in close()): the connection outlives this method
        try:
            self.connection = connect(
                f"ws://127.0.0.1:{port}{path}", max_size=None, open_timeout=30
            )
            self.ws = self.connection.__enter__()
        except BaseException:
            self.close()  # Chromium and its helpers do not outlive a failed start
            raise
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    def send(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        """Call `method` and return its result; events that arrive meanwhile are kept."""
        self.next_id += 1
        message: dict[str, Any] = {"id": self.next_id, "method": method, "params": params}
        if session is not None:
            message["sessionId"] = session
        self.ws.send(json.dumps(message))
        while True:
            reply = json.loads(self.ws.recv(timeout=60))
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise CheckError(f"{method}: {reply['error']}")
                result: dict[str, Any] = reply.get("result", {})
                return result
            if "method" in reply:
                self.events.append(reply)

    def wait_events(self, seconds: float) -> None:
        """Collect events for `seconds`."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                reply = json.loads(self.ws.recv(timeout=left))
            except TimeoutError:
                return
            if "method" in reply:
                self.events.append(reply)

    def close(self) -> None:
        connection = getattr(self, "connection", None)
        if connection is not None:
            connection.__exit__(None, None, None)
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        # Chromium's helpers (renderer, crash handler) may outlive it for a moment,
        # still writing into the profile that is removed next: end them all.
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def implicit(url: str) -> bool:
    """A request the browser makes by itself, not one a page asks for: the site's
    /favicon.ico (a page's own icon is a <link rel="icon">, whose absence counts)."""
    return url.split("?", 1)[0].endswith("/favicon.ico") and url.count("/") == 3


def events_of(events: list[dict[str, Any]], session: str) -> list[dict[str, Any]]:
    return [e for e in events if e.get("sessionId") == session]


def check_page(browser: Browser, url: str, shot: Path, settle: float) -> PageResult:
    """Open `url` in a new tab; what went wrong there, and its screenshot."""
    result = PageResult(url)
    target = browser.send("Target.createTarget", url="about:blank")["targetId"]
    session = browser.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
    for domain in ("Page", "Runtime", "Log", "Network"):
        browser.send(f"{domain}.enable", session)
    browser.events.clear()
    browser.send("Page.navigate", session, url=url)
    deadline = time.monotonic() + 30
    while not any(e["method"] == "Page.loadEventFired" for e in events_of(browser.events, session)):
        if time.monotonic() > deadline:
            result.problems.append("the page did not finish loading in 30 s")
            break
        browser.wait_events(0.1)
    browser.wait_events(settle)  # late requests (search index, fonts) and scripts' errors

    requests: dict[str, str] = {}
    for event in events_of(browser.events, session):
        method, params = event["method"], event.get("params", {})
        if method == "Network.requestWillBeSent":
            requests[params["requestId"]] = params["request"]["url"]
        elif method == "Network.loadingFailed" and not params.get("canceled"):
            where = requests.get(params["requestId"], "?")
            if not implicit(where):
                result.problems.append(f"request failed: {where} ({params.get('errorText')})")
        elif method == "Network.responseReceived" and params["response"]["status"] >= 400:
            response = params["response"]
            if not implicit(response["url"]):
                result.problems.append(f"HTTP {response['status']}: {response['url']}")
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in params["args"])
            result.problems.append(f"console {params['type']}: {text}")
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            result.problems.append(f"uncaught exception: {text}")
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            entry = params["entry"]
            if not implicit(entry.get("url", "")):
                result.problems.append(f"console error ({entry['source']}): {entry['text']}")
    result.requests = len(requests)

    shown = browser.send(
        "Runtime.evaluate", session, expression="document.body.innerText", returnByValue=True
    )
    result.text_length = len(shown.get("result", {}).get("value") or "")
    if result.text_length < 20:
        result.problems.append(f"the page shows almost no text ({result.text_length} characters)")

    png = browser.send("Page.captureScreenshot", session, format="png")["data"]
    shot.parent.mkdir(parents=True, exist_ok=True)
    shot.write_bytes(base64.b64decode(png))
    result.screenshot = shot
    browser.send("Target.closeTarget", targetId=target)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="docs_check.py", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument("--site", type=Path, default=Path("site"), help="the built site")
    parser.add_argument(
        "--page",
        dest="pages",
        action="append",
        help=f"a page to open, relative to the site (repeatable; default: {', '.join(PAGES)})",
    )
    parser.add_argument(
        "--screenshots", type=Path, default=Path("site-screenshots"), help="where PNGs go"
    )
    parser.add_argument("--browser", help="the Chromium executable (default: found on PATH)")
    parser.add_argument(
        "--settle", type=float, default=1.5, help="seconds to watch a page after it loaded"
    )
    args = parser.parse_args(argv)
    pages = args.pages or list(PAGES)
    missing = [p for p in pages if not (args.site / p).is_file()]
    if missing:
        print(
            f"docs_check: not in {args.site}: {', '.join(missing)} (mkdocs build first)",
            file=sys.stderr,
        )
        return 2
    executable = find_browser(args.browser)
    if executable is None:
        print("docs_check: no Chromium found (apt-get install chromium)", file=sys.stderr)
        return 2

    started = time.monotonic()
    server, http_errors = serve(args.site)
    base = f"http://127.0.0.1:{server.server_address[1]}/"
    failed = False
    try:
        profile = tempfile.mkdtemp(prefix="embcache-docs-chromium-")
        try:
            browser = Browser(executable, Path(profile))
            try:
                for page in pages:
                    shot = args.screenshots / (page.replace("/", "_").rsplit(".", 1)[0] + ".png")
                    before = len(http_errors)
                    result = check_page(browser, base + page, shot, args.settle)
                    result.problems += [
                        f"server: {e}" for e in http_errors[before:] if e not in result.problems
                    ]
                    verdict = "FAIL" if result.problems else "ok"
                    print(
                        f"{verdict:4} {page}: {result.requests} requests, "
                        f"{result.text_length} characters of text, screenshot {shot}"
                    )
                    for problem in result.problems:
                        print(f"     {problem}")
                    failed |= bool(result.problems)
            finally:
                browser.close()
        finally:
            # a profile file written by a helper in its last instant is not an error
            shutil.rmtree(profile, ignore_errors=True)
    except CheckError as exc:
        print(f"docs_check: {exc}", file=sys.stderr)
        return 2
    finally:
        server.shutdown()
        server.server_close()
    print(
        f"docs_check: {len(pages)} pages in {time.monotonic() - started:.1f} s: "
        + ("FAILED" if failed else "no failed request, no console error")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
