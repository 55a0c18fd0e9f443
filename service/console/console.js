// The lstm-serving console: models and their cards, live figures from the server's counters,
// and a demo that streams a model's held-out data through a session over the WebSocket.
// Plain browser JavaScript, same origin only; the API key lives in this page's memory only.
"use strict";

const state = {
  key: "",
  auth: false,
  cards: {},
  stats: null,
  rate: null,
  demo: null,
};
window.consoleState = state; // read by the tests (and handy in the devtools)

const $ = (id) => document.getElementById(id);

function setStatus(text, error = false) {
  $("status").textContent = text;
  $("status").className = error ? "error" : "";
}

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function api(path, options = {}) {
  const headers = { ...(options.headers || {}) };
  if (state.key) headers.Authorization = "Bearer " + state.key;
  const r = await fetch(path, { ...options, headers });
  if (!r.ok) {
    let message = r.statusText;
    try {
      message = (await r.json()).error || message;
    } catch (_) {
      /* not JSON */
    }
    throw new ApiError(r.status, message);
  }
  return r;
}

const fmt = (v, digits = 0) =>
  v === null || v === undefined ? "–" : Number(v).toLocaleString("en-GB", { maximumFractionDigits: digits, minimumFractionDigits: digits });
const ms = (s) => (s === null || s === undefined ? "–" : fmt(s * 1000, 2) + " ms");

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  for (const c of children) e.append(c);
  return e;
}

// -- models -----------------------------------------------------------------------------

async function loadModels() {
  const { models } = await (await api("/v1/models")).json();
  const cards = $("model-cards");
  cards.replaceChildren();
  $("demo-model").replaceChildren();
  for (const m of models) {
    const card = await (await api(`/v1/models/${encodeURIComponent(m.name)}`)).json();
    state.cards[m.name] = card;
    cards.append(await renderCard(card));
    // the demo streams a model's held-out data: only models that have some are offered
    if (card.heldout) $("demo-model").append(el("option", { value: m.name }, m.name));
  }
  const demoable = $("demo-model").options.length > 0;
  $("demo-start").disabled = !demoable;
  $("demo-start").hidden = !demoable;
  if (!demoable) $("demo-status").textContent = "no served model has held-out data to stream (heldout.json)";
}

async function renderCard(card) {
  const features = el("table", { "data-model": card.name, class: "features" },
    el("tr", {}, el("th", {}, "feature"), el("th", {}, "unit"), el("th", {}, "range"), el("th", {}, "description")));
  for (const f of card.features || []) {
    const range = f.min !== undefined && f.max !== undefined ? `${fmt(f.min, 1)} – ${fmt(f.max, 1)}` : "–";
    features.append(el("tr", { "data-feature": f.name },
      el("td", {}, f.name), el("td", {}, f.unit || ""), el("td", { class: "num range" }, range), el("td", {}, f.description || "")));
  }
  const outputs = (card.outputs_meaning || []).length
    ? card.outputs_meaning.map((o) => o.name + (o.unit ? ` (${o.unit})` : "") + (o.description ? `: ${o.description}` : "")).join("; ")
    : `${fmt(card.n_outputs)} value(s) per step`;
  const tested = Object.entries(((card.metrics || {}).test) || {});
  const metrics = tested.length
    ? el("table", { class: "metrics" }, el("tr", {}, el("th", {}, "test split"), el("th", {}, "MAE"), el("th", {}, "RMSE")))
    : el("p", { class: "metrics none" }, "no test metrics: the card gives none");
  for (const [name, m] of tested) {
    metrics.append(el("tr", { "data-forecast": name },
      el("td", {}, name === "model" ? "this model" : name.replaceAll("_", " ")),
      el("td", { class: "num", "data-metric": `${name}-mae` }, fmt(m.mae, 1)),
      el("td", { class: "num", "data-metric": `${name}-rmse` }, fmt(m.rmse, 1))));
  }
  const left = el("div", {},
    el("h3", {}, `${card.name} v${card.version}`),
    el("p", {}, [card.description, `${card.num_layers}×${card.hidden_size} ${(card.cell || "lstm").toUpperCase()} on ${card.provider}`]
      .filter(Boolean).join(" · ")),
    features, el("p", {}, "outputs: " + outputs), metrics);
  const right = el("div", {});
  if (card.forecast_plot) {
    const blob = await (await api(`/v1/console/models/${encodeURIComponent(card.name)}/forecast.png`)).blob();
    right.append(el("img", { src: URL.createObjectURL(blob), alt: `${card.name}: test-period forecast` }));
  } else {
    right.append(el("p", { class: "no-plot" }, "no forecast plot for this model"));
  }
  return el("div", { class: "card", "data-card": card.name }, left, right);
}

// -- live figures -------------------------------------------------------------------------

async function pollStats() {
  try {
    const s = await (await api("/v1/console/stats")).json();
    if (state.stats && s.time > state.stats.time) state.rate = (s.steps - state.stats.steps) / (s.time - state.stats.time);
    state.stats = s;
    show("stat-sessions", s.sessions_live, fmt(s.sessions_live));
    show("stat-steps", s.steps, fmt(s.steps));
    show("stat-rate", state.rate, fmt(state.rate, 1));
    const r = s.request_seconds;
    show("stat-latency", r.p50, `${ms(r.p50)} / ${ms(r.p90)} / ${ms(r.p99)}`);
    show("stat-inference", s.inference_seconds.p50, `${ms(s.inference_seconds.p50)} / ${ms(s.inference_seconds.p99)}`);
    show("stat-batch", s.batch_size.mean, `${fmt(s.batch_size.mean, 2)} / ${fmt(s.batch_size.p99, 1)}`);
    show("stat-queue", s.queue_depth, fmt(s.queue_depth));
  } catch (e) {
    setStatus("live figures: " + e.message, true);
  }
  setTimeout(pollStats, 1000);
}

function show(id, value, text) {
  const e = $(id);
  e.textContent = text;
  e.dataset.value = value === null || value === undefined ? "" : String(value);
}

// -- the demo ---------------------------------------------------------------------------

function keyProtocols() {
  if (!state.key) return undefined;
  const b64 = btoa(String.fromCharCode(...new TextEncoder().encode(state.key)));
  return ["lstm-serving", "bearer." + b64.replaceAll("+", "-").replaceAll("/", "_").replaceAll("=", "")];
}

function makeChart(xs) {
  const target = $("demo-chart");
  target.replaceChildren();
  return new uPlot(
    {
      width: Math.max(480, target.clientWidth || 900),
      height: 320,
      series: [
        {},
        { label: "actual (MW)", stroke: "#1d2330", width: 1 },
        { label: "forecast (MW)", stroke: "#2563eb", width: 1.5 },
      ],
      axes: [{}, { size: 70 }],
      scales: { x: { time: true, range: () => [xs[0], xs[xs.length - 1]] } },
    },
    [[], [], []],
    target,
  );
}

async function startDemo() {
  const model = $("demo-model").value;
  const speed = Number($("demo-speed").value);
  $("demo-start").disabled = true;
  $("demo-status").className = "";
  $("demo-status").textContent = "loading the held-out data…";
  try {
    const data = await (await api(`/v1/console/models/${encodeURIComponent(model)}/heldout`)).json();
    const session = await (await api("/v1/sessions", {
      method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ model }),
    })).json();
    const start = Date.UTC(2000, 5, 5) / 1000; // the taylor series starts Monday 5 June 2000
    const xs = data.readings.map((_, i) => start + (data.first_index + i + 1) * 1800);
    const demo = {
      model, sessionId: session.session_id, total: data.readings.length, sent: 0, received: 0,
      forecasts: [], step: 0, done: false, error: null, readings: data.readings,
    };
    state.demo = demo;
    const chart = makeChart(xs);
    await streamSession(demo, data, speed, (n) => {
      chart.setData([xs.slice(0, n), data.actual_next.slice(0, n), demo.forecasts.slice(0, n)]);
      $("demo-chart").dataset.points = String(n);
      $("demo-count").textContent = `${fmt(n)} / ${fmt(demo.total)}`;
      $("demo-step").textContent = fmt(demo.step);
      let err = 0, k = 0;
      for (let i = data.warmup; i < n; i++, k++) err += Math.abs(demo.forecasts[i] - data.actual_next[i]);
      $("demo-mae").textContent = k ? fmt(err / k, 1) : "–";
      $("demo-mae").dataset.value = k ? String(err / k) : "";
    });
    demo.done = true;
    $("demo-status").textContent = `done: ${fmt(demo.received)} readings, session at step ${fmt(demo.step)}`;
    await api(`/v1/sessions/${demo.sessionId}`, { method: "DELETE" });
  } catch (e) {
    if (state.demo) state.demo.error = e.message;
    $("demo-status").className = "error";
    $("demo-status").textContent = "demo: " + e.message;
  } finally {
    $("demo-start").disabled = false;
  }
}

// One reading per message, each with its expected_step; up to WINDOW messages in flight
// (replies come back in order); paced to `speed` readings per second (0: no pacing).
function streamSession(demo, data, speed, draw) {
  const WINDOW = 16;
  const proto = location.protocol === "https:" ? "wss://" : "ws://";
  const ws = new WebSocket(`${proto}${location.host}/v1/sessions/${demo.sessionId}/stream`, keyProtocols());
  const t0 = performance.now();
  let scheduled = false;
  return new Promise((resolve, reject) => {
    const pump = () => {
      while (demo.sent < demo.total && demo.sent - demo.received < WINDOW) {
        if (speed && demo.sent > ((performance.now() - t0) / 1000) * speed) {
          setTimeout(pump, 1000 / speed);
          return;
        }
        const i = demo.sent++;
        ws.send(JSON.stringify({ inputs: [data.readings[i]], expected_step: i, id: i }));
      }
    };
    ws.onopen = pump;
    ws.onerror = () => reject(new Error("the WebSocket failed"));
    ws.onclose = (ev) => {
      if (demo.received < demo.total) reject(new Error(`the WebSocket closed (${ev.code} ${ev.reason})`));
    };
    ws.onmessage = (ev) => {
      const reply = JSON.parse(ev.data);
      if (reply.error) {
        ws.close();
        reject(new Error(`${reply.status}: ${reply.error}`));
        return;
      }
      demo.forecasts[reply.id] = reply.outputs[0][0];
      demo.received += 1;
      demo.step = reply.step;
      if (!scheduled) {
        scheduled = true;
        requestAnimationFrame(() => {
          scheduled = false;
          draw(demo.received);
        });
      }
      if (demo.received === demo.total) {
        draw(demo.received);
        ws.close(1000);
        resolve();
      } else {
        pump();
      }
    };
  });
}

// -- start-up ---------------------------------------------------------------------------

async function connect() {
  setStatus("loading…");
  try {
    await loadModels();
    setStatus(state.auth ? "connected with the key" : "connected");
    if (!state.polling) {
      state.polling = true;
      pollStats();
    }
  } catch (e) {
    setStatus(e.status === 401 ? "this key is not accepted" : e.message, true);
  }
}

async function main() {
  $("demo-start").addEventListener("click", startDemo);
  $("key-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    state.key = $("key").value.trim();
    connect();
  });
  const config = await (await fetch("/console/config")).json();
  state.auth = config.auth;
  if (state.auth) {
    $("key-form").hidden = false;
    setStatus("this server needs an API key");
  } else {
    await connect();
  }
}

main();
