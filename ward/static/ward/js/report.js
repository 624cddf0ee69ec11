// The alarm-burden report's two plots, drawn as plain SVG from the figures the page carries
// (json_script "report-config"): bars of alarms per bed-day by kind, and the acknowledged
// alarms by time to acknowledge, stacked by priority. The tables are the server's.

const SVG = "http://www.w3.org/2000/svg";
const config = JSON.parse(document.getElementById("report-config").textContent);

function el(name, attributes = {}, text = undefined) {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

function svg(width, height) {
  return el("svg", { viewBox: `0 0 ${width} ${height}`, width: "100%", class: "plot-svg" });
}

function ceilNice(value) {
  if (value <= 0) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  return [1, 2, 5, 10].map((m) => m * power).find((step) => step >= value);
}

// Horizontal bars, one per kind, noisiest on top: a charge nurse reads the top line first.
function drawKinds(target, rows) {
  if (!rows.length) {
    target.append(Object.assign(document.createElement("p"), { className: "empty", textContent: "No alarms in this window." }));
    return;
  }
  const rowHeight = 24;
  const left = 130;
  const width = 520;
  const height = rows.length * rowHeight + 24;
  const max = ceilNice(Math.max(...rows.map((r) => r.perBedDay ?? 0)));
  const scale = (width - left - 50) / max;
  const plot = svg(width, height);
  const defs = el("defs");
  const hatch = el("pattern", { id: "hatch", width: 6, height: 6, patternUnits: "userSpaceOnUse", patternTransform: "rotate(45)" });
  hatch.append(el("rect", { width: 6, height: 6, class: "bar bar--technical-bg" }), el("line", { x1: 0, y1: 0, x2: 0, y2: 6, class: "hatch-line" }));
  defs.append(hatch);
  plot.append(defs);
  rows.forEach((row, i) => {
    const y = i * rowHeight + 4;
    const value = row.perBedDay ?? 0;
    plot.append(el("text", { x: left - 8, y: y + 15, "text-anchor": "end", class: "axis-label" }, row.kind));
    const bar = el("rect", {
      x: left,
      y,
      width: Math.max(1, value * scale),
      height: rowHeight - 8,
      class: `bar bar--${row.category}`,
      "data-kind": row.kind,
    });
    if (row.category === "technical") bar.setAttribute("fill", "url(#hatch)");
    bar.append(el("title", {}, `${row.kind}: ${value} per bed-day`));
    plot.append(bar, el("text", { x: left + value * scale + 6, y: y + 15, class: "value-label" }, String(value)));
  });
  const axisY = rows.length * rowHeight + 18;
  plot.append(el("text", { x: left, y: axisY, class: "axis-label" }, "0"));
  plot.append(el("text", { x: width - 50, y: axisY, "text-anchor": "end", class: "axis-label" }, `${max} / bed-day`));
  target.append(plot);
}

function binLabel(bins, i) {
  const fmt = (s) => (s >= 60 ? `${s / 60} min` : `${s} s`);
  return i === bins.length - 1 ? `≥ ${fmt(bins[i])}` : `< ${fmt(bins[i + 1])}`;
}

// Columns per bin of time to acknowledge, stacked high, medium, low.
function drawAcknowledge(target, histogram) {
  const { bins, counts } = histogram;
  const priorities = ["high", "medium", "low"];
  const totals = bins.map((_, i) => priorities.reduce((sum, p) => sum + (counts[p]?.[i] ?? 0), 0));
  if (!totals.some((t) => t > 0)) {
    target.append(Object.assign(document.createElement("p"), { className: "empty", textContent: "No alarm acknowledged in this window." }));
    return;
  }
  const width = 520;
  const height = 220;
  const bottom = 40;
  const column = (width - 40) / bins.length;
  const max = ceilNice(Math.max(...totals));
  const scale = (height - bottom - 20) / max;
  const plot = svg(width, height);
  bins.forEach((_, i) => {
    let y = height - bottom;
    const x = 30 + i * column + 6;
    for (const priority of priorities) {
      const count = counts[priority]?.[i] ?? 0;
      if (!count) continue;
      const h = count * scale;
      y -= h;
      const bar = el("rect", { x, y, width: column - 12, height: h, class: `bar bar--${priority}`, "data-bin": bins[i], "data-priority": priority });
      bar.append(el("title", {}, `${priority}, ${binLabel(bins, i)}: ${count}`));
      plot.append(bar);
    }
    if (totals[i]) plot.append(el("text", { x: x + (column - 12) / 2, y: y - 4, "text-anchor": "middle", class: "value-label" }, String(totals[i])));
    plot.append(el("text", { x: x + (column - 12) / 2, y: height - bottom + 16, "text-anchor": "middle", class: "axis-label" }, binLabel(bins, i)));
  });
  const legend = el("g", { class: "legend" });
  priorities.forEach((priority, i) => {
    legend.append(el("rect", { x: 40 + i * 90, y: height - 14, width: 10, height: 10, class: `bar bar--${priority}` }));
    legend.append(el("text", { x: 54 + i * 90, y: height - 5, class: "axis-label" }, priority));
  });
  plot.append(legend);
  target.append(plot);
}

function duration(seconds) {
  const s = Math.round(seconds);
  if (s < 60) return `${s} s`;
  const minutes = Math.floor(s / 60);
  if (minutes < 60) return `${minutes} min ${s % 60} s`;
  return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

drawKinds(document.getElementById("plot-kinds"), config.byKind);
drawAcknowledge(document.getElementById("plot-ack"), config.histogram);
for (const cell of document.querySelectorAll("td[data-seconds]")) {
  cell.textContent = duration(Number(cell.dataset.seconds));
}
document.body.dataset.ready = "true";
