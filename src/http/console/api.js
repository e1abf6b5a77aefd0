// Talking to the gateway: JSON calls with the operator's bearer token, and the SSE alert
// stream read with fetch() (EventSource cannot send an Authorization header).

const TOKEN_KEY = 'citygate.token';

let askToken = async () => null;
let pendingAsk = null;

/** Sets how the console asks the operator for a token (a dialog); returns it or null. */
export function onTokenNeeded(fn) {
  askToken = fn;
}

function token() {
  return sessionStorage.getItem(TOKEN_KEY) || '';
}

function headers(extra = {}) {
  const h = { Accept: 'application/json', ...extra };
  const tok = token();
  if (tok) h.Authorization = `Bearer ${tok}`;
  return h;
}

/**
 * Gets a new token after a 401/403 of a call made with `used`. Asks once even when several
 * calls fail at the same time, and not at all if the token changed since the call was made.
 */
async function renewToken(used) {
  if (token() !== used) return true;
  if (!pendingAsk) {
    pendingAsk = askToken().then((tok) => {
      pendingAsk = null;
      if (tok) sessionStorage.setItem(TOKEN_KEY, tok.trim());
      return Boolean(tok);
    });
  }
  return pendingAsk;
}

export class ApiError extends Error {
  constructor(status, reason, message) {
    super(message || reason || `HTTP ${status}`);
    this.status = status;
    this.reason = reason;
  }
}

/** A JSON call; on 401/403 asks for a token and tries again. */
export async function api(path, { method = 'GET', body } = {}) {
  for (let attempt = 0; ; attempt++) {
    const used = token();
    const init = { method, headers: headers(body ? { 'Content-Type': 'application/json' } : {}) };
    if (body !== undefined) init.body = JSON.stringify(body);
    const resp = await fetch(path, init);
    if ((resp.status === 401 || resp.status === 403) && attempt < 3 && (await renewToken(used))) {
      continue;
    }
    const text = await resp.text();
    let json = null;
    try {
      json = text ? JSON.parse(text) : null;
    } catch {
      // not JSON: reported below with the raw status
    }
    if (!resp.ok) {
      throw new ApiError(resp.status, json?.reason, json?.error || text.slice(0, 200));
    }
    return json;
  }
}

/** A minimal text/event-stream parser (WHATWG rules for the fields the gateway sends). */
export class SseParser {
  constructor(onEvent) {
    this.onEvent = onEvent;
    this.buffer = '';
    this.reset();
  }

  reset() {
    this.event = '';
    this.data = [];
    this.id = null;
  }

  push(chunk) {
    this.buffer += chunk;
    let nl;
    while ((nl = this.buffer.search(/\r\n|\r|\n/)) >= 0) {
      const line = this.buffer.slice(0, nl);
      const skip = this.buffer.startsWith('\r\n', nl) ? 2 : 1;
      // A lone '\r' at the end of a chunk may be the first half of '\r\n': wait for more.
      if (skip === 1 && this.buffer[nl] === '\r' && nl === this.buffer.length - 1) break;
      this.buffer = this.buffer.slice(nl + skip);
      this.line(line);
    }
  }

  line(line) {
    if (line === '') {
      if (this.data.length > 0 || this.event) {
        this.onEvent({ event: this.event || 'message', data: this.data.join('\n'), id: this.id });
      }
      this.reset();
      return;
    }
    if (line.startsWith(':')) return; // comment (keepalive)
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'event') this.event = value;
    else if (field === 'data') this.data.push(value);
    else if (field === 'id' && !value.includes('\0')) this.id = value;
  }
}

const KEEPALIVE_MS = 15000;

/**
 * Follows /api/v1/alerts/stream for as long as the page lives: reconnects with a backoff,
 * resuming after the last event id seen, so a reconnect replays exactly what was missed.
 * `handlers`: onSnapshot({seq, alerts}), onMessage(AlertMessage), onState(state).
 */
export function followAlerts(handlers) {
  let lastId = null;
  let backoff = 500;

  async function once() {
    const controller = new AbortController();
    let watchdog = null;
    // Three missed keepalives mean a dead connection that TCP has not noticed yet.
    const arm = () => {
      clearTimeout(watchdog);
      watchdog = setTimeout(() => controller.abort(), KEEPALIVE_MS * 3);
    };
    try {
      const used = token();
      const h = headers({ Accept: 'text/event-stream' });
      if (lastId !== null) h['Last-Event-ID'] = lastId;
      arm();
      const resp = await fetch('/api/v1/alerts/stream', {
        headers: h,
        signal: controller.signal,
        cache: 'no-store',
      });
      if (resp.status === 401 || resp.status === 403) {
        handlers.onState('auth');
        clearTimeout(watchdog);
        await renewToken(used);
        return;
      }
      if (!resp.ok || !resp.body) throw new Error(`HTTP ${resp.status}`);
      const parser = new SseParser((ev) => {
        if (ev.id !== null) lastId = ev.id;
        let data;
        try {
          data = JSON.parse(ev.data);
        } catch {
          return;
        }
        if (ev.event === 'snapshot') handlers.onSnapshot(data);
        else if (ev.event === 'alert') handlers.onMessage(data);
      });
      const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
      let first = true;
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        arm();
        if (first) {
          first = false;
          backoff = 500;
          handlers.onState('live');
        }
        parser.push(value);
      }
    } catch (e) {
      // network error, abort by the watchdog: reconnect below
    } finally {
      clearTimeout(watchdog);
    }
  }

  (async () => {
    handlers.onState('connecting');
    for (;;) {
      await once();
      handlers.onState('reconnecting');
      await new Promise((r) => setTimeout(r, backoff));
      backoff = Math.min(backoff * 2, 15000);
    }
  })();
}
