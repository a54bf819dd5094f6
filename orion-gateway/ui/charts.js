// Orion's dashboard charts: SVG drawn here, from the API's figures; no library, no CDN.
// Every chart has axes with units, a text summary beside it, and an accessible name; every
// figure also reads as text (a table or a list) for a screen reader or a copy.

const NS = "http://www.w3.org/2000/svg";
const INK = "#1d2329";
const MUTED = "#5c6570";
const ACCENT = "#1f5fbf";
const ALERT = "#b3261e";
const SERIES = ["#1f5fbf", "#b35c00", "#2e7d32", "#6a1b9a", "#00838f", "#ad1457"];

function el(tag, attrs = {}, text) {
  const node = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function html(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) node.append(c);
  return node;
}

/** Round figures for axis ticks: 0 and four steps up to at least `max`. */
function ticks(max) {
  if (!(max > 0)) return [0, 1];
  const raw = max / 4;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * magnitude).find((s) => s >= raw);
  return [0, 1, 2, 3, 4].map((i) => +(i * step).toPrecision(6));
}

/** The y axis of a chart: a grid line and a figure at each of `scale`, and the unit beside. */
function yAxis(svg, { scale, y, left, right, top, plot, unit, format }) {
  for (const t of scale) {
    svg.append(el("line", { x1: left, x2: right, y1: y(t), y2: y(t), stroke: "#d0d5da" }));
    svg.append(el("text", { x: left - 6, y: y(t) + 4, "text-anchor": "end", fill: MUTED, "font-size": 11 }, format(t)));
  }
  svg.append(el("text", { x: 12, y: top + plot / 2, transform: `rotate(-90 12 ${top + plot / 2})`, "text-anchor": "middle", fill: MUTED, "font-size": 11 }, unit));
}

function figure(label, svg, summary, attrs) {
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", `${label}. ${summary}`);
  return html("figure", { class: "chart", ...attrs }, svg, html("figcaption", {}, summary));
}

/**
 * Vertical bars, one group per category and one bar per series: `categories` name the groups,
 * `series` is [{ name, values }] (one value per category). `unit` labels the y axis.
 */
export function barChart({ label, unit, categories, series, format = (v) => String(v) }) {
  const width = Math.max(320, categories.length * (series.length * 18 + 16) + 60);
  const height = 220;
  const [left, bottom, top] = [56, 40, 12];
  const max = Math.max(0, ...series.flatMap((s) => s.values));
  const scale = ticks(max);
  const span = scale[scale.length - 1] || 1;
  const plot = height - bottom - top;
  const svg = el("svg", { viewBox: `0 0 ${width} ${height}`, class: "bars" });
  svg.style.maxWidth = `${width}px`;
  yAxis(svg, { scale, y: (v) => top + plot - (v / span) * plot, left, right: width - 4, top, plot, unit, format });
  const group = series.length * 18 + 16;
  categories.forEach((category, i) => {
    series.forEach((s, j) => {
      const v = s.values[i] || 0;
      const h = (v / span) * plot;
      const bar = el("rect", { x: left + 8 + i * group + j * 18, y: top + plot - h, width: 14, height: Math.max(h, 0), fill: SERIES[j % SERIES.length], class: "bar" });
      bar.append(el("title", {}, `${category}, ${s.name}: ${format(v)} ${unit}`));
      svg.append(bar);
    });
    svg.append(el("text", { x: left + 8 + i * group, y: height - bottom + 16, fill: INK, "font-size": 11 }, String(category).slice(0, 12)));
  });
  svg.append(el("line", { x1: left, x2: left, y1: top, y2: top + plot, stroke: MUTED }));
  if (series.length > 1) {
    series.forEach((s, j) => {
      svg.append(el("rect", { x: left + j * 110, y: height - 14, width: 10, height: 10, fill: SERIES[j % SERIES.length] }));
      svg.append(el("text", { x: left + 14 + j * 110, y: height - 5, fill: INK, "font-size": 11 }, String(s.name).slice(0, 14)));
    });
  }
  const total = series.map((s) => `${s.name}: ${format(s.values.reduce((a, b) => a + b, 0))} ${unit}`).join("; ");
  return figure(label, svg, `${categories.length} ${categories.length === 1 ? "group" : "groups"}; in all, ${total}.`, { "data-bars": categories.length * series.length });
}

/** Lines over time: `points` [{ at, values: { name: number } }], one line per name. */
export function lineChart({ label, unit, points, names, format = (v) => String(v) }) {
  const width = 560;
  const height = 220;
  const [left, bottom, top, right] = [56, 40, 12, 12];
  const plot = height - bottom - top;
  const max = Math.max(0, ...points.flatMap((p) => names.map((n) => p.values[n] || 0)));
  const scale = ticks(max);
  const span = scale[scale.length - 1] || 1;
  const times = points.map((p) => new Date(p.at).getTime());
  const [t0, t1] = [Math.min(...times), Math.max(...times)];
  const x = (t) => left + (t1 === t0 ? (width - left - right) / 2 : ((t - t0) / (t1 - t0)) * (width - left - right));
  const y = (v) => top + plot - (v / span) * plot;
  const svg = el("svg", { viewBox: `0 0 ${width} ${height}`, class: "lines" });
  svg.style.maxWidth = `${width}px`;
  yAxis(svg, { scale, y, left, right: width - right, top, plot, unit, format });
  if (points.length) {
    svg.append(el("text", { x: left, y: height - bottom + 16, fill: INK, "font-size": 11 }, new Date(t0).toLocaleDateString()));
    svg.append(el("text", { x: width - right, y: height - bottom + 16, "text-anchor": "end", fill: INK, "font-size": 11 }, new Date(t1).toLocaleDateString()));
  }
  names.forEach((name, j) => {
    const color = SERIES[j % SERIES.length];
    const path = points.map((p, i) => `${i ? "L" : "M"} ${x(times[i]).toFixed(1)} ${y(p.values[name] || 0).toFixed(1)}`).join(" ");
    if (points.length > 1) svg.append(el("path", { d: path, fill: "none", stroke: color, "stroke-width": 2 }));
    points.forEach((p, i) => {
      const dot = el("circle", { cx: x(times[i]), cy: y(p.values[name] || 0), r: 3.5, fill: color, class: "point" });
      dot.append(el("title", {}, `${name} ${format(p.values[name] || 0)} ${unit} at ${new Date(p.at).toLocaleString()}`));
      svg.append(dot);
    });
    svg.append(el("rect", { x: left + j * 150, y: height - 14, width: 10, height: 10, fill: color }));
    svg.append(el("text", { x: left + 14 + j * 150, y: height - 5, fill: INK, "font-size": 11 }, name));
  });
  const last = points[points.length - 1];
  const summary = points.length
    ? `${points.length} ${points.length === 1 ? "analysis" : "analyses"}; the last: ${names.map((n) => `${n} ${format(last.values[n] || 0)}`).join(", ")} ${unit}.`
    : "No analyses yet.";
  return figure(label, svg, summary, { "data-points": points.length * names.length });
}

/** Horizontal bars of durations: `steps` [{ name, start, end }] (ms since epoch). */
export function timeline({ label, steps }) {
  const width = 560;
  const row = 26;
  const left = 130;
  const height = steps.length * row + 36;
  const t0 = Math.min(...steps.map((s) => s.start));
  const t1 = Math.max(...steps.map((s) => s.end));
  const span = Math.max(t1 - t0, 1);
  const scale = ticks(span / 1000);
  const spanS = scale[scale.length - 1] || 1;
  const x = (ms) => left + ((ms - t0) / 1000 / spanS) * (width - left - 16);
  const svg = el("svg", { viewBox: `0 0 ${width} ${height}`, class: "steps" });
  svg.style.maxWidth = `${width}px`;
  for (const t of scale) {
    const tx = left + (t / spanS) * (width - left - 16);
    svg.append(el("line", { x1: tx, x2: tx, y1: 4, y2: height - 28, stroke: "#d0d5da" }));
    svg.append(el("text", { x: tx, y: height - 14, "text-anchor": "middle", fill: MUTED, "font-size": 11 }, `${t} s`));
  }
  steps.forEach((s, i) => {
    const y = 6 + i * row;
    svg.append(el("text", { x: left - 8, y: y + 14, "text-anchor": "end", fill: INK, "font-size": 12 }, s.name));
    const bar = el("rect", { x: x(s.start), y, width: Math.max(x(s.end) - x(s.start), 2), height: row - 8, fill: SERIES[i % SERIES.length], class: "bar" });
    bar.append(el("title", {}, `${s.name}: ${((s.end - s.start) / 1000).toFixed(2)} s`));
    svg.append(bar);
  });
  const summary = steps.map((s) => `${s.name} ${((s.end - s.start) / 1000).toFixed(2)} s`).join(", ");
  return figure(label, svg, `${summary}.`, { "data-bars": steps.length });
}

/** Counts of `values` in the buckets that `edges` bound (the last bucket is open above). */
export function histogram({ label, unit, values, edges }) {
  const counts = edges.map((lo, i) => values.filter((v) => v >= lo && (i === edges.length - 1 || v < edges[i + 1])).length);
  const categories = edges.map((lo, i) => (i === edges.length - 1 ? `${lo}+` : edges[i + 1] - lo === 1 ? `${lo}` : `${lo}–${edges[i + 1] - 1}`));
  const chart = barChart({ label, unit: "functions", categories, series: [{ name: unit, values: counts }] });
  chart.querySelector("figcaption").textContent = `${values.length} functions by ${unit}: ${categories.map((c, i) => `${c}: ${counts[i]}`).join(", ")}.`;
  return chart;
}

// ---- the dependency graph ----------------------------------------------------------------

/** The directory of a module path (its group), or "." at the top. */
function groupOf(name) {
  const cut = name.lastIndexOf("/");
  return cut > 0 ? name.slice(0, cut) : ".";
}

/** Strongly connected components (Tarjan), as a map from node to component index. */
function components(nodes, out) {
  let index = 0;
  const idx = new Map();
  const low = new Map();
  const stack = [];
  const on = new Set();
  const comp = new Map();
  let count = 0;
  const visit = (v) => {
    const work = [[v, 0]];
    idx.set(v, index);
    low.set(v, index);
    index += 1;
    stack.push(v);
    on.add(v);
    while (work.length) {
      const top = work[work.length - 1];
      const [n, i] = top;
      const next = out.get(n) || [];
      if (i < next.length) {
        top[1] += 1;
        const w = next[i];
        if (!idx.has(w)) {
          idx.set(w, index);
          low.set(w, index);
          index += 1;
          stack.push(w);
          on.add(w);
          work.push([w, 0]);
        } else if (on.has(w)) {
          low.set(n, Math.min(low.get(n), idx.get(w)));
        }
        continue;
      }
      work.pop();
      if (work.length) {
        const parent = work[work.length - 1][0];
        low.set(parent, Math.min(low.get(parent), low.get(n)));
      }
      if (low.get(n) === idx.get(n)) {
        let w;
        do {
          w = stack.pop();
          on.delete(w);
          comp.set(w, count);
        } while (w !== n);
        count += 1;
      }
    }
  };
  for (const v of nodes) if (!idx.has(v)) visit(v);
  return comp;
}

/** The most nodes a row holds: a wider layer wraps onto more rows. */
const ROW = 8;

/**
 * The layout of a graph in layers (Sugiyama-style): the edges that close a cycle (found by a
 * depth-first search) are set aside, each node goes one layer below everything that imports it
 * (longest path), the order within a layer is improved by barycentres, sweeping down and up,
 * and a layer wider than a row wraps. The edges in a cycle (strongly connected components)
 * are returned to be drawn apart.
 */
export function layout(nodes, edges) {
  const out = new Map(nodes.map((n) => [n, []]));
  for (const [a, b] of edges) out.get(a).push(b);
  const comp = components(nodes, out);
  const sizes = new Map();
  for (const c of comp.values()) sizes.set(c, (sizes.get(c) || 0) + 1);
  const cyclic = new Set();
  for (const [a, b] of edges) if (a === b || (comp.get(a) === comp.get(b) && sizes.get(comp.get(a)) > 1)) cyclic.add(`${a}\u0000${b}`);
  // Back edges of a depth-first search: without them the graph has no cycle.
  const back = new Set();
  const state = new Map();
  for (const root of [...nodes].sort()) {
    if (state.has(root)) continue;
    const work = [[root, 0]];
    state.set(root, 1);
    while (work.length) {
      const top = work[work.length - 1];
      const next = out.get(top[0]);
      if (top[1] < next.length) {
        const w = next[top[1]++];
        if (state.get(w) === 1) back.add(`${top[0]}\u0000${w}`);
        else if (!state.has(w)) {
          state.set(w, 1);
          work.push([w, 0]);
        }
      } else {
        state.set(top[0], 2);
        work.pop();
      }
    }
  }
  const forward = edges.filter(([a, b]) => !back.has(`${a}\u0000${b}`));
  const indegree = new Map(nodes.map((n) => [n, 0]));
  const down = new Map(nodes.map((n) => [n, []]));
  for (const [a, b] of forward) {
    down.get(a).push(b);
    indegree.set(b, indegree.get(b) + 1);
  }
  const layerOf = new Map();
  const queue = nodes.filter((n) => indegree.get(n) === 0).sort();
  for (const n of queue) layerOf.set(n, 0);
  while (queue.length) {
    const n = queue.shift();
    for (const m of down.get(n)) {
      layerOf.set(m, Math.max(layerOf.get(m) || 0, layerOf.get(n) + 1));
      indegree.set(m, indegree.get(m) - 1);
      if (indegree.get(m) === 0) queue.push(m);
    }
  }
  const layers = [];
  for (const n of [...nodes].sort()) (layers[layerOf.get(n) || 0] ||= []).push(n);
  const position = new Map();
  layers.forEach((layer) => layer.forEach((n, i) => position.set(n, i)));
  const incoming = new Map(nodes.map((n) => [n, []]));
  for (const [a, b] of edges) incoming.get(b).push(a);
  const center = (ns) => (ns.length ? ns.reduce((s, n) => s + position.get(n), 0) / ns.length : null);
  const filled = layers.filter(Boolean);
  for (let sweep = 0; sweep < 4; sweep++) {
    const downward = sweep % 2 === 0;
    const order = downward ? filled.slice(1) : filled.slice(0, -1).reverse();
    for (const layer of order) {
      const key = new Map(layer.map((n) => [n, center(downward ? incoming.get(n) : out.get(n)) ?? position.get(n)]));
      layer.sort((a, b) => key.get(a) - key.get(b) || a.localeCompare(b));
      layer.forEach((n, i) => position.set(n, i));
    }
  }
  const rows = filled.flatMap((layer) => {
    const wrapped = [];
    for (let i = 0; i < layer.length; i += ROW) wrapped.push(layer.slice(i, i + ROW));
    return wrapped;
  });
  return { layers: rows, depth: filled.length, cyclic };
}

/**
 * The dependency graph of one language, laid out in layers, its modules grouped by directory
 * (a group collapses into one node and expands again), cycles in red, zoom and pan (buttons,
 * keys and the mouse wheel), and the same graph as text.
 */
export function dependencyGraph(language, graph) {
  const all = graph.nodes?.length ? graph.nodes : [...new Set((graph.edges || []).flat())];
  const groups = [...new Set(all.map(groupOf))].sort();
  // Readable at any size: past 40 modules, every directory starts collapsed.
  const collapsed = new Set(all.length > 40 ? groups : []);
  const container = html("section", { class: "graph", "aria-label": `Dependencies (${language})` });
  let zoom = 1;
  let pan = [0, 0];
  // Moves the drawn graph to `pan` and `zoom` without laying it out again (set by render).
  let place = () => {};
  const render = () => {
    // A redraw keeps the keyboard where it was: on the graph.
    const focused = container.contains(document.activeElement);
    const shown = (n) => (collapsed.has(groupOf(n)) ? `${groupOf(n)}/` : n);
    const nodes = [...new Set(all.map(shown))];
    const seen = new Set();
    const edges = [];
    for (const [a, b] of graph.edges || []) {
      const [x, y] = [shown(a), shown(b)];
      const key = `${x}\u0000${y}`;
      if (x === y || seen.has(key)) continue;
      seen.add(key);
      edges.push([x, y]);
    }
    const { layers, depth, cyclic } = layout(nodes, edges);
    const [colWidth, rowHeight, boxHeight] = [190, 70, 26];
    const widest = Math.max(1, ...layers.map((l) => l.length));
    const width = widest * colWidth + 20;
    const height = layers.length * rowHeight + 20;
    const at = new Map();
    layers.forEach((layer, l) => layer.forEach((n, i) => {
      const offset = ((widest - layer.length) * colWidth) / 2;
      at.set(n, [10 + offset + i * colWidth, 10 + l * rowHeight]);
    }));
    const svg = el("svg", { viewBox: `0 0 ${width} ${height}`, class: "depgraph", tabindex: 0 });
    // At its own size where it fits, scaled down to the page's width where not.
    svg.setAttribute("width", width);
    svg.setAttribute("height", height);
    const defs = el("defs");
    for (const [id, color] of [["arrow", MUTED], ["arrow-cycle", ALERT]]) {
      const marker = el("marker", { id: `${id}-${language}`, viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 6, markerHeight: 6, orient: "auto-start-reverse" });
      marker.append(el("path", { d: "M 0 0 L 10 5 L 0 10 z", fill: color }));
      defs.append(marker);
    }
    svg.append(defs);
    const view = el("g", {});
    place = () => view.setAttribute("transform", `translate(${pan[0]} ${pan[1]}) scale(${zoom})`);
    place();
    svg.append(view);
    for (const [a, b] of edges) {
      const [x1, y1] = at.get(a);
      const [x2, y2] = at.get(b);
      const cycle = cyclic.has(`${a}\u0000${b}`);
      const [sx, sy, tx, ty] = [x1 + 80, y1 + boxHeight, x2 + 80, y2];
      const d = y2 > y1
        ? `M ${sx} ${sy} C ${sx} ${sy + 30}, ${tx} ${ty - 30}, ${tx} ${ty}`
        : `M ${x1 + 160} ${y1 + 13} C ${x1 + 190} ${y1 - 20}, ${x2 + 190} ${y2 + 40}, ${x2 + 160} ${y2 + 13}`;
      const edge = el("path", { d, fill: "none", stroke: cycle ? ALERT : MUTED, "stroke-width": cycle ? 2 : 1, "stroke-dasharray": cycle ? "5 3" : "", "marker-end": `url(#${cycle ? "arrow-cycle" : "arrow"}-${language})`, class: cycle ? "edge cycle" : "edge" });
      edge.append(el("title", {}, `${a} imports ${b}${cycle ? " (in a cycle)" : ""}`));
      view.append(edge);
    }
    for (const n of nodes) {
      const [x, y] = at.get(n);
      const isGroup = n.endsWith("/");
      const box = el("g", { class: isGroup ? "node group" : "node", tabindex: isGroup ? 0 : -1, role: isGroup ? "button" : "img", "aria-label": isGroup ? `Folder ${n}: expand` : n });
      box.append(el("rect", { x, y, width: 160, height: boxHeight, rx: isGroup ? 10 : 3, fill: isGroup ? "#e8eef8" : "#ffffff", stroke: isGroup ? ACCENT : MUTED }));
      const label = n.length > 24 ? `…${n.slice(-23)}` : n;
      box.append(el("text", { x: x + 8, y: y + 17, fill: INK, "font-size": 12 }, label));
      box.append(el("title", {}, isGroup ? `${n} (${all.filter((m) => groupOf(m) === n.slice(0, -1)).length} modules): select to expand` : n));
      if (isGroup) {
        const toggle = () => { collapsed.delete(n.slice(0, -1)); render(); };
        box.addEventListener("click", toggle);
        box.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); toggle(); } });
      }
      view.append(box);
    }
    svg.addEventListener("wheel", (e) => { e.preventDefault(); zoomBy(e.deltaY < 0 ? 1.2 : 1 / 1.2); }, { passive: false });
    let drag = null;
    svg.addEventListener("pointerdown", (e) => { drag = [e.clientX - pan[0], e.clientY - pan[1]]; });
    svg.addEventListener("pointermove", (e) => { if (drag) { pan = [e.clientX - drag[0], e.clientY - drag[1]]; place(); } });
    svg.addEventListener("pointerup", () => { drag = null; });
    svg.addEventListener("keydown", (e) => {
      const moves = { ArrowLeft: [40, 0], ArrowRight: [-40, 0], ArrowUp: [0, 40], ArrowDown: [0, -40] };
      if (moves[e.key]) { e.preventDefault(); pan = [pan[0] + moves[e.key][0], pan[1] + moves[e.key][1]]; place(); }
      else if (e.key === "+" || e.key === "=") zoomBy(1.2);
      else if (e.key === "-") zoomBy(1 / 1.2);
    });
    const cycles = edges.filter(([a, b]) => cyclic.has(`${a}\u0000${b}`)).length;
    container.dataset.nodes = nodes.length;
    container.dataset.edges = edges.length;
    container.dataset.cycleEdges = cycles;
    container.dataset.layers = depth;
    const text = html("details", { class: "graph-text" },
      html("summary", {}, "The graph as text"),
      html("ul", {}, nodes.map((n) => {
        const to = edges.filter(([a]) => a === n).map(([, b]) => b);
        return html("li", {}, to.length ? `${n} imports ${to.join(", ")}` : `${n} imports nothing here`);
      })));
    const controls = html("div", { class: "graph-controls", role: "group", "aria-label": "Graph view" },
      html("button", { type: "button", class: "secondary", onclick: () => zoomBy(1.2) }, "Zoom in"),
      html("button", { type: "button", class: "secondary", onclick: () => zoomBy(1 / 1.2) }, "Zoom out"),
      html("button", { type: "button", class: "secondary", onclick: () => { zoom = 1; pan = [0, 0]; place(); } }, "Reset view"),
      html("button", { type: "button", class: "secondary", onclick: () => { groups.forEach((g) => collapsed.add(g)); render(); } }, "Collapse folders"),
      html("button", { type: "button", class: "secondary", onclick: () => { collapsed.clear(); render(); } }, "Expand all"));
    const summary = html("p", { class: "muted" },
      `${nodes.length} ${nodes.length === 1 ? "node" : "nodes"} (${all.length} ${all.length === 1 ? "module" : "modules"} in ${groups.length} ${groups.length === 1 ? "folder" : "folders"}, ${collapsed.size} collapsed), ${edges.length} imports in ${depth} layers${cycles ? `; ${cycles} imports in cycles, in red` : ""}. Select a folder to expand it; arrow keys pan, + and - zoom.`);
    container.replaceChildren(controls, svg, summary, text);
    if (focused && !controls.contains(document.activeElement)) svg.focus();
  };
  const zoomBy = (factor) => { zoom = Math.min(4, Math.max(0.25, zoom * factor)); place(); };
  render();
  return container;
}
