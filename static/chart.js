// chart.js — two live charts drawn on <canvas> with no library.
//
//   bars   tasks finished per second, stacked by node: three colours, each
//          with its own fill pattern, in one bar = three nodes sharing work;
//   queue  tasks waiting in the queue, on a chart (and an axis) of its own,
//          so a burst of 100 waiting tasks does not flatten the bars.
//
// Where the numbers come from: every GET /cluster answer (about once a
// second) gives each worker's `tasks_done` counter and the queue depth. The
// bars are the differences between two answers, per node, so they cost
// nothing however many tasks are stored, and count every task (a counter
// that went down means its worker restarted: its new count is all new work).
// Times are the server's clock (`time` of each answer).

import { patternOf, styleOf } from "./nodes.js";

/** How far back the charts look, seconds. */
export const WINDOW_SECONDS = 120;

/** What the charts remember between polls. */
export class History {
  constructor(windowSeconds = WINDOW_SECONDS) {
    this.windowSeconds = windowSeconds;
    this.doneByWorker = new Map(); // worker id → tasks_done at the last answer
    this.finished = []; // [{at: seconds, node, count}], oldest first
    this.depth = []; // [{at: seconds, waiting: count}], oldest first
  }

  /** Remember one GET /cluster answer: new work per node, and the queue depth. */
  recordCluster(at, nodes, queue) {
    for (const node of nodes) {
      for (const worker of node.workers) {
        const now = Number(worker.tasks_done || 0);
        const before = this.doneByWorker.get(worker.worker);
        this.doneByWorker.set(worker.worker, now);
        if (before === undefined) {
          continue; // first sight: its past work happened before this page opened
        }
        const count = now >= before ? now - before : now;
        if (count > 0) {
          this.finished.push({ at, node: node.node, count });
        }
      }
    }
    this.depth.push({ at, waiting: Number(queue.pending) });
  }

  /** Forget what has scrolled off the left edge of the charts. */
  forgetBefore(oldest) {
    while (this.finished.length > 0 && this.finished[0].at < oldest) {
      this.finished.shift();
    }
    while (this.depth.length > 1 && this.depth[1].at < oldest) {
      this.depth.shift();
    }
  }

  /** Counts per whole second: [{second, byNode: Map(node → count), total}]. */
  perSecond(now) {
    const last = Math.floor(now);
    const first = last - this.windowSeconds;
    const buckets = [];
    for (let second = first; second <= last; second += 1) {
      buckets.push({ second, byNode: new Map(), total: 0 });
    }
    for (const { at, node, count } of this.finished) {
      const bucket = buckets[Math.floor(at) - first];
      if (bucket) {
        bucket.byNode.set(node, (bucket.byNode.get(node) || 0) + count);
        bucket.total += count;
      }
    }
    return buckets;
  }

  /** Tasks finished per node within the window: Map(node → count). */
  totalsByNode(now) {
    const totals = new Map();
    for (const { at, node, count } of this.finished) {
      if (at > now - this.windowSeconds) {
        totals.set(node, (totals.get(node) || 0) + count);
      }
    }
    return totals;
  }

  /** Average tasks finished per second over the last `seconds`. */
  throughput(now, seconds = 5) {
    let count = 0;
    for (const entry of this.finished) {
      if (entry.at > now - seconds && entry.at <= now) {
        count += entry.count;
      }
    }
    return count / seconds;
  }

  /** The latest queue depth and the highest within the window. */
  waiting() {
    const values = this.depth.map((point) => point.waiting);
    return { now: values.length ? values[values.length - 1] : 0, peak: Math.max(0, ...values) };
  }
}

// --- drawing ---------------------------------------------------------------

/** Colours of the charts themselves, read from app.css (one source of truth). */
function chartColours(canvas) {
  const style = getComputedStyle(canvas);
  const read = (name, fallback) => style.getPropertyValue(name).trim() || fallback;
  return {
    grid: read("--chart-grid", "#2a323d"),
    label: read("--chart-label", "#9aa7b4"),
    line: read("--chart-line", "#f4f4f4"),
    ink: read("--bg", "#0d1117"),
  };
}

/** Size the canvas to its CSS box × the screen's pixel ratio (sharp on HiDPI). */
function prepare(canvas) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth;
  const height = canvas.clientHeight;
  if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
  }
  const context = canvas.getContext("2d");
  context.setTransform(ratio, 0, 0, ratio, 0, 0);
  context.clearRect(0, 0, width, height);
  return { context, width, height };
}

/** The smallest of 1, 2, 5, 10, 20, 50... that is at least `value`. */
function niceCeiling(value) {
  const power = 10 ** Math.floor(Math.log10(Math.max(1, value)));
  for (const step of [1, 2, 5, 10]) {
    if (step * power >= value) {
      return step * power;
    }
  }
  return 10 * power;
}

/** The plot area of a canvas and its two scales. */
function plotArea(width, height, now, windowSeconds, top, { timeAxis = true } = {}) {
  const plot = { left: 36, right: width - 6, top: 8, bottom: height - (timeAxis ? 22 : 6), now, windowSeconds };
  plot.x = (t) => plot.left + ((t - (now - windowSeconds)) / windowSeconds) * (plot.right - plot.left);
  plot.y = (value) => plot.bottom - (value / top) * (plot.bottom - plot.top);
  return plot;
}

/** Horizontal grid lines with their values on the left (0, half, top). */
function drawGrid(context, plot, top, colours) {
  context.font = "11px system-ui, 'Liberation Sans', 'DejaVu Sans', sans-serif";
  context.textAlign = "right";
  context.textBaseline = "middle";
  for (const value of [0, top / 2, top]) {
    const y = plot.y(value);
    context.strokeStyle = colours.grid;
    context.lineWidth = 1;
    context.beginPath();
    context.moveTo(plot.left, Math.round(y) + 0.5);
    context.lineTo(plot.right, Math.round(y) + 0.5);
    context.stroke();
    context.fillStyle = colours.label;
    context.fillText(String(Number.isInteger(value) ? value : value.toFixed(1)), plot.left - 6, y);
  }
}

/** Time labels under the plot: "−2 min", "−1 min", "now". */
function drawTimeAxis(context, plot, colours) {
  context.fillStyle = colours.label;
  context.textBaseline = "top";
  const minutes = plot.windowSeconds / 60;
  const ticks = [
    { secondsAgo: plot.windowSeconds, align: "left", label: `−${minutes} min` },
    { secondsAgo: plot.windowSeconds / 2, align: "center", label: `−${minutes / 2} min` },
    { secondsAgo: 0, align: "right", label: "now" },
  ];
  for (const { secondsAgo, align, label } of ticks) {
    context.textAlign = align;
    context.fillText(label, plot.x(plot.now - secondsAgo), plot.bottom + 6);
  }
}

/**
 * A node's fill: its colour, overlaid with its pattern (none, stripes,
 * dots, ...) in the page's background colour, so the nodes differ by more
 * than colour. Also used for the legend's swatches.
 */
export function nodeFill(context, node, ink = "#0d1117") {
  const tile = document.createElement("canvas");
  tile.width = 8;
  tile.height = 8;
  const paint = tile.getContext("2d");
  paint.fillStyle = styleOf(node).colour;
  paint.fillRect(0, 0, 8, 8);
  paint.fillStyle = ink;
  paint.strokeStyle = ink;
  paint.lineWidth = 1.5;
  PATTERNS[patternOf(node)](paint);
  return context.createPattern(tile, "repeat");
}

/** How each pattern is drawn on an 8 × 8 tile. */
const PATTERNS = {
  solid: () => {},
  stripes: (paint) => {
    paint.beginPath();
    paint.moveTo(-1, 9);
    paint.lineTo(9, -1);
    paint.moveTo(-1, 1);
    paint.lineTo(1, -1);
    paint.moveTo(7, 9);
    paint.lineTo(9, 7);
    paint.stroke();
  },
  dots: (paint) => paint.fillRect(3, 3, 2.5, 2.5),
  bars: (paint) => paint.fillRect(0, 3, 8, 2),
  columns: (paint) => paint.fillRect(3, 0, 2, 8),
  checks: (paint) => {
    paint.fillRect(0, 0, 4, 4);
    paint.fillRect(4, 4, 4, 4);
  },
  rings: (paint) => {
    paint.beginPath();
    paint.arc(4, 4, 2, 0, 2 * Math.PI);
    paint.stroke();
  },
};

/** One stacked bar per second, a segment per node, bottom to top in node order. */
function drawBars(context, plot, buckets, colours) {
  const fills = new Map();
  for (const bucket of buckets) {
    const left = Math.max(plot.left, plot.x(bucket.second));
    const right = Math.min(plot.right, plot.x(bucket.second + 1));
    const width = right - left - 1; // a 1 px gap between seconds
    if (bucket.total === 0 || width <= 0) {
      continue;
    }
    let stacked = 0;
    for (const node of [...bucket.byNode.keys()].sort(byName)) {
      if (!fills.has(node)) {
        fills.set(node, nodeFill(context, node, colours.ink));
      }
      const count = bucket.byNode.get(node);
      context.fillStyle = fills.get(node);
      const yTop = plot.y(stacked + count);
      context.fillRect(left, yTop, width, plot.y(stacked) - yTop);
      stacked += count;
    }
  }
}

/** Nodes in name order (node-1 at the bottom of every bar). */
const byName = (a, b) => a.localeCompare(b, undefined, { numeric: true });

/** The queue depth as a stepped line with a light fill under it. */
function drawDepthLine(context, plot, depth, colours) {
  const visible = depth.filter((point) => point.at >= plot.now - plot.windowSeconds - 5);
  if (visible.length === 0) {
    return;
  }
  context.beginPath();
  let previousY = null;
  for (const point of visible) {
    const x = Math.max(plot.left, plot.x(point.at));
    const y = plot.y(point.waiting);
    if (previousY === null) {
      context.moveTo(x, y);
    } else {
      context.lineTo(x, previousY); // hold the last value until this sample
      context.lineTo(x, y);
    }
    previousY = y;
  }
  context.lineTo(plot.right, previousY);
  context.strokeStyle = colours.line;
  context.lineWidth = 2;
  context.stroke();
}

/**
 * Draw both charts for the server time `now` (seconds).
 * Returns {throughput, waiting, peak, totals} so the caller can print the
 * numbers and write the charts' text alternatives.
 */
export function drawCharts(barsCanvas, queueCanvas, history, now) {
  history.forgetBefore(now - history.windowSeconds - 5);
  const buckets = history.perSecond(now);
  const colours = chartColours(barsCanvas);

  const bars = prepare(barsCanvas);
  const barsTop = niceCeiling(Math.max(4, ...buckets.map((b) => b.total)));
  const barsPlot = plotArea(bars.width, bars.height, now, history.windowSeconds, barsTop);
  drawGrid(bars.context, barsPlot, barsTop, colours);
  drawTimeAxis(bars.context, barsPlot, colours);
  drawBars(bars.context, barsPlot, buckets, colours);

  const waiting = history.waiting();
  const queue = prepare(queueCanvas);
  const queueTop = niceCeiling(Math.max(4, waiting.peak));
  const queuePlot = plotArea(queue.width, queue.height, now, history.windowSeconds, queueTop, { timeAxis: false });
  drawGrid(queue.context, queuePlot, queueTop, colours);
  drawDepthLine(queue.context, queuePlot, history.depth, colours);

  return {
    throughput: history.throughput(now),
    waiting: waiting.now,
    peak: waiting.peak,
    totals: history.totalsByNode(now),
  };
}
