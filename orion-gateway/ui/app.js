// Orion's dashboard: plain JavaScript over the REST API and the WebSocket stream, no build
// step. Every value from the server is put into the page as text, never as HTML.

import { barChart, dependencyGraph, histogram, lineChart, timeline as stepChart } from "/ui/charts.js";

const TERMINAL = ["completed", "failed", "cancelled"];
const BUILTIN_KINDS = ["analyze", "develop", "review", "test", "design", "ci", "release", "auto"];
const PRIORITIES = ["normal", "low", "high", "urgent"];
const STATUSES = ["queued", "assigned", "running", "awaiting_review", "awaiting_approval", "completed", "failed", "cancelled"];

const session = { token: localStorage.getItem("orion.token") || "", me: null, plugins: null };
let leave = () => {}; // closes what the current page opened (its WebSocket)

/** An element: `h("a", { href: "#/x" }, "text", child)`; `on*` attributes are listeners. */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else el.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** The children that are present (not `undefined`, `null` or `false`): the DOM would show an
 * absent one as the text "null". */
const present = (children) => children.flat().filter((c) => c !== undefined && c !== null && c !== false);

/** Appends `children` to `parent`, skipping the absent ones. */
function put(parent, ...children) {
  parent.append(...present(children));
}

/** Replaces `parent`'s children with `children`, skipping the absent ones. */
function replace(parent, ...children) {
  parent.replaceChildren(...present(children));
}

/** Short ids for the UUIDv7s shown together: the random tail, not the head (the head is the
 * time, the same for ids made in the same minute), as long as needed to tell them apart. */
function shortIds(ids) {
  const unique = [...new Set(ids)];
  for (let n = 8; n < 32; n += 4) {
    const tails = unique.map((id) => id.replaceAll("-", "").slice(-n));
    if (new Set(tails).size === unique.length) return new Map(unique.map((id, i) => [id, tails[i]]));
  }
  return new Map(unique.map((id) => [id, id]));
}

const shortId = (id) => shortIds([id]).get(id);

function say(text) {
  const status = document.getElementById("status");
  status.textContent = text;
  clearTimeout(say.timer);
  say.timer = setTimeout(() => (status.textContent = ""), 5000);
}

class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.code = problem.code;
  }
}

async function api(path, options = {}) {
  const headers = { accept: "application/json" };
  if (session.token) headers.authorization = `Bearer ${session.token}`;
  if (options.body !== undefined) headers["content-type"] = "application/json";
  const response = await fetch(path, {
    method: options.method || "GET",
    headers,
    body: options.body === undefined ? undefined : JSON.stringify(options.body),
  });
  const text = await response.text();
  const data = text ? JSON.parse(text) : null;
  if (!response.ok) {
    if (response.status === 401) location.hash = "#/signin";
    throw new ApiError(response.status, data || {});
  }
  return data;
}

const badge = (text) => h("span", { class: `badge ${text}` }, text);
const when = (iso) => (iso ? new Date(iso).toLocaleString() : "");
const dollars = (n) => `$${Number(n || 0).toFixed(4)}`;

/** A table in a region that scrolls sideways on a narrow screen, and that a keyboard can
 * reach to scroll it. */
function table(columns, rows, caption) {
  const name = caption || `Table of ${columns.map(([title]) => title).filter(Boolean).join(", ")}`;
  return h("div", { class: "scroll", tabindex: "0", role: "region", "aria-label": name },
    h("table", {},
      caption ? h("caption", { class: "muted" }, caption) : null,
      h("thead", {}, h("tr", {}, columns.map(([title]) => h("th", { scope: "col" }, title)))),
      h("tbody", {}, rows.map((row) => h("tr", {}, columns.map(([, cell]) => h("td", {}, cell(row))))))));
}

// ---- sign-in -------------------------------------------------------------------------

function signinPage(main) {
  const input = h("input", { id: "token", name: "token", type: "password", autocomplete: "off", required: true });
  const error = h("p", { class: "error", role: "alert" });
  put(main, 
    h("h1", {}, "Sign in"),
    h("form", {
      class: "grid",
      onsubmit: async (e) => {
        e.preventDefault();
        session.token = input.value.trim();
        try {
          await loadMe();
          localStorage.setItem("orion.token", session.token);
          location.hash = "#/tasks";
        } catch (err) {
          error.textContent = err.message;
        }
      },
    },
      h("label", { for: "token" }, "Token or API key", input),
      h("button", { type: "submit" }, "Sign in")),
    error,
    h("p", { class: "muted" }, "A JWT from your identity provider or `orion token`, or an API key (orion_…)."));
  input.focus();
}

async function loadMe() {
  session.me = await api("/v1/me");
  const who = document.getElementById("who");
  who.textContent = `${session.me.subject} · ${session.me.role}`;
  document.getElementById("signout").hidden = session.me.subject === "anonymous";
}

// ---- tasks ---------------------------------------------------------------------------

function kindOptions() {
  return [...BUILTIN_KINDS, ...Object.keys(session.plugins)];
}

function submitForm() {
  const field = (name, label, control) => {
    control.id = `f-${name}`;
    control.name = name;
    return h("label", { for: control.id }, label, control);
  };
  const kind = h("select", {}, kindOptions().map((k) => h("option", { value: k }, k)));
  const input = h("textarea", { placeholder: '{"text": "…"}' });
  const inputLabel = field("input", "Input (JSON, declared kinds)", input);
  const showInput = () => (inputLabel.hidden = !(kind.value in session.plugins) && kind.value !== "auto");
  kind.addEventListener("change", showInput);
  const form = h("form", {
    class: "grid",
    "aria-label": "Submit a task",
    onsubmit: async (e) => {
      e.preventDefault();
      const data = new FormData(form);
      const body = { kind: data.get("kind"), repo: data.get("repo") };
      for (const key of ["prompt", "ref", "diff"]) if (data.get(key)) body[key] = data.get(key);
      if (data.get("priority") !== "normal") body.priority = data.get("priority");
      if (data.get("budget_usd")) body.budget_usd = Number(data.get("budget_usd"));
      try {
        if (!inputLabel.hidden && data.get("input")) body.input = JSON.parse(data.get("input"));
        const task = await api("/v1/tasks", { method: "POST", body });
        say(`Submitted ${task.kind} task`);
        location.hash = `#/tasks/${task.id}`;
      } catch (err) {
        say(`Not submitted: ${err.message}`);
      }
    },
  },
    field("kind", "Kind", kind),
    field("repo", "Repository (path or git URL)", h("input", { required: true })),
    field("prompt", "Prompt", h("textarea")),
    field("ref", "Ref", h("input")),
    field("priority", "Priority", h("select", {}, PRIORITIES.map((p) => h("option", { value: p }, p)))),
    field("diff", "Diff (base..head)", h("input")),
    field("budget_usd", "Budget (USD)", h("input", { type: "number", step: "0.01", min: "0" })),
    inputLabel,
    h("button", { type: "submit" }, "Submit"));
  showInput();
  return form;
}

async function tasksPage(main, params) {
  const kind = params.get("kind") || "";
  const status = params.get("status") || "";
  const filter = (name, values, current) =>
    h("label", { for: `filter-${name}` }, name,
      h("select", {
        id: `filter-${name}`,
        onchange: (e) => {
          params.set(name, e.target.value);
          if (!e.target.value) params.delete(name);
          location.hash = `#/tasks?${params}`;
        },
      }, h("option", { value: "" }, "any"), values.map((v) => h("option", { value: v, selected: v === current }, v))));
  const query = new URLSearchParams({ limit: "50" });
  if (kind) query.set("kind", kind);
  if (status) query.set("status", status);
  const list = h("section", { "aria-label": "Task list", "aria-live": "polite" });
  const refresh = async () => {
    const page = await api(`/v1/tasks?${query}`);
    const short = shortIds(page.items.map((t) => t.id));
    replace(list, page.items.length === 0
      ? h("p", { class: "muted" }, "No tasks.")
      : table([
        ["Task", (t) => h("a", { href: `#/tasks/${t.id}`, title: t.id }, short.get(t.id))],
        ["Kind", (t) => t.kind],
        ["Status", (t) => badge(t.status)],
        ["Repository", (t) => t.repo],
        ["Priority", (t) => t.priority],
        ["Updated", (t) => when(t.updated_at)],
      ], page.items));
    return page;
  };
  const page = await refresh();
  put(main, 
    h("h1", {}, "Tasks"),
    session.me.may.submit ? [h("h2", {}, "Submit a task"), submitForm()] : null,
    h("h2", {}, "All tasks"),
    h("form", { class: "grid", "aria-label": "Filter tasks" }, filter("kind", kindOptions(), kind), filter("status", STATUSES, status)),
    list);
  // The list follows the stream: status changes redraw it (the form is left alone).
  let pending = null;
  leave = follow("", 0, () => {
    pending ??= setTimeout(() => {
      pending = null;
      refresh().catch(() => {});
    }, 250);
  });
}

/** Opens the event stream (resuming after `since`), calling `onEvent` for each event; on a
 * dropped connection it reconnects from the last event seen. Returns what closes it. */
function follow(task, since, onEvent) {
  let last = since;
  let socket;
  let closed = false;
  let retry = 500;
  const open = () => {
    const query = new URLSearchParams();
    if (task) query.set("task", task);
    if (last) query.set("since", String(last));
    if (session.token) query.set("access_token", session.token);
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    socket = new WebSocket(`${scheme}://${location.host}/v1/stream?${query}`);
    socket.onopen = () => (retry = 500);
    socket.onmessage = (message) => {
      const event = JSON.parse(message.data);
      if (event.seq <= last) return;
      last = event.seq;
      onEvent(event);
    };
    socket.onclose = () => {
      if (closed) return;
      setTimeout(open, retry);
      retry = Math.min(retry * 2, 10000);
    };
  };
  open();
  return () => {
    closed = true;
    socket.close();
  };
}

function eventItem(event) {
  const data = event.data || {};
  const detail = data.message || data.why || data.chosen?.why || data.code && `${data.code}: ${data.message || ""}` || data.agent && `agent ${data.agent}` || "";
  return h("li", { "data-type": event.type },
    h("time", { datetime: event.at }, when(event.at)),
    badge(event.type), " ",
    detail,
    data.pull ? h("span", {}, " ", h("a", { href: `#/pulls/${data.pull}` }, "pull request")) : null,
    event.node ? h("span", { class: "muted" }, ` · ${event.node}`) : null);
}

async function taskPage(main, id) {
  // The events first, then the task: the task read is at least as new as the last event
  // shown, and the stream brings everything after that event.
  const events = await api(`/v1/tasks/${id}/events`);
  const task = await api(`/v1/tasks/${id}`);
  const head = h("div");
  const timeline = h("ol", { class: "timeline", "aria-label": "Events", "aria-live": "polite" });
  const result = h("section", { "aria-label": "Result" });
  const charts = h("section", { "aria-label": "Charts" });
  const seen = [...events.items];
  const draw = (task) => {
    replace(head,
      h("h1", {}, `${task.kind} task `, badge(task.status)),
      h("p", { class: "muted" }, `${task.repo} · ${task.priority} · attempts ${task.attempts} · created ${when(task.created_at)}`),
      task.prompt ? h("p", {}, task.prompt) : null,
      session.me.may.operate && !TERMINAL.includes(task.status)
        ? h("button", { class: "secondary", type: "button", onclick: () => cancel(task.id) }, "Cancel task") : null,
      usageLine(task.usage));
    replace(result, ...renderResult(task));
  };
  draw(task);
  events.items.forEach((e) => timeline.append(eventItem(e)));
  put(main, head, h("h2", {}, "Events"), timeline, charts, result);
  drawCharts(charts, task, seen).catch(() => {});
  const last = events.items.length ? events.items[events.items.length - 1].seq : 0;
  leave = follow(id, last, async (event) => {
    timeline.append(eventItem(event));
    seen.push(event);
    const now = await api(`/v1/tasks/${id}`);
    draw(now);
    if (event.status) drawCharts(charts, now, seen).catch(() => {});
  });
}

/** The time a task spent in each status, from its events: [{ name, start, end }]. */
function stepsOf(task, events) {
  const changes = events.filter((e) => e.status).map((e) => ({ status: e.status, at: new Date(e.at).getTime() }));
  const end = TERMINAL.includes(task.status) ? null : Date.now();
  const steps = [];
  changes.forEach((c, i) => {
    if (TERMINAL.includes(c.status)) return;
    const until = i + 1 < changes.length ? changes[i + 1].at : end;
    if (until !== null) steps.push({ name: c.status.replace("_", " "), start: c.at, end: until });
  });
  return steps;
}

/** The task's charts: its timeline; for a whole-repository analysis, the repository's trend
 * and the histogram of its functions' complexity. */
async function drawCharts(section, task, events) {
  const parts = [];
  const steps = stepsOf(task, events);
  if (steps.length) parts.push(h("h2", {}, "Timeline"), stepChart({ label: "Time in each status", steps }));
  if (task.kind === "analyze" && task.status === "completed" && task.result?.totals && !task.diff) {
    const [trend, functions] = await Promise.all([
      api(`/v1/repos/${encodeURIComponent(task.repo)}/trend`),
      api(`/v1/tasks/${task.id}/functions?limit=2000`).catch(() => ({ items: [], count: 0 })),
    ]);
    const points = (trend.points || []).map((p) => ({ at: p.at, values: { debt: p.summary.debt_minutes, "average cyclomatic": p.summary.average_cyclomatic, "max cyclomatic": p.summary.max_cyclomatic } }));
    parts.push(h("h2", {}, "Trend of this repository"),
      lineChart({ label: "Technical debt over time", unit: "minutes", points, names: ["debt"] }),
      lineChart({ label: "Complexity over time", unit: "cyclomatic", points, names: ["average cyclomatic", "max cyclomatic"], format: (v) => String(+v.toFixed(2)) }));
    if (functions.items.length) {
      parts.push(h("h2", {}, "Function complexity"),
        histogram({ label: "Functions by cyclomatic complexity", unit: "cyclomatic complexity", values: functions.items.map((f) => f.cyclomatic), edges: [1, 2, 3, 5, 8, 11, 21, 51] }));
      if (functions.count > functions.items.length) parts.push(h("p", { class: "muted" }, `The first ${functions.items.length} of ${functions.count} functions.`));
    }
  }
  replace(section, ...parts);
}

async function cancel(id) {
  try {
    await api(`/v1/tasks/${id}/cancel`, { method: "POST" });
    say("Cancelled");
  } catch (err) {
    say(err.message);
  }
}

function usageLine(usage) {
  if (!usage || !usage.calls) return null;
  return h("p", { class: "muted" }, `Model usage: ${usage.calls} calls, ${usage.prompt_tokens} prompt + ${usage.completion_tokens} completion tokens, ${dollars(usage.cost_usd)}`);
}

function renderResult(task) {
  if (task.error) return [h("h2", {}, "Failure"), h("p", { class: "error" }, `${task.error.code}: ${task.error.message}`)];
  const r = task.result;
  if (!r) return [];
  const parts = [h("h2", {}, "Result")];
  if (r.totals) {
    parts.push(table([
      ["Language", ([lang]) => lang],
      ["Files", ([, t]) => t.files],
      ["Lines", ([, t]) => t.lines],
      ["Code", ([, t]) => t.code],
      ["Functions", ([, t]) => t.functions],
    ], Object.entries(r.totals), "Totals by language"));
    if (r.hotspots?.length) {
      parts.push(h("h2", {}, "Hotspots"), table([
        ["File", (s) => s.path], ["Churn", (s) => s.churn], ["Cyclomatic", (s) => s.cyclomatic], ["Score", (s) => s.score],
      ], r.hotspots.slice(0, 15)));
    }
    if (r.complex_functions?.length) {
      parts.push(h("h2", {}, "Most complex functions"), table([
        ["Function", (f) => f.name], ["File", (f) => f.path], ["Cyclomatic", (f) => f.cyclomatic], ["Cognitive", (f) => f.cognitive],
      ], r.complex_functions.slice(0, 15)));
    }
    if (r.suggestions?.length) {
      parts.push(h("h2", {}, "Suggested follow-ups"), h("ul", {}, r.suggestions.map((s) => h("li", {}, s.title))));
    }
  } else if (r.languages) {
    for (const [lang, graph] of Object.entries(r.languages)) {
      parts.push(h("h2", {}, `Dependencies (${lang})`), dependencyGraph(lang, graph));
      if (graph.cycles?.length) parts.push(h("p", { class: "error" }, `Cycles: ${graph.cycles.map((c) => c.join(" → ")).join("; ")}`));
    }
  }
  const output = r.output ?? r.run?.output;
  if (typeof output === "string") parts.push(h("h2", {}, r.passed === false ? "Test output (failed)" : "Test output"), h("pre", {}, output));
  parts.push(h("details", {}, h("summary", {}, "Raw result"), h("pre", {}, JSON.stringify(r, null, 2))));
  return parts;
}

// ---- pull requests ---------------------------------------------------------------------

async function pullsPage(main) {
  const page = await api("/v1/pulls");
  const short = shortIds(page.items.map((p) => p.task_id));
  put(main, h("h1", {}, "Pull requests"), page.items.length === 0 ? h("p", { class: "muted" }, "No pull requests.") : table([
    ["Pull request", (p) => h("a", { href: `#/pulls/${p.id}` }, p.branch)],
    ["State", (p) => badge(p.state)],
    ["Repository", (p) => p.repo],
    ["Change", (p) => `${p.files_changed} files, +${p.insertions} −${p.deletions}`],
    ["Task", (p) => h("a", { href: `#/tasks/${p.task_id}`, title: p.task_id }, short.get(p.task_id))],
  ], page.items));
}

const KEYWORDS = /\b(fn|let|mut|pub|use|impl|struct|enum|match|if|else|for|while|return|def|class|import|from|function|const|var|async|await|package|func|public|private|static)\b/g;

/** One line of code, highlighted: keywords, strings, comments (as text nodes and spans). */
function highlight(code) {
  const out = [];
  const comment = code.search(/(\/\/|#)/);
  const body = comment >= 0 ? code.slice(0, comment) : code;
  let last = 0;
  for (const m of body.matchAll(new RegExp(`${KEYWORDS.source}|"[^"]*"|'[^']*'`, "g"))) {
    out.push(body.slice(last, m.index));
    out.push(h("span", { class: m[0].startsWith('"') || m[0].startsWith("'") ? "str" : "kw" }, m[0]));
    last = m.index + m[0].length;
  }
  out.push(body.slice(last));
  if (comment >= 0) out.push(h("span", { class: "com" }, code.slice(comment)));
  return out;
}

function renderDiff(diff) {
  const pre = h("pre", { class: "diff", "aria-label": "Diff" });
  for (const line of diff.split("\n")) {
    if (line.startsWith("diff --git") || line.startsWith("+++") || line.startsWith("---")) pre.append(h("span", { class: "file" }, line));
    else if (line.startsWith("@@")) pre.append(h("span", { class: "hunk" }, line));
    else if (line.startsWith("+")) pre.append(h("span", { class: "add" }, "+", highlight(line.slice(1))));
    else if (line.startsWith("-")) pre.append(h("span", { class: "del" }, "-", highlight(line.slice(1))));
    else pre.append(...highlight(line), "\n");
  }
  return pre;
}

/** Per file: lines added and removed, read off the patch. */
function diffMetrics(diff) {
  const files = new Map();
  let current = null;
  for (const line of diff.split("\n")) {
    if (line.startsWith("+++ ")) {
      current = line.replace(/^\+\+\+ (b\/)?/, "");
      files.set(current, { added: 0, removed: 0 });
    } else if (current && line.startsWith("+")) files.get(current).added++;
    else if (current && line.startsWith("-") && !line.startsWith("---")) files.get(current).removed++;
  }
  return [...files.entries()];
}

async function pullPage(main, id) {
  const pull = await api(`/v1/pulls/${id}`);
  const tests = pull.tests || {};
  const verdict = tests.passed === true ? "passed" : tests.passed === false ? "failed" : tests.skipped ? `skipped: ${tests.skipped}` : "no test run";
  put(main, 
    h("h1", {}, `Pull request ${pull.branch} → ${pull.base} `, badge(pull.state)),
    h("p", { class: "muted" }, `${pull.repo} · task `, h("a", { href: `#/tasks/${pull.task_id}`, title: pull.task_id }, shortId(pull.task_id)), ` · ${pull.rounds} revision rounds`),
    h("div", { class: "cards" },
      h("div", { class: "card" }, h("strong", {}, "Tests"), h("p", { "data-testid": "verdict" }, verdict)),
      h("div", { class: "card" }, h("strong", {}, "Change"), h("p", {}, `${pull.files_changed} files, +${pull.insertions} −${pull.deletions}`))),
    h("h2", {}, "Files"),
    table([["File", ([f]) => f], ["Added", ([, m]) => m.added], ["Removed", ([, m]) => m.removed]], diffMetrics(pull.diff || "")),
    typeof tests.output === "string" ? h("details", {}, h("summary", {}, "Test output"), h("pre", {}, tests.output)) : null,
    h("h2", {}, "Diff"),
    renderDiff(pull.diff || ""),
    h("h2", {}, "Reviews"),
    pull.reviews.length === 0 ? h("p", { class: "muted" }, "No reviews yet.") : h("ul", {}, pull.reviews.map((r) =>
      h("li", {}, badge(r.decision), ` ${r.comment} `, h("span", { class: "muted" }, when(r.created_at))))));
  if (session.me.may.review && pull.state === "open") {
    const comment = h("textarea", { id: "review-comment", name: "comment" });
    const send = (decision) => async () => {
      try {
        await api(`/v1/pulls/${id}/reviews`, { method: "POST", body: { decision, comment: comment.value, head_oid: pull.head_oid } });
        say(decision === "approve" ? "Approved: merging" : "Changes requested");
        route();
      } catch (err) {
        say(err.message);
      }
    };
    put(main, h("form", { class: "grid", "aria-label": "Review", onsubmit: (e) => e.preventDefault() },
      h("label", { for: "review-comment" }, "Comment", comment),
      h("button", { type: "button", onclick: send("approve") }, "Approve"),
      h("button", { type: "button", class: "secondary", onclick: send("request_changes") }, "Request changes")));
  }
}

// ---- agents and usage ------------------------------------------------------------------

async function agentsPage(main) {
  const view = await api("/v1/agents");
  session.plugins = view.plugins || {};
  put(main, 
    h("h1", {}, "Agents and nodes"),
    view.nodes.length === 0 ? h("p", { class: "muted" }, "No node heard from (embedded mode runs its agents in this process).") : table([
      ["Node", (n) => n.node],
      ["Agents", (n) => n.agents.join(", ")],
      ["In flight", (n) => n.in_flight],
      ["Last heartbeat", (n) => `${when(n.last_heartbeat)} (${Math.round(n.age_ms / 1000)} s ago)`],
      ["State", (n) => badge(n.state)],
      ["Restarts", (n) => Object.entries(view.restarts || {}).filter(([id]) => id.startsWith(`${n.node}/`)).reduce((sum, [, r]) => sum + r, 0)],
      ["", (n) => session.me.may.operate && n.state !== "draining" && n.state !== "dead"
        ? h("button", { type: "button", class: "secondary", onclick: async () => { await api(`/v1/agents/${encodeURIComponent(n.node)}/drain`, { method: "POST" }); say(`Draining ${n.node}`); route(); } }, `Drain ${n.node}`) : ""],
    ], view.nodes),
    h("h2", {}, "Agent kinds"),
    table([["Kind", ([k]) => k], ["Healthy nodes", ([, v]) => v.healthy_nodes]], Object.entries(view.agents)),
    Object.keys(session.plugins).length ? h("h2", {}, "Declared kinds") : null,
    Object.keys(session.plugins).length ? table([
      ["Kind", ([k]) => k], ["Description", ([, p]) => p.description], ["Capabilities", ([, p]) => p.capabilities.join(", ")],
    ], Object.entries(session.plugins)) : null);
}

async function usagePage(main) {
  const [days, models, caps, tasks] = await Promise.all([api("/v1/usage?group_by=day"), api("/v1/usage?group_by=model"), api("/v1/usage/budgets"), api("/v1/tasks?limit=500")]);
  const percent = (ratio) => `${Math.round(ratio * 1000) / 10}%`;
  put(main, h("h1", {}, "Usage"),
    h("h2", {}, "Spending caps"),
    caps.items.length === 0 ? h("p", { class: "muted" }, "No spending caps are configured (llm.budgets).") : table([
      ["Cap", (c) => c.name],
      ["Applies to", (c) => [c.caller ? `caller ${c.caller}` : "", c.model ? `model ${c.model}` : ""].filter(Boolean).join(", ") || "everything"],
      ["Period", (c) => `${c.period} ${c.current_period}`],
      ["Spent", (c) => dollars(c.spent_usd)],
      ["Cap", (c) => `${dollars(c.usd)}${c.raised ? " (raised)" : ""}`],
      ["Left", (c) => dollars(c.remaining_usd)],
      ["Resets", (c) => when(c.resets_at)],
    ], caps.items),
    h("h2", {}, "Cost by day"),
    days.groups.length ? barChart({ label: "Model spend by day", unit: "dollars", categories: days.groups.map((g) => g.key), series: [{ name: "cost", values: days.groups.map((g) => g.cost_usd) }], format: (v) => String(+v.toFixed(4)) }) : h("p", { class: "muted" }, "No model calls yet."),
    table([["Day", (g) => g.key], ["Calls", (g) => g.calls], ["Tokens", (g) => g.prompt_tokens + g.completion_tokens], ["Cost", (g) => dollars(g.cost_usd)]], days.groups),
    h("h2", {}, "Tokens by model"),
    models.groups.length ? barChart({ label: "Tokens by model", unit: "tokens", categories: models.groups.map((g) => g.key), series: [{ name: "prompt", values: models.groups.map((g) => g.prompt_tokens) }, { name: "completion", values: models.groups.map((g) => g.completion_tokens) }] }) : null,
    h("h2", {}, "Tasks by status"), tasksByDay(tasks.items),
    h("h2", {}, "By model"),
    table([["Model", (g) => g.key], ["Calls", (g) => g.calls], ["Prompt tokens", (g) => g.prompt_tokens], ["Completion tokens", (g) => g.completion_tokens], ["Cost", (g) => dollars(g.cost_usd)], ["Cache hits", (g) => `${g.cache_hits} (${percent(g.cache_hit_ratio)})`]], models.groups));
}

/** The latest tasks by the day they were submitted, one bar per status they are in now. */
function tasksByDay(tasks) {
  if (!tasks.length) return h("p", { class: "muted" }, "No tasks yet.");
  const days = [...new Set(tasks.map((t) => t.created_at.slice(0, 10)))].sort();
  const statuses = STATUSES.filter((s) => tasks.some((t) => t.status === s));
  const series = statuses.map((s) => ({ name: s, values: days.map((d) => tasks.filter((t) => t.status === s && t.created_at.startsWith(d)).length) }));
  return barChart({ label: `The latest ${tasks.length} tasks by day of submission and status`, unit: "tasks", categories: days, series });
}

// ---- routing -----------------------------------------------------------------------------

async function route() {
  leave();
  leave = () => {};
  const main = document.getElementById("main");
  const [path, query] = (location.hash.slice(1) || "/tasks").split("?");
  const params = new URLSearchParams(query || "");
  const parts = path.split("/").filter(Boolean);
  main.replaceChildren();
  for (const link of document.querySelectorAll("header nav a")) {
    if (link.getAttribute("href") === `#/${parts[0]}`) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  try {
    if (parts[0] === "signin") return signinPage(main);
    if (!session.me) await loadMe();
    // The declared kinds, read once (the agents page refreshes them).
    session.plugins ??= (await api("/v1/agents")).plugins || {};
    if (parts[0] === "tasks" && parts[1]) await taskPage(main, parts[1]);
    else if (parts[0] === "pulls" && parts[1]) await pullPage(main, parts[1]);
    else if (parts[0] === "pulls") await pullsPage(main);
    else if (parts[0] === "agents") await agentsPage(main);
    else if (parts[0] === "usage") await usagePage(main);
    else await tasksPage(main, params);
    document.title = `Orion · ${main.querySelector("h1")?.textContent || ""}`;
  } catch (err) {
    if (err.status === 401) return;
    main.replaceChildren(h("p", { class: "error", role: "alert" }, err.message));
  }
}

document.getElementById("signout").addEventListener("click", () => {
  localStorage.removeItem("orion.token");
  session.token = "";
  session.me = null;
  session.plugins = null;
  location.hash = "#/signin";
});
window.addEventListener("hashchange", route);
route();
