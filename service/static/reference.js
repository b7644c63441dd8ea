// Renders /openapi.json: one section per tag, one box per operation, schemas resolved inline.
(async () => {
  const spec = await (await fetch("/openapi.json")).json();
  const schemas = spec.components.schemas;
  const resolve = (s) => (s && s.$ref ? schemas[s.$ref.split("/").pop()] : s);
  const esc = (t) => String(t).replace(/[&<>]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;" }[c]));
  const fields = (s) => {
    s = resolve(s);
    if (!s || !s.properties) return "";
    const req = new Set(s.required || []);
    const rows = Object.entries(s.properties).map(([k, v]) =>
      `<tr><td><code>${esc(k)}</code>${req.has(k) ? " *" : ""}</td><td><code>${esc(JSON.stringify(v))}</code></td></tr>`);
    return `<table><tr><th>field</th><th>schema</th></tr>${rows.join("")}</table>`;
  };
  document.getElementById("intro").textContent = spec.info.description;
  const byTag = {};
  for (const [path, ops] of Object.entries(spec.paths))
    for (const [method, op] of Object.entries(ops)) (byTag[op.tags[0]] ||= []).push({ path, method, op });
  document.getElementById("toc").innerHTML = Object.keys(byTag).map((t) => `<a href="#${t}">${t}</a>`).join("");
  document.getElementById("ops").innerHTML = Object.entries(byTag).map(([tag, list]) =>
    `<h2 id="${tag}">${tag}</h2>` + list.map(({ path, method, op }) => {
      const m = method.toUpperCase();
      const params = (op.parameters || []).map((p) => `<code>${esc(p.name)}</code> (${p.in})`).join(", ");
      const body = op.requestBody && op.requestBody.content["application/json"];
      const ok = op.responses["200"].content;
      const okJson = ok["application/json"];
      return `<div class="op"><span class="method ${m}">${m}</span> <code>${esc(path)}</code> — ${esc(op.summary)}
        ${params ? `<p>Parameters: ${params}</p>` : ""}
        ${body ? `<details><summary>Request body</summary>${fields(body.schema)}</details>` : ""}
        ${okJson ? `<details><summary>Response</summary>${fields(okJson.schema)}</details>` : "<p>Response: bytes</p>"}
      </div>`;
    }).join("")).join("");
})();
