// fnserve dashboard: live updates without page reloads. No inline scripts anywhere (the
// Content-Security-Policy forbids them): this file finds what to do from data- attributes.
//   [data-stream=URL]   an EventSource; "reset" replaces the element's content, "rows" replaces
//                       the children with the same data-id or puts new ones on top.
//   #task-live          a task page: long-polls the task's outputs (which also wakes when the
//                       task finishes) and fetches the task's details again when its state changes.
"use strict";

(function () {
  const TERMINAL = ["success", "failed", "cancelled"];

  function setLive(state) {
    const el = document.getElementById("live-status");
    if (el) el.dataset.state = state;
  }

  function fragment(html) {
    const template = document.createElement("template");
    template.innerHTML = html.trim();  // server-rendered by Jinja2: every value is escaped
    return template.content;
  }

  function applyRows(target, rows) {
    const max = parseInt(target.dataset.maxRows || "0", 10);
    for (const row of rows) {
      const node = fragment(row.html).firstElementChild;
      const old = Array.from(target.children).find((el) => el.dataset.id === row.id);
      if (old) old.replaceWith(node); else target.prepend(node);
    }
    const empty = target.querySelector("[data-empty]");
    if (empty && target.children.length > 1) empty.remove();
    while (max && target.children.length > max) target.lastElementChild.remove();
  }

  function follow(target) {
    const source = new EventSource(target.dataset.stream);
    source.onopen = () => setLive("live");
    source.onerror = () => {
      setLive("reconnecting");
      // An HTTP error (429 too many open streams, 503 busy) closes an EventSource for good.
      if (source.readyState === EventSource.CLOSED) setTimeout(() => follow(target), 5000);
    };
    source.addEventListener("reset", (e) => {
      const html = JSON.parse(e.data).html;
      if (html || !target.querySelector("[data-empty]")) target.replaceChildren(fragment(html));
    });
    source.addEventListener("rows", (e) => applyRows(target, JSON.parse(e.data)));
  }

  function appendOutput(list, out) {
    const li = document.createElement("li");
    const when = document.createElement("span");
    when.className = "t";
    when.textContent = new Date(out.time * 1000).toISOString().slice(11, 23);
    li.append(when);
    if (out.truncated) {
      li.className = "truncated";
      li.append(out.message);
    } else {
      li.append(JSON.stringify(out.values));  // text, never markup
    }
    list.append(li);
  }

  const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  async function refreshDetail(box) {
    const resp = await fetch(box.dataset.detailUrl, { credentials: "same-origin" });
    if (resp.ok) document.getElementById("task-detail").replaceChildren(fragment(await resp.text()));
  }

  async function followTask(box) {
    const list = document.getElementById("outputs");
    let since = "";
    let state = box.dataset.state;
    for (;;) {
      let page;
      try {
        const url = box.dataset.outputsUrl + "?wait=25" + (since ? "&since=" + encodeURIComponent(since) : "");
        const resp = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
        if (resp.status === 401 || resp.status === 403 || resp.status === 404) { setLive("static"); return; }
        if (!resp.ok) throw new Error("HTTP " + resp.status);
        page = await resp.json();
        setLive("live");
      } catch (err) {
        setLive("reconnecting");
        await pause(2000);  // the service is away: try again shortly
        continue;
      }
      since = page.cursor;
      page.outputs.forEach((out) => appendOutput(list, out));
      if (page.state !== state) {
        state = page.state;
        box.dataset.state = state;
        await refreshDetail(box);
      }
      if (page.complete && TERMINAL.includes(state)) { setLive("static"); return; }
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    document.querySelectorAll("[data-stream]").forEach(follow);
    const task = document.getElementById("task-live");
    if (task) followTask(task);
  });
})();
