// app.js — the dashboard's entry point: poll the API, draw what it says.
//
// Two polling loops run side by side:
//   GET /cluster  every second → node cards, queue counters, both charts
//                 (the bars come from the workers' tasks_done counters)
//   GET /tasks    the 20 newest tasks for the feed, sent with the ETag of
//                 the last answer: while nothing changed the answer is a
//                 bodyless 304. It runs every second while something
//                 happens (a burst, a task, the counters moving) and every
//                 5 s when all is quiet, so an idle page moves little data
//                 however many tasks Valkey holds.
// Each loop waits for its answer (or gives up after a few seconds) before
// the next request, so a slow cluster is never buried under piled-up polls.
//
// When answers stop coming (Valkey frozen, the gateway down), the page says
// so in one short line and marks the node cards stale: it never shows old
// heartbeats as if they were news.

import { ApiError, getCluster, getRecentTasks } from "./api.js";
import { drawCharts, History, nodeFill } from "./chart.js";
import { renderAnswers, renderNodes, renderQueue } from "./cluster-view.js";
import { burstInFlight, burstSize, setUpControls, updateBurst } from "./controls.js";
import { announce, byId, el, formatSeconds } from "./dom.js";
import { renderFeed } from "./feed.js";
import { pollCause } from "./messages.js";
import { chip, learnNodes, patternOf } from "./nodes.js";

/** Milliseconds between two polls of GET /cluster. */
const POLL_MS = 1000;

/** Milliseconds between two polls of GET /tasks: during a burst, while
 * something moves, and when all is quiet. */
const TASKS_BUSY_MS = 500;
const TASKS_ACTIVE_MS = 1000;
const TASKS_IDLE_MS = 5000;

/** How long "something moves" lasts after the counters last changed, ms. */
const ACTIVE_FOR_MS = 5000;

/** Node cards are marked stale when no /cluster answer came for this long, ms. */
const STALE_AFTER_MS = 3000;

/** Rows in the feed (and tasks asked for when no burst runs). */
const FEED_ROWS = 20;

/** Most tasks one GET /tasks may return (the API's limit). */
const MOST_TASKS = 200;

/** How many answers the round-robin strip remembers. */
const ANSWERS_SHOWN = 24;

const history = new History();

const state = {
  clockOffset: 0, // server clock − browser clock, seconds
  aliveByNode: new Map(), // node → alive at the previous poll (to announce changes)
  answers: [], // nodes that answered the latest requests, oldest first
  failing: new Map(), // poll name → short cause of its last failure
  failingSince: null, // browser ms of the first failure in a row
  lastClusterAt: Date.now(), // browser ms of the last /cluster answer
  stale: false, // the node cards show old news
  activity: "", // the counters that say something moved
  activeUntil: 0, // browser ms until which /tasks is polled every second
  tasksEtag: "", // ETag of the last /tasks answer
  rows: new Map(), // task id → {signature, checkedBy}: who brought each row's state
  nodes: [], // node names, in the legend's order
};

/** The server's clock now, in seconds since 1970 (timestamps in the API use it). */
const serverNow = () => Date.now() / 1000 + state.clockOffset;

// --- what one answer of each endpoint changes -------------------------------

/** Announce the nodes that went down or came back since the last poll. */
function announceNodeChanges(nodes) {
  for (const node of nodes) {
    const before = state.aliveByNode.get(node.node);
    if (before !== undefined && before !== node.alive) {
      announce(node.alive
        ? `${node.node} is back: its workers heartbeat again.`
        : `${node.node} is down: its workers stopped heartbeating.`);
    }
    state.aliveByNode.set(node.node, node.alive);
  }
}

/** A swatch of a node's bar fill (colour and pattern) for the legend. */
function swatch(node) {
  const canvas = el("canvas", { class: "swatch", width: 18, height: 12, "aria-hidden": "true" });
  const context = canvas.getContext("2d");
  context.fillStyle = nodeFill(context, node);
  context.fillRect(0, 0, 18, 12);
  return canvas;
}

/** The bars' legend: one entry per node, its fill and its name (redrawn only when nodes change). */
function renderLegend(names) {
  if (names.join() === state.nodes.join()) {
    return;
  }
  state.nodes = names;
  const entries = names.map((node) => el("li", {}, swatch(node), chip(node),
    el("span", { class: "visually-hidden" }, ` (${patternOf(node)} bars)`)));
  byId("legend-nodes").replaceChildren(...entries);
}

/** What tells that work moved: queue counts, tasks done, current tasks. */
function activityOf(cluster) {
  const workers = cluster.nodes.flatMap((node) => node.workers);
  const done = workers.map((worker) => `${worker.worker}:${worker.tasks_done}:${worker.current_task}`);
  const { pending, in_flight: inFlight, delayed, dead_letter: dead } = cluster.queue;
  return [pending, inFlight, delayed, dead, ...done].join("|");
}

/** The phone's one-line queue summary (the tiles say the same in full). */
function renderMiniStatus(queue, nodes, throughput) {
  const workers = nodes.flatMap((node) => node.workers);
  byId("mini-pending").textContent = String(queue.pending);
  byId("mini-in-flight").textContent = String(queue.in_flight);
  byId("mini-workers").textContent = `${queue.workers_alive}/${workers.length}`;
  byId("mini-throughput").textContent = throughput.toFixed(1);
}

/** Draw one GET /cluster answer. `sentAt` is when we asked (browser ms). */
function showCluster(cluster, sentAt) {
  // The server stamped `time` roughly halfway between our request and its answer.
  const midpoint = (sentAt + Date.now()) / 2000;
  state.clockOffset = cluster.time - midpoint;
  state.lastClusterAt = Date.now();
  const names = cluster.nodes.map((node) => node.node);
  learnNodes(names);
  announceNodeChanges(cluster.nodes);
  renderNodes(cluster.nodes);
  renderQueue(cluster.queue, cluster.nodes, cluster.valkey);
  renderLegend(names);
  history.recordCluster(cluster.time, cluster.nodes, cluster.queue);
  const { throughput } = redrawCharts();
  renderMiniStatus(cluster.queue, cluster.nodes, throughput);
  const activity = activityOf(cluster);
  if (activity !== state.activity) {
    state.activity = activity;
    noteActivity();
  }
  markFreshness();
}

/** Something moved: poll /tasks every second for a while, starting now. */
function noteActivity() {
  state.activeUntil = Date.now() + ACTIVE_FOR_MS;
  wake("tasks");
}

/** How a task looks now: when this changes, the answering node brought news. */
const signatureOf = (task) => [task.status, task.attempts, task.handled_by, task.finished_at].join("|");

/**
 * Each row's "checked by": the node whose answer first showed the row in
 * its current state (a row that did not change keeps its node).
 */
function withCheckers(tasks, node) {
  const rows = new Map();
  const shown = tasks.map((task) => {
    const signature = signatureOf(task);
    const before = state.rows.get(task.task_id);
    const checkedBy = before && before.signature === signature ? before.checkedBy : node;
    rows.set(task.task_id, { signature, checkedBy });
    return { ...task, checked_by: checkedBy };
  });
  state.rows = rows;
  return shown;
}

/** Draw one GET /tasks answer: feed and burst. */
function showTasks(answer) {
  state.tasksEtag = answer.etag;
  const tasks = withCheckers(answer.tasks, answer.node);
  renderFeed(tasks.slice(0, FEED_ROWS), serverNow());
  updateBurst(tasks);
}

/** Redraw both charts, the numbers above them and their text alternatives. */
function redrawCharts() {
  const drawn = drawCharts(byId("chart"), byId("queue-chart"), history, serverNow());
  byId("throughput").textContent = drawn.throughput.toFixed(1);
  byId("waiting-now").textContent = String(drawn.waiting);
  byId("waiting-peak").textContent = String(drawn.peak);
  const perNode = state.nodes.map((node) => `${node} ${drawn.totals.get(node) || 0} (${patternOf(node)} bars)`);
  byId("chart").setAttribute(
    "aria-label",
    `Tasks finished per second over the last 2 minutes, by node: ${perNode.join(", ") || "no node yet"}; ` +
      `${drawn.throughput.toFixed(1)} per second over the last 5 s.`,
  );
  byId("queue-chart").setAttribute(
    "aria-label",
    `Tasks waiting in the queue over the last 2 minutes: ${drawn.waiting} now, at most ${drawn.peak}.`,
  );
  return drawn;
}

// --- freshness and connection ----------------------------------------------------

/** Mark the node cards stale (or fresh again) from the age of the last answer. */
function markFreshness() {
  const silentMs = Date.now() - state.lastClusterAt;
  const stale = silentMs > STALE_AFTER_MS;
  const list = byId("nodes");
  list.dataset.stale = String(stale);
  byId("mini-status").dataset.stale = String(stale);
  for (const badge of list.querySelectorAll(".node-state")) {
    badge.textContent = stale ? "no news" : badge.dataset.state;
  }
  byId("nodes-freshness").textContent = stale
    ? `No news for ${formatSeconds(silentMs / 1000)}: these cards show the last answer, not now.`
    : "";
  if (stale !== state.stale) {
    state.stale = stale;
    announce(stale ? "The cluster stopped answering: the node cards are stale." : "The cluster answers again.");
  }
}

/** The header's status line and, while polls fail, one short banner line. */
function showConnection() {
  const banner = byId("problem-banner");
  const status = byId("connection");
  if (state.failing.size > 0) {
    state.failingSince ??= Date.now();
    const since = new Date(state.failingSince).toLocaleTimeString();
    const causes = [...new Set(state.failing.values())].join("; ");
    const text = `Not refreshing since ${since}: ${causes}. Showing the last answer; retrying every second.`;
    if (banner.textContent !== text) {
      banner.textContent = text; // an alert: speak only on change
    }
    banner.hidden = false;
    status.dataset.state = "failing";
    if (status.textContent !== "not refreshing") {
      status.textContent = "not refreshing";
    }
    return;
  }
  state.failingSince = null;
  banner.hidden = true;
  status.dataset.state = "live";
  if (status.textContent !== "live") {
    status.textContent = "live"; // a status region: speak only on change
  }
}

// --- polling loops --------------------------------------------------------------

/** loop name → function that ends its current pause early. */
const wakers = new Map();

/** Pause loop `name` for `ms` milliseconds, or until wake(name). */
function pauseLoop(name, ms) {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      wakers.delete(name);
      resolve();
    };
    const timer = setTimeout(done, ms);
    wakers.set(name, done);
  });
}

/** Cut loop `name`'s pause short: it polls now. */
function wake(name) {
  wakers.get(name)?.();
}

/**
 * Run `poll`, then again `interval()` milliseconds after each answer, for
 * ever. A failure is shown in a few words and retried next round.
 */
async function keepPolling(name, poll, interval) {
  for (;;) {
    try {
      await poll();
      state.failing.delete(name);
    } catch (error) {
      // The gateway or Valkey is away: say so, keep the last picture, try again.
      state.failing.set(name, pollCause(error));
      if (!(error instanceof ApiError)) {
        // Not the API's fault but a bug in this page: show it to developers too.
        console.error(error);
      }
    }
    showConnection();
    await pauseLoop(name, interval());
  }
}

/** How long until the next GET /tasks: faster while something happens. */
function tasksInterval() {
  if (burstInFlight()) {
    return TASKS_BUSY_MS;
  }
  return Date.now() < state.activeUntil ? TASKS_ACTIVE_MS : TASKS_IDLE_MS;
}

/** GET /tasks for the feed (and the burst's tasks, which are the newest). */
async function pollTasks() {
  const limit = Math.min(MOST_TASKS, FEED_ROWS + burstSize());
  const answer = await getRecentTasks(limit, state.tasksEtag);
  if (answer.changed) {
    showTasks(answer);
  }
}

// --- start ----------------------------------------------------------------------

/** Remember which node answered each request (api.js fires "answer"). */
function listenForAnswers() {
  document.addEventListener("answer", (event) => {
    state.answers.push(event.detail.node);
    state.answers.splice(0, state.answers.length - ANSWERS_SHOWN);
    renderAnswers(state.answers);
  });
}

/**
 * Ask GET /cluster once before drawing anything, so the nodes get their
 * colours in name order (node-1, node-2...) rather than in order of answer.
 */
async function learnColours() {
  try {
    const cluster = await getCluster();
    learnNodes(cluster.nodes.map((node) => node.node));
  } catch {
    // Nothing to learn yet: the polling loop below reports the problem.
  }
}

async function start() {
  setUpControls();
  await learnColours();
  listenForAnswers();
  // The controls say when they queued work: the feed looks at once.
  document.addEventListener("work", noteActivity);
  keepPolling("cluster", async () => {
    const sentAt = Date.now();
    showCluster(await getCluster(), sentAt);
  }, () => POLL_MS);
  keepPolling("tasks", pollTasks, tasksInterval);
  setInterval(markFreshness, 1000);
  window.addEventListener("resize", redrawCharts);
}

start();
