// The Targets panel: notification targets (webhooks, e-mail) and each
// one's delivery history, through the same API as scripts
// (GET/POST /v1/targets, DELETE /v1/targets/NAME,
// POST /v1/targets/NAME/test, GET /v1/targets/NAME/deliveries).
(() => {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const { api, table, q } = window.overlord.ui;
  let shown = "";

  async function loadTargets() {
    try {
      table($("targets"), (await api("GET", "/v1/targets")).text, (t, td) => {
        const hist = document.createElement("button"); hist.textContent = "history";
        hist.addEventListener("click", () => loadDeliveries(t.name));
        const test = document.createElement("button"); test.textContent = "test";
        test.addEventListener("click", async () => {
          try {
            const id = (await api("POST", `/v1/targets/${q(t.name)}/test`)).text.split("\n")[1];
            $("target-status").textContent = `Queued ${id} for ${t.name}.`;
            loadDeliveries(t.name);
          } catch (e) { $("target-status").textContent = e.message; }
        });
        const del = document.createElement("button"); del.textContent = "delete";
        del.addEventListener("click", async () => {
          try { await api("DELETE", `/v1/targets/${q(t.name)}`); loadTargets(); } catch (e) { $("target-status").textContent = e.message; }
        });
        td.append(hist, " ", test, " ", del);
      });
    } catch (e) { $("target-status").textContent = e.message; }
  }

  async function loadDeliveries(name) {
    shown = name;
    $("deliveries-title").textContent = `Delivery history of ${name}`;
    try { table($("target-deliveries"), (await api("GET", `/v1/targets/${q(name)}/deliveries`)).text); }
    catch (e) { $("target-status").textContent = e.message; }
  }

  $("target-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const kind = $("target-kind").value;
    const form = { name: $("target-name").value.trim(), kind };
    if (kind === "email") form.address = $("target-to").value.trim();
    else {
      form.url = $("target-to").value.trim();
      form.format = $("target-format").value;
      if ($("target-secret").value) form.secret = $("target-secret").value;
    }
    if ($("target-presence").checked) form.presence = "1";
    try {
      await api("POST", "/v1/targets", form);
      $("target-secret").value = "";
      $("target-status").textContent = `Created ${form.name}.`;
      loadTargets();
    } catch (e) { $("target-status").textContent = e.message; }
  });

  document.querySelector('button[data-view="targets"]').addEventListener("click", loadTargets);
  // While the panel is open, the history follows new attempts.
  setInterval(() => { if (shown && !$("view-targets").hidden && !$("app").hidden) loadDeliveries(shown); }, 2000);
})();
