// The API explorer at /docs: every operation of /openapi.json, with a form to call it from the browser.
const el = (tag, attrs = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) k === 'class' ? node.className = v : node.setAttribute(k, v);
  for (const c of children) node.append(c);
  return node;
};
const resolve = (spec, schema) => schema && schema.$ref ? spec.components.schemas[schema.$ref.split('/').pop()] : schema;
function example(schema) {
  if (!schema) return {};
  if (schema.type === 'object') {
    const out = {};
    for (const [name, p] of Object.entries(schema.properties || {})) if (!p.readOnly) out[name] = example(p);
    return out;
  }
  if (schema.enum) return schema.enum[0];
  return { string: 'text', integer: 1, number: 1.5, boolean: true, array: [] }[Array.isArray(schema.type) ? schema.type[0] : schema.type] ?? null;
}
function operationForm(spec, path, method, op, inherited) {
  const params = [...inherited, ...(op.parameters || [])];
  const form = el('form');
  const inputs = params.map(p => {
    const input = el('input', { name: p.name, placeholder: p.schema?.type || '' });
    form.append(el('label', {}, `${p.name} (${p.in})`, input));
    return [p, input];
  });
  let body = null;
  if (op.requestBody) {
    const content = op.requestBody.content;
    const type = Object.keys(content)[0];
    body = el('textarea', { 'aria-label': 'request body' });
    body.value = JSON.stringify(example(resolve(spec, content[type].schema)), null, 2);
    body.dataset.type = type;
    form.append(el('label', {}, `body (${type})`, body));
  }
  const out = el('pre', {}, '');
  form.append(el('button', { type: 'submit' }, 'Send'), out);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    let url = path; const query = new URLSearchParams(); const headers = {};
    for (const [p, input] of inputs) {
      if (!input.value) continue;
      if (p.in === 'path') url = url.replace(`{${p.name}}`, encodeURIComponent(input.value));
      else if (p.in === 'query') query.append(p.name, input.value);
      else if (p.in === 'header') headers[p.name] = input.value;
    }
    const token = document.getElementById('token').value.trim();
    if (token) headers.Authorization = `Bearer ${token}`;
    if (body) headers['Content-Type'] = body.dataset.type;
    const started = performance.now();
    try {
      const response = await fetch(url + (query.size ? `?${query}` : ''), { method: method.toUpperCase(), headers, body: body ? body.value : undefined });
      const text = await response.text();
      let shown = text; try { shown = JSON.stringify(JSON.parse(text), null, 2); } catch (_) {}
      const etag = response.headers.get('etag');
      out.textContent = `${response.status} ${response.statusText} · ${Math.round(performance.now() - started)} ms${etag ? ` · ETag ${etag}` : ''}\n\n${shown}`;
    } catch (err) { out.textContent = `request failed: ${err}`; }
  });
  return form;
}
async function main() {
  const spec = await (await fetch('/openapi.json')).json();
  document.getElementById('version').textContent = `v${spec.info.version} · OpenAPI ${spec.openapi}`;
  const groups = {};
  for (const [path, item] of Object.entries(spec.paths)) {
    for (const method of ['get', 'post', 'put', 'patch', 'delete']) {
      const op = item[method]; if (!op) continue;
      const tag = (op.tags || ['other'])[0];
      (groups[tag] ||= []).push([path, method, op, item.parameters || []]);
    }
  }
  const root = document.getElementById('ops'); root.textContent = '';
  for (const [tag, ops] of Object.entries(groups)) {
    root.append(el('h2', {}, tag));
    for (const [path, method, op, inherited] of ops) {
      const locked = (op.security || []).length ? el('span', { class: 'lock', title: 'needs a bearer token' }, '🔒') : '';
      const summary = el('summary', {}, el('span', { class: `method ${method}` }, method.toUpperCase()), el('span', { class: 'path' }, path), el('span', {}, op.summary || ''), locked);
      root.append(el('details', {}, summary, operationForm(spec, path, method, op, inherited)));
    }
  }
}
main().catch(err => { document.getElementById('ops').textContent = `Cannot load /openapi.json: ${err}`; });
