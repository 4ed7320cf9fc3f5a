// The controller's REST API, called with this tab's token.

const KEY = 'rik.token';

export const token = {
  get: () => sessionStorage.getItem(KEY) || '',
  set: (t) => sessionStorage.setItem(KEY, t),
  clear: () => sessionStorage.removeItem(KEY),
};

export class APIError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

let unauthorized = () => {};

// onUnauthorized sets what happens when the API answers 401.
export function onUnauthorized(fn) { unauthorized = fn; }

function headers(extra) {
  const h = new Headers(extra);
  const t = token.get();
  if (t) h.set('Authorization', 'Bearer ' + t);
  return h;
}

async function send(path, init) {
  const resp = await fetch('/api/v0/' + path, {...init, cache: 'no-store'});
  if (resp.ok) return resp;
  let msg = `${resp.status} ${resp.statusText}`;
  try {
    const body = await resp.json();
    if (body && body.error) msg = body.error;
  } catch { /* not JSON */ }
  if (resp.status === 401) unauthorized();
  throw new APIError(resp.status, msg);
}

// request calls the API and returns the decoded answer (null for 204).
// body is sent as is when a string (with type), else as JSON.
export async function request(method, path, {body, type = 'application/json', signal} = {}) {
  const init = {method, signal, headers: headers(body === undefined ? {} : {'Content-Type': type})};
  if (body !== undefined) init.body = typeof body === 'string' ? body : JSON.stringify(body);
  const resp = await send(path, init);
  return resp.status === 204 ? null : resp.json();
}

export const get = (path, opts) => request('GET', path, opts);
export const post = (path, body, opts = {}) => request('POST', path, {...opts, body});

// stream calls onText with each piece of a streamed answer, decoded, until
// it ends (it then resolves) or signal aborts.
export async function stream(path, onText, {signal, extraHeaders} = {}) {
  const resp = await send(path, {signal, headers: headers(extraHeaders)});
  const reader = resp.body.getReader();
  const dec = new TextDecoder();
  for (;;) {
    const {value, done} = await reader.read();
    if (done) break;
    onText(dec.decode(value, {stream: true}));
  }
  const rest = dec.decode();
  if (rest) onText(rest);
}

export const path = (route, id) => route + '/' + encodeURIComponent(id);
