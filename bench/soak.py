"""Soak: mixed traffic for a while -- sessions created, streamed, retried, deleted, left to
expire -- with the server's memory sampled every 10 s; at the end every stream is compared
with its offline run. ``python -m bench.soak --seconds 600``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from pathlib import Path

import numpy as np
import orjson

from bench.loadgen import Conn
from bench.servers import DEFAULT_MODEL_DIR, serve
from harness.reference import Offline, random_steps

TTL = 5.0


async def worker(url: str, k: int, stop: float, streams: list, abandoned: list, errors: dict) -> None:
    host, port = url.split("//")[1].split(":")
    c = Conn(host, int(port))
    await c.open()
    rng = np.random.default_rng(k)
    pyrng = random.Random(k)
    while time.monotonic() < stop:
        st, _, body = await c.request("POST", "/v1/sessions", orjson.dumps({"model": "demand"}))
        if st != 201:
            errors[st] = errors.get(st, 0) + 1
            continue
        sid = orjson.loads(body)["session_id"]
        x = random_steps(rng, int(rng.integers(5, 120)))
        outs, t = [], 0
        while t < len(x):
            n = min(int(rng.integers(1, 9)), len(x) - t)
            req = orjson.dumps({"inputs": x[t : t + n].tolist(), "expected_step": t})
            st, _, body = await c.request("POST", f"/v1/sessions/{sid}/step", req)
            if st == 200 and pyrng.random() < 0.1:  # a client retry: must replay, not advance
                st2, _, body2 = await c.request("POST", f"/v1/sessions/{sid}/step", req)
                r1, r2 = orjson.loads(body), orjson.loads(body2)
                if st2 != 200 or not r2["replayed"] or r2["outputs"] != r1["outputs"]:
                    errors["bad-retry"] = errors.get("bad-retry", 0) + 1
            if st != 200:
                errors[st] = errors.get(st, 0) + 1
                break
            outs += orjson.loads(body)["outputs"]
            t += n
        streams.append((x[:t], np.asarray(outs, np.float32)))
        roll = pyrng.random()
        if roll < 0.5:
            st, _, _ = await c.request("DELETE", f"/v1/sessions/{sid}")
            if st != 204:
                errors[f"delete-{st}"] = errors.get(f"delete-{st}", 0) + 1
        elif roll < 0.7:
            abandoned.append((sid, time.monotonic()))
    c.close()


async def soak(url: str, seconds: float, sample) -> dict:
    streams: list = []
    abandoned: list = []
    errors: dict = {}
    memory = [(0.0, sample())]
    stop = time.monotonic() + seconds
    t0 = time.monotonic()
    tasks = [asyncio.ensure_future(worker(url, k, stop, streams, abandoned, errors)) for k in range(16)]
    while not all(t.done() for t in tasks):
        await asyncio.sleep(min(10.0, max(0.1, stop - time.monotonic())))
        memory.append((round(time.monotonic() - t0, 1), sample()))
    await asyncio.gather(*tasks)
    await asyncio.sleep(TTL + 2)  # abandoned sessions must now be gone, with an explicit 404
    host, port = url.split("//")[1].split(":")
    c = Conn(host, int(port))
    await c.open()
    not_expired = 0
    for sid, _ in abandoned:
        st, _, body = await c.request(
            "POST", f"/v1/sessions/{sid}/step", orjson.dumps({"inputs": [[30000.0, 1.0, 1.0]]})
        )
        not_expired += not (st == 404 and b"expired" in body)
    c.close()
    return {
        "streams": streams,
        "abandoned": len(abandoned),
        "not_expired": not_expired,
        "errors": errors,
        "memory": memory,
    }


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    p.add_argument("--seconds", type=float, default=600)
    p.add_argument("--out", type=Path, default=Path("docs/bench"))
    a = p.parse_args()
    env = {"LSTM_SESSION_TTL_S": str(TTL), "LSTM_SWEEP_INTERVAL_S": "1"}
    with serve("service", DEFAULT_MODEL_DIR, env) as server:

        def sample() -> float:
            for line in Path(f"/proc/{server.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
            return 0.0

        res = asyncio.run(soak(server.url, a.seconds, sample))
    offline = Offline(DEFAULT_MODEL_DIR)
    worst, steps = 0.0, 0
    for x, outs in res["streams"]:
        if len(x):
            want, _ = offline.run(x)
            worst = max(worst, float(np.max(np.abs(outs - want[: len(outs)]))) / offline.std)
            steps += len(x)
    summary = {
        "seconds": a.seconds,
        "streams": len(res["streams"]),
        "steps": steps,
        "max_error_scaled": worst,
        "exact": worst <= 1e-5,
        "errors": res["errors"],
        "abandoned": res["abandoned"],
        "abandoned_not_expired": res["not_expired"],
        "rss_mb": res["memory"],
    }
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "soak.json").write_text(json.dumps(summary, indent=1))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5), dpi=100)
    ts, mb = zip(*summary["rss_mb"], strict=True)
    ax.plot(ts, mb, "o-")
    ax.set_xlabel("seconds")
    ax.set_ylabel("server RSS (MiB)")
    ax.set_title(f"Soak: {summary['streams']} streams, {steps} steps, mixed traffic")
    ax.set_ylim(0, max(mb) * 1.2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(a.out / "soak_memory.png")
    print(json.dumps({k: v for k, v in summary.items() if k != "rss_mb"}))


if __name__ == "__main__":
    main()
