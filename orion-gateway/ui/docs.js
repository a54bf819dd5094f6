// The API page: reads /v1/openapi.json and shows each operation with a form to try it.
"use strict";

const $ = (tag, attrs = {}, ...children) => {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") el.className = v; else el.setAttribute(k, v);
  }
  for (const c of children) el.append(c);
  return el;
};

const token = document.getElementById("token");
token.value = sessionStorage.getItem("orion-token") || "";
token.addEventListener("change", () => sessionStorage.setItem("orion-token", token.value));

// A skeleton of a schema's required fields, as a starting body.
function skeleton(schema, doc, depth = 0) {
  if (!schema || depth > 4) return null;
  if (schema.$ref) return skeleton(doc.components.schemas[schema.$ref.split("/").pop()], doc, depth + 1);
  if (schema.enum) return schema.enum[0];
  switch (schema.type) {
    case "object": {
      const out = {};
      for (const name of schema.required || []) out[name] = skeleton((schema.properties || {})[name], doc, depth + 1);
      return out;
    }
    case "array": return [];
    case "integer": case "number": return 0;
    case "boolean": return false;
    case "string": return "";
    default: return null;
  }
}

function operation(doc, path, method, op, index) {
  const id = `op-${index}`;
  const params = (op.parameters || []).filter(p => p.in === "path" || p.in === "query");
  const inputs = params.map(p => {
    const input = $("input", { id: `${id}-${p.name}`, name: p.name, "data-in": p.in });
    return [$("label", { for: `${id}-${p.name}` }, `${p.name} (${p.in}${p.required ? ", required" : ""})`), input];
  });
  const media = op.requestBody && op.requestBody.content && op.requestBody.content["application/json"];
  const body = media ? $("textarea", { id: `${id}-body` }) : null;
  if (body) body.value = JSON.stringify(skeleton(media.schema, doc), null, 2);
  const out = $("pre", { id: `${id}-out`, role: "status", "aria-label": `Answer to ${method.toUpperCase()} ${path}` });
  const send = $("button", { type: "submit", "aria-label": `Send ${method.toUpperCase()} ${path}` }, "Send");
  const form = $("form", {}, ...inputs.flat());
  if (body) form.append($("label", { for: `${id}-body` }, "Body (JSON)"), body);
  form.append(send, out);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    let url = path;
    const query = new URLSearchParams();
    for (const input of form.querySelectorAll("input[data-in]")) {
      if (!input.value) {
        if (input.dataset.in === "path") {
          out.textContent = `${input.name} is required`;
          return;
        }
        continue;
      }
      if (input.dataset.in === "path") url = url.replace(`{${input.name}}`, encodeURIComponent(input.value));
      else query.set(input.name, input.value);
    }
    if ([...query].length) url += `?${query}`;
    const headers = {};
    if (token.value) headers.Authorization = `Bearer ${token.value}`;
    if (body) headers["Content-Type"] = "application/json";
    try {
      const answer = await fetch(url, { method: method.toUpperCase(), headers, body: body ? body.value : undefined });
      const text = await answer.text();
      let shown = text;
      try { shown = JSON.stringify(JSON.parse(text), null, 2); } catch (_) { /* not JSON */ }
      out.textContent = `${answer.status} ${answer.statusText}\n${shown}`;
    } catch (err) {
      out.textContent = `The request failed: ${err}`;
    }
  });
  const codes = Object.keys(op.responses || {}).sort().join(", ");
  return $("section", { class: "op", id, "aria-labelledby": `${id}-h` },
    $("h2", { id: `${id}-h` }, $("span", { class: `method ${method}` }, method.toUpperCase()), " ", path),
    $("p", {}, op.summary || ""),
    op.description ? $("p", {}, op.description) : "",
    $("p", { class: "codes" }, `Answers: ${codes}`),
    form);
}

async function main() {
  const main = document.getElementById("operations");
  let doc;
  try {
    doc = await (await fetch("/v1/openapi.json")).json();
  } catch (err) {
    main.textContent = `The API document could not be read: ${err}`;
    return;
  }
  document.getElementById("title").textContent = `${doc.info.title} ${doc.info.version}`;
  main.textContent = "";
  const toc = document.getElementById("toc");
  let index = 0;
  for (const [path, methods] of Object.entries(doc.paths)) {
    for (const [method, op] of Object.entries(methods)) {
      if (!["get", "post", "put", "patch", "delete"].includes(method)) continue;
      const section = operation(doc, path, method, op, index);
      main.append(section);
      toc.append($("a", { href: `#${section.id}` }, `${method.toUpperCase()} ${path}`));
      index += 1;
    }
  }
  const schemas = document.getElementById("schemas");
  schemas.append($("h2", {}, "Schemas"));
  for (const [name, schema] of Object.entries(doc.components.schemas || {})) {
    schemas.append($("details", {}, $("summary", {}, name), $("pre", {}, JSON.stringify(schema, null, 2))));
  }
}

main();
