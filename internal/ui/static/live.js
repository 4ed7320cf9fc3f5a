// The instances as the event stream tells them: listed once the stream is
// connected, then kept up to date by its events, without polling.
import {APIError, get, stream} from './api.js';
import {SSEParser} from './sse.js';

const HISTORY = 50; // events kept per instance
const HISTORIES = 2000; // instances whose events are kept
const WAIT_MAX = 15000;

export const instances = new Map(); // id -> {id, name, value}
const histories = new Map(); // id -> [{at, status, node, reason, message}]
const listeners = new Set();
let running = false;
let state = 'offline';
let stateListener = () => {};
let relistTimer = 0;
let pending = null; // events received while listing

// subscribe calls fn after every change; it returns the unsubscribe.
export function subscribe(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

// onState calls fn with 'connecting', 'live' or 'reconnecting'.
export function onState(fn) { stateListener = fn; fn(state); }

// history lists what the stream said about an instance since the page
// was loaded, oldest first.
export const history = (id) => histories.get(id) || [];

function notify() { for (const fn of listeners) fn(); }

function setState(s) {
  state = s;
  stateListener(s);
}

function newer(a, b) {
  return !b || Date.parse(a.value.updatedAt) >= Date.parse(b.value.updatedAt);
}

function record(item) {
  const v = item.value;
  const h = histories.get(item.id) || [];
  const last = h[h.length - 1];
  const e = {at: new Date(), status: v.status, node: v.node || '', reason: v.reason || '', message: v.message || ''};
  if (last && ['status', 'node', 'reason', 'message'].every((k) => last[k] === e[k])) return;
  h.push(e);
  if (h.length > HISTORY) h.shift();
  histories.set(item.id, h);
  if (histories.size > HISTORIES) histories.delete(histories.keys().next().value);
}

function apply(item) {
  record(item);
  if (pending) pending.push(item);
  if (newer(item, instances.get(item.id))) instances.set(item.id, item);
  // A removed instance is sent once more as TERMINATED; listing again tells
  // whether its record is gone.
  if (item.value.status === 'TERMINATED') scheduleRelist();
}

function scheduleRelist() {
  if (relistTimer) return;
  relistTimer = setTimeout(() => {
    relistTimer = 0;
    relist().catch(() => {});
  }, 300);
}

let listing = null; // the listing in flight
let again = false; // list once more when it is done

// relist replaces the instances with a fresh listing, keeping what events
// said since it was asked for. Calls during a listing make one more.
function relist() {
  if (listing) {
    again = true;
    return listing;
  }
  listing = listOnce().finally(() => {
    listing = null;
    if (again) {
      again = false;
      relist().catch(() => {});
    }
  });
  return listing;
}

async function listOnce() {
  pending = [];
  try {
    const items = await get('instances.list');
    const fresh = new Map(items.map((i) => [i.id, i]));
    for (const ev of pending) {
      const gone = ev.value.status === 'TERMINATED' && !fresh.has(ev.id);
      if (!gone && newer(ev, fresh.get(ev.id))) fresh.set(ev.id, ev);
    }
    instances.clear();
    for (const [id, item] of fresh) instances.set(id, item);
  } finally {
    pending = null;
  }
  notify();
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// start follows the event stream until the API answers 401 (then start
// must be called again once signed in).
export function start() {
  if (running) return;
  running = true;
  follow().finally(() => { running = false; });
}

async function follow() {
  let wait = 1000;
  let lastId = '';
  setState('connecting');
  for (;;) {
    const parser = new SSEParser((ev) => {
      if (ev.event !== 'instance') return;
      try {
        apply(JSON.parse(ev.data));
      } catch { return; }
      notify();
    });
    parser.lastId = lastId;
    let connected = false;
    try {
      // Resumed from the last id: the server sends what was missed (the
      // listing on connecting covers a resync's removals).
      await stream('events?kinds=instance', (text) => {
        if (!connected) {
          connected = true;
          wait = 1000;
          setState('live');
          relist().catch(() => {});
        }
        parser.push(text);
      }, {extraHeaders: lastId ? {'Last-Event-ID': lastId} : {}});
    } catch (e) {
      if (e instanceof APIError && e.status === 401) {
        setState('offline');
        return;
      }
    } finally {
      lastId = parser.lastId;
    }
    setState('reconnecting');
    await sleep(wait);
    wait = Math.min(wait * 2, WAIT_MAX);
  }
}
