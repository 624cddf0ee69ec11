// The ward: a tile per patient, the most acute first, polled from the API.

import { alarmProcessingWatch } from "ward/alarm-processing";
import { ApiError, apiFetch, Poller } from "ward/api";
import {
  alarmOffIndicator,
  connectionIndicator,
  fillBeds,
  h,
  monitoringEndedText,
  PRIORITY_RANK,
  priorityBadge,
  pushed,
  readConfig,
  renderAge,
  renderNews2,
  renderVitals,
  srOnly,
  unansweredText,
} from "ward/common";

const config = readConfig("ward-config");
const list = document.getElementById("tiles");
const count = document.getElementById("ward-count");
const empty = document.getElementById("ward-empty");
const unitName = document.getElementById("unit-name");
const unitSelect = document.getElementById("unit");
const orderNote = document.getElementById("ward-order");
const select = document.getElementById("ordering");
const connection = connectionIndicator(config);
// Alarms listed on a tile; more are counted ("+2 more").
const TILE_ALARMS = 2;

const tiles = new Map(); // uuid -> tile
const slots = new Map(); // bed id -> the <li> of an empty bed

const ORDER_NOTES = { "-news2": "Most acute first.", bed: "By bed.", name: "By name." };
const params = new URLSearchParams(location.search);
if (ORDER_NOTES[params.get("ordering")]) select.value = params.get("ordering");

const PLACEHOLDER_UUID = "00000000-0000-0000-0000-000000000000";
function patientPageUrl(uuid) {
  return config.patientPageUrl.replace(PLACEHOLDER_UUID, uuid);
}

function createTile(patient) {
  const nameId = `tile-name-${patient.uuid}`;
  const tile = {
    bed: h("span", { class: "tile-bed" }),
    name: h("a", { href: patientPageUrl(patient.uuid), class: "tile-link" }),
    news2: h("span", { class: "news2" }),
    vitals: h("dl", { class: "vitals" }),
    alarms: h("ul", { class: "tile-alarms", "aria-label": "Open alarms" }),
    identity: h("p", { class: "tile-identity", hidden: "" }),
    alarmsOff: h("p", { class: "tile-alarm-off", hidden: "" }),
    age: h("p", { class: "age" }),
    patient,
  };
  tile.li = h(
    "li",
    { class: "tile", "data-uuid": patient.uuid },
    h(
      "article",
      { "aria-labelledby": nameId },
      h("header", { class: "tile-head" }, tile.bed, h("h2", { class: "tile-name", id: nameId }, tile.name), tile.news2),
      tile.identity,
      tile.vitals,
      tile.alarms,
      tile.alarmsOff,
      tile.age,
    ),
  );
  return tile;
}

function renderAlarms(tile, alarms) {
  const items = alarms.slice(0, TILE_ALARMS).map((alarm) => {
    const acknowledged = alarm.state === "acknowledged";
    return h(
      "li",
      { class: `alarm alarm--${alarm.priority}${acknowledged ? " alarm--acknowledged" : ""}${alarm.escalated_at && !acknowledged ? " alarm--escalated" : ""}` },
      priorityBadge(alarm.priority),
      " ",
      h("span", { class: "alarm-message" }, alarm.message),
      acknowledged ? h("span", { class: "ack" }, " ✓", srOnly(" acknowledged")) : null,
      unansweredText(alarm) ? h("span", { class: `unanswered${alarm.escalated_at ? " unanswered--escalated" : ""}` }, ` · ${unansweredText(alarm)}`) : null,
    );
  });
  if (alarms.length > TILE_ALARMS) {
    const more = alarms.length - TILE_ALARMS;
    const link = h("a", { href: patientPageUrl(tile.patient.uuid), class: "alarm-more-link", "aria-label": `${more} more alarm${more === 1 ? "" : "s"}` }, `+${more} more`);
    items.push(h("li", { class: "alarm alarm--more" }, link));
  }
  tile.alarms.replaceChildren(...items);
  alarmTitles(tile);
  tile.alarms.hidden = alarms.length === 0;
}

// A monitor sends another name for this patient (the uuid): a small warning, the names in its
// title; the patient page shows them and lets a clinician resolve them.
function renderIdentity(tile, conflicts) {
  tile.identity.hidden = conflicts.length === 0;
  tile.identity.textContent = conflicts.length ? "⚠ Other name sent" : "";
  tile.identity.title = conflicts.map((c) => `Monitor sends another name: '${c.name}'`).join("\n");
}

// The limit alarms switched off, "ALARM OFF: SpO2 low", with who and why on hover.
function renderAlarmsOff(tile, alarmsOff) {
  tile.alarmsOff.hidden = alarmsOff.length === 0;
  tile.alarmsOff.replaceChildren(...(alarmsOff.length ? alarmOffIndicator(alarmsOff, config.alarmOffLabels) : []));
  tile.alarmsOff.title = alarmsOff.map((off) => `${config.alarmOffLabels[off.kind] ?? off.kind}: ${off.reason} (${off.by || "?"})`).join("\n");
}

// The tile's frame follows its most urgent alarm not yet acknowledged.
function alarmLevel(alarms) {
  let level = null;
  for (const alarm of alarms) {
    if (alarm.state !== "active") continue;
    if (!level || PRIORITY_RANK[alarm.priority] > PRIORITY_RANK[level]) level = alarm.priority;
  }
  return level;
}

function updateTile(tile, patient) {
  tile.patient = patient;
  tile.li.dataset.name = patient.name;
  // The reading shown (what bench/screen_latency.py times the screen by).
  tile.li.dataset.measuredAt = patient.latest_metric?.measured_at ?? "";
  tile.name.textContent = patient.name;
  tile.name.title = patient.name; // the whole name, where the tile cuts it short
  renderNews2(tile.news2, patient.news2, patient.latest_metric, { compact: true, parameters: config.news2Parameters });
  renderAlarms(tile, patient.active_alarms);
  renderIdentity(tile, patient.name_conflicts);
  renderAlarmsOff(tile, patient.alarms_off);
  const level = alarmLevel(patient.active_alarms);
  tile.li.dataset.alarm = level ?? "";
  tile.li.className = `tile${level ? ` tile--alarm-${level}` : ""}`;
  updateAge(tile);
}

function renderSigns(tile) {
  const { latest_signs: latestSigns, latest_metric: metric, active_alarms: alarms } = tile.patient;
  renderVitals(tile.vitals, { latestSigns, metric, alarms }, config);
}

function updateAge(tile) {
  renderSigns(tile); // each sign's age, and its dash once beyond its validity
  const ended = monitoringEndedText(tile.patient);
  const stale = ended ? false : renderAge(tile.age, tile.patient.latest_metric, config.staleSeconds, config.clockSkewSeconds);
  if (ended) tile.age.replaceChildren(h("strong", { class: "ended-label" }, ended));
  tile.li.classList.toggle("tile--stale", stale);
  tile.li.classList.toggle("tile--ended", Boolean(ended));
  // The unanswered times count up between polls, like the ages.
  for (const [i, alarm] of tile.patient.active_alarms.slice(0, TILE_ALARMS).entries()) {
    const span = tile.alarms.children[i]?.querySelector(".unanswered");
    if (span) span.textContent = ` · ${unansweredText(alarm)}`;
  }
  alarmTitles(tile);
}

// Each alarm is one line on its tile, cut short where the tile is too narrow: its whole text
// (with how long it has gone unanswered) in its title.
function alarmTitles(tile) {
  for (const li of tile.alarms.children) {
    if (!li.classList.contains("alarm--more")) li.title = li.textContent;
  }
}

// --- the unit shown: ?unit= in the address, else the last one chosen here, else the first ------

const UNIT_PLACEHOLDER = "unit-code";
const UNIT_STORE = "ward-unit";
let unitCode = params.get("unit") || null;

function keepInAddress(name, value) {
  const url = new URL(location.href);
  url.searchParams.set(name, value);
  history.replaceState(null, "", url);
}

function chooseUnit(code) {
  if (code !== unitCode) {
    for (const tile of tiles.values()) tile.li.remove();
    for (const slot of slots.values()) slot.remove();
    for (const item of monitors.values()) item.li.remove();
    tiles.clear();
    slots.clear();
    monitors.clear();
    stripMessage.textContent = "";
  }
  unitCode = code;
  keepInAddress("unit", code);
  try {
    localStorage.setItem(UNIT_STORE, code);
  } catch {
    // storage refused (a private window): the address still says it
  }
}

function storedUnit() {
  try {
    return localStorage.getItem(UNIT_STORE);
  } catch {
    return null;
  }
}

// The switcher's options, rebuilt only when the units change; a unit that does not exist (any
// more) gives way to the last one chosen here, or the first.
function renderUnits(units) {
  const key = units.map((u) => `${u.code}:${u.name}:${u.beds}:${u.occupied}`).join("|");
  if (unitSelect.dataset.units !== key) {
    unitSelect.dataset.units = key;
    unitSelect.replaceChildren(...units.map((u) => h("option", { value: u.code }, `${u.name} (${u.occupied}/${u.beds})`)));
  }
  const codes = units.map((u) => u.code);
  if (!codes.includes(unitCode)) {
    const stored = storedUnit();
    const code = codes.includes(stored) ? stored : (codes[0] ?? null);
    if (code) chooseUnit(code);
    else unitCode = null;
  }
  if (unitCode) unitSelect.value = unitCode;
  unitSelect.disabled = units.length < 2;
}

function renderNoUnit() {
  render({ name: "Ward", beds: [], unassigned: [] });
  empty.textContent = "No unit yet: an administrator creates the units and their beds in the admin.";
}

// Puts the tiles in the API's order, moving only those out of place; keyboard focus stays where
// it was even when its tile moves.
function reorder(items) {
  const focused = document.activeElement;
  let previous = null;
  for (const li of items) {
    const expected = previous ? previous.nextElementSibling : list.firstElementChild;
    if (li !== expected) list.insertBefore(li, expected);
    previous = li;
  }
  if (focused && focused !== document.activeElement && focused.isConnected) focused.focus({ preventScroll: true });
}

// An empty bed: a slot in its place, "Bed 4 · empty".
function emptySlot(bed) {
  let slot = slots.get(bed.id);
  if (!slot) {
    slot = h("li", { class: "tile tile--empty", "data-bed": bed.label }, h("p", { class: "empty-bed" }, `Bed ${bed.label} · empty`));
    slots.set(bed.id, slot);
  }
  return slot;
}

const ALARM_RANK = (patient) => PRIORITY_RANK[alarmLevel(patient.active_alarms)] ?? 0;
const SCORE = (patient) => patient.news2?.score ?? -1;
// The beds in the order chosen: by bed (position); by name; or the most acute first (NEWS2,
// then the most urgent unacknowledged alarm, then the bed). Empty beds after the occupied ones.
const ORDERS = {
  bed: (a, b) => a.position - b.position,
  name: (a, b) => a.patient.name.localeCompare(b.patient.name) || a.position - b.position,
  "-news2": (a, b) => SCORE(b.patient) - SCORE(a.patient) || ALARM_RANK(b.patient) - ALARM_RANK(a.patient) || a.position - b.position,
};

function sortBeds(beds) {
  if (select.value === "bed") return [...beds].sort(ORDERS.bed);
  const occupied = beds.filter((bed) => bed.patient).sort(ORDERS[select.value] ?? ORDERS["-news2"]);
  return [...occupied, ...beds.filter((bed) => !bed.patient).sort(ORDERS.bed)];
}

function render(unit) {
  const seen = new Set();
  const seenSlots = new Set();
  const items = [];
  for (const bed of sortBeds(unit.beds)) {
    if (!bed.patient) {
      seenSlots.add(bed.id);
      items.push(emptySlot(bed));
      continue;
    }
    const patient = bed.patient;
    seen.add(patient.uuid);
    let tile = tiles.get(patient.uuid);
    if (!tile) {
      tile = createTile(patient);
      tiles.set(patient.uuid, tile);
    }
    tile.bed.textContent = bed.label;
    tile.bed.title = `Bed ${bed.label}`;
    tile.li.dataset.bed = bed.label;
    updateTile(tile, patient);
    items.push(tile.li);
  }
  for (const [uuid, tile] of tiles) {
    if (!seen.has(uuid)) {
      tile.li.remove();
      tiles.delete(uuid);
    }
  }
  for (const [id, slot] of slots) {
    if (!seenSlots.has(id)) {
      slot.remove();
      slots.delete(id);
    }
  }
  reorder(items);
  renderUnassigned(unit); // before the layout: the strip takes its room above the beds
  layout();
  const occupied = seen.size;
  unitName.textContent = unit.name;
  document.title = `${unit.name} · ICU Monitor`;
  count.textContent = `(${occupied} of ${unit.beds.length} bed${unit.beds.length === 1 ? "" : "s"})`;
  empty.hidden = unit.beds.length > 0;
  empty.textContent = "This unit has no beds yet: an administrator adds them in the admin.";
}

// --- monitors of patients admitted to no bed: a strip above the beds, Admit for clinicians -----

const strip = document.getElementById("unassigned");
const stripList = document.getElementById("unassigned-list");
const stripMessage = document.getElementById("unassigned-message");
const monitors = new Map(); // uuid -> item

function freeBeds(unit) {
  return unit.beds.filter((bed) => !bed.patient).sort(ORDERS.bed);
}

function createMonitor(patient) {
  const item = {
    name: h("a", { href: patientPageUrl(patient.uuid), class: "unassigned-name" }),
    news2: h("span", { class: "news2" }),
    alarm: h("span", { class: "unassigned-alarm" }),
    age: h("span", { class: "age" }),
  };
  const parts = [item.name, " ", item.news2, " ", item.alarm, " ", item.age];
  if (config.canAdmit) {
    const id = `admit-bed-${patient.uuid}`;
    item.beds = h("select", { id, name: "bed" });
    item.button = h("button", { type: "submit", class: "button" }, "Admit");
    item.form = h("form", { class: "admit-form" }, h("label", { for: id }, "Bed"), item.beds, item.button);
    item.form.addEventListener("submit", (event) => {
      event.preventDefault();
      admit(item);
    });
    parts.push(item.form);
  }
  item.li = h("li", { class: "unassigned-item", "data-uuid": patient.uuid }, ...parts);
  return item;
}

function renderUnassigned(unit) {
  const seen = new Set();
  const free = freeBeds(unit);
  for (const patient of unit.unassigned) {
    seen.add(patient.uuid);
    let item = monitors.get(patient.uuid);
    if (!item) {
      item = createMonitor(patient);
      monitors.set(patient.uuid, item);
    }
    item.patient = patient;
    item.name.textContent = patient.name;
    renderNews2(item.news2, patient.news2, patient.latest_metric, { compact: true, parameters: config.news2Parameters });
    renderAge(item.age, patient.latest_metric, config.staleSeconds, config.clockSkewSeconds);
    // In no bed, still monitored: the most urgent alarm (the API lists them so) and how many
    // more, never hidden because nobody admitted the patient.
    const [top, ...others] = patient.active_alarms;
    item.alarm.replaceChildren(
      ...(top ? [priorityBadge(top.priority), " ", top.message] : []),
      ...(others.length ? [` +${others.length} more`] : []),
    );
    item.li.className = `unassigned-item${top ? ` unassigned-item--alarm-${top.priority}` : ""}`;
    if (item.beds) {
      fillBeds(item.beds, free);
      item.button.disabled = free.length === 0;
      item.button.title = free.length ? "" : "No free bed in this unit";
    }
    if (!item.li.isConnected) stripList.append(item.li); // moving one would blur its <select>
  }
  for (const [uuid, item] of monitors) {
    if (!seen.has(uuid)) {
      item.li.remove();
      monitors.delete(uuid);
    }
  }
  strip.hidden = monitors.size === 0;
}

async function admit(item) {
  const bed = item.beds.selectedOptions[0];
  if (!bed) return;
  item.button.disabled = true;
  try {
    await apiFetch(config.admitUrl.replace(PLACEHOLDER_UUID, item.patient.uuid), { method: "POST", json: { bed: Number(bed.value) } });
    stripMessage.textContent = `${item.patient.name} admitted to ${bed.textContent}.`;
  } catch (error) {
    const reason = error instanceof ApiError ? error.message : "no answer from the server";
    stripMessage.textContent = `${item.patient.name} not admitted: ${reason}`;
  } finally {
    item.button.disabled = false;
  }
  poller.refresh();
}

// The smallest a tile may be (8 columns x 4 rows: 32 beds on a 1920x1080 screen), and how much
// larger its text may grow when few beds leave the room.
const TILE_MIN = { width: 224, height: 236 };
const MAX_SCALE = 3;
// On a station screen (at least this wide), up to 64 beds show whole: the tiles and their text
// shrink down to this scale rather than the page scroll. Smaller screens scroll down instead.
const STATION_WIDTH = 1600;
const MIN_SCALE = 0.6;
let laidOut = "";

// Few beds: the tiles grow to fill the screen below the top bar (the columns and rows that make
// them largest), their text with them. Where even the smallest tiles do not all fit (a tablet),
// the grid fills the width and the page scrolls down.
function layout() {
  const n = list.childElementCount;
  const smallest = innerWidth >= STATION_WIDTH ? MIN_SCALE : 1;
  const gap = parseFloat(getComputedStyle(list).rowGap) || 0;
  const width = list.clientWidth;
  const bottom = parseFloat(getComputedStyle(list.parentElement).paddingBottom) || 0;
  const height = innerHeight - (list.getBoundingClientRect().top + scrollY) - bottom;
  let best = null;
  for (let cols = 1; cols <= n; cols++) {
    const rows = Math.ceil(n / cols);
    const w = (width - (cols - 1) * gap) / cols;
    const h = Math.floor((height - (rows - 1) * gap) / rows);
    const scale = Math.min(w / TILE_MIN.width, h / TILE_MIN.height);
    if (scale >= smallest && (!best || scale > best.scale)) best = { cols, h, scale };
  }
  const key = best ? `${best.cols}:${best.h}:${best.scale}` : "";
  if (key === laidOut) return;
  laidOut = key;
  list.classList.toggle("tiles--fit", Boolean(best));
  if (!best) {
    for (const name of ["--cols", "--fit-h", "--s"]) list.style.removeProperty(name);
    return;
  }
  list.style.setProperty("--cols", String(best.cols));
  list.style.setProperty("--fit-h", `${best.h}px`);
  list.style.setProperty("--s", String(Math.min(best.scale, MAX_SCALE).toFixed(2)));
}
addEventListener("resize", layout);

let unitsDueAt = 0;
const poller = new Poller({
  intervalSeconds: config.pollSeconds,
  task: async () => {
    // The units change seldom: read every pollSeconds at most (pushed refreshes come faster).
    if (!unitCode || Date.now() >= unitsDueAt) {
      renderUnits(await apiFetch(config.unitsUrl));
      unitsDueAt = Date.now() + config.pollSeconds * 1000;
    }
    if (!unitCode) {
      renderNoUnit();
      return;
    }
    render(await apiFetch(config.unitUrl.replace(UNIT_PLACEHOLDER, encodeURIComponent(unitCode))));
  },
  onState: (state, error) => {
    connection.set(state, error);
    list.classList.toggle("tiles--offline", state !== "live");
  },
});

select.addEventListener("change", () => {
  orderNote.textContent = ORDER_NOTES[select.value];
  keepInAddress("ordering", select.value);
  poller.refresh();
});

unitSelect.addEventListener("change", () => {
  chooseUnit(unitSelect.value);
  poller.refresh();
});
orderNote.textContent = ORDER_NOTES[select.value];

// Ages count up between polls, and a tile turns stale even while the connection is lost.
setInterval(() => tiles.forEach(updateAge), 1000);
poller.start();
pushed(poller, config);
alarmProcessingWatch(config);
