// tokenline web UI: the Webhooks page. Plain JavaScript, no dependencies.
// Calls /v1/webhooks with the session cookie; inserts data as text only.
"use strict";

(function () {
  if (document.body.dataset.page !== "webhooks") return;
  const POLL_MS = 2000;
  let selected = "";

  function el(tag, attrs, ...children) {
    const n = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") n.className = v;
      else if (k === "text") n.textContent = v;
      else if (k === "onclick") n.addEventListener("click", v);
      else n.setAttribute(k, v);
    }
    for (const c of children) {
      if (c === undefined || c === null || c === false) continue;
      n.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return n;
  }

  async function api(method, path, body) {
    const opts = { method, credentials: "same-origin", headers: { "Accept": "application/json" } };
    if (body !== undefined) {
      opts.headers["Content-Type"] = "application/json";
      opts.body = JSON.stringify(body);
    }
    const res = await fetch(path, opts);
    const text = await res.text();
    let data = null;
    if (text) { try { data = JSON.parse(text); } catch (e) { data = { message: text }; } }
    if (res.status === 401) window.location.assign("/ui/login");
    if (!res.ok) throw new Error((data && (data.message || data.error)) || ("HTTP " + res.status));
    return data;
  }

  function showError(msg) {
    const n = document.getElementById("webhook-error");
    n.textContent = msg;
    n.hidden = !msg;
  }

  function showSecret(w) {
    const n = document.getElementById("webhook-secret");
    n.textContent = "Signing secret of " + w.id + " (shown once, give it to the receiver now): " + w.secret;
    n.hidden = false;
  }

  function act(method, path, then) {
    return () => api(method, path).then((w) => { if (then) then(w); refresh(); }, (e) => showError(e.message));
  }

  function render(list) {
    const ul = document.getElementById("webhooks");
    ul.replaceChildren();
    document.getElementById("webhooks-empty").hidden = list.length > 0;
    if (selected && !list.some((w) => w.id === selected)) {
      // The subscription whose deliveries were shown is gone (deleted
      // here or elsewhere): stop showing and asking for its log.
      selected = "";
      document.getElementById("deliveries-card").hidden = true;
    }
    for (const w of list) {
      const base = "/v1/webhooks/" + encodeURIComponent(w.id);
      const filter = [w.provider ? "provider " + w.provider : "", w.connection ? "connection " + w.connection : ""].filter(Boolean).join(", ");
      const li = el("li", { class: "connection webhook", "data-id": w.id },
        el("div", { class: "row" },
          el("strong", { text: w.id }), " ",
          el("span", { class: "state state-" + w.state, text: w.state + (w.reason ? " (" + w.reason + ")" : "") })),
        el("div", { class: "hint", text: w.url }),
        el("div", { class: "hint", text: "Events: " + (w.event_types.length ? w.event_types.join(" ") : "all") + (filter ? " · " + filter : "") + " · secret " + w.secret_fingerprint }),
        el("div", { class: "actions" },
          w.state === "active" ? el("button", { type: "button", class: "webhook-pause", onclick: act("POST", base + "/pause") }, "Pause") : null,
          w.state !== "active" ? el("button", { type: "button", class: "webhook-resume", onclick: act("POST", base + "/resume") }, "Resume") : null,
          el("button", { type: "button", class: "webhook-rotate", onclick: act("POST", base + "/secret", showSecret) }, "Rotate secret"),
          el("button", { type: "button", class: "webhook-deliveries", onclick: () => { selected = w.id; refreshDeliveries(); } }, "Deliveries"),
          el("button", { type: "button", class: "webhook-delete", onclick: () => { if (window.confirm("Delete webhook " + w.id + "?")) act("DELETE", base)(); } }, "Delete")));
      ul.append(li);
    }
  }

  async function refreshDeliveries() {
    if (!selected) return;
    const d = await api("GET", "/v1/webhooks/" + encodeURIComponent(selected) + "/deliveries");
    document.getElementById("deliveries-card").hidden = false;
    document.getElementById("deliveries-id").textContent = selected;
    document.getElementById("deliveries-lag").textContent = d.lag === undefined ? "" : "Lag: " + d.lag + " events not yet acknowledged";
    const tb = document.getElementById("deliveries");
    tb.replaceChildren();
    for (const a of d.attempts.slice().reverse()) {
      tb.append(el("tr", { class: "outcome-" + a.outcome },
        el("td", { text: new Date(a.time).toLocaleString() }),
        el("td", { text: a.event_type.replace(/^tokenline\./, "") }),
        el("td", { text: a.connection }),
        el("td", { text: a.attempt }),
        el("td", { text: a.outcome }),
        el("td", { text: a.status ? a.status : (a.error || "-") }),
        el("td", { text: a.latency_ms.toFixed(1) }),
        el("td", { text: a.next_retry ? new Date(a.next_retry).toLocaleString() : "-" })));
    }
    const dl = document.getElementById("dead-letters");
    dl.replaceChildren();
    for (const l of d.dead_letters) {
      dl.append(el("li", { text: new Date(l.time).toLocaleString() + " " + l.event_type + " of " + l.connection + " after " + l.attempts + " attempts (" + (l.last_error || l.last_status) + ")" }));
    }
    if (!d.dead_letters.length) dl.append(el("li", { class: "hint", text: "none" }));
  }

  async function refresh() {
    const list = await api("GET", "/v1/webhooks");
    render(list.webhooks);
    await refreshDeliveries();
  }

  function start() {
    document.getElementById("webhook-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      showError("");
      const events = document.getElementById("webhook-events").value.trim();
      const body = {
        url: document.getElementById("webhook-url").value.trim(),
        event_types: events && events !== "all" ? events.split(/[\s,]+/) : [],
        provider: document.getElementById("webhook-provider").value.trim() || undefined,
        connection: document.getElementById("webhook-connection").value.trim() || undefined,
      };
      api("POST", "/v1/webhooks", body).then((w) => { showSecret(w); ev.target.reset(); refresh(); }, (e) => showError(e.message));
    });
    const live = document.getElementById("live");
    const tick = () => refresh().then(() => { if (live) { live.className = "live ok"; live.textContent = "live"; } },
      () => { if (live) { live.className = "live down"; live.textContent = "cannot reach tokenline"; } });
    tick();
    setInterval(tick, POLL_MS);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
