// cdpipe dashboard: renders the sections the server pushes (over a WebSocket) and
// sends the operator's actions with the session's CSRF token. No framework, no build.
"use strict";

const page = { csrf: null, loggedIn: false, traffic: null, instances: [], confirm: null };
const $ = (id) => document.getElementById(id);

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (key === "class") node.className = value;
    else if (key.startsWith("data-") || key.startsWith("aria-")) node.setAttribute(key, value);
    else if (key === "onclick") node.addEventListener("click", value);
    else node[key] = value;
  }
  for (const child of children) {
    if (child !== null && child !== undefined) {
      node.append(child instanceof Node ? child : String(child));
    }
  }
  return node;
}

function clock(epoch) {
  return epoch ? new Date(epoch * 1000).toLocaleTimeString([], { hour12: false }) : "–";
}

function short(commit) {
  return commit ? commit.slice(0, 12) : "–";
}

function number(value, digits = 1) {
  return value === null || value === undefined ? "–" : Number(value).toFixed(digits);
}

function say(text, kind) {
  const box = $("message");
  box.textContent = text;
  box.className = kind;
  box.hidden = false;
}

// -- session -----------------------------------------------------------------------
function setLoggedIn(loggedIn, csrf) {
  page.loggedIn = loggedIn;
  page.csrf = csrf || null;
  $("login-form").hidden = loggedIn;
  $("who").hidden = !loggedIn;
  for (const button of document.querySelectorAll("button.write")) {
    button.disabled = !loggedIn;
    button.title = loggedIn ? "" : "log in as the operator to act";
  }
}

async function post(path, body) {
  const response = await fetch(path, {
    method: "POST", credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": page.csrf || "" },
    body: JSON.stringify(body),
  });
  let answer = {};
  try { answer = await response.json(); } catch (_) { answer = {}; }
  if (!response.ok) {
    say(answer.error || `refused (HTTP ${response.status})`, "error");
    if (response.status === 401) setLoggedIn(false);
    return null;
  }
  if (answer.message) say(answer.message, "ok");
  return answer;
}

// -- sparklines ----------------------------------------------------------------------
function sparkline(values, label) {
  const shown = values.filter((v) => v !== null && v !== undefined);
  const last = shown.length ? shown[shown.length - 1] : null;
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", "0 0 100 24");
  svg.setAttribute("class", "spark");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", `${label}: last ${number(last)}% over ${values.length} polls`);
  if (values.length > 1) {
    const points = values.map((v, i) => v === null ? null :
      `${(100 * i / (values.length - 1)).toFixed(1)},${(23 - 22 * Math.min(v, 100) / 100).toFixed(1)}`)
      .filter((p) => p !== null).join(" ");
    const line = document.createElementNS(ns, "polyline");
    line.setAttribute("points", points);
    svg.append(line);
  }
  return el("span", { class: "metric" }, svg, el("span", { class: "value" }, number(last)));
}

// -- sections ------------------------------------------------------------------------
function haproxyStatus(id) {
  const row = page.traffic && page.traffic.servers
    ? page.traffic.servers.find((s) => s.id === id) : null;
  return row ? row.status : null;
}

const render = {
  instances(rows) {
    page.instances = rows;
    const body = $("instances").tBodies[0];
    body.replaceChildren(...rows.map((r) => {
      const lb = haproxyStatus(r.id);
      const health = r.healthy === null ? "not polled yet"
        : r.healthy ? "healthy" : `down${r.error ? ": " + r.error : ""}`;
      const healthClass = r.healthy === null ? "muted" : r.healthy ? "good" : "bad";
      return el("tr", { "data-id": r.id },
        el("td", {}, r.id, r.autoscaled ? el("span", { class: "tag", title: "added by the autoscaler" }, "autoscaled") : null),
        el("td", {}, r.role),
        el("td", {}, el("code", {}, short(r.commit))),
        el("td", { class: healthClass }, health, lb ? el("span", { class: "muted" }, ` · ${lb}`) : null),
        el("td", {}, sparkline(r.cpu, `${r.id} CPU`)),
        el("td", {}, sparkline(r.mem, `${r.id} memory`)));
    }));
  },

  traffic(t) {
    page.traffic = t;
    if (t.error) {
      $("traffic-total").textContent = `(HAProxy stats unreadable: ${t.error})`;
      return;
    }
    $("traffic-total").textContent = `${number(t.rps)} req/s`;
    $("traffic-roles").textContent = Object.entries(t.roles || {})
      .map(([role, r]) => `${role}: ${number(r.rps)} req/s, ${number(r.errors_5xx_per_s, 2)} 5xx/s`)
      .join(" · ") || "no app server";
    $("canary-share").textContent = t.canary_share === null ? "no traffic" : `${number(t.canary_share)}%`;
    const body = $("traffic").tBodies[0];
    body.replaceChildren(...t.servers.map((s) => el("tr", { "data-id": s.id },
      el("td", {}, s.id), el("td", {}, s.role),
      el("td", { class: s.status.startsWith("UP") ? "good" : "bad" }, s.status),
      el("td", {}, s.weight), el("td", {}, number(s.rps)),
      el("td", { class: s.errors_5xx_per_s > 0 ? "bad" : "" }, number(s.errors_5xx_per_s, 2)),
      el("td", {}, s.requests), el("td", {}, s.errors_5xx))));
  },

  canary(c) {
    $("canary-weight-value").textContent = c.weight;
    const slider = $("canary-weight");
    if (document.activeElement !== slider) {
      slider.value = c.weight;
      $("canary-weight-out").textContent = `${c.weight}%`;
    }
    $("canary-commit").textContent = short(c.commit);
    $("prod-commit").textContent = short(c.prod_commit);
    const kill = $("kill-switch");
    kill.setAttribute("aria-pressed", String(c.alert));
    kill.dataset.on = String(c.alert);
    kill.textContent = c.alert ? "Kill switch ON: restore canary traffic"
      : "Kill switch: stop canary traffic";
    kill.classList.toggle("armed", c.alert);
    const state = $("kill-state");
    state.textContent = c.alert ? "ARMED: the canary gets no traffic" : "off: the canary gets its share";
    state.className = c.alert ? "pill bad" : "pill good";
    const v = c.verdict;
    const judged = (w) => `judge at ${clock(w.at)}: ${w.reason}` +
      (w.canary && w.prod ? ` (canary ${number(w.canary.requests, 0)} req, ` +
        `5xx ${number(100 * w.canary.error_rate, 2)}%, p95 ${number(w.canary.p95_ms, 0)} ms; ` +
        `prod ${number(w.prod.requests, 0)} req, 5xx ${number(100 * w.prod.error_rate, 2)}%, ` +
        `p95 ${number(w.prod.p95_ms, 0)} ms)` : "");
    const last = v && !v.decided && v.last_decided ? v.last_decided : null;
    $("verdict").textContent = v ? judged(v) + (last ? `; last verdict: ${judged(last)}` : "")
      : "judge: no verdict recorded yet";
    $("verdict").className = "figures" + (v && (v.failed || (last && last.failed)) ? " bad" : "");
  },

  flags(flags) {
    const body = $("flags").tBodies[0];
    const rows = Object.entries(flags).map(([name, value]) => {
      const settable = !name.includes(" (not a flag name");
      const on = value !== "off" && value !== "0%" && !value.startsWith("invalid");
      const actions = settable ? el("td", { class: "actions" },
        el("button", { type: "button", class: "write", "data-flag": name,
          onclick: () => post("/api/flag", { name, value: on ? "off" : "on" }) },
          on ? "Turn off" : "Turn on"),
        el("button", { type: "button", class: "write", "data-delete": name,
          onclick: () => post("/api/flag/delete", { name }) }, "Delete")) : el("td", {});
      return el("tr", { "data-flag": name },
        el("td", {}, name),
        el("td", { class: on ? "good value" : "muted value" }, value), actions);
    });
    body.replaceChildren(...(rows.length ? rows
      : [el("tr", {}, el("td", { colSpan: 3, class: "muted" }, "no flags set (every flag is off)"))]));
    setLoggedIn(page.loggedIn, page.csrf);
  },

  alerts(a) {
    $("alerts-active").replaceChildren(...(a.active.length ? a.active.map((x) =>
      el("li", { class: x.state === "firing" ? "bad" : "warn" },
        el("strong", {}, x.state.toUpperCase()), ` ${x.alert} since ${clock(x.since)}`,
        x.value !== null && x.value !== undefined ? ` · last value ${number(x.value)}` : "",
        el("div", { class: "muted" }, x.summary)))
      : [el("li", { class: "good" }, "nothing firing")]));
    $("alerts-history").replaceChildren(...(a.history.length ? a.history.map((x) =>
      el("li", { class: x.event === "firing" ? "bad" : "good" },
        `${clock(x.at)} ${x.event} ${x.alert} (since ${clock(x.since)})`,
        x.value !== null && x.value !== undefined ? ` · value ${number(x.value)}` : "",
        el("div", { class: "muted" }, x.summary)))
      : [el("li", { class: "muted" }, "none recorded")]));
  },

  scale(events) {
    $("scale").replaceChildren(...(events.length ? events.map((e) =>
      el("li", { class: e.ok ? "" : "bad" }, `${clock(e.at)} scale ${e.direction}: ${e.line}`,
        el("div", { class: "muted" }, e.reason)))
      : [el("li", { class: "muted" }, "no scale action recorded")]));
  },

  deploys(entries) {
    $("deploys").replaceChildren(...(entries.length ? entries.map((d) =>
      el("li", { class: d.result === "ok" ? "" : "bad" },
        `${clock(d.at)} ${d.command} `, el("code", {}, short(d.commit)),
        ` to ${d.target}: ${d.result}` +
        (d.finished ? ` in ${number(d.finished - d.at, 0)} s` : "") + (d.by ? ` by ${d.by}` : ""),
        d.error ? el("div", { class: "muted" }, d.error) : null))
      : [el("li", { class: "muted" }, "no deploy recorded")]));
  },

  lock(held) {
    $("lock").textContent = held ? `environment lock: ${held.owner}` : "";
  },

  job(job) {
    const box = $("job");
    box.hidden = !job;
    if (job) {
      box.className = job.state;
      box.textContent = `${job.command}: ${job.state}` +
        (job.exit !== null ? ` (exit ${job.exit})` : "") + "\n" + job.lines.join("\n");
    }
  },

  connection(c) {
    const live = c.redis === "live";
    const pill = $("connection");
    pill.textContent = live ? "live" : `Redis ${c.redis}`;
    pill.className = live ? "pill good" : "pill bad";
  },
};

// -- the live feed ----------------------------------------------------------------------
// A WebSocket, not an EventSource: a browser keeps at most six HTTP/1.1 streams per
// site, so a seventh tab of the dashboard would wait forever for its own page.
function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const socket = new WebSocket(`${scheme}://${location.host}/ws`);
  socket.addEventListener("message", (message) => {
    const { event, data } = JSON.parse(message.data);
    const draw = render[event];
    if (!draw) return;
    draw(data);
    if (event === "traffic" && page.instances.length) render.instances(page.instances);
  });
  socket.addEventListener("close", () => {
    const pill = $("connection");
    pill.textContent = "reconnecting…";
    pill.className = "pill bad";
    setTimeout(connect, 1000);
  });
}

// -- controls ----------------------------------------------------------------------------
function wire() {
  $("login-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const response = await fetch("/api/login", {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ password: $("password").value }),
    });
    const answer = await response.json().catch(() => ({}));
    $("password").value = "";
    if (!response.ok) { say(answer.error || "login refused", "error"); return; }
    setLoggedIn(true, answer.csrf);
    say("logged in as the operator", "ok");
  });
  $("logout").addEventListener("click", async () => {
    await fetch("/api/logout", { method: "POST", credentials: "same-origin" });
    setLoggedIn(false);
    say("logged out", "ok");
  });
  $("flag-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const answer = await post("/api/flag", { name: $("flag-name").value, value: $("flag-value").value });
    if (answer) { $("flag-name").value = ""; $("flag-value").value = ""; }
  });
  const slider = $("canary-weight");
  slider.addEventListener("input", () => { $("canary-weight-out").textContent = `${slider.value}%`; });
  $("weight-form").addEventListener("submit", (event) => {
    event.preventDefault();
    post("/api/canary/weight", { weight: slider.value });
  });
  $("kill-switch").addEventListener("click", () => {
    post("/api/canary/alert", { on: $("kill-switch").dataset.on !== "true" });
  });
  for (const button of [$("promote"), $("rollback")]) {
    button.addEventListener("click", () => {
      page.confirm = button.dataset.job;
      $("confirm-text").textContent = button.dataset.job === "promote"
        ? `Deploy the canary's commit ${$("canary-commit").textContent} to every prod server, one at a time?`
        : `Redeploy prod's commit ${$("prod-commit").textContent} to the canary?`;
      $("confirm").hidden = false;
      $("confirm-yes").focus();
    });
  }
  $("confirm-yes").addEventListener("click", () => {
    $("confirm").hidden = true;
    post("/api/canary/job", { job: page.confirm });
  });
  $("confirm-no").addEventListener("click", () => { $("confirm").hidden = true; });
}

async function start() {
  wire();
  const session = await fetch("/api/session", { credentials: "same-origin" })
    .then((r) => r.json()).catch(() => ({ logged_in: false }));
  setLoggedIn(Boolean(session.logged_in), session.csrf);
  connect();
}

document.addEventListener("DOMContentLoaded", start);
