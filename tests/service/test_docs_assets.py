"""/docs and /redoc work offline: every asset the pages reference is served by the app itself."""

from __future__ import annotations

import hashlib
import re
import shutil
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import httpx
import pytest

from harness.browser import CHROMIUM
from harness.browser import CHROMIUM_ARGS as BROWSER_ARGS
from service.api.http.docs import STATIC_DIR
from service.app import create_app
from service.config import Settings

# what each kind of asset must be served as
CONTENT_TYPES = {".js": "javascript", ".css": "text/css", ".png": "image/png", ".json": "application/json"}
PAGES = ("/docs", "/redoc")


class _Refs(HTMLParser):
    """Every URL an HTML page names in an attribute: src, href, and ReDoc's spec-url."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [v for k, v in attrs if k in ("src", "href", "spec-url") and v]


def page_refs(html: str) -> list[str]:
    """The page's attribute URLs plus those its inline script passes to Swagger UI."""
    parser = _Refs()
    parser.feed(html)
    inline = re.findall(r"""(?:\burl|oauth2RedirectUrl):[^'"\n]*['"]([^'"]+)['"]""", html)
    return parser.urls + inline


def css_refs(css: str) -> list[str]:
    return [u for u in re.findall(r"""url\(\s*['"]?([^'")]+)""", css) if not u.startswith("data:")]


def check_same_origin_assets(client: httpx.Client, page: str) -> dict[str, httpx.Response]:
    """GET ``page``, then every URL it (and any stylesheet it loads) references; all must be
    paths on this server answering 200 with the right content type and a body."""
    r = client.get(page)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html"), (page, r.status_code)
    assert not re.findall(r"(?i)\b(?:https?:)?//[a-z0-9.-]+", r.text), f"{page} names another host"
    todo = [(page, ref) for ref in page_refs(r.text)]
    fetched: dict[str, httpx.Response] = {}
    while todo:
        base, ref = todo.pop()
        parts = urlsplit(urljoin(str(client.base_url) + base, ref))
        assert (parts.scheme, parts.netloc) == (client.base_url.scheme, client.base_url.netloc.decode()), (
            f"{base} references {ref!r}, not on this server"
        )
        path = parts.path
        if path in fetched:
            continue
        fetched[path] = got = client.get(path)
        assert got.status_code == 200, (path, got.status_code)
        assert got.content, f"{path} is empty"
        ext = "." + path.rsplit(".", 1)[-1] if "." in path.rsplit("/", 1)[-1] else ""
        want = CONTENT_TYPES.get(ext, "text/html")
        assert want in got.headers["content-type"], (path, got.headers["content-type"])
        if ext == ".css":
            todo += [(path, u) for u in css_refs(got.text)]
    return fetched


@pytest.mark.integration
@pytest.mark.parametrize("page", PAGES)
def test_pages_reference_only_assets_the_server_serves(server, page):
    with httpx.Client(base_url=server.url) as client:
        fetched = check_same_origin_assets(client, page)
    scripts = [p for p in fetched if p.endswith(".js")]
    assert scripts and all(p.startswith("/docs/static/") for p in scripts), fetched.keys()
    assert "/openapi.json" in fetched, "the page loads the service's own OpenAPI document"
    if page == "/docs":
        assert any(p.endswith(".css") for p in fetched) and "/docs/oauth2-redirect" in fetched
        assert fetched["/openapi.json"].json()["openapi"].startswith("3.1"), "hence Swagger UI 5"


async def test_docs_stay_open_when_api_keys_are_on():
    """auth.py leaves /docs, /redoc and /openapi.json open; the assets those pages load are
    under /docs, so they are open too -- even with health routes protected."""
    app = create_app(Settings(api_keys=("k1-secret-0123456789",), auth_health=True))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        assert (await c.get("/v1/models")).status_code == 401
        for path in (
            "/docs",
            "/redoc",
            "/openapi.json",
            "/docs/oauth2-redirect",
            "/docs/static/swagger-ui/swagger-ui-bundle.js",
            "/docs/static/swagger-ui/swagger-ui.css",
            "/docs/static/redoc/redoc.standalone.js",
        ):
            assert (await c.get(path)).status_code == 200, path


def test_vendored_files_match_their_record():
    """VERSIONS.md lists every vendored file with its sha256 (scripts/vendor_docs_assets.sh)."""
    record = (STATIC_DIR / "VERSIONS.md").read_text()
    listed = dict(re.findall(r"^\| `([^`]+)` \| \d+ \| `([0-9a-f]{64})` \|$", record, re.M))
    on_disk = {
        str(p.relative_to(STATIC_DIR)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in STATIC_DIR.rglob("*")
        if p.is_file() and p.name != "VERSIONS.md"
    }
    assert on_disk and listed == on_disk
    assert re.search(r"`swagger-ui-dist` \| 5\.", record) and re.search(r"`redoc` \| 2\.", record)
    for licence in ("swagger-ui/LICENSE", "swagger-ui/NOTICE", "redoc/LICENSE"):
        assert licence in on_disk


# -- a real browser with every request to another host refused ---------------------------------

HOST = "docs.test"  # the server's name in the browser: not localhost, as in production
CHROMIUM_ARGS = [*BROWSER_ARGS, "--no-proxy-server", f"--host-resolver-rules=MAP {HOST} 127.0.0.1"]


def _browser():
    if not shutil.which(CHROMIUM):
        pytest.skip(f"needs Debian chromium at {CHROMIUM} (scripts/tools/browser.sh installs it)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("needs the playwright package (the dev extra)")
    return sync_playwright


def operation_count(openapi: dict) -> int:
    methods = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
    return sum(1 for ops in openapi["paths"].values() for m in ops if m in methods)


@pytest.mark.integration
@pytest.mark.parametrize(
    ("page", "operation"),
    [("/docs", ".opblock"), ("/redoc", "[data-section-id*='operation/']")],
)
def test_page_renders_in_a_browser_with_no_network(server, page, operation):
    sync_playwright = _browser()
    port = urlsplit(server.url).port
    origin = f"http://{HOST}:{port}"
    openapi = httpx.get(server.url + "/openapi.json").json()
    external: list[str] = []
    failed: list[str] = []
    errors: list[str] = []

    def only_this_server(route):
        if urlsplit(route.request.url).hostname == HOST:
            route.continue_()
        else:
            external.append(route.request.url)
            route.abort()

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            tab = browser.new_page()
            tab.route("**/*", only_this_server)
            tab.on("response", lambda r: r.status >= 400 and failed.append(f"{r.status} {r.url}"))
            tab.on("requestfailed", lambda r: urlsplit(r.url).hostname == HOST and failed.append(r.url))
            tab.on("pageerror", lambda e: errors.append(str(e)))
            tab.goto(origin + page, wait_until="networkidle")
            tab.wait_for_selector(operation, timeout=30_000)
            # one element per operation (ReDoc nests sections inside an operation's: count their ids)
            ids = tab.locator(operation).evaluate_all("els => els.map(e => e.dataset.sectionId || e.id || '')")
            ops = {m.group(1) for i in ids if (m := re.search(r"operation/([^/]+)$", i))}
            rendered = len(ops) if page == "/redoc" else len(ids)
            title = tab.title()
        finally:
            browser.close()
    assert not external, f"{page} tried to reach other hosts: {external}"
    assert not failed, f"{page}: requests to this server failed: {failed}"
    assert not errors, f"{page}: script errors: {errors}"
    assert openapi["info"]["title"] in title
    assert rendered == operation_count(openapi), (rendered, operation_count(openapi))
