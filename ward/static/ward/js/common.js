// What the ward and the patient page share: building the DOM, showing readings, NEWS2 badges,
// alarm priorities, ages and the connection's state.

import { EventStream, serverNow } from "ward/api";

export function readConfig(id) {
  return JSON.parse(document.getElementById(id).textContent);
}

// h("p", {class: "x"}, "text", child...): an element. Attributes with a null value are left out.
export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value !== null && value !== undefined) element.setAttribute(name, value);
  }
  element.append(...children.filter((child) => child !== null && child !== undefined));
  return element;
}

// Text for screen readers only, e.g. the full name of an abbreviated label.
export function srOnly(text) {
  return h("span", { class: "visually-hidden" }, text);
}

export const PRIORITY_LABELS = { high: "High", medium: "Medium", low: "Low" };
export const PRIORITY_RANK = { high: 3, medium: 2, low: 1 };
const RISK_LABELS = { low: "low", "low-medium": "low-medium", medium: "medium", high: "high" };

// The cells of a tile (and of the patient's header), built from the page's config (the signs
// registry): one per sign shown on a tile, in its order, the signs of one contract field sharing
// one ("BP 118/76"); then consciousness and air or oxygen (ACVPU).
export function signCells(config) {
  const cells = [];
  for (const sign of config.signs.filter((s) => s.onTile)) {
    const key = sign.wire ?? sign.key;
    let cell = cells.find((c) => c.key === key);
    if (!cell) {
      const named = sign.wire ? config.wireLabels[sign.wire] : sign;
      cell = { key, short: named.short, label: named.label, unit: sign.unit, color: sign.color, signs: [], optional: true };
      cells.push(cell);
    }
    cell.signs.push(sign);
    cell.optional &&= sign.optional;
  }
  return cells;
}

// A sign's (or observation's) newest value and when it was measured: the latest reading's
// own value when it has one (the latest is the newest *received*, whatever its stamp: a
// monitor clock set right after running ahead stamps its new values earlier than the old),
// else the patient's `latest_signs`.
export function newestSign(latestSigns, metric, key) {
  const value = metric?.[key];
  if (value !== null && value !== undefined) return { value, measured_at: metric.measured_at };
  return latestSigns?.[key] ?? null;
}

// The newest value of a sign still valid (measured within its validity), with its age in
// seconds on the server's clock; null when it has none.
export function validSign(latestSigns, metric, key, validSeconds) {
  const found = newestSign(latestSigns, metric, key);
  if (!found) return null;
  const age = Math.max(0, (serverNow() - Date.parse(found.measured_at)) / 1000);
  return age <= validSeconds ? { ...found, age } : null;
}

export function signText(sign, value) {
  return typeof value === "number" ? value.toFixed(sign.decimals) : String(value);
}

function cellValue(cell, latestSigns, metric) {
  const found = cell.signs.map((sign) => validSign(latestSigns, metric, sign.key, sign.validSeconds));
  if (found.some((f) => !f)) return null;
  return {
    text: found.map((f, i) => signText(cell.signs[i], f.value)).join("/"),
    measured_at: found.reduce((a, f) => (Date.parse(f.measured_at) < Date.parse(a) ? f.measured_at : a), found[0].measured_at),
  };
}

function acvpuValue(config, latestSigns, metric) {
  const valid = config.observationValidSeconds;
  const consciousness = validSign(latestSigns, metric, "consciousness", valid.consciousness);
  const oxygen = validSign(latestSigns, metric, "on_oxygen", valid.on_oxygen);
  if (!consciousness && !oxygen) return null;
  const older = [consciousness, oxygen].filter(Boolean).sort((a, b) => Date.parse(a.measured_at) - Date.parse(b.measured_at))[0];
  const text = `${consciousness?.value ?? "–"} · ${oxygen ? (oxygen.value ? "O₂" : "air") : "–"}`;
  return { text, measured_at: older.measured_at };
}

// cell -> {priority, active} of its most urgent open alarm (`alarmSigns`: the cell of each
// alarm kind about a sign; none for NEWS2 and the technical alarms).
function signAlarms(alarms, alarmSigns) {
  const found = {};
  for (const alarm of alarms) {
    const sign = alarmSigns[alarm.kind];
    if (!sign) continue;
    const active = alarm.state === "active";
    const seen = found[sign];
    if (!seen || PRIORITY_RANK[alarm.priority] > PRIORITY_RANK[seen.priority] || (alarm.priority === seen.priority && active)) {
      found[sign] = { priority: alarm.priority, active };
    }
  }
  return found;
}

// Fills a <dl> with a patient's signs (`latestSigns`: each sign's newest value, `metric`: the
// latest reading), building it on the first call: each value with its unit, and the age of its
// own newest value when older than the reading's ("BP 118/76 · 12 min"); a dash for a sign
// with no value within its validity; an optional sign (EtCO2) only once the patient has had it.
// A value in alarm (`alarms`: the patient's open alarms) takes its alarm's colour and, while
// not yet acknowledged, flashes at its priority's rate (IEC 60601-1-8: high faster than
// medium); screen readers hear "in high priority alarm".
export function renderVitals(dl, { latestSigns, metric, alarms = [] }, config) {
  const cells = signCells(config);
  if (!dl.childElementCount) {
    for (const cell of [...cells, { key: "acvpu", short: "ACVPU", label: "Consciousness and oxygen", unit: "" }]) {
      const label = h("dt", {}, h("span", { "aria-hidden": "true" }, cell.short), srOnly(cell.label), h("span", { class: "sign-age" }));
      const value = h("span", { class: "value" });
      const unit = cell.unit ? h("span", { class: "unit" }, cell.unit) : null;
      const box = h("div", { class: `sign${cell.key === "acvpu" ? " sign--text" : ""}${cell.signs?.length > 1 ? " sign--joined" : ""}`, "data-sign": cell.key }, label, h("dd", {}, value, unit));
      if (cell.color) box.style.setProperty("--sign-color", cell.color); // CSSOM: the CSP allows it
      dl.append(box);
    }
  }
  const readingAt = metric ? Date.parse(metric.measured_at) : null;
  const inAlarm = signAlarms(alarms, config.alarmSigns);
  for (const cell of [...cells, { key: "acvpu" }]) {
    const box = dl.querySelector(`[data-sign="${cell.key}"]`);
    if (cell.optional) box.hidden = !cell.signs.some((sign) => newestSign(latestSigns, metric, sign.key));
    const shown = cell.key === "acvpu" ? acvpuValue(config, latestSigns, metric) : cellValue(cell, latestSigns, metric);
    const value = box.querySelector(".value");
    value.textContent = shown ? shown.text : "–";
    const measured = shown ? Date.parse(shown.measured_at) : null;
    const older = shown && readingAt !== null && readingAt - measured >= 1000;
    box.querySelector(".sign-age").textContent = older ? ` · ${ageText((serverNow() - measured) / 1000)}` : "";
    box.classList.toggle("sign--none", !shown);
    const alarm = inAlarm[cell.key];
    value.className = alarm ? `value value--alarm-${alarm.priority}${alarm.active ? "" : " value--acknowledged"}` : "value";
    box.querySelector(".sign-alarm")?.remove();
    if (alarm) box.querySelector("dd").append(h("span", { class: "visually-hidden sign-alarm" }, ` in ${alarm.priority} priority alarm`));
  }
}

// A NEWS2 badge: its colour says the risk, and so does its text. `compact` (a tile, where the
// patient's name needs the room) leaves the word "risk" to screen readers. A score with a
// parameter missing (no valid value: `complete` false) is written "incomplete", the parameters
// named in its tooltip, and hatched: never mistaken for a complete low score. `parameters`:
// the NEWS2 parameters' names in words.
export function renderNews2(element, news2, metric, { compact = false, parameters = {} } = {}) {
  const risk = news2?.risk ?? "none";
  const incomplete = Boolean(news2) && news2.complete === false;
  element.className = `news2 news2--${risk}${incomplete ? " news2--incomplete" : ""}`;
  const score = news2 ? String(news2.score) : "–";
  const missing = incomplete ? (news2.missing ?? []).map((key) => parameters[key] ?? key).join(", ") : "";
  let text;
  if (incomplete) text = ["incomplete", h("span", { class: "visually-hidden" }, `, no valid ${missing}`)];
  else if (news2) text = [RISK_LABELS[risk], compact ? srOnly(" risk") : " risk"];
  else text = [metric?.artefact ? "artefact" : "no score"];
  if (incomplete) element.title = `NEWS2 incomplete: no valid ${missing}`;
  else element.removeAttribute("title");
  element.replaceChildren(
    h("span", { class: "news2-label" }, "NEWS2"),
    h("span", { class: "news2-score" }, score),
    h("span", { class: "news2-risk" }, ...text),
  );
}

// A priority: colour, and the word.
export function priorityBadge(priority) {
  return h("span", { class: `prio prio--${priority}` }, PRIORITY_LABELS[priority] ?? priority);
}

// "4 s", "3 min 05 s", "25 min", "2 h 10 min", "3 d 4 h".
export function ageText(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  if (s < 60) return `${s} s`;
  if (s < 600) return `${Math.floor(s / 60)} min ${String(s % 60).padStart(2, "0")} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${String(Math.floor((s % 3600) / 60)).padStart(2, "0")} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

export function timeText(iso) {
  return new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });
}

export function dateTimeText(iso) {
  const date = new Date(iso);
  const day = date.toLocaleDateString([], { day: "2-digit", month: "short" });
  return `${day} ${timeText(iso)}`;
}

// The age of a reading on the server's clock, and whether it is stale. A monitor whose clock is
// off by more than `clockSkewSeconds` (measured_at against sent_at, the time it was sent) is
// aged from when it sent the reading; an age is never negative, and a reading stamped in the
// future says by how much (`ahead`, seconds).
export function readingAge(metric, staleSeconds, clockSkewSeconds = Infinity) {
  if (!metric) return { seconds: null, stale: false, ahead: 0 };
  const measured = Date.parse(metric.measured_at);
  const offset = metric.clock_offset_s;
  const skewed = offset !== null && offset !== undefined && Math.abs(offset) > clockSkewSeconds;
  const taken = skewed ? Date.parse(metric.sent_at) : measured;
  const now = serverNow();
  const seconds = Math.max(0, (now - taken) / 1000);
  return { seconds, stale: seconds > staleSeconds, ahead: Math.max(0, (measured - now) / 1000) };
}

// Fills `element` with a reading's age: "4 s ago", or "Stale · no reading for 3 min 05 s"; and
// for a reading stamped ahead of the server's clock, "· stamped 4 min 50 s in the future".
export function renderAge(element, metric, staleSeconds, clockSkewSeconds) {
  const { seconds, stale, ahead } = readingAge(metric, staleSeconds, clockSkewSeconds);
  element.classList.toggle("age--stale", stale);
  const future = ahead >= 1
    ? [" · ", h("strong", { class: "clock-label" }, `stamped ${ageText(ahead)} in the future`), " (monitor clock ahead)"]
    : [];
  if (seconds === null) {
    element.replaceChildren("No reading yet");
  } else if (stale) {
    element.replaceChildren(h("strong", { class: "stale-label" }, "Stale"), ` · no reading for ${ageText(seconds)}`, ...future);
  } else {
    element.replaceChildren(`${ageText(seconds)} ago`, ...future);
  }
  return stale;
}

// How long an active alarm has gone unanswered (since it last became active), and whether it
// was escalated for it: "unanswered 2 min 05 s", "ESCALATED · unanswered 2 min 05 s".
export function unansweredText(alarm) {
  if (alarm.state !== "active" || !alarm.activated_at) return "";
  const seconds = (serverNow() - Date.parse(alarm.activated_at)) / 1000;
  return `${alarm.escalated_at ? "ESCALATED · " : ""}unanswered ${ageText(seconds)}`;
}

// A patient whose monitoring a clinician ended: "Monitoring ended 10:15:02 by nurse".
export function monitoringEndedText(patient) {
  if (!patient?.monitoring_ended_at) return "";
  return `Monitoring ended ${timeText(patient.monitoring_ended_at)}${patient.monitoring_ended_by ? ` by ${patient.monitoring_ended_by}` : ""}`;
}

// Each change the server pushes (EventStream) refreshes the page through its poller at once:
// one rendering path. While the stream is up the poller polls only every pushPollSeconds (the
// fallback should a change not be pushed); when it goes down or comes back, the page refreshes
// at once (what was missed meanwhile; and the banner says at once whether the API answers).
// Pushed refreshes are PUSHED_GAP_MS apart at least: a ward of 64 beds at 1 Hz changes with
// every batch the consumer stores, and each refresh reads the whole unit.
const PUSHED_GAP_MS = 400;

export function pushed(poller, { eventsUrl, eventsPort, pollSeconds, pushPollSeconds }) {
  let last = 0;
  let timer = null;
  new EventStream({
    // The push process on another port of this host (WARD_EVENTS_PORT), or this server.
    url: eventsPort ? `${location.protocol}//${location.hostname}:${eventsPort}${eventsUrl}` : eventsUrl,
    onChange: () => {
      if (timer) return; // one is due already
      timer = setTimeout(() => {
        timer = null;
        last = Date.now();
        poller.refresh();
      }, Math.max(0, last + PUSHED_GAP_MS - Date.now()));
    },
    onUp: (up) => {
      poller.setInterval(up ? pushPollSeconds : pollSeconds);
      poller.refresh();
    },
  }).start();
}

// The header's connection indicator and the banner under it.
export function connectionIndicator({ loginUrl }) {
  const indicator = document.getElementById("connection");
  const text = indicator.querySelector(".connection-text");
  const banner = document.getElementById("connection-lost");
  let state = "starting";
  let lastSuccess = null;

  function showBanner(...content) {
    banner.replaceChildren(...content);
    banner.hidden = false;
  }

  return {
    get state() {
      return state;
    },
    set(newState, error) {
      const previous = state;
      state = newState;
      document.body.dataset.connection = newState;
      indicator.className = `connection connection--${newState}`;
      if (newState === "live") {
        lastSuccess = new Date(serverNow()).toISOString();
        text.textContent = `Live · ${timeText(lastSuccess)}`;
        banner.hidden = true;
        return;
      }
      if (newState === previous) return; // the banner says it already; no new announcement
      const since = lastSuccess ? ` The values shown are from ${timeText(lastSuccess)}.` : "";
      if (newState === "lost") {
        text.textContent = "Connection lost";
        showBanner(h("strong", {}, "Connection to the server lost: reconnecting…"), since);
      } else if (newState === "refused") {
        text.textContent = "Not logged in";
        showBanner(
          h("strong", {}, "The server refuses this session: "),
          "you were logged out, or your account may no longer see patients. ",
          h("a", { href: `${loginUrl}?next=${encodeURIComponent(location.pathname)}` }, "Log in again"),
        );
      } else {
        text.textContent = "Error";
        showBanner(h("strong", {}, "This page failed to update: "), `${error?.message ?? error}. Retrying…`, since);
      }
    },
  };
}

// IEC 60601-1-8's alarm-off indicator: "ALARM OFF" and the alarms switched off, in words (with
// a crossed-out sign that screen readers skip). `alarmsOff`: the API's [{kind, reason, ...}].
export function alarmOffIndicator(alarmsOff, labels) {
  const kinds = alarmsOff.map((off) => labels[off.kind] ?? off.kind).join(", ");
  return [
    h("span", { class: "alarm-off-icon", "aria-hidden": "true" }, "⊘"),
    h("strong", { class: "alarm-off-label" }, "ALARM OFF"),
    h("span", { class: "alarm-off-kinds" }, `: ${kinds}`),
  ];
}

// The options of a bed <select>, rebuilt only when the free beds change (keeping the choice).
export function fillBeds(choice, beds) {
  const key = beds.map((bed) => bed.id).join(",");
  if (choice.dataset.beds === key) return;
  const chosen = choice.value;
  choice.dataset.beds = key;
  choice.replaceChildren(...beds.map((bed) => h("option", { value: String(bed.id) }, `Bed ${bed.label}`)));
  if (beds.some((bed) => String(bed.id) === chosen)) choice.value = chosen;
}
