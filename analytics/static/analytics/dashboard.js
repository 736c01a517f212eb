// Tap Analytics dashboard (SPEC 9). No build step and no dependency: the chart is a few
// SVG rectangles drawn here. The read key lives in sessionStorage (this tab only) and
// travels in the X-Api-Key header and the websocket's first message, never in a URL.
"use strict";

const KEY_STORAGE = "taps.readKey";
const FEED_SIZE = 50;
const SVG = "http://www.w3.org/2000/svg";

const state = {
  key: null,
  answer: null, // the last analytics answer: {start, end, total, results, ...}
  socket: null,
  lastSeq: null, // the seq seen everything up to; sent as "after" on reconnect
  retryDelay: 1000,
  retryTimer: null,
  blockedUntil: 0, // rate limit: no query before this time (ms since epoch)
};

const $ = (id) => document.getElementById(id);

function showMessage(text, kind = "error") {
  const box = $("message");
  box.textContent = text;
  box.className = kind;
  box.hidden = !text;
}

function setLiveStatus(text, kind) {
  const pill = $("live-status");
  pill.textContent = text;
  pill.className = "pill " + (kind || "");
}

function isoDate(date) {
  const pad = (n) => String(n).padStart(2, "0");
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}`;
}

// ---- the key -------------------------------------------------------------------------

// Nothing of an answer stays on screen once it no longer holds: after "Forget key",
// another key, a refused key or a failed query, the chart would show another team's or
// another range's taps under the new settings.
function clearAnswer() {
  state.answer = null;
  $("chart").replaceChildren();
  $("total").textContent = "–";
  $("range-label").textContent = "";
  $("budget").textContent = "";
  $("current-period").hidden = true;
  $("empty").hidden = true;
  $("gap").hidden = true;
}

function useKey(key) {
  clearAnswer();
  $("feed").replaceChildren();
  state.key = key;
  sessionStorage.setItem(KEY_STORAGE, key);
  $("key").value = "";
  $("key").placeholder = "key in use: " + key.split(".")[0] + ".…";
  $("forget").hidden = false;
  $("load").disabled = false;
  state.lastSeq = null;
  openSocket();
  loadChart();
}

function forgetKey() {
  state.key = null;
  sessionStorage.removeItem(KEY_STORAGE);
  closeSocket();
  $("key").placeholder = "paste your team's read key";
  $("forget").hidden = true;
  $("load").disabled = true;
  $("team").textContent = "";
  setLiveStatus("not connected");
  clearAnswer();
  $("feed").replaceChildren();
  showMessage("");
}

// ---- the chart -----------------------------------------------------------------------

function describeError(status, body) {
  if (body && typeof body.detail === "string") return body.detail;
  if (body && typeof body === "object") {
    return Object.entries(body)
      .map(([field, messages]) => `${field}: ${[].concat(messages).join(" ")}`)
      .join("; ");
  }
  return `The server answered ${status}.`;
}

function secondsUntilRetry(response) {
  const retry = Number(response.headers.get("Retry-After"));
  if (Number.isFinite(retry) && retry > 0) return retry;
  const reset = Number(response.headers.get("X-RateLimit-Reset"));
  return Number.isFinite(reset) && reset > 0 ? reset : 60;
}

function showBudget(response) {
  const remaining = response.headers.get("X-RateLimit-Remaining");
  const limit = response.headers.get("X-RateLimit-Limit");
  $("budget").textContent =
    remaining !== null && limit !== null ? `(${remaining} of ${limit} queries left this hour)` : "";
}

function blockQueries(seconds) {
  state.blockedUntil = Date.now() + seconds * 1000;
  const at = new Date(state.blockedUntil).toLocaleTimeString();
  const tick = () => {
    const left = Math.ceil((state.blockedUntil - Date.now()) / 1000);
    if (left <= 0) {
      $("load").disabled = !state.key;
      showMessage("You can query again now.", "info");
      return;
    }
    $("load").disabled = true;
    showMessage(`Rate limit reached: the next query is possible at ${at} (in ${left} s).`);
    setTimeout(tick, 1000);
  };
  tick();
}

async function loadChart() {
  if (!state.key || Date.now() < state.blockedUntil) return;
  const params = new URLSearchParams({
    start: $("start").value,
    end: $("end").value,
    interval: $("interval").value,
  });
  if ($("tz").value) params.set("tz", $("tz").value);
  $("load").disabled = true;
  let response;
  let body = null;
  try {
    response = await fetch("/v1/analytics/taps?" + params, {
      headers: { "X-Api-Key": state.key, Accept: "application/json" },
    });
    body = await response.json().catch(() => null);
  } catch (error) {
    showMessage(`Could not reach the server (${error.message}); try again.`);
    $("load").disabled = false;
    return;
  }
  $("load").disabled = false;
  showBudget(response);
  if (response.status === 429) {
    blockQueries(secondsUntilRetry(response));
    return;
  }
  if (response.status === 401 || response.status === 403) {
    clearAnswer();
    $("team").textContent = "";
    showMessage(`Key rejected: ${describeError(response.status, body)}`);
    return;
  }
  if (!response.ok || !body) {
    clearAnswer();
    showBudget(response);
    showMessage(describeError(response.status, body));
    return;
  }
  showMessage("");
  $("gap").hidden = true;
  state.answer = body;
  $("team").textContent = body.team ? `${body.team.name} (#${body.team.id})` : "";
  $("range-label").textContent = `per ${body.interval}, ${body.tz}`;
  drawChart();
}

function drawChart() {
  const answer = state.answer;
  const results = answer.results || [];
  $("total").textContent = String(answer.total);
  $("empty").hidden = answer.total !== 0;
  showCurrentPeriod();

  const width = 800;
  const height = 260;
  const left = 48;
  const bottom = 24;
  const plotWidth = width - left - 8;
  const plotHeight = height - bottom - 8;
  const top = Math.max(1, ...results.map((bucket) => bucket.taps));
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", `tap counts, total ${answer.total}`);
  svg.dataset.total = String(answer.total);

  const add = (name, attributes, text) => {
    const node = document.createElementNS(SVG, name);
    for (const [attribute, value] of Object.entries(attributes)) node.setAttribute(attribute, value);
    if (text !== undefined) node.textContent = text;
    svg.appendChild(node);
    return node;
  };
  for (const fraction of top >= 2 ? [0, 0.5, 1] : [0, 1]) {
    const y = 8 + plotHeight * (1 - fraction);
    add("line", { x1: left, x2: width - 8, y1: y, y2: y, class: "gridline" });
    add("text", { x: left - 6, y: y + 4, "text-anchor": "end", class: "axis" },
      String(Math.round(top * fraction)));
  }
  const step = plotWidth / Math.max(results.length, 1);
  results.forEach((bucket, index) => {
    const barHeight = (bucket.taps / top) * plotHeight;
    const bar = add("rect", {
      x: left + index * step + step * 0.1,
      y: 8 + plotHeight - barHeight,
      width: Math.max(step * 0.8, 1),
      height: barHeight,
      class: bucket.partial ? "bar partial" : "bar",
    });
    bar.dataset.period = bucket.period;
    const title = document.createElementNS(SVG, "title");
    title.textContent = `${bucket.period}: ${bucket.taps} taps${bucket.partial ? " (partial)" : ""}`;
    bar.appendChild(title);
  });
  const labelled = results.length <= 1 ? [0] : [0, Math.floor(results.length / 2), results.length - 1];
  for (const index of new Set(labelled)) {
    if (!results[index]) continue;
    add("text", {
      x: left + index * step + step / 2,
      y: height - 6,
      "text-anchor": index === 0 ? "start" : index === results.length - 1 ? "end" : "middle",
      class: "axis",
    }, periodLabel(results[index].period));
  }
  $("chart").replaceChildren(svg);
}

// A period's label as the API gives it (local to the chosen zone), without the offset,
// and without the clock for intervals of a day or more.
function periodLabel(period) {
  const short = ["minute", "hour"].includes(state.answer.interval);
  return short ? period.slice(0, 16).replace("T", " ") : period.slice(0, 10);
}

// The bucket a tap falls in: periods are labelled by their first instant, the last one
// ends with the range.
function bucketIndex(at) {
  const results = state.answer ? state.answer.results || [] : [];
  const instant = Date.parse(at);
  const end = Date.parse(state.answer ? state.answer.end : "");
  if (!results.length || !(instant < end)) return -1;
  for (let index = results.length - 1; index >= 0; index -= 1) {
    if (Date.parse(results[index].period) <= instant) {
      return index === 0 && instant < Date.parse(state.answer.start) ? -1 : index;
    }
  }
  return -1;
}

function showCurrentPeriod() {
  const results = state.answer.results || [];
  const now = Date.now();
  const index = bucketIndex(new Date(now).toISOString());
  const current = index >= 0 ? results[index] : null;
  $("current-period").hidden = !current;
  if (current) {
    $("current-label").textContent = periodLabel(current.period);
    $("current-taps").textContent = String(current.taps);
  }
}

function countLiveTap(tap) {
  if (!state.answer) return;
  const index = bucketIndex(tap.at);
  if (index < 0) return;
  state.answer.results[index].taps += tap.count;
  state.answer.total += tap.count;
  drawChart();
}

// ---- the live feed -------------------------------------------------------------------

function socketUrl() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/ws/v1/taps`;
}

function closeSocket() {
  clearTimeout(state.retryTimer);
  if (state.socket) {
    state.socket.onclose = null;
    state.socket.close();
    state.socket = null;
  }
}

function openSocket() {
  closeSocket();
  if (!state.key) return;
  const socket = new WebSocket(socketUrl());
  state.socket = socket;
  setLiveStatus("connecting…");
  socket.onopen = () => {
    const auth = { type: "auth", key: state.key };
    if (state.lastSeq !== null) auth.after = state.lastSeq;
    socket.send(JSON.stringify(auth));
  };
  socket.onmessage = (event) => receive(JSON.parse(event.data));
  socket.onclose = (event) => {
    state.socket = null;
    if (event.code === 4001) {
      const why = event.reason || "the key was refused (bad, revoked or expired)";
      setLiveStatus("live feed closed", "closed");
      showMessage(`Live feed closed: ${why.replace(/\.$/, "")}.`);
      return;
    }
    const seconds = Math.round(state.retryDelay / 1000);
    setLiveStatus(`disconnected; reconnecting in ${seconds} s`, "down");
    state.retryTimer = setTimeout(openSocket, state.retryDelay);
    state.retryDelay = Math.min(state.retryDelay * 2, 30000);
  };
}

function receive(message) {
  if (message.type === "ready") {
    state.retryDelay = 1000;
    if (state.lastSeq === null) state.lastSeq = message.seq ?? null;
    $("team").textContent = `${message.team.name} (#${message.team.id})`;
    setLiveStatus("live", "live");
  } else if (message.type === "tap") {
    state.lastSeq = Math.max(state.lastSeq ?? 0, message.seq);
    addToFeed(message);
    countLiveTap(message);
  } else if (message.type === "gap") {
    $("gap").hidden = false;
  }
}

function addToFeed(tap) {
  const item = document.createElement("li");
  item.className = "fresh";
  item.dataset.tapId = String(tap.id);
  const when = new Date(tap.at).toLocaleTimeString();
  item.textContent = `${when} · tag ${tap.tag} · ${tap.count} tap${tap.count === 1 ? "" : "s"} (#${tap.id})`;
  const feed = $("feed");
  feed.prepend(item);
  while (feed.children.length > FEED_SIZE) feed.lastElementChild.remove();
}

// ---- wiring --------------------------------------------------------------------------

function start() {
  const today = new Date();
  const weekAgo = new Date(today.getTime() - 6 * 86400000);
  $("start").value = isoDate(weekAgo);
  $("end").value = isoDate(today);
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const key = $("key").value.trim();
    if (key) useKey(key);
  });
  $("forget").addEventListener("click", forgetKey);
  $("query-form").addEventListener("submit", (event) => {
    event.preventDefault();
    loadChart();
  });
  $("reload").addEventListener("click", loadChart);
  const saved = sessionStorage.getItem(KEY_STORAGE);
  if (saved) useKey(saved);
}

start();
