// Small DOM helpers. Text always goes in through textContent / createTextNode, never as HTML,
// so data from documents and events cannot inject markup.

/**
 * Creates an element: h('button', {class: 'primary', type: 'button', onclick: fn}, 'Save').
 * Attributes named on<event> become listeners; `dataset` is an object of data-* values;
 * `false`/`null`/`undefined` attributes are left out; children may be strings, nodes or arrays.
 */
export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === false || value === null || value === undefined) continue;
    if (name.startsWith('on') && typeof value === 'function') {
      node.addEventListener(name.slice(2), value);
    } else if (name === 'dataset') {
      Object.assign(node.dataset, value);
    } else if (name === 'class') {
      node.className = value;
    } else if (name === 'text') {
      node.textContent = value;
    } else {
      node.setAttribute(name, value === true ? '' : String(value));
    }
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(node, child);
    else node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** A small padlock icon (inline SVG, no font or image needed). */
export function lockIcon(label) {
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('viewBox', '0 0 16 16');
  svg.setAttribute('width', '12');
  svg.setAttribute('height', '12');
  svg.setAttribute('class', 'icon-lock');
  svg.setAttribute('role', 'img');
  svg.setAttribute('aria-label', label);
  const title = document.createElementNS(ns, 'title');
  title.textContent = label;
  const body = document.createElementNS(ns, 'rect');
  for (const [k, v] of Object.entries({ x: '3', y: '7', width: '10', height: '7', rx: '1.5', fill: 'currentColor' })) body.setAttribute(k, v);
  const shackle = document.createElementNS(ns, 'path');
  for (const [k, v] of Object.entries({ d: 'M5.5 7V5a2.5 2.5 0 0 1 5 0v2', fill: 'none', stroke: 'currentColor', 'stroke-width': '1.6' })) shackle.setAttribute(k, v);
  svg.append(title, body, shackle);
  return svg;
}

/** Replaces all children of `node`. */
export function replaceChildren(node, ...children) {
  node.replaceChildren();
  append(node, children);
}

/** `6b032ef76a2e7cf9b692d0b5` → `6b03…d0b5`. */
export function shortId(id) {
  const text = String(id ?? '');
  return text.length > 12 ? `${text.slice(0, 4)}…${text.slice(-4)}` : text;
}

/** A local time like 18:05:43. */
export function clock(date = new Date()) {
  return date.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false });
}

/** A readable one-line form of any JSON value for table cells. */
export function cellText(value) {
  if (value === undefined || value === null) return '—';
  if (typeof value === 'boolean') return value ? 'Yes' : 'No';
  if (typeof value === 'object') {
    if (Array.isArray(value)) return value.length === 0 ? '[]' : `${value.length} item${value.length === 1 ? '' : 's'}`;
    if (Array.isArray(value.alerts)) {
      const n = value.alerts.length;
      return n === 0 ? 'No alerts' : `${n} alert${n === 1 ? '' : 's'}`;
    }
    const keys = Object.keys(value).length;
    return `{${keys} field${keys === 1 ? '' : 's'}}`;
  }
  return String(value);
}

/** Shows a short message in the toast area (announced politely to screen readers). */
export function toast(message, kind = 'info') {
  const area = document.getElementById('toasts');
  if (!area) return;
  const item = h('div', { class: `toast toast-${kind}`, role: kind === 'error' ? 'alert' : null }, message);
  area.append(item);
  setTimeout(() => item.classList.add('toast-leaving'), 3500);
  setTimeout(() => item.remove(), 4000);
}

/** Opens a <dialog> modally; it is removed from the page when closed. */
export function openDialog(dialog) {
  document.body.append(dialog);
  dialog.addEventListener('close', () => dialog.remove());
  dialog.showModal();
  return dialog;
}
