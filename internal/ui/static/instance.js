// One instance: its details, what the event stream says about it, and its
// logs, followed.
import {APIError, get, path, stream} from './api.js';
import * as live from './live.js';
import {age, badge, errorBox, h, table, time} from './dom.js';
import {deleteInstance} from './pages.js';

const LOG_LIMIT = 200000; // characters kept on screen

function details(v) {
  const rows = [
    ['ID', v.id], ['Workload', v.workload_name], ['Kind', v.kind], ['Node', v.node],
    ['Former nodes', (v.formerNodes || []).join(', ')], ['IP', v.ip],
    ['Ports', (v.ports || []).map((p) => `${p.port}→${p.targetPort}${p.protocol ? '/' + p.protocol : ''}`).join(', ')],
    ['Reason', v.reason], ['Message', v.message], ['Exit code', v.exitCode],
    ['Restarts', v.restarts], ['Created', `${time(v.createdAt)} (${age(v.createdAt)} ago)`], ['Updated', time(v.updatedAt)],
    ['Timings', Object.entries(v.timings_ms || {}).map(([k, ms]) => `${k} ${ms} ms`).join(', ')],
  ];
  return h('dl', {class: 'details'},
    rows.filter(([, x]) => x !== undefined && x !== null && x !== '').map(([k, x]) => [h('dt', {}, k), h('dd', {}, String(x))]));
}

function eventRows(id) {
  const hs = live.history(id);
  if (!hs.length) return [h('tr', {}, h('td', {colspan: 5, class: 'muted'}, 'No event since this page was opened.'))];
  return hs.slice().reverse().map((e) => h('tr', {},
    h('td', {}, e.at.toLocaleTimeString()), h('td', {}, badge(e.status)), h('td', {}, e.node),
    h('td', {}, e.reason), h('td', {}, e.message)));
}

// followLogs streams the logs into pre until the stream ends or ctx closes.
async function followLogs(id, container, pre, note, signal) {
  pre.textContent = '';
  note.textContent = 'following…';
  const q = new URLSearchParams({follow: 'true', tail: '1000'});
  if (container) q.set('container', container);
  try {
    await stream(path('instances.logs', id) + '?' + q, (text) => {
      const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
      pre.append(text);
      if (pre.textContent.length > LOG_LIMIT) pre.textContent = pre.textContent.slice(-LOG_LIMIT / 2);
      if (atEnd) pre.scrollTop = pre.scrollHeight;
    }, {signal});
    note.textContent = 'log stream ended';
  } catch (e) {
    if (signal.aborted) return;
    note.textContent = e instanceof APIError && e.status === 403 ? 'reading logs needs the operator role' : 'logs: ' + e.message;
  }
}

// containersOf lists a pod's containers (from its workload), [] if unknown.
async function containersOf(v, signal) {
  if (v.kind !== 'Pod') return [];
  try {
    const ws = await get('workloads.list', {signal});
    const w = ws.find((x) => x.id === v.workload_id);
    return w ? (w.value.spec.containers || []).map((c) => c.name) : [];
  } catch {
    return [];
  }
}

export async function instancePage(main, id, ctx) {
  const first = await get(path('instances.get', id), {signal: ctx.signal});
  let item = live.instances.get(first.id) || first;
  const head = h('div', {class: 'title'});
  const info = h('div');
  const events = h('tbody');
  const pre = h('pre', {id: 'logs', class: 'logs'});
  const note = h('small', {id: 'logs-state', class: 'muted'});
  const pick = h('select', {id: 'container', hidden: true});
  let logs = new AbortController();
  ctx.cleanup(() => logs.abort());
  const restart = () => {
    logs.abort();
    logs = new AbortController();
    followLogs(item.id, pick.value, pre, note, logs.signal);
  };
  pick.addEventListener('change', restart);
  const del = h('button', {type: 'button', class: 'danger', id: 'delete', onclick: async () => {
    if (await deleteInstance(item)) location.hash = '#/instances';
  }}, 'Delete');
  let shown = ''; // the status shown
  const render = () => {
    item = live.instances.get(item.id) || item;
    // Logs come once it runs: follow them again when it starts (or restarts).
    if (shown && shown !== 'RUNNING' && item.value.status === 'RUNNING') restart();
    shown = item.value.status;
    const gone = !live.instances.has(item.id) && live.history(item.id).some((e) => e.status === 'TERMINATED');
    head.replaceChildren(h('h1', {}, item.name, ' ', badge(item.value.status)), gone ? h('span', {class: 'muted'}, 'deleted') : del);
    info.replaceChildren(details(item.value));
    events.replaceChildren(...eventRows(item.id));
  };
  render();
  ctx.cleanup(live.subscribe(render));
  main.append(h('p', {}, h('a', {href: '#/instances'}, '← Instances')), head,
    h('div', {class: 'cols'},
      h('section', {}, h('h2', {}, 'Details'), info),
      h('section', {}, h('h2', {}, 'Events'), table(['Time', 'Status', 'Node', 'Reason', 'Message'], events, 'events'))),
    h('section', {}, h('div', {class: 'title'}, h('h2', {}, 'Logs'), pick, note), pre));
  const names = await containersOf(item.value, ctx.signal);
  if (names.length > 1) {
    pick.replaceChildren(...names.map((n) => h('option', {value: n}, n)));
    pick.hidden = false;
  }
  restart();
}
