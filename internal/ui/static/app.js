// The dashboard: pages addressed by the URL fragment, sign-in on 401.
import {APIError, get, onUnauthorized, token} from './api.js';
import * as live from './live.js';
import {errorBox, h} from './dom.js';
import {createPage, instancesPage, nodesPage, workloadsPage} from './pages.js';
import {instancePage} from './instance.js';

const routes = [
  [/^#\/nodes$/, 'nodes', nodesPage],
  [/^#\/workloads$/, 'workloads', workloadsPage],
  [/^#\/instances$/, 'instances', instancesPage],
  [/^#\/instances\/([^/]+)$/, 'instances', instancePage],
  [/^#\/create$/, 'create', createPage],
];

const main = document.getElementById('main');
let current = null; // the open page: {close()}
let signingIn = false;

function close() {
  if (current) current.close();
  current = null;
}

function route() {
  if (signingIn) return;
  close();
  const hash = location.hash || '#/nodes';
  const found = routes.find(([re]) => re.test(hash));
  for (const a of document.querySelectorAll('nav a')) {
    a.toggleAttribute('aria-current', !!found && a.dataset.page === found[1]);
  }
  main.replaceChildren();
  if (!found) {
    main.append(h('h1', {}, 'Not found'), h('p', {}, h('a', {href: '#/nodes'}, 'Nodes')));
    return;
  }
  const [re, , page] = found;
  let param = hash.match(re)[1] || '';
  try {
    param = decodeURIComponent(param);
  } catch { /* kept as it is */ }
  const ctl = new AbortController();
  const cleanups = [];
  current = {close: () => { ctl.abort(); cleanups.forEach((f) => f()); }};
  page(main, param, {signal: ctl.signal, cleanup: (f) => cleanups.push(f)}).catch((e) => {
    if (ctl.signal.aborted || (e instanceof APIError && e.status === 401)) return;
    main.append(errorBox(e));
  });
}

function signIn() {
  if (signingIn) return;
  signingIn = true;
  close();
  for (const a of document.querySelectorAll('nav a')) a.removeAttribute('aria-current');
  const had = token.get() !== '';
  token.clear();
  document.getElementById('signout').hidden = true;
  const input = h('input', {id: 'token', type: 'password', autocomplete: 'off', required: true, size: 50,
    placeholder: 'API token'});
  const out = h('div');
  const submit = async (ev) => {
    ev.preventDefault();
    token.set(input.value.trim());
    try {
      await get('instances.list');
    } catch (e) {
      token.clear();
      out.replaceChildren(errorBox(e.status === 401 ? 'This token is not valid.' : e));
      return;
    }
    signingIn = false;
    document.getElementById('signout').hidden = false;
    live.start();
    route();
  };
  main.replaceChildren(h('form', {id: 'signin', class: 'signin', onsubmit: submit},
    h('h1', {}, 'Sign in'),
    h('p', {}, had ? 'The token was refused (expired or deleted?). ' : '',
      'This controller needs an API token. ', h('code', {}, 'rik dev'), ' prints the admin token; ',
      h('code', {}, 'rikctl token create --role viewer'), ' makes one. It is kept in this tab only.'),
    h('div', {class: 'row'}, input, h('button', {type: 'submit', class: 'primary'}, 'Sign in')),
    out));
  input.focus();
}

onUnauthorized(signIn);
live.onState((s) => {
  const el = document.getElementById('live');
  el.textContent = s;
  el.dataset.state = s;
});
document.getElementById('signout').hidden = token.get() === '';
document.getElementById('signout').addEventListener('click', () => {
  token.clear();
  location.reload();
});
const dialog = document.getElementById('confirm');
document.getElementById('confirm-ok').addEventListener('click', () => dialog.close('ok'));
document.getElementById('confirm-cancel').addEventListener('click', () => dialog.close('cancel'));
window.addEventListener('hashchange', route);
// Start once the page's frame (header, "Loading…") is painted: the first
// paint waits for no script or API call.
requestAnimationFrame(() => setTimeout(() => {
  live.start();
  route();
}, 0));
