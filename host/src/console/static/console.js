// Keyward console: the only script, served from our origin (the CSP allows nothing else).
// Test connection on the Add group form, and sync with live progress. Every call sends the
// session's CSRF token from the page's <meta name="csrf-token">.
"use strict";

function csrf() {
  const m = document.querySelector('meta[name="csrf-token"]');
  return m ? m.content : "";
}

async function call(method, url, body) {
  const init = { method, headers: { "x-csrf-token": csrf() }, credentials: "same-origin" };
  if (body !== undefined) {
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const r = await fetch(url, init);
  const data = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(data.message || r.statusText);
  return data;
}

async function testConnection(button) {
  const form = button.closest("form");
  const out = form.querySelector('[data-testid="connection-status"]');
  const fields = {};
  for (const el of form.querySelectorAll("fieldset input, fieldset textarea")) {
    if (el.type === "checkbox") { if (el.checked) fields[el.name] = "on"; }
    else if (el.name) fields[el.name] = el.value;
  }
  out.textContent = "Testing…";
  try {
    const s = await call("POST", button.dataset.url, fields);
    out.textContent = (s.status === "Connected" ? "Connected" : "Not Connected: " + (s.reason || "")) +
      (s.warnings || []).map((w) => ". Warning: " + w).join("");
    out.dataset.status = s.status;
    const select = form.querySelector('select[name="instance"]');
    if (select && s.instances && s.instances.length) {
      const labels = { STANDARD: "Key Vault, Standard", PREMIUM: "Key Vault, Premium", MANAGED: "Managed HSM" };
      select.replaceChildren(...s.instances.map((i) => {
        const o = new Option(i.name + " — " + (labels[i.vault_type] || i.vault_type) + " (" + i.uri + ")", i.uri);
        o.dataset.kind = i.vault_type;
        return o;
      }));
      // The kind of the chosen instance goes with it.
      const kind = form.querySelector('input[name="key_vault_type"]');
      if (kind) {
        const pick = () => { kind.value = select.selectedOptions[0] ? select.selectedOptions[0].dataset.kind : ""; };
        select.onchange = pick;
        pick();
      }
    }
  } catch (e) {
    out.textContent = "Not Connected: " + e.message;
    out.dataset.status = "Not Connected";
  }
}

async function sync(button) {
  const out = document.querySelector('[data-testid="sync-progress"]');
  button.disabled = true;
  try {
    let scan = await call("POST", button.dataset.url + "/sync");
    const show = (s) => {
      const p = s.progress || {};
      out.textContent = (s.status === "running" ? "Syncing: " : "Sync " + s.status + ": ") +
        (p.seen || 0) + " keys seen, " + (p.added || 0) + " added, " + (p.failed || 0) + " failed";
      out.dataset.status = s.status;
    };
    show(scan);
    while (scan.status === "running") {
      await new Promise((r) => setTimeout(r, 300));
      scan = await call("GET", button.dataset.url + "/scans/" + encodeURIComponent(scan.scan_id));
      show(scan);
    }
  } catch (e) {
    out.textContent = "Sync failed: " + e.message;
    out.dataset.status = "failed";
  } finally {
    button.disabled = false;
  }
}

document.addEventListener("click", (ev) => {
  const b = ev.target.closest("button[data-action]");
  if (!b) return;
  ev.preventDefault();
  if (b.dataset.action === "test-connection") testConnection(b);
  if (b.dataset.action === "sync") sync(b);
});
