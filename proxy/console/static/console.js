// The operator console. Every string that comes from the proxy's data (prompts, models, aliases)
// is put into the page with textContent or as an attribute value set through the DOM: never as
// HTML. The CSP forbids inline script, so this file is the page's only code.
"use strict";

const csrf = document.querySelector('meta[name="csrf-token"]').content;
const state = { offset: 0, limit: 24 };

function el(tag, props, children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props || {})) {
    if (name === "text") node.textContent = value;
    else if (name === "class") node.className = value;
    else node.setAttribute(name, value);
  }
  for (const child of children || []) node.append(child);
  return node;
}

function status(message) {
  document.getElementById("status").textContent = message || "";
}

async function api(method, path, body) {
  const options = { method, headers: { "X-CSRF-Token": csrf }, credentials: "same-origin" };
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const response = await fetch(path, options);
  if (response.status === 401) {
    window.location.assign("/ui");
    throw new Error("logged out");
  }
  const data = await response.json();
  if (!response.ok) throw new Error((data.error && data.error.message) || response.statusText);
  return data;
}

function usd(value) {
  if (value === null || value === undefined) return "-";
  // Micro-USD exact (spend is kept in micro-USD): "$4.999973", "$5.00", "$0.000027".
  const text = String(Number(Number(value).toFixed(6)));
  const [whole, fraction = ""] = text.split(".");
  return "$" + whole + "." + fraction.padEnd(2, "0");
}

function age(seconds) {
  if (seconds < 60) return seconds + " s";
  if (seconds < 3600) return Math.floor(seconds / 60) + " min";
  if (seconds < 86400) return Math.floor(seconds / 3600) + " h";
  return Math.floor(seconds / 86400) + " d";
}

function bytes(count) {
  if (count < 1024) return count + " B";
  if (count < 1048576) return (count / 1024).toFixed(1) + " KB";
  return (count / 1048576).toFixed(2) + " MB";
}

// Overview

function figure(label, value) {
  return el("div", { class: "figure" }, [el("b", { text: value }), el("span", { text: label })]);
}

function topTable(title, rows) {
  const body = el("tbody", {}, rows.map((row) => el("tr", {}, [
    el("td", { text: row.name }), el("td", { text: String(row.requests) }),
    el("td", { text: row.hit_ratio === null ? "-" : Math.round(row.hit_ratio * 100) + "%" }),
    el("td", { text: usd(row.spent_usd) }), el("td", { text: usd(row.saved_usd) }),
  ])));
  const head = el("tr", {}, [title, "requests", "hit ratio", "spent", "saved"].map((t) => el("th", { text: t })));
  return el("table", {}, [el("thead", {}, [head]), body]);
}

async function showOverview() {
  const data = await api("GET", "/ui/api/overview");
  const windows = document.querySelector("#overview .windows");
  windows.replaceChildren(...[["Last hour", data.hour], ["Last day", data.day]].map(([title, w]) =>
    el("div", { class: "window", "data-window": String(w.seconds) }, [
      el("h2", { text: title }),
      el("div", { class: "figures" }, [
        figure("requests", String(w.requests)),
        figure("hit ratio", w.hit_ratio === null ? "-" : Math.round(w.hit_ratio * 100) + "%"),
        figure("spent", usd(w.spent_usd)),
        figure("saved", usd(w.saved_usd)),
      ]),
      topTable("model", w.top_models),
      topTable("key", w.top_keys),
    ])));
}

// Images

function card(row) {
  const ttl = Math.max(60, row.ttl_s);
  const thumb = el("img", {
    class: "thumb", alt: "thumbnail", loading: "lazy",
    src: `/ui/api/thumbs/${row.sha256}?size=${row.blob_size}&ttl=${ttl}`,
  });
  thumb.addEventListener("click", () => {
    const box = document.getElementById("lightbox");
    box.querySelector("img").src = `/ui/api/blobs/${row.sha256}?size=${row.blob_size}`;
    box.hidden = false;
  });
  const purge = el("button", { type: "button", class: "purge", text: "Purge" });
  purge.addEventListener("click", async () => {
    purge.disabled = true;
    try {
      await api("POST", "/ui/api/images/purge", { id: row.id });
      status("Purged: the next identical request is a MISS.");
      await showImages();
    } catch (error) {
      purge.disabled = false;
      status(error.message);
    }
  });
  return el("div", { class: "card", "data-id": row.id }, [
    thumb,
    el("div", { class: "model", text: row.model }),
    el("div", { class: "prompt", text: row.prompt }),
    el("div", { class: "facts", text:
      `${age(row.age_s)} old · ${row.hits} hits · ${bytes(row.size)} · saved ${usd(row.saved_usd)}` }),
    el("div", { class: "facts", text: `${row.namespace} · ${row.key.slice(0, 12)}…` }),
    purge,
  ]);
}

async function showImages() {
  const data = await api("GET", `/ui/api/images?offset=${state.offset}&limit=${state.limit}`);
  document.getElementById("gallery").replaceChildren(...data.data.map(card));
  const last = Math.min(data.total, state.offset + data.data.length);
  document.getElementById("page-info").textContent =
    data.total ? `${state.offset + 1}–${last} of ${data.total}` : "no cached images yet";
  document.getElementById("newer").disabled = state.offset === 0;
  document.getElementById("older").disabled = data.next_offset === null;
}

// Keys

function keyRow(key) {
  const budget = el("input", { value: key.budget_usd === null ? "" : String(key.budget_usd), "aria-label": "budget USD" });
  const save = el("button", { type: "button", class: "save-budget", text: "Set budget" });
  save.addEventListener("click", async () => {
    const value = budget.value.trim();
    try {
      await api("PATCH", `/ui/api/keys/${encodeURIComponent(key.id)}`, { budget_usd: value === "" ? null : Number(value) });
      status("Budget changed.");
      await showKeys();
    } catch (error) { status(error.message); }
  });
  const revoke = el("button", { type: "button", class: "revoke", text: "Revoke" });
  revoke.disabled = key.revoked;
  revoke.addEventListener("click", async () => {
    try {
      await api("POST", `/ui/api/keys/${encodeURIComponent(key.id)}/revoke`);
      status("Key revoked.");
      await showKeys();
    } catch (error) { status(error.message); }
  });
  return el("tr", { "data-key": key.id }, [
    el("td", { class: "alias", text: key.alias }),
    el("td", {}, [budget]),
    el("td", { text: key.period }),
    el("td", { class: "spend", text: usd(key.spend_usd) }),
    el("td", { class: "remaining", text: usd(key.remaining_usd) }),
    el("td", { text: key.resets_at ? new Date(key.resets_at).toLocaleString() : "-" }),
    el("td", { text: key.rpm === null ? "-" : String(key.rpm) }),
    el("td", { class: "enabled", text: key.revoked ? "revoked" : key.enabled ? "yes" : "no" }),
    el("td", {}, [save, revoke]),
  ]);
}

async function showKeys() {
  const data = await api("GET", "/ui/api/keys");
  document.querySelector("#key-table tbody").replaceChildren(...data.data.map(keyRow));
}

document.getElementById("create-key").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = new FormData(event.target);
  const body = { alias: form.get("alias"), period: form.get("period") };
  const budget = String(form.get("budget_usd")).trim();
  const rpm = String(form.get("rpm")).trim();
  if (budget !== "") body.budget_usd = Number(budget);
  if (rpm !== "") body.rpm = Number(rpm);
  try {
    const key = await api("POST", "/ui/api/keys", body);
    document.getElementById("secret").textContent = key.secret;
    document.getElementById("new-secret").hidden = false;
    event.target.reset();
    status("Key created.");
    await showKeys();
  } catch (error) { status(error.message); }
});

// Navigation

const views = { overview: showOverview, images: showImages, keys: showKeys };

async function show(name) {
  for (const view of Object.keys(views)) document.getElementById(view).hidden = view !== name;
  for (const button of document.querySelectorAll("nav button")) {
    button.classList.toggle("active", button.dataset.view === name);
  }
  if (name !== "keys") document.getElementById("new-secret").hidden = true;
  status("");
  try { await views[name](); } catch (error) { status(error.message); }
  document.body.dataset.view = name;
}

for (const button of document.querySelectorAll("nav button")) {
  button.addEventListener("click", () => { window.location.hash = button.dataset.view; });
}
window.addEventListener("hashchange", () => show(window.location.hash.slice(1) in views ? window.location.hash.slice(1) : "overview"));
document.getElementById("newer").addEventListener("click", () => { state.offset = Math.max(0, state.offset - state.limit); showImages(); });
document.getElementById("older").addEventListener("click", () => { state.offset += state.limit; showImages(); });
document.getElementById("lightbox").addEventListener("click", (event) => { event.currentTarget.hidden = true; });
document.getElementById("logout").addEventListener("click", async () => {
  await fetch("/ui/logout", { method: "POST", headers: { "X-CSRF-Token": csrf }, credentials: "same-origin" });
  window.location.assign("/ui");
});

show(window.location.hash.slice(1) in views ? window.location.hash.slice(1) : "overview");
