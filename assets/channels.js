// The Channels panel: the channels the user may read, each with its
// description (GET /v1/channels); one opened shows its members with their
// labels (GET /v1/channels/NAME/members), the alerts on it (GET
// /v1/alerts, device channel:NAME) and its latest items, newest first
// (GET /v1/channels/NAME/items?after=next-21&limit=20).
(() => {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const { api, table, q, records, tr } = window.overlord.ui;
  const LATEST = 20;
  let shown = "";

  async function loadChannels() {
    try {
      const text = (await api("GET", "/v1/channels")).text;
      table($("channels"), text, (c, td) => {
        const open = document.createElement("button"); open.textContent = "open";
        open.addEventListener("click", () => loadChannel(c.name));
        td.append(open);
      });
      return records(text);
    } catch (e) { $("channel-status").textContent = e.message; return []; }
  }

  async function loadChannel(name) {
    shown = name;
    try {
      const c = (await loadChannels()).find((r) => r.name === name);
      if (!c) { $("channel").hidden = true; $("channel-status").textContent = `No channel ${name}.`; return; }
      $("channel-title").textContent = name;
      $("channel-description").textContent = c.description;
      table($("channel-members"), (await api("GET", `/v1/channels/${q(name)}/members`)).text);
      const after = Math.max(0, +c.next - 1 - LATEST);
      const items = (await api("GET", `/v1/channels/${q(name)}/items?after=${after}&limit=${LATEST}`)).text;
      table($("channel-items"), items);
      const body = $("channel-items").tBodies[0];
      body.replaceChildren(...[...body.rows].reverse()); // newest first
      $("channel").hidden = false;
      $("channel-status").textContent = "";
      const alerts = records((await api("GET", "/v1/alerts")).text).filter((a) => a.device === "channel:" + name);
      $("channel-alerts").tBodies[0].replaceChildren(...alerts.map((a) => tr([a.name, a.min, a.max, a.message, a.state])));
      $("channel-alerts-none").hidden = alerts.length > 0;
      $("channel-alerts").hidden = alerts.length === 0;
    } catch (e) { $("channel-status").textContent = e.message; }
  }

  document.querySelector('button[data-view="channels"]').addEventListener("click", () => (shown ? loadChannel(shown) : loadChannels()));
  // While the panel is open, the items follow the channel.
  setInterval(() => { if (shown && !$("view-channels").hidden && !$("app").hidden) loadChannel(shown); }, 3000);
})();
