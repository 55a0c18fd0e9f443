"""Debian's Chromium, headless, as the browser tests start it (Playwright drives it)."""

from __future__ import annotations

CHROMIUM = "/usr/bin/chromium"
# the background-networking flags keep Chromium from reaching out on its own: on a closed
# network its connections are refused, and a test must see only the page's own requests
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
