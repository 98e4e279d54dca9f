"""A built site served on this machine for a headless browser to look at: the
static server (127.0.0.1, a free port, failed requests recorded) and the
Chromium to drive. Shared by tools/docs_check.py and tools/check_dashboard.py."""

from __future__ import annotations

import functools
import http.server
import shutil
import threading
from pathlib import Path
from typing import Any

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves files quietly; records every answer of 400 or more as "HTTP <code> <path>"."""

    failures: list[str]

    def log_message(self, format: str, *args: Any) -> None:
        return

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        # /favicon.ico: asked for by the browser itself, not by a page (a page's own
        # icon is a <link rel="icon"> elsewhere, whose absence does count)
        if str(code)[:1] in ("4", "5") and self.path != "/favicon.ico":
            self.failures.append(f"HTTP {code} {self.path}")


def serve(directory: Path) -> tuple[http.server.ThreadingHTTPServer, list[str]]:
    """Serve `directory` on 127.0.0.1 (a free port) in a daemon thread; the list
    the server appends its failed requests to."""
    failures: list[str] = []
    handler = type("Handler", (_Handler,), {"failures": failures})
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(handler, directory=str(directory))
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, failures


def find_browser(explicit: str | None) -> str | None:
    """The Chromium executable to use (`explicit`, else the first of BROWSERS on
    PATH), or None."""
    if explicit:
        return shutil.which(explicit) or (explicit if Path(explicit).is_file() else None)
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None
