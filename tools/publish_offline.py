#!/usr/bin/env python3
"""Publish the asv dashboard and make it load nothing from the internet.

``asv publish`` writes an HTML dashboard whose ``index.html`` pulls jQuery, flot
and its plugins, stupidtable, blueimp-md5 and Bootstrap from public CDNs; on a
machine without internet access it only shows asv's "failed to load" error page.
This script runs ``asv publish`` (unless ``--no-publish``), then rewrites every
published ``*.html`` page in the html dir: each ``<script src>`` / ``<link href>``
that points at an ``http(s)://`` (or protocol-relative ``//``) URL is replaced by a
copy placed under ``<html_dir>/vendor/``, taken from files that installed system
packages provide (Debian's ``/usr/share/javascript``), never from this repository.

Sources (Debian bookworm package names; install them with apt-get)::

    jquery             libjs-jquery              jquery/jquery.min.js
    flot + plugins     libjs-jquery-flot         jquery-flot/jquery.flot.min.js (flot 4
                                                 bundles time/selection/categories; their
                                                 per-plugin files are empty stubs, so the
                                                 script verifies the bundle registers the
                                                 plugin and drops the now redundant tag)
    stupidtable        libjs-jquery-stupidtable  jquery-stupidtable/stupidtable.min.js
    blueimp md5        node-blueimp-md5          blueimp-md5/md5.min.js
    bootstrap js/css   libjs-bootstrap           bootstrap/{js,css,fonts}/...

``flot-orderbars`` (places the bars of several series side by side; asv uses it
only for graphs whose x axis is a benchmark parameter) is packaged neither by
Debian nor on PyPI. The script writes its own minimal plugin with the same option
(``series.bars.order``) instead, ``vendor/embcache-shims/jquery.flot.orderBars.js``.

asv's templates target flot 0.8.3; Debian ships flot 4. Two adjustments make the
graphs render as intended: asv's own ``jquery.flot.axislabels.js`` (a flot 0.8
plugin) is dropped because flot 4 bundles an ``axisLabels`` plugin and both drew
every axis label, and ``vendor/embcache-shims/flot4-legend.css`` styles flot 4's
SVG legend, whose background is otherwise painted black over the labels.

Anchors that merely link to a web site (asv's navbar link to its GitHub page) are
not resources, but they are rewritten too (the URL moves to the ``title``
attribute) so that no ``src``/``href`` of a published page names an http(s) URL.

After rewriting, every page is parsed again; the script exits non-zero if any
``src``/``href`` still names a remote URL, if any local ``src``/``href`` points at a
missing file, or (earlier) if a package file it needs is missing, naming the file
and the package that provides it. It prints every replacement it made.

Usage::

    python tools/publish_offline.py               # asv publish + rewrite
    python tools/publish_offline.py --no-publish  # rewrite an existing html dir

Exit status: 0 on success, 1 when a required file is missing or a remote URL is
left, 2 on usage errors, or asv's own exit status when ``asv publish`` fails.
"""

from __future__ import annotations

import argparse
import html
import json
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Callable, Optional

DEFAULT_JS_ROOT = Path("/usr/share/javascript")
VENDOR = "vendor"
REMOTE = re.compile(r"^\s*(?:[a-z][a-z0-9+.-]*:)?//", re.IGNORECASE)
HTTP = re.compile(r"^\s*(?:https?:)?//", re.IGNORECASE)

# Written by this script (no Debian/PyPI package ships flot-orderbars): a flot
# plugin honouring ``series.bars.order`` like the original, so that the bars of N
# series sharing a category are laid out side by side instead of on top of each
# other. Works with flot 0.8 and 4.x (hooks.processDatapoints runs before the
# axis ranges are computed).
ORDERBARS_SHIM = """\
/* jquery.flot.orderBars substitute written by embcache's tools/publish_offline.py.
 * No system package ships flot-orderbars; this implements its one option:
 * series.bars.order = k shifts series k so that bars of all ordered series sit
 * side by side around each x value (each bar keeps series.bars.barWidth). */
(function ($) {
    "use strict";
    function width(series) {
        var w = series.bars.barWidth;
        return Array.isArray(w) ? w[0] : w;
    }
    function init(plot) {
        plot.hooks.processDatapoints.push(function (plot, series, datapoints) {
            if (!series.bars || !series.bars.show || series.bars.order == null) {
                return;
            }
            var orders = [];
            $.each(plot.getData(), function (i, s) {
                if (s.bars && s.bars.show && s.bars.order != null &&
                        orders.indexOf(s.bars.order) === -1) {
                    orders.push(s.bars.order);
                }
            });
            if (orders.length < 2) {
                return;
            }
            orders.sort(function (a, b) { return a - b; });
            var rank = orders.indexOf(series.bars.order);
            var shift = (rank - (orders.length - 1) / 2) * width(series);
            var axis = series.bars.horizontal ? 1 : 0;
            var ps = datapoints.pointsize, pts = datapoints.points;
            for (var j = axis; j < pts.length; j += ps) {
                if (pts[j] != null) {
                    pts[j] += shift;
                }
            }
        });
    }
    $.plot.plugins.push({
        init: init, options: {series: {bars: {order: null}}},
        name: "orderBars", version: "embcache-shim-1"
    });
})(jQuery);
"""


# flot >= 1.0 (Debian ships 4.x) draws the legend as SVG and leaves its
# background rect unstyled (black, hiding the labels) unless the page styles it; flot's
# own examples use this rule. Linked only when the vendored flot has the SVG legend.
FLOT4_CSS = """\
/* Written by embcache's tools/publish_offline.py: styles flot 4's SVG legend
 * (asv's templates target flot 0.8, whose legend was an HTML table). */
.legendLayer .background {
    fill: rgba(255, 255, 255, 0.85);
    stroke: rgba(0, 0, 0, 0.85);
    stroke-width: 1;
}
"""
ASV_AXISLABELS = re.compile(
    r"<script\b[^>]*\bsrc=[\"']?jquery\.flot\.axislabels\.js[\"']?[^>]*>\s*</script>",
    re.IGNORECASE,
)
FLOT_BUNDLE = "vendor/jquery-flot/jquery.flot.min.js"


class PublishError(Exception):
    """A required file is missing or a remote URL could not be replaced."""


@dataclass
class Vendored:
    """One local file that replaces a CDN resource."""

    dest: str  # path relative to the html dir, with "/" separators
    source: str  # absolute path of the package file, or "generated"
    package: str  # providing package ("name version"), or a note


@dataclass
class Context:
    """State shared by the rewrite rules while processing one html dir."""

    html_dir: Path
    js_root: Path
    copied: dict[str, Vendored] = field(default_factory=dict)

    def require(self, rel: str, package: str) -> Path:
        """Return ``js_root/rel``; raise naming the file and package if absent or empty."""
        path = self.js_root / rel
        if not path.is_file():
            raise PublishError(
                f"required file {path} is missing: install the Debian package "
                f"{package} (apt-get install {package})"
            )
        return path

    def copy(self, rel: str, package: str, dest: str | None = None) -> str:
        """Copy ``js_root/rel`` into the vendor dir and return its html-relative path."""
        src = self.require(rel, package)
        if src.stat().st_size == 0:
            raise PublishError(f"required file {src} is empty (package {package})")
        dest = dest or f"{VENDOR}/{rel}"
        target = self.html_dir / dest
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src.resolve(), target)
        self.copied[dest] = Vendored(dest, str(src), owner_of(src, package))
        return dest

    def write(self, dest: str, text: str, note: str) -> str:
        """Write generated ``text`` to ``dest`` (html-relative) and record it."""
        target = self.html_dir / dest
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        self.copied[dest] = Vendored(dest, "generated", note)
        return dest


def owner_of(path: Path, expected: str) -> str:
    """Name the Debian package (and version) that owns ``path``, via dpkg."""
    for candidate in (path.resolve(), path):
        try:
            out = subprocess.run(
                ["dpkg-query", "-S", str(candidate)],
                capture_output=True,
                text=True,
                check=False,
            )
        except OSError:
            return expected
        if out.returncode == 0 and ":" in out.stdout:
            pkg = out.stdout.split(":", 1)[0].split(",")[0].strip()
            ver = subprocess.run(
                ["dpkg-query", "-W", "-f=${Version}", pkg],
                capture_output=True,
                text=True,
                check=False,
            ).stdout.strip()
            return f"{pkg} {ver}".strip()
    return f"{expected} (owner not found by dpkg)"


# --- rewrite rules ---------------------------------------------------------------
# A rule maps a CDN URL to the html-relative path of its local replacement, or to
# None when the resource is already contained in another vendored file (the tag is
# then dropped). Rules raise PublishError when they cannot provide the file.

Rule = Callable[[re.Match[str], Context], Optional[str]]
FLOT_PKG = "libjs-jquery-flot"
FLOT_DIR = "jquery-flot"


def _jquery(m: re.Match[str], ctx: Context) -> str:
    return ctx.copy("jquery/jquery.min.js", "libjs-jquery")


def _flot_core(m: re.Match[str], ctx: Context) -> str:
    return ctx.copy(f"{FLOT_DIR}/jquery.flot.min.js", FLOT_PKG)


def _flot_plugin(m: re.Match[str], ctx: Context) -> str | None:
    name = m.group("plugin")
    for rel in (f"{FLOT_DIR}/jquery.flot.{name}.min.js", f"{FLOT_DIR}/jquery.flot.{name}.js"):
        path = ctx.js_root / rel
        if path.is_file() and path.stat().st_size > 0:
            return ctx.copy(rel, FLOT_PKG)
    # Debian's flot 4 ships one bundle with all plugins and empty per-plugin files.
    bundle = ctx.require(f"{FLOT_DIR}/jquery.flot.min.js", FLOT_PKG)
    registered = re.search(
        r"name\s*:\s*[\"']" + re.escape(name) + r"[\"']",
        bundle.read_text(encoding="utf-8", errors="replace"),
        re.IGNORECASE,
    )
    if not registered:
        raise PublishError(
            f"flot plugin {name!r}: {ctx.js_root / FLOT_DIR}/jquery.flot.{name}.min.js is "
            f"missing or empty and {bundle} does not register it ({FLOT_PKG})"
        )
    return None


def _orderbars(m: re.Match[str], ctx: Context) -> str:
    return ctx.write(
        f"{VENDOR}/embcache-shims/jquery.flot.orderBars.js",
        ORDERBARS_SHIM,
        "written by publish_offline.py: flot-orderbars has no Debian or PyPI package",
    )


def _stupidtable(m: re.Match[str], ctx: Context) -> str:
    return ctx.copy("jquery-stupidtable/stupidtable.min.js", "libjs-jquery-stupidtable")


def _md5(m: re.Match[str], ctx: Context) -> str:
    return ctx.copy("blueimp-md5/md5.min.js", "node-blueimp-md5")


def _bootstrap_js(m: re.Match[str], ctx: Context) -> str:
    return ctx.copy("bootstrap/js/bootstrap.min.js", "libjs-bootstrap")


def _bootstrap_css(m: re.Match[str], ctx: Context) -> str:
    dest = ctx.copy("bootstrap/css/bootstrap.min.css", "libjs-bootstrap")
    # The stylesheet loads its icon font from ../fonts/ (symlinks into
    # fonts-glyphicons-halflings, a dependency of libjs-bootstrap).
    css = (ctx.html_dir / dest).read_text(encoding="utf-8", errors="replace")
    for font in sorted(set(re.findall(r"url\(\s*['\"]?\.\./fonts/([\w.-]+)", css))):
        ctx.copy(f"bootstrap/fonts/{font}", "fonts-glyphicons-halflings (via libjs-bootstrap)")
    return dest


RULES: list[tuple[re.Pattern[str], Rule]] = [
    (re.compile(r"/jquery(?:-\d[\w.]*)?(?:\.min)?\.js$"), _jquery),
    (re.compile(r"/jquery\.flot(?:\.min)?\.js$"), _flot_core),
    (re.compile(r"/jquery\.flot\.orderBars(?:\.min)?\.js$", re.IGNORECASE), _orderbars),
    (re.compile(r"/jquery\.flot\.(?P<plugin>\w+)(?:\.min)?\.js$"), _flot_plugin),
    (re.compile(r"/stupidtable(?:\.min)?\.js$"), _stupidtable),
    (re.compile(r"/md5(?:\.min)?\.js$"), _md5),
    (re.compile(r"/bootstrap(?:\.min)?\.js$"), _bootstrap_js),
    (re.compile(r"/bootstrap(?:\.min)?\.css$"), _bootstrap_css),
]

TAG = re.compile(
    r"<(?P<name>script|link|a|img)\b(?P<attrs>[^>]*)>(?P<close>\s*</script>)?",
    re.IGNORECASE | re.DOTALL,
)
ATTR = re.compile(r"""\s(?P<key>[\w:-]+)(?:\s*=\s*(?P<val>"[^"]*"|'[^']*'|[^\s"'>]+))?""")
# Attributes that make no sense for a same-origin copy: the SRI hash belongs to
# the CDN's file (a different build would be refused), crossorigin/referrerpolicy
# concern the CDN request.
DROP_ATTRS = {"integrity", "crossorigin", "referrerpolicy"}


def _set_attr(attrs: str, key: str, value: str | None) -> str:
    """Return ``attrs`` with ``key`` set to ``value`` (removed if None) and SRI dropped."""
    out: list[str] = []
    done = False
    for m in ATTR.finditer(attrs):
        k = m.group("key").lower()
        if k in DROP_ATTRS:
            continue
        if k == key:
            done = True
            if value is not None:
                out.append(f' {key}="{html.escape(value)}"')
            continue
        out.append(m.group(0))
    if not done and value is not None:
        out.append(f' {key}="{html.escape(value)}"')
    tail = "/" if attrs.rstrip().endswith("/") else ""
    return "".join(out) + tail


def _attr(attrs: str, key: str) -> str | None:
    for m in ATTR.finditer(attrs):
        if m.group("key").lower() == key and m.group("val") is not None:
            return html.unescape(m.group("val").strip("\"'"))
    return None


def rewrite_page(page: Path, ctx: Context) -> list[str]:
    """Rewrite one HTML page in place; return a log line per replacement."""
    text = page.read_text(encoding="utf-8")
    log: list[str] = []
    rel_prefix = "../" * (len(page.relative_to(ctx.html_dir).parts) - 1)

    def replace(m: re.Match[str]) -> str:
        name = m.group("name").lower()
        if name != "script" and m.group("close"):
            # Only a <script> owns a following </script>: rewrite the tag alone.
            return replace_tag(m.group(0)[: m.start("close") - m.start()]) + m.group("close")
        return replace_tag(m.group(0))

    def replace_tag(tag: str) -> str:
        m = TAG.fullmatch(tag)
        assert m is not None
        name = m.group("name").lower()
        attrs = m.group("attrs")
        key = "src" if name in ("script", "img") else "href"
        url = _attr(attrs, key)
        if url is None or not REMOTE.match(url):
            return m.group(0)
        where = f"{page.relative_to(ctx.html_dir)}"
        if name == "a":
            # A plain link, not a resource: keep the text, park the URL in title.
            new_attrs = _set_attr(_set_attr(attrs, "href", None), "title", url)
            log.append(f"{where}: <a href> {url} -> (link removed, URL kept as title)")
            return f"<a{new_attrs}>"
        path = url.split("?", 1)[0].split("#", 1)[0]
        for pattern, rule in RULES:
            rm = pattern.search(path)
            if rm is None:
                continue
            dest = rule(rm, ctx)
            if dest is None:
                log.append(
                    f"{where}: <{name}> {url} -> (dropped: bundled in "
                    f"{VENDOR}/{FLOT_DIR}/jquery.flot.min.js)"
                )
                return ""
            source = ctx.copied[dest]
            log.append(f"{where}: <{name}> {url} -> {dest}  [{source.package}: {source.source}]")
            new = f"<{m.group('name')}{_set_attr(attrs, key, rel_prefix + dest)}>"
            return new + (m.group("close") or "")
        raise PublishError(
            f"{where}: no local substitute known for <{name} {key}={url!r}>; "
            "add a rule to tools/publish_offline.py"
        )

    new_text = TAG.sub(replace, text)
    if FLOT_BUNDLE in ctx.copied and "jquery.flot.min.js" in new_text:
        new_text = _flot4_compat(new_text, page, ctx, rel_prefix, log)
    if new_text != text:
        page.write_text(new_text, encoding="utf-8")
    return log


def _flot4_compat(text: str, page: Path, ctx: Context, rel_prefix: str, log: list[str]) -> str:
    """Adapt a page written for flot 0.8 to the vendored flot 4 bundle."""
    bundle = (ctx.html_dir / FLOT_BUNDLE).read_text(encoding="utf-8", errors="replace")
    where = f"{page.relative_to(ctx.html_dir)}"
    if re.search(r"name\s*:\s*[\"']axisLabels[\"']", bundle):
        text, n = ASV_AXISLABELS.subn("", text)
        if n:
            log.append(
                f"{where}: <script> jquery.flot.axislabels.js (asv's flot 0.8 plugin) -> "
                f"(dropped: {FLOT_BUNDLE} has its own axisLabels plugin; both drew the labels)"
            )
    if "legendLayer" in bundle and "flot4-legend.css" not in text:
        dest = ctx.write(f"{VENDOR}/embcache-shims/flot4-legend.css", FLOT4_CSS, "generated")
        link = f'<link rel="stylesheet" href="{rel_prefix}{dest}" type="text/css"/>'
        text, n = re.subn(
            r"(<script\b[^>]*jquery\.flot\.min\.js[^>]*>\s*</script>)",
            lambda m: m.group(1) + "\n    " + link,
            text,
            count=1,
        )
        if n:
            log.append(f"{where}: added {dest} (styles flot 4's SVG legend background)")
    return text


class _RefCollector(HTMLParser):
    """Collect every src/href value of a page (for the post-rewrite check)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.refs: list[tuple[str, str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for key, val in attrs:
            if key in ("src", "href") and val is not None:
                self.refs.append((tag, key, val))


def verify(html_dir: Path) -> list[str]:
    """Return problems: remote src/href left, or local src/href pointing at no file."""
    problems: list[str] = []
    for page in sorted(html_dir.rglob("*.html")):
        parser = _RefCollector()
        parser.feed(page.read_text(encoding="utf-8"))
        for tag, key, val in parser.refs:
            where = f"{page}: <{tag} {key}={val!r}>"
            if HTTP.match(val) or REMOTE.match(val):
                problems.append(f"{where} still names a remote URL")
                continue
            local = val.split("#", 1)[0].split("?", 1)[0]
            if not local or tag == "a" or local.startswith(("data:", "javascript:", "mailto:")):
                continue
            if not (page.parent / local).is_file():
                problems.append(f"{where} points at a missing file {page.parent / local}")
    for css in sorted(html_dir.rglob("*.css")):
        text = css.read_text(encoding="utf-8", errors="replace")
        for m in re.finditer(r"(?:url\(|@import)\s*['\"]?((?:https?:)?//[^'\")\s]+)", text):
            problems.append(f"{css}: loads remote {m.group(1)}")
    return problems


def load_html_dir(config: Path) -> Path:
    """Read ``html_dir`` from an asv config (JSON with // comments)."""
    try:
        raw = config.read_text(encoding="utf-8")
    except OSError as exc:
        raise PublishError(f"cannot read asv config {config}: {exc}") from exc
    # Drop // comments outside strings (asv's own loader accepts them).
    stripped = re.sub(r'("(?:\\.|[^"\\])*")|//[^\n]*', lambda m: m.group(1) or "", raw)
    stripped = re.sub(r",(\s*[}\]])", r"\1", stripped)
    try:
        conf = json.loads(stripped)
    except json.JSONDecodeError as exc:
        raise PublishError(f"cannot parse {config}: {exc}; pass --html-dir") from exc
    html_dir = Path(conf.get("html_dir", "html"))
    return html_dir if html_dir.is_absolute() else config.parent / html_dir


HOST = "127.0.0.1"
"""Where the suggested server listens: this machine only (http.server's default,
all interfaces, would show the dashboard to the whole network)."""
PORT = 8080


def serve_command(html_dir: Path) -> str:
    """The command that serves the published dashboard on this machine only."""
    return f"python -m http.server --bind {HOST} -d {shlex.quote(str(html_dir))} {PORT}"


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(
        description="Run `asv publish`, then make the published dashboard self-contained: "
        "replace every CDN <script src>/<link href> by a local copy taken from installed "
        "Debian packages (libjs-jquery, libjs-jquery-flot, libjs-jquery-stupidtable, "
        "node-blueimp-md5, libjs-bootstrap) under <html_dir>/vendor/.",
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=Path("asv.conf.json"),
        help="asv config file (default: %(default)s)",
    )
    parser.add_argument(
        "--html-dir",
        type=Path,
        default=None,
        help="published dashboard dir (default: html_dir of --config)",
    )
    parser.add_argument(
        "--no-publish",
        action="store_true",
        help="do not run `asv publish`; only rewrite the existing html dir",
    )
    parser.add_argument("--asv", default="asv", help="asv executable (default: %(default)s)")
    parser.add_argument(
        "--js-root",
        type=Path,
        default=DEFAULT_JS_ROOT,
        help="where system JavaScript packages live (default: %(default)s)",
    )
    args = parser.parse_args(argv)

    try:
        html_dir = args.html_dir or load_html_dir(args.config)
        if not args.no_publish:
            cmd = [args.asv, "publish", "--config", str(args.config)]
            print("+ " + " ".join(cmd), flush=True)
            try:
                rc = subprocess.run(cmd, check=False).returncode
            except OSError as exc:
                raise PublishError(f"cannot run {args.asv}: {exc}") from exc
            if rc != 0:
                print(f"publish_offline: asv publish failed with status {rc}", file=sys.stderr)
                return rc
        index = html_dir / "index.html"
        if not index.is_file():
            raise PublishError(f"{index} is missing: nothing published (run asv publish)")

        ctx = Context(html_dir=html_dir, js_root=args.js_root)
        shutil.rmtree(html_dir / VENDOR, ignore_errors=True)
        log: list[str] = []
        for page in sorted(html_dir.rglob("*.html")):
            log.extend(rewrite_page(page, ctx))
        if ctx.copied:
            manifest = ["# file in html dir\tsource\tpackage"]
            manifest += [f"{v.dest}\t{v.source}\t{v.package}" for v in ctx.copied.values()]
            ctx.write(f"{VENDOR}/SOURCES.tsv", "\n".join(manifest) + "\n", "manifest")
        for line in log:
            print(f"replaced {line}")
        for v in ctx.copied.values():
            if v.source != "generated" or v.dest.endswith(".js"):
                print(f"vendored {v.dest} <- {v.source} ({v.package})")

        problems = verify(html_dir)
        if problems:
            for p in problems:
                print(f"publish_offline: {p}", file=sys.stderr)
            return 1
        print(
            f"publish_offline: {html_dir} is self-contained "
            f"({len(log)} replacements, {len(ctx.copied)} vendored files); "
            f"view it with: {serve_command(html_dir)} (then open http://{HOST}:{PORT}/)"
        )
        return 0
    except PublishError as exc:
        print(f"publish_offline: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
