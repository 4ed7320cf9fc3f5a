// Small DOM helpers. Text always goes in as text, never as HTML.

// h builds an element: attributes (on* are listeners, value and checked are
// properties) and children (strings, nodes, arrays; null is skipped).
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'value' || k === 'checked') el[k] = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  add(el, children);
  return el;
}

function add(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) add(el, c);
    else el.append(c instanceof Node ? c : String(c));
  }
}

// table is a table with a header row and body.
export function table(headers, body, cls) {
  return h('table', {class: cls}, h('thead', {}, h('tr', {}, headers.map((t) => h('th', {}, t)))), body);
}

// emptyRow is a body row saying there is nothing to show.
export const emptyRow = (cols, text) => h('tr', {}, h('td', {colspan: cols, class: 'muted'}, text));

export const badge = (status) =>
  h('span', {class: 'badge s-' + String(status || 'unknown').toLowerCase(), 'data-status': status}, status || '?');

// age is how long ago an ISO time was: 5s, 3m, 2h, 4d.
export function age(iso, now = Date.now()) {
  const t = Date.parse(iso);
  if (!t) return '';
  const s = Math.max(0, Math.round((now - t) / 1000));
  if (s < 60) return s + 's';
  if (s < 3600) return Math.floor(s / 60) + 'm';
  if (s < 86400) return Math.floor(s / 3600) + 'h';
  return Math.floor(s / 86400) + 'd';
}

// cpu formats millicores; mem formats MiB.
export const cpu = (m) => (m >= 1000 ? +(m / 1000).toFixed(2) + ' CPU' : (m || 0) + 'm');
export const mem = (mib) => (mib >= 1024 ? +(mib / 1024).toFixed(1) + ' GiB' : (mib || 0) + ' MiB');

export const time = (iso) => (iso ? new Date(iso).toLocaleString() : '');

let flashTimer = 0;

// flash shows a short message under the header.
export function flash(text, kind = 'ok') {
  const el = document.getElementById('flash');
  el.className = kind;
  el.textContent = text;
  clearTimeout(flashTimer);
  flashTimer = setTimeout(() => { el.textContent = ''; el.className = ''; }, 6000);
}

// confirmAction asks in a modal dialog; it resolves true when confirmed.
export function confirmAction(text, action = 'Delete') {
  const d = document.getElementById('confirm');
  document.getElementById('confirm-text').textContent = text;
  document.getElementById('confirm-ok').textContent = action;
  d.returnValue = '';
  d.showModal();
  return new Promise((resolve) => d.addEventListener('close', () => resolve(d.returnValue === 'ok'), {once: true}));
}

// errorBox shows what went wrong.
export const errorBox = (err) => h('p', {class: 'error'}, err && err.message ? err.message : String(err));
