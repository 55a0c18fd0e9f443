"""The README's walk-through runs as written against a live server, and each reply it shows
(``# {...}`` under a command) is what the server answers: words exactly, numbers to 4
significant digits (they come from the model), ``[...]`` and ``…`` standing for what the
README leaves out."""

from __future__ import annotations

import re
import subprocess

import pytest

from harness.server import Server
from tests.conftest import ROOT

pytestmark = pytest.mark.integration

NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?")
MARK = "@@@ next command @@@"


def walkthrough() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Walk-through") :]
    section = section[: section.index("\n## ", 1)]
    return re.findall(r"```bash\n(.*?)```", section, re.S)


def commands(block: str) -> list[tuple[str, str | None]]:
    """(command, the reply the README shows under it or None), continuation lines joined."""
    out: list[tuple[str, str | None]] = []
    lines = block.splitlines()
    i = 0
    while i < len(lines):
        cmd = lines[i]
        while cmd.endswith("\\"):
            i += 1
            cmd = cmd[:-1] + lines[i]
        i += 1
        shown = None
        if i < len(lines) and lines[i].startswith("# {"):
            shown = lines[i][2:]
            i += 1
        elif i < len(lines) and lines[i].startswith("#"):
            i += 1  # a remark, not a reply
        out.append((cmd.split("  #")[0].rstrip(), shown))
    return out


def elided(got: str) -> str:
    """The reply as the README writes it: session ids as ``…``, the state lists as ``[...]``."""
    got = re.sub(r'"session_id":"[^"]*"', '"session_id":"demand.1.…"', got)
    return re.sub(r'"(hn|cn)":\[.*?\]\]\]', r'"\1":[...]', got)


def matches(shown: str, got: str) -> bool:
    """Words exactly, numbers to 2e-6 relative (float32's printing and a few ulps of
    onnxruntime across CPUs, far below any change of the model)."""
    got = elided(got) if "…" in shown or "[...]" in shown else got
    if NUMBER.sub("0", shown) != NUMBER.sub("0", got):
        return False
    want, have = ([float(n) for n in NUMBER.findall(t)] for t in (shown, got))
    return all(abs(a - b) <= 2e-6 * max(abs(a), abs(b), 1.0) for a, b in zip(want, have, strict=True))


def test_the_walkthrough_prints_what_the_readme_shows(server: Server):
    port = server.url.rsplit(":", 1)[1]
    for block in walkthrough():
        steps = commands(block.replace("localhost:8000", f"127.0.0.1:{port}"))
        script = "\n".join(f"{cmd}\necho; echo '{MARK}'" for cmd, _ in steps)
        done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        outputs = done.stdout.split(MARK + "\n")
        for (cmd, shown), got in zip(steps, outputs, strict=False):
            if shown is not None:
                assert matches(shown, got.strip()), f"{cmd}\n README: {shown}\n server: {got.strip()[:300]}"
