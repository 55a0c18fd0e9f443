"""``/docs`` (Swagger UI) and ``/redoc`` served from the package, so they work offline.

FastAPI's own pages load Swagger UI, ReDoc and Google Fonts from CDNs and are blank without
network access. These routes render the same pages with every asset served by this app from
``service/static/`` (vendored by ``scripts/vendor_docs_assets.sh``; versions and licences in
``service/static/VERSIONS.md``). The assets are mounted under ``/docs/static/``, inside the
``/docs`` prefix that :mod:`service.api.auth` leaves open like ``/openapi.json`` and ``/redoc``:
a page that needs no key must not reference assets that do.

Call :func:`install` on an app created with ``docs_url=None, redoc_url=None``.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).resolve().parents[2] / "static"
STATIC_URL = "/docs/static"
DOCS_URL = "/docs"
OAUTH2_REDIRECT_URL = "/docs/oauth2-redirect"
REDOC_URL = "/redoc"
# FastAPI's defaults, plus no online validator: Swagger UI would otherwise fetch a badge
# from validator.swagger.io for any spec not served from localhost
SWAGGER_UI_PARAMETERS = {
    "dom_id": "#swagger-ui",
    "layout": "BaseLayout",
    "deepLinking": True,
    "showExtensions": True,
    "showCommonExtensions": True,
    "validatorUrl": None,
}


def install(app: FastAPI) -> None:
    """Add the documentation routes and the static mount to ``app``. URLs in the pages carry
    the request's ``root_path``, as FastAPI's own do, so they work behind a path prefix."""
    openapi_url = app.openapi_url
    if not openapi_url:
        return

    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        return get_swagger_ui_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}{STATIC_URL}/swagger-ui/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{STATIC_URL}/swagger-ui/swagger-ui.css",
            swagger_favicon_url=f"{root}{STATIC_URL}/swagger-ui/favicon-32x32.png",
            oauth2_redirect_url=root + OAUTH2_REDIRECT_URL,
            swagger_ui_parameters=SWAGGER_UI_PARAMETERS,
        )

    async def oauth2_redirect(request: Request) -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        return get_redoc_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{STATIC_URL}/redoc/redoc.standalone.js",
            redoc_favicon_url=f"{root}{STATIC_URL}/swagger-ui/favicon-32x32.png",
            with_google_fonts=False,
        )

    app.add_route(DOCS_URL, swagger_ui, include_in_schema=False)
    app.add_route(OAUTH2_REDIRECT_URL, oauth2_redirect, include_in_schema=False)
    app.add_route(REDOC_URL, redoc, include_in_schema=False)
    app.mount(STATIC_URL, StaticFiles(directory=STATIC_DIR), name="docs-static")
