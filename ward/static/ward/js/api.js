// The API, as the central station's pages use it: JSON with the session's cookie, a timeout,
// the CSRF token on writes, and the server's clock.

export class ApiError extends Error {
  constructor(status, body) {
    const message = body?.error?.message ?? `HTTP ${status}`;
    super(message);
    this.status = status;
    this.code = body?.error?.code ?? null;
    this.body = body;
  }

  // The session ended or the role changed: polling again will not help.
  get refused() {
    return this.status === 401 || this.status === 403;
  }
}

// No answer at all: the network, the server down, or no answer within the timeout.
export class NetworkError extends Error {}

// How far the server's clock is ahead of this browser's, from the Date header of the answers.
// Ages ("12 s ago") and staleness are measured on the server's clock: a station PC whose clock
// is a minute off must not show every bed as stale (or none). The header has a resolution of a
// second, so differences below two seconds are taken as none.
let clockOffsetMs = 0;

function noteServerDate(response) {
  const date = Date.parse(response.headers.get("Date") ?? "");
  if (Number.isNaN(date)) return;
  const offset = date + 500 - Date.now(); // the header is truncated to the second
  clockOffsetMs = Math.abs(offset) < 2000 ? 0 : offset;
}

export function serverNow() {
  return Date.now() + clockOffsetMs;
}

function csrfToken() {
  return document.querySelector('meta[name="csrf-token"]')?.content ?? "";
}

// `json`, if given, is sent as the JSON body.
export async function apiFetch(url, { method = "GET", json = undefined, timeoutMs = 10000 } = {}) {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), timeoutMs);
  const headers = { Accept: "application/json" };
  if (method !== "GET") headers["X-CSRFToken"] = csrfToken();
  if (json !== undefined) headers["Content-Type"] = "application/json";
  try {
    let response;
    try {
      response = await fetch(url, {
        method,
        headers,
        body: json === undefined ? undefined : JSON.stringify(json),
        credentials: "same-origin",
        cache: "no-store",
        signal: controller.signal,
      });
    } catch (error) {
      throw new NetworkError(error.name === "AbortError" ? "no answer in time" : error.message);
    }
    noteServerDate(response);
    const body = await response.json().catch(() => null);
    if (!response.ok) throw new ApiError(response.status, body);
    return body;
  } finally {
    clearTimeout(timer);
  }
}

// What a failed run says about the connection: "lost" (no answer, or the server failing or
// overloaded: worth retrying), "refused" (the API refuses the session: logged out, or the role
// taken away) or "error" (anything else, e.g. a bug of this page: shown, and logged).
export function failureKind(error) {
  if (error instanceof NetworkError) return "lost";
  if (error instanceof ApiError) {
    if (error.refused) return "refused";
    if (error.status >= 500 || error.status === 429) return "lost";
  }
  console.error(error);
  return "error";
}

// Runs `task` every `intervalSeconds`, one run at a time, and reports the connection's state to
// `onState(state, error)`: "live" after a run that succeeded, else the failureKind() of the
// error. It keeps trying at the same pace whatever the failure, so that it is "live" again with
// the first answer once the server is back (or the user logged in again in another tab).
export class Poller {
  constructor({ intervalSeconds, task, onState }) {
    this.intervalMs = intervalSeconds * 1000;
    this.task = task;
    this.onState = onState;
    this.timer = null;
    this.running = false;
    this.lastSuccess = null;
  }

  start() {
    this.runSoon(0);
  }

  // Polls every `seconds` from the next run on (the pushed stream up: slowly; down: as before).
  setInterval(seconds) {
    this.intervalMs = seconds * 1000;
  }

  // Runs now (e.g. after the user changed what to show), or as soon as the current run ends.
  refresh() {
    if (this.running) {
      this.again = true;
    } else {
      this.runSoon(0);
    }
  }

  runSoon(delayMs) {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.run(), delayMs);
  }

  async run() {
    this.running = true;
    this.again = false;
    try {
      await this.task();
      this.lastSuccess = serverNow();
      this.onState("live", null);
    } catch (error) {
      this.onState(failureKind(error), error);
    } finally {
      this.running = false;
      this.runSoon(this.again ? 0 : this.intervalMs);
    }
  }
}

// The server's stream of changes (server-sent events, ward/events.py): `onChange(uuids)` for
// each "changed" event, the patients whose data changed. The stream is up while the server's
// watcher is heard from: a change, or a heartbeat (the first right after its first read, then
// every 5 s). Its opening is not heard from: it says only that the session was accepted, not
// that the watcher reads the database. Silent for `silenceMs` from its opening or from what
// was last heard, or failing, it is down: closed, and opened again with backoff (1 s, doubling
// up to 30 s; back to 1 s once heard from). `onUp(up)` tells each change of that, so that the
// page polls slowly while it is up and at its usual pace, as the fallback, while not (also
// while a stream is open but not yet heard from). The connection banner stays the poller's:
// the API answering or not.
export class EventStream {
  constructor({ url, onChange, onUp, silenceMs = 12000 }) {
    this.url = url;
    this.onChange = onChange;
    this.onUp = onUp;
    this.silenceMs = silenceMs;
    this.source = null;
    this.up = false;
    this.failures = 0;
    this.silence = null;
    this.retry = null;
  }

  start() {
    if (typeof EventSource === "undefined") return; // polling only
    this.connect();
  }

  connect() {
    // With the session's cookie also when the stream is on another port of this host.
    const source = new EventSource(this.url, { withCredentials: true });
    this.source = source;
    this.listen();
    source.addEventListener("heartbeat", () => this.heard());
    source.addEventListener("changed", (event) => {
      this.heard();
      this.onChange(JSON.parse(event.data).patients);
    });
    source.addEventListener("error", () => this.down());
  }

  // Down unless heard from within silenceMs.
  listen() {
    clearTimeout(this.silence);
    this.silence = setTimeout(() => this.down(), this.silenceMs);
  }

  heard() {
    this.failures = 0;
    this.listen();
    this.setUp(true);
  }

  down() {
    clearTimeout(this.silence);
    this.source?.close();
    this.source = null;
    this.setUp(false);
    clearTimeout(this.retry);
    const delayMs = Math.min(30000, 1000 * 2 ** this.failures);
    this.failures += 1;
    this.retry = setTimeout(() => this.connect(), delayMs);
  }

  setUp(up) {
    if (up === this.up) return;
    this.up = up;
    document.body.dataset.push = up ? "up" : "down";
    this.onUp(up);
  }
}
