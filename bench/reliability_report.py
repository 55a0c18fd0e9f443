"""Write ``docs/reliability.md`` from ``docs/bench/overload.json`` and ``docs/bench/soak.json``
(made by ``python -m bench.overload`` and ``python -m bench.soak``)."""

from __future__ import annotations

import json
from pathlib import Path

DOCS = Path(__file__).resolve().parent.parent / "docs"


COMPOSE_GRACE_S, KUBERNETES_GRACE_S = 30, 40  # docker-compose.yml stop_grace_period, k8s terminationGracePeriodSeconds


def bounds_table() -> list[str]:
    """Every bound on what a client sends: its setting (or fixed value), default and reply.
    Made from the settings and the service's constants, so it cannot drift from them."""
    from service.__main__ import STRAGGLER_CUT_S
    from service.api.http.front import LINGER_MAX_S, LINGER_S
    from service.api.protocol.v2_codec import MAX_DIM, MAX_DIMS
    from service.config import Settings
    from service.errors import MAX_MESSAGE

    d = {name: f.default for name, f in Settings.model_fields.items()}

    def setting(name: str) -> str:
        return f"`LSTM_{name.upper()}` = {d[name]:,}"

    rows = [
        ("request body (HTTP, gRPC message)", setting("max_body_bytes") + " bytes", "413 / `RESOURCE_EXHAUSTED`"),
        ("request head: bytes of request line and headers", setting("max_header_bytes"), "431, connection closed"),
        ("request head: header fields", setting("max_headers"), "431, connection closed"),
        ("string `sequence_id` (v2, gRPC)", setting("max_sequence_id_chars") + " characters", "400"),
        ("tensor dimensions (v2 JSON, binary, gRPC)", f"fixed: {MAX_DIMS}", "400 / `INVALID_ARGUMENT`"),
        ("elements of one tensor's shape", f"fixed: {MAX_DIM:,}, checked before allocating", "400"),
        ("time steps per request", setting("max_steps_per_request"), "400"),
        ("sequences per stateless predict", setting("max_sequences_per_request"), "400"),
        ("snapshot `step`", "fixed: an integer, 0 to 2**53 - 1 (no float, no boolean)", "400"),
        ("`parameters` of a request, input or output", "fixed: a JSON object", "400"),
        ("live sessions", setting("max_sessions"), "429"),
        ("live sessions per API key", setting("max_sessions_per_key"), "429"),
        ("requests waiting per model version", setting("max_queue_size"), "503 + `Retry-After`"),
        ("a request's time: lock wait, queue and compute", setting("request_timeout_s") + " s", "504, nothing changed"),
        ("requests in flight per gRPC stream", setting("grpc_stream_window"), "the stream is not read further"),
        ("Redis connections per process", "`LSTM_REDIS_MAX_CONNECTIONS` = 0: `max_queue_size / 8`", "a burst waits"),
        ("an error message quoting what was sent", f"fixed: {MAX_MESSAGE:,} characters", "the message is cut"),
        ("control characters in the text log", "fixed: escaped (`\\n`, `\\x00`)", "no forged lines"),
    ]
    worst = d["drain_timeout_s"] + STRAGGLER_CUT_S
    lines = [
        "## Bounds on what a client sends",
        "",
        "Every limit below answers with the reply shown, the connection (where it survives) stays",
        "usable, and nothing is changed by a refused request (`tests/service/test_bounds.py`).",
        "",
        "| what | bound (setting = default) | a client gets |",
        "|---|---|---|",
        *[f"| {what} | {bound} | {reply} |" for what, bound, reply in rows],
        "",
        "**Shutdown** (SIGTERM): admission stops, queued batches finish, and the sessions are saved",
        "(`LSTM_STATE_DIR`) before any straggler is waited on; requests still open after",
        f"`LSTM_DRAIN_TIMEOUT_S` ({d['drain_timeout_s']:g} s) are cut {STRAGGLER_CUT_S} s later. The whole stop",
        f"takes at most about {worst:g} s, inside Compose's {COMPOSE_GRACE_S} s and Kubernetes' {KUBERNETES_GRACE_S} s",
        f"grace periods ({COMPOSE_GRACE_S - worst:g} s of margin); a connection refused for its head is read and",
        f"dropped until its client has been silent for {LINGER_S:g} s ({LINGER_MAX_S:g} s at most) before it is",
        "closed, so that its reply is not lost to a reset; an unanswered request that runs past its head and",
        "body limits altogether (a chunked body's trailers without end) has its connection closed.",
        "",
    ]
    return lines


def overload_verdict(over: dict, rss: list[float]) -> str:
    """What the overload run shows, each clause decided by its figures."""
    o, r = over["overload"], over["recovery_at_half_capacity"]
    half = len(rss) // 2
    growth = 100 * (rss[-1] - rss[half]) / rss[half]
    clauses = [
        "every request got 200 or 503" if not o["other"] else f"{o['other']} request(s) got another status",
        f"the excess was refused in {o['shed_p99_ms']:.0f} ms at p99",
        (
            f"admitted requests stayed under the deadline (p99 {o['admitted_p99_ms']:.0f} of {over['deadline_ms']} ms)"
            if o["admitted_p99_ms"] < over["deadline_ms"]
            else f"admitted requests reached the deadline (p99 {o['admitted_p99_ms']:.0f} ms)"
        ),
        f"peak RSS changed {growth:+.1f} % from half-way to the end",
        (
            "at half capacity right after, every request was admitted"
            if r["admitted"] == r["sent"]
            else f"at half capacity right after, {r['admitted']} of {r['sent']} were admitted"
        ),
    ]
    return "In this run: " + "; ".join(clauses) + "."


def operations() -> int:
    """Operations of the service's OpenAPI document (what the fuzz test covers)."""
    from service.app import create_app
    from service.config import Settings

    doc = create_app(Settings(model_repository=DOCS.parent / "models")).openapi()
    verbs = {"get", "put", "post", "delete", "patch", "head", "options"}
    return sum(1 for item in doc["paths"].values() for verb in item if verb in verbs)


def fuzz_examples() -> int:
    """The examples per operation tests/service/test_fuzz.py asks schemathesis for."""
    import re

    text = (DOCS.parent / "tests" / "service" / "test_fuzz.py").read_text()
    found = re.search(r"max_examples=(\d+)", text)
    assert found, "tests/service/test_fuzz.py sets no max_examples"
    return int(found.group(1))


def overload_plot(over: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ts, mb = zip(*over["overload"]["rss_mb"], strict=True)
    fig, ax = plt.subplots(figsize=(7, 3.2), dpi=100)
    ax.plot(ts, mb, "-")
    ax.set_ylim(0, max(mb) * 1.2)
    ax.set_xlabel("seconds at 3× capacity")
    ax.set_ylabel("server peak RSS (MiB)")
    ax.set_title("Overload: server peak RSS")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    over = json.loads((DOCS / "bench" / "overload.json").read_text())
    soak = json.loads((DOCS / "bench" / "soak.json").read_text())
    overload_plot(over, DOCS / "bench" / "overload_memory.png")
    o, r = over["overload"], over["recovery_at_half_capacity"]
    rss = [m for _, m in o["rss_mb"]]
    half = len(rss) // 2
    s_rss = [m for _, m in soak["rss_mb"]]
    lines = [
        "# Reliability",
        "",
        "Measured on the 2-core development machine; rerun with `python -m bench.overload` and",
        "`python -m bench.soak`, then `python -m bench.reliability_report`.",
        "",
        "## Overload: shed, don't collapse",
        "",
        "Stateless predicts of 64 steps on the hidden-512 model (compute-bound), server with",
        "`LSTM_MAX_QUEUE_SIZE=32` and a 2 s deadline. Capacity was measured first (closed loop,",
        f"16 connections): **{over['capacity_per_s']:.0f} req/s**. Then open-loop arrivals at",
        f"**{o['offered_per_s']:.0f} req/s (3×) for {o['seconds']:.0f} s**, on 256 connections:",
        "",
        "| | |",
        "|---|---|",
        f"| requests sent | {o['sent']} |",
        f"| admitted (200) | {o['admitted']} ({o['admitted'] / o['seconds']:.0f}/s) |",
        f"| shed (503 + `Retry-After`) | {o['shed']} |",
        f"| any other status | {o['other'] or 'none'} |",
        f"| time to a 503, p50 / p99 | {o['shed_p50_ms']:.1f} ms / {o['shed_p99_ms']:.1f} ms |",
        f"| admitted latency p50 / p99 (deadline {over['deadline_ms']} ms) | {o['admitted_p50_ms']:.0f} ms / {o['admitted_p99_ms']:.0f} ms |",
        f"| server peak RSS: start / half-way / end | {rss[0]:.0f} / {rss[half]:.0f} / {rss[-1]:.0f} MiB |",
        f"| right after, at half capacity for {r['seconds']} s | {r['admitted']}/{r['sent']} admitted, p99 {r['admitted_p99_ms']:.0f} ms |",
        "",
        overload_verdict(over, rss),
        "`make test` runs a short version",
        "(`tests/service/test_http_limits.py::test_overload_sheds_with_retry_after_and_recovers`).",
        "",
        "![overload memory](bench/overload_memory.png)",
        "",
        "## Soak: nothing lost",
        "",
        f"{soak['seconds'] / 60:.0f} minutes of mixed traffic from 16 clients against one server (memory store, TTL 5 s so",
        "that expiry happens): sessions created, streamed in random chunks with `expected_step`,",
        "10% of steps retried (each retry must return the stored reply, `replayed: true`, without",
        "advancing), half the sessions deleted, a fifth abandoned to expire.",
        "",
        "| | |",
        "|---|---|",
        f"| streams | {soak['streams']} |",
        f"| time steps | {soak['steps']} |",
        f"| errors (any non-2xx, or a retry that was not a replay) | {soak['errors'] or 'none'} |",
        f"| every stream vs its offline one-pass run | max error {soak['max_error_scaled']:.1e} (scaled units, tolerance 1e-5): {'exact' if soak['exact'] else '**NOT exact**'} |",
        f"| abandoned sessions | {soak['abandoned']}, of which not expired with an explicit 404 after the TTL: {soak['abandoned_not_expired']} |",
        f"| server RSS: first sample after start / max / last | {s_rss[1] if len(s_rss) > 1 else s_rss[0]:.0f} / {max(s_rss):.0f} / {s_rss[-1]:.0f} MiB |",
        "",
        "![soak memory](bench/soak_memory.png)",
        "",
        *bounds_table(),
        "## In `make test`",
        "",
        "* **Fuzzing**: schemathesis generates requests for every operation of the service's own",
        f"  OpenAPI document ({operations()} operations, {fuzz_examples()} examples each): no 5xx, no reply",
        "  outside the documented schema or content type (`tests/service/test_fuzz.py`).",
        "* **Properties** (hypothesis): collate/split round-trips any mix of lengths and states",
        "  exactly; any interleaving of creates, steps (with and without `expected_step`, right",
        "  and wrong), retries, deletes and idle periods past the TTL matches a simple sequential",
        "  model, outputs included (`tests/service/test_properties.py`).",
        "* **Limits**: body size (413), steps per request, sequences per request, finite values,",
        "  sessions in total and per API key (429), queue size (503), deadline (504).",
        "* **Authentication**: `LSTM_API_KEYS` / `LSTM_API_KEY_FILE`, bearer tokens compared in",
        "  constant time (every key compared); a session belongs to the key that created it and",
        "  other keys get the same 404 as an unknown session; sequences are per key; health and",
        "  metrics open unless `LSTM_AUTH_HEALTH=true`; keys never logged (checked in the server",
        "  log); WebSocket handshakes need a key too. Unset: open, with a warning at start-up.",
        "* **Drain with Redis**: SIGTERM on one of two replicas while 8 streams run: 503 with",
        "  `Connection: close` while draining, exit 0, the streams continue on the other replica",
        "  with exact outputs, no step lost or applied twice (`tests/service/test_replicas.py`).",
        "",
        "## Supply chain",
        "",
        "`constraints.txt` pins every package the service, training and tests use;",
        "`make setup`, `.ci/run` and both images install with `-c constraints.txt`. The images run",
        "as a non-root user (uid 10001) with a read-only root filesystem in Kubernetes.",
        "",
    ]
    (DOCS / "reliability.md").write_text("\n".join(lines))
    print(f"wrote {DOCS / 'reliability.md'}")


if __name__ == "__main__":
    main()
