// One patient: the latest reading, another name a monitor sends, trend charts with the alarm
// limits, the alarms (and, for clinicians, acknowledging them and resolving the name). Polled
// from the API.

import uPlot from "uplot";
import { ApiError, apiFetch, Poller, serverNow } from "ward/api";
import {
  alarmOffIndicator,
  connectionIndicator,
  dateTimeText,
  h,
  monitoringEndedText,
  priorityBadge,
  readConfig,
  renderAge,
  renderNews2,
  renderVitals,
  unansweredText,
} from "ward/common";

const config = readConfig("patient-config");
const connection = connectionIndicator(config);
const TREND_POINTS = 300;
const CHART_HEIGHT = 200;

// Each chart: the signs it draws (mean as a line, min-max of each bucket as a band) and the
// patient's alarm limits (or, for NEWS2, the escalation thresholds) drawn as dashed lines.
const CHARTS = [
  { key: "pulse", title: "Pulse", unit: "/min", signs: [["pulse", "Pulse", "#3ddc84"]], limits: ["pulse_low", "pulse_high"], soft: [40, 140] },
  { key: "spo2", title: "SpO₂", unit: "%", signs: [["spo2", "SpO₂", "#29c5f6"]], limits: ["spo2_low"], soft: [85, 100] },
  {
    key: "bp",
    title: "Blood pressure",
    unit: "mmHg",
    signs: [
      ["systolic", "Systolic", "#da77f2"],
      ["diastolic", "Diastolic", "#b197fc"],
    ],
    limits: ["systolic_low", "systolic_high", "diastolic_low", "diastolic_high"],
    soft: [40, 170],
  },
  { key: "resp_rate", title: "Respiratory rate", unit: "/min", signs: [["resp_rate", "Resp. rate", "#c0eb75"]], limits: ["resp_rate_low", "resp_rate_high"], soft: [5, 35] },
  { key: "temperature", title: "Temperature", unit: "°C", signs: [["temperature", "Temperature", "#e9ecef"]], limits: ["temperature_low", "temperature_high"], soft: [35, 39.5] },
  {
    key: "news2",
    title: "NEWS2",
    unit: "",
    signs: [["news2", "NEWS2", "#ff922b"]],
    thresholds: [
      [5, "medium risk (5)"],
      [7, "high risk (7)"],
    ],
    soft: [0, 9],
  },
];
const LIMIT_COLOR = "#ffa94d";
const LIMIT_LABELS = {
  pulse_low: "low limit",
  pulse_high: "high limit",
  spo2_low: "low limit",
  systolic_low: "systolic low limit",
  systolic_high: "systolic high limit",
  diastolic_low: "diastolic low limit",
  diastolic_high: "diastolic high limit",
  resp_rate_low: "low limit",
  resp_rate_high: "high limit",
  temperature_low: "low limit",
  temperature_high: "high limit",
};

const ranges = [...document.querySelectorAll(".range")];
const trendNote = document.getElementById("trend-note");
let rangeSeconds = Number(ranges.find((b) => b.getAttribute("aria-pressed") === "true").dataset.range);
let trendDueAt = 0;
let limits = null;
let shownTrend = null; // the trend the charts draw; their "latest" is the header's reading
const charts = new Map();

// A sign's value in the latest reading, as the header shows it (NEWS2: the patient's score).
function latestValue(sign) {
  if (sign === "news2") return latestNews2 ? String(latestNews2.score) : null;
  const value = latest?.[sign];
  if (value === null || value === undefined) return null;
  return sign === "temperature" ? value.toFixed(1) : String(value);
}

function withAlpha(hex, alpha) {
  const n = parseInt(hex.slice(1), 16);
  return `rgba(${n >> 16}, ${(n >> 8) & 255}, ${n & 255}, ${alpha})`;
}

// 24-hour clock on the time axis: "14:05" (and the day at midnight, over a 24 h range).
function clockText(seconds) {
  const date = new Date(seconds * 1000);
  const time = date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", hour12: false });
  if (time !== "00:00") return time;
  return date.toLocaleDateString([], { day: "2-digit", month: "short" });
}

function rangeText(seconds) {
  return seconds < 3600 ? `${seconds / 60} min` : `${seconds / 3600} h`;
}

// --- charts ---------------------------------------------------------------------------------

function lines(chart) {
  // Horizontal reference lines: [value, label].
  if (chart.thresholds) return chart.thresholds;
  if (!limits) return [];
  return chart.limits.map((name) => [limits[name], `${LIMIT_LABELS[name]} ${limits[name]}`]);
}

// The dashed lines' labels, beside each line at the plot's right edge (two limits at one height
// share a label), in the plot's overlay: text a reader can select and a test can measure.
const LABEL_HEIGHT = 14;

function placeLineLabels(u, chart) {
  const plot = u.root.parentElement;
  u.over.querySelectorAll(".limit-label").forEach((label) => label.remove());
  const placed = [];
  for (const [value, label] of lines(chart)) {
    const y = u.valToPos(value, "y");
    const near = placed.find((p) => Math.abs(p.y - y) < LABEL_HEIGHT);
    if (near) near.texts.push(label);
    else placed.push({ y, value, texts: [label] });
  }
  for (const { y, value, texts } of placed.sort((a, b) => a.y - b.y)) { // top to bottom
    const label = h("span", { class: "limit-label", "data-value": String(value) }, texts.join(" · "));
    label.style.top = `${y}px`; // CSSOM, which the Content-Security-Policy allows
    u.over.append(label);
  }
  plot.uplot = u; // for the browser tests: the chart's own scale
}

function chartOptions(chart, width) {
  const series = [{}];
  const bands = [];
  for (const [, label, color] of chart.signs) {
    const mean = series.length;
    series.push({ label, stroke: color, width: 2, points: { show: false } });
    series.push({ label: `${label} min`, stroke: withAlpha(color, 0.35), width: 1, points: { show: false } });
    series.push({ label: `${label} max`, stroke: withAlpha(color, 0.35), width: 1, points: { show: false } });
    bands.push({ series: [mean + 2, mean + 1], fill: withAlpha(color, 0.16) });
  }
  for (const [, label] of lines(chart)) {
    series.push({ label, stroke: LIMIT_COLOR, width: 1.5, dash: [6, 5], points: { show: false } });
  }
  const axis = { stroke: "#aab4c3", grid: { stroke: "rgba(255,255,255,0.07)" }, ticks: { stroke: "rgba(255,255,255,0.15)" } };
  return {
    width,
    height: CHART_HEIGHT,
    legend: { show: false },
    cursor: { drag: { x: false, y: false } },
    scales: {
      x: { time: true },
      y: {
        range: (u, min, max) => {
          const low = Math.min(min ?? chart.soft[0], chart.soft[0]);
          const high = Math.max(max ?? chart.soft[1], chart.soft[1]);
          const pad = (high - low) * 0.05;
          return [low - pad, high + pad];
        },
      },
    },
    series,
    bands,
    axes: [
      { ...axis, size: 32, values: (u, splits) => splits.map(clockText) },
      {
        ...axis,
        size: 44,
        // Ticks 20 px apart or more (uPlot's 30 left one or two on the old 150 px charts), at
        // whole numbers but for the temperature.
        space: 20,
        incrs: chart.key === "temperature" ? [0.1, 0.2, 0.5, 1, 2, 5] : [1, 2, 5, 10, 20, 25, 50, 100, 200],
        values: (u, splits) => {
          u.root.parentElement.dataset.yTicks = splits.join(",");
          return splits.map(String);
        },
      },
    ],
    hooks: { draw: [(u) => placeLineLabels(u, chart)] },
  };
}

// The series of a chart from a trend: every bucket of the window on the x axis (null where
// there was no reading, so that a gap shows as a gap), the limits constant across it.
function chartData(chart, trend, grid) {
  const byStart = new Map(trend.buckets.map((b) => [Date.parse(b.start) / 1000, b]));
  const x = grid.map((start) => start + trend.bucket_seconds / 2);
  const data = [x];
  for (const [sign] of chart.signs) {
    const stats = grid.map((start) => byStart.get(start)?.[sign] ?? null);
    data.push(stats.map((s) => (s ? (chart.key === "news2" ? s.max : s.mean) : null)));
    data.push(stats.map((s) => (s ? s.min : null)));
    data.push(stats.map((s) => (s ? s.max : null)));
  }
  for (const [value] of lines(chart)) data.push(grid.map(() => value));
  return data;
}

// "Pulse 92 to 131 /min, latest 131; last 5 s mean 124.5": the range over the window, the
// latest reading (the header's), and the last point of the line, which is a bucket's mean (for
// NEWS2 its maximum), said so.
function summary(chart, trend) {
  const parts = [];
  const bucket = bucketText(trend.bucket_seconds);
  for (const [sign, label] of chart.signs) {
    const values = trend.buckets.map((b) => b[sign]).filter(Boolean);
    const now = latestValue(sign);
    const latestText = now === null ? "" : `, latest ${now}`;
    if (!values.length) {
      parts.push(`${label}: no readings in the window${latestText}`);
      continue;
    }
    const low = Math.min(...values.map((v) => v.min));
    const high = Math.max(...values.map((v) => v.max));
    const [what, last] = chart.key === "news2" ? ["max", values.at(-1).max] : ["mean", values.at(-1).mean];
    parts.push(`${label} ${low} to ${high}${chart.unit ? ` ${chart.unit}` : ""}${latestText}; last ${bucket} ${what} ${Math.round(last * 10) / 10}`);
  }
  const reference = lines(chart).map(([, label]) => label);
  return `${parts.join("; ")}${reference.length ? `. Lines: ${reference.join(", ")}` : ""}.`;
}

function createChart(chart) {
  const caption = h("figcaption", {}, h("span", { class: "chart-title" }, chart.title), chart.unit ? h("span", { class: "unit" }, ` ${chart.unit}`) : null);
  const summaryText = h("span", { class: "chart-summary" });
  const plot = h("div", { class: "chart-plot", role: "img" });
  const figure = h("figure", { class: "chart", "data-chart": chart.key }, caption, plot, summaryText);
  document.getElementById("charts").append(figure);
  const entry = { chart, figure, plot, summaryText, uplot: null, lineCount: -1 };
  new ResizeObserver(() => entry.uplot?.setSize({ width: plot.clientWidth, height: CHART_HEIGHT })).observe(plot);
  return entry;
}

function bucketText(seconds) {
  return seconds < 60 ? `${seconds} s` : `${seconds / 60} min`;
}

// The text under each chart (and read out for it): redrawn with every new reading, so that its
// "latest" is always the header's.
function renderSummaries() {
  if (!shownTrend) return;
  for (const chart of CHARTS) {
    const entry = charts.get(chart.key);
    const text = summary(chart, shownTrend);
    entry.plot.setAttribute("aria-label", `${chart.title} over the last ${rangeText(rangeSeconds)}: ${text}`);
    entry.summaryText.textContent = text;
  }
}

function renderCharts(trend) {
  shownTrend = trend;
  const first = Math.floor(Date.parse(trend.since) / 1000 / trend.bucket_seconds);
  const last = Math.floor(Date.parse(trend.until) / 1000 / trend.bucket_seconds);
  const grid = [];
  for (let i = first; i <= last; i++) grid.push(i * trend.bucket_seconds);
  for (const chart of CHARTS) {
    let entry = charts.get(chart.key);
    if (!entry) {
      entry = createChart(chart);
      charts.set(chart.key, entry);
    }
    const data = chartData(chart, trend, grid);
    // The number of limit lines is fixed per chart; a chart is built again only if it changed.
    if (!entry.uplot || entry.lineCount !== lines(chart).length) {
      entry.uplot?.destroy();
      entry.plot.replaceChildren();
      entry.uplot = new uPlot(chartOptions(chart, entry.plot.clientWidth || 400), data, entry.plot);
      entry.lineCount = lines(chart).length;
    } else {
      entry.uplot.setData(data);
    }
  }
  renderSummaries();
  trendNote.textContent = `Last ${rangeText(rangeSeconds)}, ${bucketText(trend.bucket_seconds)} per point: line the mean (NEWS2: the highest), band the range, dashed the alarm limits.`;
}

async function loadTrend() {
  const until = new Date(serverNow());
  const since = new Date(until.getTime() - rangeSeconds * 1000);
  const query = new URLSearchParams({ since: since.toISOString(), until: until.toISOString(), points: String(TREND_POINTS) });
  const [trend, newLimits] = await Promise.all([apiFetch(`${config.trendUrl}?${query}`), apiFetch(config.limitsUrl)]);
  // Buckets of a few seconds are worth redrawing every few seconds; wide ones not as often.
  const every = Math.max(config.pollSeconds, Math.min(trend.bucket_seconds, 30));
  trendDueAt = Date.now() + every * 1000;
  return { trend, limits: newLimits };
}

for (const button of ranges) {
  button.addEventListener("click", () => {
    for (const other of ranges) other.setAttribute("aria-pressed", String(other === button));
    rangeSeconds = Number(button.dataset.range);
    trendDueAt = 0;
    poller.refresh();
  });
}

// --- the latest reading -----------------------------------------------------------------------

const vitals = document.getElementById("patient-vitals");
const news2 = document.getElementById("patient-news2");
const age = document.getElementById("patient-age");
let latest = null;
let latestNews2 = null;

function renderPatient(patient) {
  latest = patient.latest_metric;
  latestNews2 = patient.news2;
  renderNews2(news2, patient.news2, latest);
  renderVitals(vitals, latest, patient.active_alarms);
  renderAge(age, latest, config.staleSeconds, config.clockSkewSeconds);
  renderMonitoring(patient);
}

// --- monitoring: ended (no no_data alarm), or ending it (clinicians) ----------------------------

const monitoring = document.getElementById("monitoring");
const monitoringText = document.getElementById("monitoring-text");
const monitoringButton = document.getElementById("monitoring-end");

function renderMonitoring(patient) {
  const ended = monitoringEndedText(patient);
  monitoringText.textContent = ended || "Monitored: a silent monitor raises a no_data alarm.";
  monitoring.classList.toggle("monitoring--ended", Boolean(ended));
  if (monitoringButton) monitoringButton.hidden = Boolean(ended) || !config.canEndMonitoring;
}

monitoringButton?.addEventListener("click", async () => {
  const name = document.getElementById("patient-name").textContent;
  if (!window.confirm(`End the monitoring of ${name}? No alarm will sound when their monitor falls silent.`)) return;
  monitoringButton.disabled = true;
  try {
    renderMonitoring(await apiFetch(config.monitoringEndUrl, { method: "POST" }));
    monitoringText.textContent += " (now)";
  } catch (error) {
    const reason = error instanceof ApiError ? error.message : "no answer from the server";
    monitoringText.textContent = `Monitoring not ended: ${reason}`;
  } finally {
    monitoringButton.disabled = false;
  }
});

// --- identity: another name sent by a monitor --------------------------------------------------

const patientName = document.getElementById("patient-name");
const identity = document.getElementById("identity-warning");
const identityConflicts = document.getElementById("identity-conflicts");
const identityActions = document.getElementById("identity-actions");
const identityMessage = document.getElementById("identity-message");
let identityShown = ""; // what the warning shows: redrawn only when it changes (keeps focus)

function renderIdentity(patient) {
  patientName.textContent = patient.name;
  const conflicts = patient.name_conflicts;
  identity.hidden = conflicts.length === 0;
  const shown = JSON.stringify([patient.name, conflicts, config.canResolveName]);
  if (shown === identityShown) return;
  identityShown = shown;
  // Names in <bdi>: a right-to-left name does not reorder the text around it.
  identityConflicts.replaceChildren(
    ...conflicts.map((c) =>
      h(
        "p",
        { class: "identity-conflict" },
        "Monitor sends another name: '",
        h("bdi", {}, c.name),
        `' (since ${dateTimeText(c.first_seen_at)}, ${c.count} reading${c.count === 1 ? "" : "s"})`,
      ),
    ),
  );
  if (!config.canResolveName || conflicts.length === 0) {
    identityActions.replaceChildren();
    return;
  }
  const confirm = h("button", { type: "button", class: "button" }, "Confirm name “", h("bdi", {}, patient.name), "”");
  confirm.addEventListener("click", () => resolveName(confirm, config.confirmNameUrl, undefined, `Name “${patient.name}” confirmed.`));
  const renames = conflicts.map((c) => {
    const button = h("button", { type: "button", class: "button" }, "Rename to “", h("bdi", {}, c.name), "”");
    button.addEventListener("click", () => resolveName(button, config.renameUrl, { name: c.name }, `Renamed to “${c.name}”.`));
    return button;
  });
  identityActions.replaceChildren(confirm, ...renames);
}

async function resolveName(button, url, json, done) {
  button.disabled = true;
  try {
    const patient = await apiFetch(url, { method: "POST", json });
    renderIdentity(patient);
    identityMessage.textContent = done;
  } catch (error) {
    button.disabled = false;
    const reason = error instanceof ApiError ? error.message : "no answer from the server";
    identityMessage.textContent = `Not changed: ${reason}`;
  }
}

// --- alarms -----------------------------------------------------------------------------------

const alarmRows = document.getElementById("alarm-rows");
const alarmsEmpty = document.getElementById("alarms-empty");
const alarmMessage = document.getElementById("alarm-message");
const rows = new Map(); // alarm id -> row

function createRow(alarm) {
  const row = {
    tr: h("tr", { "data-alarm-id": String(alarm.id) }),
    priority: h("td"),
    message: h("td", { class: "alarm-message" }),
    raised: h("td"),
    state: h("td"),
    acknowledged: h("td"),
    action: h("td", { class: "action" }),
    button: null,
  };
  row.tr.append(row.priority, row.message, row.raised, row.state, row.acknowledged, row.action);
  return row;
}

// Who acknowledged, when, and what the acknowledgement covered when that is not what the alarm
// now says (an alarm whose priority rose above it is active again).
function acknowledgedText(alarm) {
  if (!alarm.acknowledged_at) return "–";
  const who = `${alarm.acknowledged_by ?? "someone"}, ${dateTimeText(alarm.acknowledged_at)}`;
  const covered = alarm.acknowledged_priority && (alarm.acknowledged_priority !== alarm.priority || alarm.acknowledged_message !== alarm.message)
    ? ` (acknowledged: ${alarm.acknowledged_priority.toUpperCase()} “${alarm.acknowledged_message}”)`
    : "";
  return who + covered;
}

// "acknowledged", or for an active alarm how long it has gone unanswered.
function stateText(alarm) {
  const unanswered = unansweredText(alarm);
  return unanswered ? `${alarm.state} · ${unanswered}` : alarm.state;
}

function updateRow(row, alarm) {
  row.alarm = alarm;
  row.tr.className = `alarm-row alarm-row--${alarm.state} alarm--${alarm.priority}`;
  row.tr.dataset.state = alarm.state;
  row.priority.replaceChildren(priorityBadge(alarm.priority));
  row.message.textContent = alarm.message;
  row.raised.textContent = dateTimeText(alarm.raised_at);
  row.state.textContent = stateText(alarm);
  row.tr.classList.toggle("alarm-row--escalated", Boolean(alarm.escalated_at) && alarm.state === "active");
  row.acknowledged.textContent = acknowledgedText(alarm);
  const wanted = config.canAcknowledge && alarm.state === "active";
  if (wanted && !row.button) {
    row.button = h("button", { type: "button", class: "button button--ack" }, "Acknowledge");
    row.button.addEventListener("click", () => acknowledge(row));
    row.action.replaceChildren(row.button);
  } else if (!wanted && row.button) {
    row.action.replaceChildren();
    row.button = null;
  }
  row.button?.setAttribute("aria-label", `Acknowledge ${alarm.message}, raised ${dateTimeText(alarm.raised_at)}`);
}

function renderAlarms(page) {
  const seen = new Set();
  let previous = null;
  for (const alarm of page.results) {
    seen.add(alarm.id);
    let row = rows.get(alarm.id);
    if (!row) {
      row = createRow(alarm);
      rows.set(alarm.id, row);
    }
    updateRow(row, alarm);
    const expected = previous ? previous.nextElementSibling : alarmRows.firstElementChild;
    if (row.tr !== expected) alarmRows.insertBefore(row.tr, expected);
    previous = row.tr;
  }
  for (const [id, row] of rows) {
    if (!seen.has(id)) {
      row.tr.remove();
      rows.delete(id);
    }
  }
  alarmsEmpty.hidden = page.results.length > 0;
}

async function acknowledge(row) {
  const button = row.button;
  button.disabled = true;
  alarmMessage.textContent = `Acknowledging “${row.alarm.message}”…`;
  try {
    const alarm = await apiFetch(new URL(row.alarm.acknowledge_url).pathname, { method: "POST" });
    updateRow(row, alarm);
    alarmMessage.textContent = `Acknowledged “${alarm.message}”.`;
  } catch (error) {
    button.disabled = false;
    const reason = error instanceof ApiError ? error.message : "no answer from the server";
    alarmMessage.textContent = `Not acknowledged: ${reason}`;
    poller.refresh(); // e.g. resolved meanwhile (409): show the alarm as it now is
  }
}

// --- alarms switched off (ALARM OFF) ------------------------------------------------------------

const alarmOffBanner = document.getElementById("patient-alarm-off");
const alarmOffList = document.getElementById("alarm-off-list");
const alarmOffEmpty = document.getElementById("alarm-off-empty");
const alarmOffMessage = document.getElementById("alarm-off-message");
const alarmOffForm = document.getElementById("alarm-off-form"); // clinicians only
const offLabel = (kind) => config.alarmOffLabels[kind] ?? kind;

// The banner under the name, the list with who, when and why (and, for clinicians, a button to
// switch each back on), and "ALARM OFF" beside the limits of each chart concerned.
// Built again only when they change, so that a button keeps its focus between polls.
let shownAlarmsOff = null;

function renderAlarmsOff(alarmsOff) {
  const key = JSON.stringify(alarmsOff);
  const chartsDrawn = document.querySelectorAll(".chart-alarm-off").length === charts.size;
  if (key === shownAlarmsOff && chartsDrawn) return;
  shownAlarmsOff = key;
  alarmOffBanner.hidden = alarmsOff.length === 0;
  alarmOffBanner.replaceChildren(...(alarmsOff.length ? alarmOffIndicator(alarmsOff, config.alarmOffLabels) : []));
  alarmOffList.replaceChildren(
    ...alarmsOff.map((off) => {
      const button = config.canSwitchAlarmsOff
        ? h("button", { type: "button", class: "button", "aria-label": `Switch the ${offLabel(off.kind)} alarm back on` }, "Switch on")
        : null;
      button?.addEventListener("click", () => switchOn(off, button));
      return h(
        "li",
        { class: "alarm-off-item", "data-kind": off.kind },
        h("strong", {}, "ALARM OFF"),
        ` ${offLabel(off.kind)}: “${off.reason}”, ${off.by || "someone"}, ${dateTimeText(off.at)} `,
        button,
      );
    }),
  );
  alarmOffEmpty.hidden = alarmsOff.length > 0;
  const kinds = new Set(alarmsOff.map((off) => off.kind));
  for (const chart of CHARTS) {
    const figure = document.querySelector(`figure[data-chart="${chart.key}"] figcaption`);
    if (!figure) continue;
    let mark = figure.querySelector(".chart-alarm-off");
    if (!mark) figure.append((mark = h("span", { class: "chart-alarm-off" })));
    const off = (chart.limits ?? []).filter((kind) => kinds.has(kind));
    mark.textContent = off.length ? ` ALARM OFF: ${off.map(offLabel).join(", ")}` : "";
  }
}

async function switchOn(off, button) {
  button.disabled = true;
  try {
    await apiFetch(`${config.alarmsOffUrl}${off.kind}/`, { method: "DELETE" });
    alarmOffMessage.textContent = `${offLabel(off.kind)} alarm switched back on.`;
  } catch (error) {
    button.disabled = false;
    alarmOffMessage.textContent = `Not switched on: ${error instanceof ApiError ? error.message : "no answer from the server"}`;
  }
  poller.refresh();
}

alarmOffForm?.addEventListener("submit", async (event) => {
  event.preventDefault();
  const kind = alarmOffForm.elements.kind.value;
  const reason = alarmOffForm.elements.reason.value;
  try {
    await apiFetch(config.alarmsOffUrl, { method: "POST", json: { kind, reason } });
    alarmOffForm.reset();
    alarmOffMessage.textContent = `${offLabel(kind)} alarm switched off.`;
  } catch (error) {
    const fields = error instanceof ApiError ? Object.values(error.body?.error?.fields ?? {}).flat() : [];
    const reasonText = fields.length ? fields.join(" ") : error instanceof ApiError ? error.message : "no answer from the server";
    alarmOffMessage.textContent = `Not switched off: ${reasonText}`;
  }
  poller.refresh();
});

// --- polling ----------------------------------------------------------------------------------

const poller = new Poller({
  intervalSeconds: config.pollSeconds,
  task: async () => {
    const trend = Date.now() >= trendDueAt ? loadTrend() : null;
    const [patient, alarms, loaded] = await Promise.all([apiFetch(config.patientUrl), apiFetch(config.alarmsUrl), trend]);
    renderPatient(patient);
    // The charts after the header, and their "latest" from it: the page says one reading.
    if (loaded) {
      limits = loaded.limits;
      renderCharts(loaded.trend);
    } else {
      renderSummaries();
    }
    renderIdentity(patient);
    renderAlarms(alarms);
    renderAlarmsOff(patient.alarms_off);
  },
  onState: (state, error) => connection.set(state, error),
});

setInterval(() => {
  renderAge(age, latest, config.staleSeconds, config.clockSkewSeconds);
  for (const row of rows.values()) {
    if (row.alarm.state === "active") row.state.textContent = stateText(row.alarm);
  }
}, 1000);
poller.start();
