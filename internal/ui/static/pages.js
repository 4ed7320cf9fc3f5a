// The list pages: nodes, workloads, instances, and the create form.
import {get, post} from './api.js';
import * as live from './live.js';
import {age, badge, confirmAction, cpu, emptyRow, errorBox, flash, h, mem, table} from './dom.js';

const POLL_NODES = 5000;
const POLL_WORKLOADS = 10000;

// every runs f now and then every ms until the page closes.
async function every(ctx, ms, f) {
  await f();
  const t = setInterval(() => f().catch(() => {}), ms);
  ctx.cleanup(() => clearInterval(t));
}

// bar shows use and allocation against capacity.
function bar(used, alloc, cap, fmt) {
  const pct = (v) => (cap > 0 ? Math.min(100, (100 * v) / cap).toFixed(1) + '%' : '0%');
  const a = h('div', {class: 'alloc'});
  const u = h('div', {class: 'used'});
  a.style.width = pct(alloc);
  u.style.width = pct(used);
  return h('div', {class: 'res'},
    h('div', {class: 'bar', title: `allocated ${fmt(alloc)}, used ${fmt(used)}, capacity ${fmt(cap)}`}, a, u),
    h('small', {}, `${fmt(used)} used · ${fmt(alloc)} allocated · ${fmt(cap)}`));
}

function nodeRow(n) {
  const v = n.value;
  return h('tr', {'data-name': n.name},
    h('td', {}, h('strong', {}, n.name), v.stale ? h('small', {class: 'muted'}, ' (stored)') : null),
    h('td', {}, badge(v.status)),
    h('td', {}, v.address || ''),
    h('td', {}, (v.kinds || []).join(', ')),
    h('td', {class: 'num'}, v.instances),
    h('td', {}, bar(v.usage.cpu, v.allocated.cpu, v.capacity.cpu, cpu)),
    h('td', {}, bar(v.usage.memory, v.allocated.memory, v.capacity.memory, mem)),
    h('td', {class: 'num'}, (v.load1 || 0).toFixed(2)),
    h('td', {}, v.lastHeartbeat ? age(v.lastHeartbeat) + ' ago' : ''));
}

export async function nodesPage(main, _, ctx) {
  const body = h('tbody');
  main.append(h('h1', {}, 'Nodes'),
    table(['Name', 'Status', 'Address', 'Kinds', 'Instances', 'CPU', 'Memory', 'Load', 'Heartbeat'], body));
  await every(ctx, POLL_NODES, async () => {
    const nodes = await get('nodes.list', {signal: ctx.signal});
    nodes.sort((a, b) => a.name.localeCompare(b.name));
    body.replaceChildren(...(nodes.length ? nodes.map(nodeRow) : [emptyRow(9, 'No node has joined yet.')]));
  });
}

// what a workload runs, in a few words.
function runs(w) {
  const s = w.spec || {};
  if (s.function) return s.function.execution.rootfs;
  return (s.containers || []).map((c) => c.image).join(', ');
}

function counts(workloadID) {
  let all = 0;
  let up = 0;
  for (const i of live.instances.values()) {
    if (i.value.workload_id !== workloadID) continue;
    all++;
    if (i.value.status === 'RUNNING') up++;
  }
  return `${up} running / ${all}`;
}

export async function startInstance(w) {
  try {
    const made = await post('instances.create', {workload_id: w.id});
    flash(`Instance ${made.map((i) => i.name).join(', ')} created.`);
  } catch (e) {
    flash(e.message, 'error');
  }
}

async function deleteWorkload(w, reload) {
  const n = [...live.instances.values()].filter((i) => i.value.workload_id === w.id).length;
  if (!(await confirmAction(`Delete workload ${w.name}${n ? ` and its ${n} instance(s)` : ''}?`))) return;
  try {
    await post('workloads.delete', {id: w.id});
    flash(`Workload ${w.name} deleted.`);
  } catch (e) {
    flash(e.message, 'error');
  }
  await reload().catch(() => {});
}

function workloadRow(w, reload) {
  return h('tr', {'data-id': w.id},
    h('td', {}, h('details', {}, h('summary', {}, h('strong', {}, w.name)),
      h('pre', {class: 'def'}, JSON.stringify(w.value, null, 2)))),
    h('td', {}, w.value.kind),
    h('td', {class: 'wrap'}, runs(w.value)),
    h('td', {class: 'count'}, counts(w.id)),
    h('td', {class: 'actions'},
      h('button', {type: 'button', onclick: () => startInstance(w)}, 'Start instance'),
      h('button', {type: 'button', class: 'danger', onclick: () => deleteWorkload(w, reload)}, 'Delete')));
}

export async function workloadsPage(main, _, ctx) {
  const body = h('tbody');
  let list = [];
  main.append(h('div', {class: 'title'}, h('h1', {}, 'Workloads'), h('a', {class: 'button', href: '#/create'}, 'New workload')),
    table(['Name', 'Kind', 'Runs', 'Instances', ''], body));
  const reload = async () => {
    list = await get('workloads.list', {signal: ctx.signal});
    list.sort((a, b) => a.name.localeCompare(b.name));
    body.replaceChildren(...(list.length ? list.map((w) => workloadRow(w, reload)) : [emptyRow(5, 'No workload yet.')]));
  };
  // Instance counts follow the event stream; open definitions stay open.
  ctx.cleanup(live.subscribe(() => {
    for (const w of list) {
      const cell = body.querySelector(`tr[data-id="${CSS.escape(w.id)}"] .count`);
      if (cell) cell.textContent = counts(w.id);
    }
  }));
  await every(ctx, POLL_WORKLOADS, reload);
}

// deleteInstance asks, then deletes; it resolves true once asked to.
export async function deleteInstance(item) {
  if (!(await confirmAction(`Delete instance ${item.name}? It is stopped on its node.`))) return false;
  try {
    await post('instances.delete', {id: item.id});
    flash(`Instance ${item.name} is being deleted.`);
    return true;
  } catch (e) {
    flash(e.message, 'error');
    return false;
  }
}

function instanceRow(item) {
  const v = item.value;
  return h('tr', {'data-id': item.id},
    h('td', {}, h('a', {href: '#/instances/' + encodeURIComponent(item.id)}, item.name)),
    h('td', {}, v.workload_name || ''),
    h('td', {}, v.kind),
    h('td', {}, badge(v.status), v.deleteRequested && v.status !== 'DESTROYING' ? ' deleting' : ''),
    h('td', {}, v.node || ''),
    h('td', {}, v.ip || ''),
    h('td', {class: 'num'}, v.restarts),
    h('td', {}, age(v.createdAt)),
    h('td', {class: 'actions'}, h('button', {type: 'button', class: 'danger', onclick: () => deleteInstance(item)}, 'Delete')));
}

export async function instancesPage(main, _, ctx) {
  const body = h('tbody');
  main.append(h('h1', {}, 'Instances'),
    table(['Name', 'Workload', 'Kind', 'Status', 'Node', 'IP', 'Restarts', 'Age', ''], body));
  const render = () => {
    const items = [...live.instances.values()].sort((a, b) =>
      b.value.createdAt.localeCompare(a.value.createdAt) || a.name.localeCompare(b.name));
    body.replaceChildren(...(items.length ? items.map(instanceRow) : [emptyRow(9, 'No instance.')]));
  };
  render();
  ctx.cleanup(live.subscribe(render));
}

const EXAMPLE = `apiVersion: v1
kind: Pod
name: web
spec:
  containers:
    - name: web
      image: busybox:latest
      command: ["httpd", "-f", "-p", "8080"]
      resources:
        cpu: 100
        memory: 32
`;

export async function createPage(main) {
  const text = h('textarea', {id: 'definition', rows: 18, spellcheck: 'false', placeholder: 'Paste a workload definition, JSON or YAML'});
  const replicas = h('input', {id: 'replicas', type: 'number', min: 0, max: 1000, value: '1'});
  const out = h('div');
  const submit = async (ev) => {
    ev.preventDefault();
    const def = text.value.trim();
    const type = def.startsWith('{') ? 'application/json' : 'application/yaml';
    out.replaceChildren();
    try {
      const w = await post('workloads.create', def, {type});
      const n = Number(replicas.value) || 0;
      if (n > 0) await post('instances.create', {workload_id: w.id, replicas: n});
      flash(`Workload ${w.name} created${n > 0 ? ` with ${n} instance(s)` : ''}.`);
      location.hash = n > 0 ? '#/instances' : '#/workloads';
    } catch (e) {
      out.replaceChildren(errorBox(e));
    }
  };
  main.append(h('h1', {}, 'Create a workload'),
    h('form', {id: 'create', onsubmit: submit},
      h('p', {class: 'muted'}, 'A Pod or a Function definition, in JSON or YAML, as rikctl create workload takes it.'),
      text,
      h('div', {class: 'row'},
        h('label', {}, 'Start ', replicas, ' instance(s)'),
        h('button', {type: 'button', class: 'quiet', onclick: () => { text.value = EXAMPLE; }}, 'Example'),
        h('button', {type: 'submit', class: 'primary'}, 'Create')),
      out));
}
