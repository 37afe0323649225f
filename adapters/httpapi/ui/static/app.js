// tokenline web UI. Plain JavaScript, no dependencies, no build step.
// It calls the /v1 API with the browser's session cookie (HttpOnly: this
// script never sees it, nor the API token) and refreshes what it shows every
// 1.5 s. Without a session the API answers 401 and the page sends the
// browser to the login page.
// Data is only ever inserted as text (textContent), never as HTML.
"use strict";

(function () {
  const POLL_MS = 1500;
  const meta = (name) => {
    const m = document.querySelector('meta[name="' + name + '"]');
    return m ? m.getAttribute("content") : "";
  };
  let REASONS = {};
  try { REASONS = JSON.parse(meta("tokenline-reasons") || "{}"); } catch (e) { REASONS = {}; }

  // ---- helpers -------------------------------------------------------------

  function el(tag, attrs, ...children) {
    const n = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") n.className = v;
      else if (k === "text") n.textContent = v;
      else if (k.startsWith("data-")) n.setAttribute(k, v);
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
    let data = null;
    const text = await res.text();
    if (text) { try { data = JSON.parse(text); } catch (e) { data = { message: text }; } }
    if (res.status === 401) {
      // No session (never signed in, expired, or tokenline restarted).
      window.location.assign("/ui/login");
    }
    if (!res.ok) {
      const err = new Error((data && (data.message || data.error)) || ("HTTP " + res.status));
      err.status = res.status;
      err.body = data;
      throw err;
    }
    return data;
  }

  const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
  const pad = (n) => String(n).padStart(2, "0");
  function when(iso) {
    if (!iso) return "";
    const d = new Date(iso);
    return d.getDate() + " " + MONTHS[d.getMonth()] + " " + pad(d.getHours()) + ":" + pad(d.getMinutes());
  }
  function clock(iso) {
    const d = new Date(iso);
    return pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds());
  }
  function relative(iso) {
    const s = Math.round((new Date(iso).getTime() - Date.now()) / 1000);
    const a = Math.abs(s);
    const txt = a < 60 ? a + " s" : a < 3600 ? Math.round(a / 60) + " min" : a < 86400 ? Math.round(a / 3600) + " h" : Math.round(a / 86400) + " d";
    return s >= 0 ? "in " + txt : txt + " ago";
  }
  function reasonText(r) { return REASONS[r] || r || ""; }

  // ---- connection rendering ------------------------------------------------

  // describe returns the plain-words line for a connection's state.
  function describe(c) {
    if (c.deleted) return "This connection was deleted on " + when(c.since) + ". Its history is kept.";
    switch (c.state) {
      case "active":
        return "Connected since " + when(c.since);
      case "refreshing":
        return "Renewing access…";
      case "reauthorising": {
        let s = "Waiting for you to finish connecting (started " + when(c.since);
        if (c.authorisation_expires_at) s += "; the link expires " + relative(c.authorisation_expires_at);
        s += ")";
        if (c.reason && c.reason !== "never_authorised") s += ". Before: " + c.reason_text;
        return s;
      }
      case "unauthenticated":
        if (c.reason === "never_authorised") return c.reason_text + " — connect to start.";
        if (c.action_by === "operator") {
          // Reconnecting does not help until the operator fixed the client.
          return (c.reason_text || "Not connected") + " on " + when(c.since) + " — the operator must act: " + c.operator_text;
        }
        return (c.reason_text || "Not connected") + " on " + when(c.since) + " — reconnect to restore.";
    }
    return c.state;
  }

  // deniedNotice explains an authorisation attempt that ended without a
  // grant: declined by the user or the provider, abandoned, or approved but
  // the code exchange failed (for the client's credentials: the operator's
  // to fix, not the user's).
  function deniedNotice(c) {
    switch (c.reason) {
      case "authorisation_denied":
        return "The provider did not grant access (the request was declined). You can try again with Reconnect.";
      case "authorisation_expired":
        return "The connection attempt expired before it was completed. You can try again with Reconnect.";
    }
    if (c.action_by === "operator") {
      return "You approved access, but the provider refused tokenline's own client credentials when it completed the connection (" + c.reason + "). This is not something you can fix by reconnecting: the operator must act. " + c.operator_text;
    }
    return "You approved access, but completing the connection failed: " + (c.reason_text || c.reason) + " (" + c.reason + "). You can try again with Reconnect.";
  }

  function tokenLine(c) {
    if (c.deleted) return null;
    if (c.has_tokens && c.access_token_expires_at) {
      const past = new Date(c.access_token_expires_at).getTime() < Date.now();
      return "Access token " + (past ? "expired " : "valid until ") + clock(c.access_token_expires_at) + " (" + relative(c.access_token_expires_at) + ")";
    }
    return "No access token held";
  }

  function refreshLine(c) {
    const parts = [];
    if (c.last_refresh) {
      parts.push("Last renewal " + when(c.last_refresh.at) + (c.last_refresh.ok ? " succeeded" : " failed" + (c.last_refresh.error_code ? " (" + c.last_refresh.error_code + ")" : "")));
    }
    if (c.transient_failures > 0) {
      parts.push("failed " + c.transient_failures + " time" + (c.transient_failures === 1 ? "" : "s") + " in a row" + (c.retry_at ? ", retrying at " + clock(c.retry_at) : ""));
    }
    return parts.length ? parts.join("; ") : null;
  }

  function actions(c, detailed) {
    const box = el("div", { class: "actions" });
    if (c.deleted) return box;
    if (c.needs_reauthorisation && c.action_by !== "operator") {
      const first = c.reason === "never_authorised";
      const b = el("button", { type: "button", class: first ? "connect-button" : "reconnect-button", "data-id": c.id, text: first ? "Connect" : "Reconnect" });
      b.addEventListener("click", () => startAuthorisation(c.id, b));
      box.append(b);
    }
    if (!detailed) box.append(el("a", { class: "button details-link", href: "/ui/connections/" + c.id, text: "Details & history" }));
    const del = el("button", { type: "button", class: "delete-button", "data-id": c.id, text: "Delete" });
    del.addEventListener("click", () => confirmDelete(c.id, del));
    box.append(del);
    return box;
  }

  function renderConnection(li, c, detailed) {
    li.className = "connection";
    li.dataset.id = c.id;
    li.dataset.state = c.state;
    li.dataset.reason = c.reason || "";
    li.dataset.deleted = c.deleted ? "true" : "false";
    const badge = c.deleted ? "deleted" : c.state;
    const head = el("div", { class: "conn-head" },
      el("span", { class: "state-badge state-" + badge, text: badge }),
      detailed ? el("span", { class: "connection-name", text: c.provider }) : el("a", { class: "connection-link", href: "/ui/connections/" + c.id, text: c.provider }),
      el("span", { class: "conn-id", text: c.id }));
    const kids = [head, el("p", { class: "reason-text", text: describe(c) })];
    const t = tokenLine(c);
    if (t) kids.push(el("p", { class: "token-expiry", text: t }));
    const r = refreshLine(c);
    if (r) kids.push(el("p", { class: "refresh-info", text: r }));
    kids.push(el("p", { class: "scopes", text: "Scopes: " + (c.scopes.length ? c.scopes.join(" ") : "(provider default)") }));
    const cfg = Object.entries(c.config || {});
    if (cfg.length) kids.push(el("p", { class: "config", text: "Settings: " + cfg.map(([k, v]) => k + " = " + v).join(", ") }));
    if (detailed) {
      const dl = el("dl", { class: "details" });
      const row = (k, v) => { if (v !== undefined && v !== null && v !== "") dl.append(el("dt", { text: k }), el("dd", { text: String(v) })); };
      row("State", c.state);
      row("Reason", c.reason ? c.reason + " — " + c.reason_text : "");
      row("In this state since", new Date(c.since).toLocaleString());
      row("Created", new Date(c.created_at).toLocaleString());
      row("Granted scopes", (c.granted_scopes || []).join(" "));
      row("Access token expires", c.access_token_expires_at ? new Date(c.access_token_expires_at).toLocaleString() : "");
      row("Needs you to reconnect", c.action_by === "operator" ? "not yet: the operator must act first" : (c.needs_reauthorisation ? "yes" : "no"));
      if (c.action_by === "operator") row("Operator must", c.operator_text);
      row("Version (stream sequence)", c.version);
      kids.push(dl);
    }
    kids.push(actions(c, detailed));
    li.replaceChildren(...kids);
  }

  async function startAuthorisation(id, button) {
    button.disabled = true;
    try {
      const res = await api("POST", "/v1/connections/" + id + "/authorize");
      window.location.assign(res.authorize_url);
    } catch (e) {
      button.disabled = false;
      flash("Could not start connecting: " + e.message);
    }
  }

  // Delete asks for a second click within 5 s: explicit, never by accident.
  function confirmDelete(id, button) {
    if (!button.classList.contains("confirming")) {
      button.classList.add("confirming");
      button.textContent = "Really delete?";
      setTimeout(() => { button.classList.remove("confirming"); button.textContent = "Delete"; }, 5000);
      return;
    }
    button.disabled = true;
    api("DELETE", "/v1/connections/" + id).then(() => refresh(), (e) => { button.disabled = false; flash("Could not delete: " + e.message); });
  }

  function flash(msg) {
    const n = document.getElementById("create-error") || document.getElementById("notice");
    if (!n) return;
    n.textContent = msg;
    n.hidden = false;
  }

  function setLive(ok) {
    const n = document.getElementById("live");
    if (!n) return;
    n.className = "live " + (ok ? "ok" : "down");
    n.textContent = ok ? "live" : "cannot reach tokenline";
  }

  // ---- pages ---------------------------------------------------------------

  const lastSeen = new Map(); // connection id -> JSON last rendered

  async function refreshList() {
    const data = await api("GET", "/v1/connections");
    const list = document.getElementById("connections");
    const seen = new Set();
    let prev = null;
    for (const c of data.connections) {
      seen.add(c.id);
      let li = list.querySelector('.connection[data-id="' + CSS.escape(c.id) + '"]');
      const json = JSON.stringify(c) + Math.floor(Date.now() / 30000); // re-render relative times now and then
      if (!li) {
        li = el("li", { class: "connection", "data-id": c.id });
        lastSeen.delete(c.id);
      }
      if (lastSeen.get(c.id) !== json) {
        renderConnection(li, c, false);
        lastSeen.set(c.id, json);
      }
      const want = prev ? prev.nextSibling : list.firstChild;
      if (want !== li) list.insertBefore(li, want);
      prev = li;
    }
    for (const li of Array.from(list.children)) {
      if (!seen.has(li.dataset.id)) { li.remove(); lastSeen.delete(li.dataset.id); }
    }
    document.getElementById("connections-empty").hidden = data.connections.length > 0;
  }

  const DESCRIBE_EVENT = {
    "connection.created": (d) => "Created for " + d.provider + (d.scopes && d.scopes.length ? " with scopes " + d.scopes.join(" ") : ""),
    "authorisation.started": (d) => "Authorisation started; the link expires " + when(d.expires_at),
    "authorisation.completed": (d) => "Connected; access token valid until " + when(d.tokens && d.tokens.access_token_expires_at),
    "authorisation.failed": (d) => "Authorisation failed: " + reasonText(d.reason) + (d.error_code ? " (" + d.error_code + ")" : ""),
    "refresh.started": (d) => "Renewing access (" + d.trigger + ", attempt " + d.attempt + ")",
    "refresh.succeeded": (d) => "Access renewed; valid until " + when(d.tokens && d.tokens.access_token_expires_at) + (d.rotated ? " (new refresh token)" : ""),
    "refresh.failed": (d) => d.terminal
      ? "Renewal refused: " + reasonText(d.reason) + " (" + [d.error_code, d.http_status ? "HTTP " + d.http_status : ""].filter(Boolean).join(", ") + ")"
      : "Renewal failed temporarily (" + [d.error_code, d.http_status ? "HTTP " + d.http_status : ""].filter(Boolean).join(", ") + ")" + (d.retry_at ? "; retry at " + clock(d.retry_at) : ""),
    "access.rejected": (d) => "An API call was rejected (HTTP " + d.http_status + (d.error_code ? " " + d.error_code : "") + ")" + (d.terminal ? ": " + reasonText(d.reason) : ""),
    "tokens.invalidated": (d) => "Stored tokens destroyed" + (d.provider_revoked ? " and revoked at the provider" : ""),
    "connection.updated": (d) => "Settings updated" + (d.scopes ? "; scopes " + d.scopes.join(" ") : ""),
    "connection.deleted": () => "Connection deleted",
  };
  // Where each transition leads, from the server's transition table.
  let TRANSITIONS = {};
  try { TRANSITIONS = JSON.parse(meta("tokenline-transitions") || "{}"); } catch (e) { TRANSITIONS = {}; }
  // The transition an event takes (domain.TransitionName): refresh.failed
  // and access.rejected depend on whether they were terminal.
  function transitionName(type, d) {
    if (type === "refresh.failed") return type + (d.terminal ? ".terminal" : ".transient");
    if (type === "access.rejected" && d.terminal) return type + ".terminal";
    return type;
  }

  let timelineCount = -1;
  async function refreshConnectionPage(id) {
    const c = await api("GET", "/v1/connections/" + id);
    const li = document.getElementById("connection");
    const json = JSON.stringify(c) + Math.floor(Date.now() / 30000);
    if (lastSeen.get(id) !== json) {
      renderConnection(li, c, true);
      li.id = "connection";
      lastSeen.set(id, json);
    }
    const evs = await api("GET", "/v1/connections/" + id + "/events");
    if (evs.length === timelineCount) return;
    timelineCount = evs.length;
    const ol = document.getElementById("timeline");
    ol.replaceChildren(...evs.map((e) => {
      const type = e.type.replace(/^tokenline\./, "");
      const d = e.data || {};
      const to = TRANSITIONS[transitionName(type, d)];
      const text = (DESCRIBE_EVENT[type] || (() => type))(d) + (to ? " → " + to : "");
      return el("li", { class: "timeline-event" + (to ? " state-change" : ""), "data-type": type, "data-event-id": e.id },
        el("time", { datetime: e.time, text: when(e.time) + ":" + pad(new Date(e.time).getSeconds()) }),
        el("span", { class: "event-type", text: type }),
        el("span", { class: "event-detail" }, text, el("span", { class: "event-actor", text: e.actor || "" })));
    }));
  }

  async function refreshSandbox() {
    const res = await fetch("/sandbox/admin/stats", { headers: { "Accept": "application/json" } });
    if (!res.ok) return;
    const s = await res.json();
    const dl = document.getElementById("sandbox-stats");
    const errs = Object.entries(s.errors || {}).map(([k, v]) => k + " " + v).join(", ") || "none";
    const rows = [
      ["Code exchanges", s.token_requests.authorization_code],
      ["Refresh requests", s.token_requests.refresh_token],
      ["Answered with tokens", s.successes],
      ["Answered with an error", s.failures],
      ["Errors", errs],
      ["Injected faults served", s.faults_injected],
      ["Grants revoked", s.revocations],
      ["Refresh token reuse", s.refresh_token_reuse],
    ];
    dl.replaceChildren(...rows.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { "data-stat": k, text: String(v) })]));
  }

  function wireSandbox() {
    const panel = document.getElementById("sandbox-panel");
    if (!panel) return;
    const result = document.getElementById("sandbox-result");
    const install = document.getElementById("sandbox-install-secret");
    let rotatedSecret = null;
    const post = async (path, body) => {
      const res = await fetch("/sandbox/admin/" + path, {
        method: "POST", headers: { "Content-Type": "application/json", "Accept": "application/json" },
        body: body === undefined ? "" : JSON.stringify(body),
      });
      if (!res.ok) throw new Error("HTTP " + res.status);
      return res.json().catch(() => ({}));
    };
    const actions = {
      "sandbox-revoke-grants": async () => { const r = await post("revoke-grants"); return "Revoked " + r.revoked + " grant(s). Connections notice at their next refresh or rejected API call."; },
      "sandbox-rotate-secret": async () => {
        const r = await post("rotate-client-secret");
        // Kept in memory only, never rendered: the operator's next step is to
        // give it to tokenline (PUT /v1/providers/sandbox/client-secret).
        rotatedSecret = r.client_secret || null;
        install.hidden = !rotatedSecret;
        return "Client secret rotated. tokenline's next refresh fails with invalid_client until it has the new secret.";
      },
      "sandbox-install-secret": async () => {
        if (!rotatedSecret) return "No rotated secret to install.";
        await api("PUT", "/v1/providers/sandbox/client-secret", { client_secret: rotatedSecret });
        rotatedSecret = null;
        install.hidden = true;
        return "tokenline has the new client secret. Reconnect the connections that went unauthenticated.";
      },
      "sandbox-expire-refresh": async () => { const r = await post("expire-refresh-tokens"); return "Expired " + r.expired + " refresh token(s)."; },
      "sandbox-inject-503": async () => { await post("faults", { status: 503, count: 3 }); return "The next 3 token requests get 503 (transient: retried with backoff)."; },
    };
    for (const [id, fn] of Object.entries(actions)) {
      const b = document.getElementById(id);
      b.addEventListener("click", async () => {
        b.disabled = true;
        try { result.textContent = await fn(); } catch (e) { result.textContent = "Failed: " + e.message; }
        b.disabled = false;
        refreshSandbox().catch(() => {});
      });
    }
    const consent = document.getElementById("sandbox-consent");
    consent.addEventListener("change", async () => {
      if (!consent.value) return;
      try { await post("consent", { mode: consent.value }); result.textContent = "Consent mode: " + consent.value + "."; }
      catch (e) { result.textContent = "Failed: " + e.message; }
    });
  }

  function wireCreate() {
    const form = document.getElementById("create-form");
    if (!form) return;
    const err = document.getElementById("create-error");
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      err.hidden = true;
      const provider = document.getElementById("create-provider").value.trim();
      const scopes = document.getElementById("create-scopes").value.split(/[\s,]+/).filter(Boolean);
      const key = document.getElementById("create-config-key").value.trim();
      const value = document.getElementById("create-config-value").value;
      const body = { provider, scopes };
      if (key) body.config = { [key]: value };
      const submit = document.getElementById("create-submit");
      submit.disabled = true;
      try {
        await api("POST", "/v1/connections", body);
        form.reset();
        document.getElementById("create-provider").value = provider;
        await refresh();
      } catch (e) {
        err.textContent = "Could not create the connection: " + e.message;
        err.hidden = false;
      } finally {
        submit.disabled = false;
      }
    });
  }

  let refresh = async () => {};

  function start() {
    const page = document.body.dataset.page;
    if (page === "connections") {
      refresh = refreshList;
      wireCreate();
    } else if (page === "connection") {
      const id = document.body.dataset.connectionId;
      refresh = () => refreshConnectionPage(id);
      const params = new URLSearchParams(window.location.search);
      if (params.get("authorisation") === "denied") {
        // The attempt ended without a grant: say why, from the connection's
        // reason (the user may have approved, and the code exchange failed).
        api("GET", "/v1/connections/" + id).then((c) => {
          const n = document.getElementById("notice");
          n.textContent = deniedNotice(c);
          n.hidden = false;
        }).catch(() => {});
      }
    } else {
      return;
    }
    wireSandbox();
    const tick = async () => {
      try {
        await refresh();
        if (document.getElementById("sandbox-panel")) await refreshSandbox();
        setLive(true);
      } catch (e) {
        setLive(false);
      }
    };
    tick();
    setInterval(tick, POLL_MS);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
