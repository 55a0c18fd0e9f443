"""The console page in Debian's headless Chromium, driven by Playwright, against a live server
with API keys on: no console errors, no request leaves the server's origin, the numbers on
the page are the API's, and the demo's chart fills with the session's real forecasts."""

from __future__ import annotations

import base64
import json
import os
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest
from playwright.sync_api import sync_playwright
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect
from websockets.typing import Subprotocol

from harness.browser import CHROMIUM as CHROMIUM_PATH
from harness.browser import CHROMIUM_ARGS
from tests.conftest import DEFAULT_MODEL
from tests.service.conftest import running_server

pytestmark = pytest.mark.integration

CHROMIUM = Path(CHROMIUM_PATH)
ARGS = CHROMIUM_ARGS
KEY = "console-test-key"


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory):
    """API keys on, and the default model with feature ranges in its card (the console shows them)."""
    version_dir = tmp_path_factory.mktemp("repo") / "demand" / "1"
    shutil.copytree(DEFAULT_MODEL, version_dir)
    card = json.loads((version_dir / "model.json").read_text())
    for f, (lo, hi) in zip(card["features"], [(19_000.0, 38_500.0), (0.0, 23.5), (0.0, 6.0)], strict=True):
        f.setdefault("min", lo)
        f.setdefault("max", hi)
    (version_dir / "model.json").write_text(json.dumps(card))
    with running_server({"LSTM_API_KEYS": KEY}, repo=version_dir.parent.parent) as s:
        yield s


def test_console_routes_need_the_key_but_the_page_does_not(keyed_server):
    url = keyed_server.url
    assert httpx.get(f"{url}/console").status_code == 200
    assert httpx.get(f"{url}/console/static/vendor/uPlot.LICENSE").status_code == 404  # served: page files only
    assert httpx.get(f"{url}/console/static/../api/console.py").status_code == 404
    assert httpx.get(f"{url}/console/config").json() == {"auth": True}
    for path in ("/v1/console/stats", "/v1/console/models/demand/heldout"):
        assert httpx.get(url + path).status_code == 401
    heldout = httpx.get(f"{url}/v1/console/models/demand/heldout", headers={"Authorization": f"Bearer {KEY}"}).json()
    n = len(heldout["readings"])
    assert n == len(heldout["actual_next"]) == heldout["warmup"] + 672  # the warm-up, then the test fortnight


def test_console_page_in_chromium(keyed_server, offline, tmp_path):
    if not CHROMIUM.exists():
        raise RuntimeError("Chromium is missing: run scripts/tools/browser.sh")
    url = keyed_server.url
    auth = {"Authorization": f"Bearer {KEY}"}
    problems: list[str] = []
    seen: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on(
                "console", lambda m: m.type in ("error", "warning") and problems.append(f"console {m.type}: {m.text}")
            )
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url} {r.failure}"))
            page.on("request", lambda r: seen.append(r.url))
            page.on("websocket", lambda ws: seen.append(ws.url))

            page.goto(f"{url}/console")
            page.wait_for_selector("#key-form:not([hidden])")
            page.fill("#key", KEY)
            page.click("#key-form button")
            page.wait_for_selector("[data-card=demand] img")

            # the card on the page is the API's card
            card = httpx.get(f"{url}/v1/models/demand", headers=auth).json()
            for name, m in card["metrics"]["test"].items():
                assert page.text_content(f'[data-metric="{name}-mae"]') == f"{m['mae']:,.1f}"
                assert page.text_content(f'[data-metric="{name}-rmse"]') == f"{m['rmse']:,.1f}"
            names = page.eval_on_selector_all(
                "[data-card=demand] tr[data-feature]", "rows => rows.map(r => r.dataset.feature)"
            )
            assert names == [f["name"] for f in card["features"]]
            for f in card["features"]:
                cell = page.text_content(f'[data-feature="{f["name"]}"] .range')
                assert cell == f"{f['min']:,.1f} – {f['max']:,.1f}"

            # the demo streams through a real session; the chart fills as the replies come
            total = len(httpx.get(f"{url}/v1/console/models/demand/heldout", headers=auth).json()["readings"])
            page.click("#demo-start")
            page.wait_for_function("Number(document.querySelector('#demo-chart').dataset.points) >= 100")
            assert int(page.get_attribute("#demo-chart", "data-points")) < total, "the chart fills progressively"
            page.wait_for_function("window.consoleState.demo && window.consoleState.demo.done", timeout=60_000)
            demo = page.evaluate(
                "({f: consoleState.demo.forecasts, x: consoleState.demo.readings, step: consoleState.demo.step})"
            )
            assert demo["step"] == len(demo["x"]) == total
            assert page.get_attribute("#demo-chart", "data-points") == str(total)
            assert page.locator("#demo-chart canvas").count() == 1
            want, _ = offline.run(np.asarray(demo["x"], np.float32))
            offline.assert_outputs_close(np.asarray(demo["f"])[:, None], want)
            heldout = httpx.get(f"{url}/v1/console/models/demand/heldout", headers=auth).json()
            w = heldout["warmup"]
            mae = np.mean(np.abs(np.asarray(demo["f"][w:]) - np.asarray(heldout["actual_next"][w:])))
            assert abs(float(page.get_attribute("#demo-mae", "data-value")) - mae) < 1e-6 * mae

            # live figures: once the page has polled after the demo, they are the API's
            page.wait_for_function("document.querySelector('#demo-status').textContent.startsWith('done')")
            stats = httpx.get(f"{url}/v1/console/stats", headers=auth).json()
            assert stats["steps"] >= total and stats["sessions_live"] == 0
            page.wait_for_function(
                "([steps, live]) => Number(document.querySelector('#stat-steps').dataset.value) === steps"
                " && Number(document.querySelector('#stat-sessions').dataset.value) === live",
                arg=[stats["steps"], stats["sessions_live"]],
            )
            assert page.get_attribute("#stat-batch", "data-value") != ""
            page.wait_for_function("document.querySelector('#stat-rate').dataset.value !== ''")

            shot = tmp_path / "console.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 20_000
            if target := os.environ.get("LSTM_CONSOLE_SCREENSHOT"):
                page.screenshot(path=target, full_page=True)
        finally:
            browser.close()
    assert not problems, problems
    ws_url = url.replace("http://", "ws://", 1)
    outside = [u for u in seen if not u.startswith((url + "/", ws_url + "/", "blob:", "data:"))]
    assert not outside, f"requests outside the server: {outside}"
    assert any(u.startswith(ws_url + "/v1/sessions/") for u in seen), "the demo streamed over the WebSocket"


def test_a_browser_sends_its_key_as_a_websocket_subprotocol(keyed_server):
    url = keyed_server.url
    sid = httpx.post(f"{url}/v1/sessions", json={"model": "demand"}, headers={"Authorization": f"Bearer {KEY}"}).json()[
        "session_id"
    ]
    ws_url = f"{url.replace('http://', 'ws://', 1)}/v1/sessions/{sid}/stream"

    def protocols(key: str) -> list[Subprotocol]:
        return [
            Subprotocol("lstm-serving"),
            Subprotocol("bearer." + base64.urlsafe_b64encode(key.encode()).decode().rstrip("=")),
        ]

    with connect(ws_url, subprotocols=protocols(KEY)) as ws:
        assert ws.subprotocol == "lstm-serving"
        ws.send(json.dumps({"inputs": [[30500.0, 8.0, 2.0]], "expected_step": 0}))
        assert json.loads(ws.recv(timeout=10))["step"] == 1
    # a wrong key: closed with 1008
    with connect(ws_url, subprotocols=protocols("not-the-key")) as ws, pytest.raises(ConnectionClosed) as closed:
        ws.recv(timeout=10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008


def test_an_imported_model_is_shown_as_what_it_is(tmp_path):
    """A GRU imported by lstm-import, its card stripped of name and version as a hand-made one
    may be: the page shows its name and version, its features, its cell, "no test metrics",
    no plot, and the demo offers only the model that has held-out data; served alone, no demo."""
    from export.lstm_import import import_model
    from tests.export.test_lstm_import import export

    if not CHROMIUM.exists():
        raise RuntimeError("Chromium is missing: run scripts/tools/browser.sh")
    repo = tmp_path / "repo"
    shutil.copytree(DEFAULT_MODEL, repo / "demand" / "1")
    import_model(export(tmp_path / "gru.onnx", False, gru=True), repo, "mygru", "1", {}, None, None)
    card_path = repo / "mygru" / "1" / "model.json"
    card = json.loads(card_path.read_text())
    for field in ("name", "version", "features", "outputs_meaning", "description"):
        card.pop(field)
    card_path.write_text(json.dumps(card))
    alone = tmp_path / "alone"
    shutil.copytree(repo / "mygru", alone / "mygru")
    for root, demo in ((repo, ["demand"]), (alone, [])):
        with running_server(repo=root) as s, sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
            try:
                page = browser.new_page()
                problems: list[str] = []
                page.on("console", lambda m: m.type == "error" and problems.append(m.text))  # noqa: B023
                page.on("pageerror", lambda e: problems.append(str(e)))  # noqa: B023
                page.goto(f"{s.url}/console")
                page.wait_for_selector("[data-card=mygru] .no-plot")
                assert page.text_content("[data-card=mygru] h3") == "mygru v1"
                assert "2×32 GRU on CPUExecutionProvider" in page.text_content("[data-card=mygru] p")
                rows = page.eval_on_selector_all(
                    "[data-card=mygru] tr[data-feature]", "r => r.map(e => e.dataset.feature)"
                )
                assert rows == [f"feature {i}" for i in range(5)]
                assert "no test metrics" in page.text_content("[data-card=mygru] .metrics")
                assert "undefined" not in page.text_content("[data-card=mygru]")
                options = page.eval_on_selector_all("#demo-model option", "o => o.map(e => e.value)")
                assert options == demo
                assert page.is_visible("#demo-start") == bool(demo)
                assert not problems, problems
            finally:
                browser.close()
