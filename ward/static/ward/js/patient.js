// One patient: the latest reading, another name a monitor sends, trend charts with the alarm
// limits, the alarms (and, for clinicians, acknowledging them and resolving the name). Polled
// from the API.

import uPlot from "uplot";
import { alarmProcessingWatch } from "ward/alarm-processing";
import { ApiError, apiFetch, Poller, serverNow } from "ward/api";
import {
  alarmOffIndicator,
  connectionIndicator,
  dateTimeText,
  fillBeds,
  h,
  monitoringEndedText,
  newestSign,
  priorityBadge,
  pushed,
  readConfig,
  renderAge,
  renderNews2,
  renderVitals,
  signText,
  unansweredText,
  validSign,
} from "ward/common";

const config = readConfig("patient-config");
const connection = connectionIndicator(config);
const TREND_POINTS = 300;
const CHART_HEIGHT = 200;

// Each chart, from the page's config (the signs registry): one per charted sign, the signs of
// one contract field sharing one (blood pressure), then NEWS2. Each draws its signs (mean as a
// line, min-max of each bucket as a band, no line across a gap) and the patient's alarm limits
// (NEWS2: the escalation thresholds) as dashed lines. An optional sign's chart (EtCO2) only
// once the patient has values of it.
function buildCharts() {
  const built = [];
  for (const sign of config.signs.filter((s) => s.charted)) {
    const key = sign.wire ?? sign.key;
    let chart = built.find((c) => c.key === key);
    if (!chart) {
      const named = sign.wire ? config.wireLabels[sign.wire] : sign;
      chart = { key, title: named.label, unit: sign.unit, decimals: sign.decimals, signs: [], limits: [], limitLabels: {}, optional: true };
      built.push(chart);
    }
    chart.signs.push([sign.key, sign.label, sign.color, sign.validSeconds]);
    chart.optional &&= sign.optional;
    for (const side of ["low", "high"]) {
      const kind = sign.limits[side];
      if (kind) chart.limits.push(kind);
    }
  }
  for (const chart of built) {
    // "low limit"; where a chart draws several signs, whose: "systolic low limit".
    const several = chart.signs.length > 1;
    for (const sign of config.signs.filter((s) => chart.signs.some(([key]) => key === s.key))) {
      for (const [side, kind] of Object.entries(sign.limits)) {
        chart.limitLabels[kind] = `${several ? `${sign.label.split(" ")[0].toLowerCase()} ` : ""}${side} limit`;
      }
    }
  }
  built.push({
    key: "news2",
    title: "NEWS2",
    unit: "",
    decimals: 0,
    // A score stands until the next reading's: its validity the shortest of its signs'.
    signs: [["news2", "NEWS2", "#ff922b", Math.min(...config.signs.filter((s) => s.charted).map((s) => s.validSeconds))]],
    thresholds: [
      [5, "medium risk (5)"],
      [7, "high risk (7)"],
    ],
    soft: [0, 9],
    optional: false,
  });
  return built;
}
const CHARTS = buildCharts();
const LIMIT_COLOR = "#ffa94d";
const SIGNS = Object.fromEntries(config.signs.map((sign) => [sign.key, sign]));

const ranges = [...document.querySelectorAll(".range")];
const trendNote = document.getElementById("trend-note");
let rangeSeconds = Number(ranges.find((b) => b.getAttribute("aria-pressed") === "true").dataset.range);
let trendDueAt = 0;
let limits = null;
let shownTrend = null; // the trend the charts draw; their "latest" is the header's reading
const charts = new Map();

// A sign's newest valid value, as the header shows it (NEWS2: the patient's score).
function latestValue(key) {
  if (key === "news2") return latestNews2 ? String(latestNews2.score) : null;
  const sign = SIGNS[key];
  const found = validSign(latestSigns, latest, key, sign.validSeconds);
  return found ? signText(sign, found.value) : null;
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
  return chart.limits
    .filter((kind) => limits[kind] !== null && limits[kind] !== undefined)
    .map((kind) => [limits[kind], `${chart.limitLabels[kind]} ${limits[kind]}`]);
}

// The dashed lines' labels, on each line at the plot's left (two limits at one height share a
// label), in the plot's overlay: text a reader can select and a test can measure. Two lines too
// close for a label each on its line (NEWS2's 5 and 7 on a chart up to 20): the upper one's
// label just above its line, the lower one's just below.
const LABEL_HEIGHT = 14;

function placeLineLabels(u, chart) {
  const plot = u.root.parentElement;
  u.over.querySelectorAll(".limit-label").forEach((label) => label.remove());
  const placed = [];
  for (const [value, label] of lines(chart)) {
    const y = u.valToPos(value, "y");
    const same = placed.find((p) => Math.abs(p.y - y) < 1);
    if (same) same.texts.push(label);
    else placed.push({ y, value, texts: [label], side: "on" });
  }
  placed.sort((a, b) => a.y - b.y); // top to bottom
  const merged = [];
  for (const label of placed) {
    const above = merged.at(-1);
    if (above && label.y - above.y < LABEL_HEIGHT) {
      const before = merged.at(-2); // the label above, on its line: its bottom
      const free = before ? before.y + LABEL_HEIGHT / 2 : -Infinity;
      if (above.side === "on" && above.y - LABEL_HEIGHT >= free) {
        above.side = "above";
        label.side = "below";
      } else {
        above.texts.push(...label.texts); // three lines close together: one label
        continue;
      }
    }
    merged.push(label);
  }
  for (const { y, value, texts, side } of merged) {
    const label = h("span", { class: `limit-label limit-label--${side}`, "data-value": String(value) }, texts.join(" · "));
    label.style.top = `${y}px`; // CSSOM, which the Content-Security-Policy allows
    u.over.append(label);
  }
  plot.uplot = u; // for the browser tests: the chart's own scale
}

// A sign measured now and then (blood pressure every 15 min) has its values in buckets far
// apart, nulls between: its line joins two values no further apart than the sign's validity
// (a value stands for the sign that long); a longer gap stays a gap. uPlot's `gaps` (given
// the null runs, in canvas pixels) is replaced by the gaps of validity.
function validityGaps(validSeconds) {
  return (u, seriesIdx, idx0, idx1) => {
    const xs = u.data[0];
    const ys = u.data[seriesIdx];
    const gaps = [];
    let previous = null;
    for (let i = idx0; i <= idx1; i++) {
      if (ys[i] === null || ys[i] === undefined) continue;
      if (previous !== null && xs[i] - xs[previous] > validSeconds) {
        uPlot.addGap(gaps, Math.round(u.valToPos(xs[previous], "x", true)), Math.round(u.valToPos(xs[i], "x", true)));
      }
      previous = i;
    }
    return gaps;
  };
}

// The values with no other within the validity either side, which no line joins: drawn as
// points.
function isolatedValues(validSeconds) {
  return (u, seriesIdx) => {
    const xs = u.data[0];
    const ys = u.data[seriesIdx];
    const shown = [];
    for (let i = 0; i < ys.length; i++) if (ys[i] !== null && ys[i] !== undefined) shown.push(i);
    const isolated = shown.filter((i, n) => {
      const before = n > 0 && xs[i] - xs[shown[n - 1]] <= validSeconds;
      const after = n < shown.length - 1 && xs[shown[n + 1]] - xs[i] <= validSeconds;
      return !before && !after;
    });
    return isolated;
  };
}

function chartOptions(chart, width) {
  const series = [{}];
  const bands = [];
  for (const [, label, color, validSeconds] of chart.signs) {
    const mean = series.length;
    // A bucket without a value is null; a line joins two values within the sign's validity,
    // never across a longer gap; a value with none near it is a point.
    const gaps = validityGaps(validSeconds);
    series.push({ label, stroke: color, width: 2, points: { show: false, filter: isolatedValues(validSeconds), size: 6, fill: color }, spanGaps: false, gaps });
    series.push({ label: `${label} min`, stroke: withAlpha(color, 0.35), width: 1, points: { show: false }, spanGaps: false, gaps });
    series.push({ label: `${label} max`, stroke: withAlpha(color, 0.35), width: 1, points: { show: false }, spanGaps: false, gaps });
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
        // The values and the dashed lines, whichever reach further (NEWS2: 0 to 9 at least).
        range: (u, min, max) => {
          const reference = lines(chart).map(([value]) => value);
          const soft = chart.soft ?? [Math.min(...reference), Math.max(...reference)];
          const low = Math.min(min ?? Infinity, soft[0] ?? Infinity);
          const high = Math.max(max ?? -Infinity, soft[1] ?? -Infinity);
          if (!Number.isFinite(low) || !Number.isFinite(high)) return [0, 100];
          const pad = Math.max((high - low) * 0.05, chart.decimals ? 0.5 : 5);
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
        incrs: chart.decimals ? [0.1, 0.2, 0.5, 1, 2, 5] : [1, 2, 5, 10, 20, 25, 50, 100, 200],
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
  // In the charts' order, also when one (EtCO2) comes later.
  const after = CHARTS.slice(CHARTS.indexOf(chart) + 1).map((c) => charts.get(c.key)?.figure).find(Boolean);
  document.getElementById("charts").insertBefore(figure, after ?? null);
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
    if (!entry) continue;
    const text = summary(chart, shownTrend);
    entry.plot.setAttribute("aria-label", `${chart.title} over the last ${rangeText(rangeSeconds)}: ${text}`);
    entry.summaryText.textContent = text;
  }
}

// Whether a chart is drawn: always, but an optional sign's (EtCO2) only once the patient has
// had a value of it (it stays then).
function charted(chart, trend) {
  if (!chart.optional || charts.has(chart.key)) return true;
  return chart.signs.some(([key]) => newestSign(latestSigns, latest, key) || trend.buckets.some((b) => b[key]));
}

function renderCharts(trend) {
  shownTrend = trend;
  const first = Math.floor(Date.parse(trend.since) / 1000 / trend.bucket_seconds);
  const last = Math.floor(Date.parse(trend.until) / 1000 / trend.bucket_seconds);
  const grid = [];
  for (let i = first; i <= last; i++) grid.push(i * trend.bucket_seconds);
  for (const chart of CHARTS) {
    if (!charted(chart, trend)) continue;
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
let latestSigns = {};
let latestNews2 = null;
let alarmsNow = [];

function renderPatient(patient) {
  latest = patient.latest_metric;
  latestSigns = patient.latest_signs ?? {};
  latestNews2 = patient.news2;
  alarmsNow = patient.active_alarms;
  renderNews2(news2, patient.news2, latest, { parameters: config.news2Parameters });
  renderVitals(vitals, { latestSigns, metric: latest, alarms: alarmsNow }, config);
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

// --- the bed: transfer to a free bed of the unit, or discharge (clinicians) -------------------

const bedText = document.getElementById("bed-text");
const transferOpen = document.getElementById("transfer-open");
const transferForm = document.getElementById("transfer-form");
const transferBed = document.getElementById("transfer-bed");
const dischargeButton = document.getElementById("discharge");
let admission = config.admission; // {bed: {id, label, unit}, unitName}, or null

function renderBed(note = "") {
  if (admission) {
    bedText.replaceChildren(`Bed ${admission.bed.label} · `, h("a", { href: `${config.wardUrl}?unit=${encodeURIComponent(admission.bed.unit)}` }, admission.unitName ?? admission.bed.unit), note);
  } else {
    bedText.replaceChildren(note || "In no bed: not on a ward (a clinician admits them from the ward's unassigned monitors).");
  }
  if (transferOpen) transferOpen.hidden = !admission;
  if (dischargeButton) dischargeButton.hidden = !admission;
  if (transferForm && !admission) transferForm.hidden = true;
}

transferOpen?.addEventListener("click", async () => {
  transferOpen.disabled = true;
  try {
    const unit = await apiFetch(config.unitUrl.replace("unit-code", encodeURIComponent(admission.bed.unit)));
    const free = unit.beds.filter((bed) => !bed.patient).sort((a, b) => a.position - b.position);
    fillBeds(transferBed, free);
    if (!free.length) {
      renderBed(" · no free bed in this unit");
      return;
    }
    transferForm.hidden = false;
    transferBed.focus();
  } catch (error) {
    renderBed(` · beds not loaded: ${error instanceof ApiError ? error.message : "no answer from the server"}`);
  } finally {
    transferOpen.disabled = false;
  }
});

transferForm?.addEventListener("submit", async (event) => {
  event.preventDefault();
  const bed = transferBed.selectedOptions[0];
  try {
    const moved = await apiFetch(config.transferUrl, { method: "POST", json: { bed: Number(bed.value) } });
    admission = { ...admission, bed: moved.bed };
    transferForm.hidden = true;
    renderBed(" (transferred now)");
  } catch (error) {
    renderBed(` · not transferred: ${error instanceof ApiError ? error.message : "no answer from the server"}`);
  }
});

dischargeButton?.addEventListener("click", async () => {
  const name = document.getElementById("patient-name").textContent;
  if (!window.confirm(`Discharge ${name} from bed ${admission.bed.label}? They leave the ward; their history stays.`)) return;
  dischargeButton.disabled = true;
  try {
    await apiFetch(config.dischargeUrl, { method: "POST", json: {} });
    admission = null;
    renderBed("Discharged now: no longer on the ward.");
  } catch (error) {
    renderBed(` · not discharged: ${error instanceof ApiError ? error.message : "no answer from the server"}`);
  } finally {
    dischargeButton.disabled = false;
  }
});
renderBed();

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
    // The priority shown: an alarm worse since (409 alarm_changed) is not acknowledged unseen.
    const alarm = await apiFetch(new URL(row.alarm.acknowledge_url).pathname, {
      method: "POST",
      json: { priority: row.alarm.priority },
    });
    updateRow(row, alarm);
    alarmMessage.textContent = `Acknowledged “${alarm.message}”.`;
  } catch (error) {
    button.disabled = false;
    const reason = error instanceof ApiError ? error.message : "no answer from the server";
    alarmMessage.textContent = error instanceof ApiError && error.code === "alarm_changed"
      ? `Not acknowledged, the alarm got worse: ${reason}`
      : `Not acknowledged: ${reason}`;
    // e.g. resolved (alarm_not_open) or worse (alarm_changed) meanwhile: show the alarm as it
    // now is, still active and flashing at its new priority.
    poller.refresh();
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
  renderVitals(vitals, { latestSigns, metric: latest, alarms: alarmsNow }, config);
  for (const row of rows.values()) {
    if (row.alarm.state === "active") row.state.textContent = stateText(row.alarm);
  }
}, 1000);
poller.start();
pushed(poller, config);
alarmProcessingWatch(config);
