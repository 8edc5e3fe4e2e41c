// chart.js — the live chart of the queue, drawn on a <canvas> with no library.
//
// Two things, over the last two minutes:
//   bars  tasks finished per second, stacked by the node whose worker
//         finished them: three colours in one bar = three nodes sharing work;
//   line  tasks waiting in the queue (`pending` from GET /cluster).
//
// Where the numbers come from:
//   - every finished task in GET /tasks has `finished_at` (server clock,
//     seconds since 1970) and `handled_by` (the worker, "node-2/w1"). We keep
//     each task id once, so polling the same task twice never counts twice.
//     /tasks returns at most the 200 newest tasks: beyond ~200 tasks per
//     poll the bars undercount (the Prometheus counters at /metrics do not).
//   - every GET /cluster gives the queue depth at that moment.
// All times are on the server's clock; app.js converts the browser's clock.

import { nodeOf, styleOf } from "./nodes.js";

/** How far back the chart looks, seconds. */
export const WINDOW_SECONDS = 120;

/** What the chart remembers between polls. */
export class History {
  constructor(windowSeconds = WINDOW_SECONDS) {
    this.windowSeconds = windowSeconds;
    this.finished = new Map(); // task id → {at: seconds, node: "node-2" | null}
    this.depth = []; // [{at: seconds, waiting: count}], oldest first
  }

  /** Remember the finished tasks of one GET /tasks answer. */
  recordTasks(tasks) {
    for (const task of tasks) {
      if (task.finished_at && !this.finished.has(task.task_id)) {
        const node = task.handled_by ? nodeOf(task.handled_by) : null;
        this.finished.set(task.task_id, { at: task.finished_at, node });
      }
    }
  }

  /** Remember the queue depth reported by one GET /cluster answer. */
  recordQueue(at, queue) {
    this.depth.push({ at, waiting: queue.pending });
  }

  /** Forget what has scrolled off the left edge of the chart. */
  forgetBefore(oldest) {
    for (const [taskId, entry] of this.finished) {
      if (entry.at < oldest) {
        this.finished.delete(taskId);
      }
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
    for (const { at, node } of this.finished.values()) {
      const bucket = buckets[Math.floor(at) - first];
      if (bucket) {
        bucket.byNode.set(node, (bucket.byNode.get(node) || 0) + 1);
        bucket.total += 1;
      }
    }
    return buckets;
  }

  /** Average tasks finished per second over the last `seconds`. */
  throughput(now, seconds = 5) {
    let count = 0;
    for (const { at } of this.finished.values()) {
      if (at > now - seconds && at <= now) {
        count += 1;
      }
    }
    return count / seconds;
  }
}

// --- drawing ---------------------------------------------------------------

/** Colours of the chart itself, read once from app.css (one source of truth). */
function chartColours(canvas) {
  const style = getComputedStyle(canvas);
  const read = (name, fallback) => style.getPropertyValue(name).trim() || fallback;
  return {
    grid: read("--chart-grid", "#2a323d"),
    label: read("--chart-label", "#9aa7b4"),
    line: read("--chart-line", "#f4f4f4"),
    unknown: read("--chart-unknown", "#8b949e"),
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
function drawTimeAxis(context, plot, windowSeconds, colours) {
  context.fillStyle = colours.label;
  context.textBaseline = "top";
  const ticks = [
    { secondsAgo: windowSeconds, align: "left", label: `−${windowSeconds / 60} min` },
    { secondsAgo: windowSeconds / 2, align: "center", label: `−${windowSeconds / 120} min` },
    { secondsAgo: 0, align: "right", label: "now" },
  ];
  for (const { secondsAgo, align, label } of ticks) {
    context.textAlign = align;
    context.fillText(label, plot.x(plot.now - secondsAgo), plot.bottom + 6);
  }
}

/** One stacked bar per second, a segment per node, bottom to top in node order. */
function drawBars(context, plot, buckets, colours) {
  for (const bucket of buckets) {
    const left = Math.max(plot.left, plot.x(bucket.second));
    const right = Math.min(plot.right, plot.x(bucket.second + 1));
    const width = right - left - 1; // a 1 px gap between seconds
    if (bucket.total === 0 || width <= 0) {
      continue;
    }
    let stacked = 0;
    for (const node of [...bucket.byNode.keys()].sort(byNodeOrder)) {
      const count = bucket.byNode.get(node);
      context.fillStyle = node ? styleOf(node).colour : colours.unknown;
      const yTop = plot.y(stacked + count);
      context.fillRect(left, yTop, width, plot.y(stacked) - yTop);
      stacked += count;
    }
  }
}

/** Nodes in name order (node-1 at the bottom of every bar), unknown last. */
function byNodeOrder(a, b) {
  if (a === null || b === null) {
    return a === null ? 1 : -1;
  }
  return a.localeCompare(b, undefined, { numeric: true });
}

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
  context.setLineDash([6, 3]); // dashed: told apart from the bars by more than colour
  context.stroke();
  context.setLineDash([]);
}

/**
 * Draw the whole chart for the server time `now` (seconds).
 * Returns {throughput, waiting} so the caller can print the numbers too.
 */
export function drawChart(canvas, history, now) {
  const { context, width, height } = prepare(canvas);
  const colours = chartColours(canvas);
  history.forgetBefore(now - history.windowSeconds - 5);
  const buckets = history.perSecond(now);
  const waiting = history.depth.length ? history.depth[history.depth.length - 1].waiting : 0;
  const highest = Math.max(4, ...buckets.map((b) => b.total), ...history.depth.map((d) => d.waiting));
  const top = niceCeiling(highest);
  const plot = {
    left: 36,
    right: width - 6,
    top: 8,
    bottom: height - 22,
    now,
    windowSeconds: history.windowSeconds,
  };
  plot.x = (t) => plot.left + ((t - (now - plot.windowSeconds)) / plot.windowSeconds) * (plot.right - plot.left);
  plot.y = (value) => plot.bottom - (value / top) * (plot.bottom - plot.top);
  drawGrid(context, plot, top, colours);
  drawTimeAxis(context, plot, history.windowSeconds, colours);
  drawBars(context, plot, buckets, colours);
  drawDepthLine(context, plot, history.depth, colours);
  return { throughput: history.throughput(now), waiting };
}
