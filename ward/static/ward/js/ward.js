// The ward: a tile per patient, the most acute first, polled from the API.

import { apiFetch, Poller } from "ward/api";
import {
  alarmOffIndicator,
  connectionIndicator,
  h,
  monitoringEndedText,
  PRIORITY_RANK,
  priorityBadge,
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
const truncated = document.getElementById("ward-truncated");
const orderNote = document.getElementById("ward-order");
const select = document.getElementById("ordering");
const connection = connectionIndicator(config);
// The page size the API allows at most: beyond, the ward says how many it does not show.
const PAGE_SIZE = 500;
// Alarms listed on a tile; more are counted ("+2 more").
const TILE_ALARMS = 2;

const tiles = new Map(); // uuid -> tile

const ORDER_NOTES = { "-news2": "Most acute first.", name: "By name." };
const params = new URLSearchParams(location.search);
if (ORDER_NOTES[params.get("ordering")]) select.value = params.get("ordering");

function patientPageUrl(uuid) {
  return config.patientPageUrl.replace("00000000-0000-0000-0000-000000000000", uuid);
}

function createTile(patient) {
  const nameId = `tile-name-${patient.uuid}`;
  const tile = {
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
      h("header", { class: "tile-head" }, h("h2", { class: "tile-name", id: nameId }, tile.name), tile.news2),
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

// Puts the tiles in the API's order, moving only those out of place; keyboard focus stays where
// it was even when its tile moves.
function reorder(patients) {
  const focused = document.activeElement;
  let previous = null;
  for (const patient of patients) {
    const li = tiles.get(patient.uuid).li;
    const expected = previous ? previous.nextElementSibling : list.firstElementChild;
    if (li !== expected) list.insertBefore(li, expected);
    previous = li;
  }
  if (focused && focused !== document.activeElement && focused.isConnected) focused.focus({ preventScroll: true });
}

function render(page) {
  const patients = page.results;
  const seen = new Set();
  for (const patient of patients) {
    seen.add(patient.uuid);
    let tile = tiles.get(patient.uuid);
    if (!tile) {
      tile = createTile(patient);
      tiles.set(patient.uuid, tile);
    }
    updateTile(tile, patient);
  }
  for (const [uuid, tile] of tiles) {
    if (!seen.has(uuid)) {
      tile.li.remove();
      tiles.delete(uuid);
    }
  }
  reorder(patients);
  layout();
  count.textContent = `(${page.count})`;
  empty.hidden = page.count > 0;
  truncated.hidden = page.count <= patients.length;
  truncated.textContent = `Showing ${patients.length} of ${page.count} patients.`;
}

// The smallest a tile may be (8 columns x 4 rows: 32 beds on a 1920x1080 screen), and how much
// larger its text may grow when few beds leave the room.
const TILE_MIN = { width: 224, height: 236 };
const MAX_SCALE = 3;
let laidOut = "";

// Few beds: the tiles grow to fill the screen below the top bar (the columns and rows that make
// them largest), their text with them. Where even the smallest tiles do not all fit (a tablet),
// the grid fills the width and the page scrolls down.
function layout() {
  const n = tiles.size;
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
    if (scale >= 1 && (!best || scale > best.scale)) best = { cols, h, scale };
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

const poller = new Poller({
  intervalSeconds: config.pollSeconds,
  task: async () => {
    const query = new URLSearchParams({ ordering: select.value, page_size: String(PAGE_SIZE) });
    render(await apiFetch(`${config.patientsUrl}?${query}`));
  },
  onState: (state, error) => {
    connection.set(state, error);
    list.classList.toggle("tiles--offline", state !== "live");
  },
});

select.addEventListener("change", () => {
  orderNote.textContent = ORDER_NOTES[select.value];
  const url = new URL(location.href);
  url.searchParams.set("ordering", select.value);
  history.replaceState(null, "", url);
  poller.refresh();
});
orderNote.textContent = ORDER_NOTES[select.value];

// Ages count up between polls, and a tile turns stale even while the connection is lost.
setInterval(() => tiles.forEach(updateAge), 1000);
poller.start();
