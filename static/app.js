// app.js — the dashboard's entry point: poll the API, draw what it says.
//
// Two polling loops run side by side, each about once a second:
//   GET /cluster  → node cards, queue counters, queue depth on the chart
//   GET /tasks    → the feed, tasks finished per second on the chart,
//                   and the progress of a burst
// Each loop waits for its answer before scheduling the next request, so a
// slow cluster is never buried under piled-up polls.
//
// Because nginx answers each request from the next node in turn, the page
// also shows who answered the last requests: the round robin, live.

import { ApiError, getCluster, getRecentTasks } from "./api.js";
import { drawChart, History } from "./chart.js";
import { renderAnswers, renderNodes, renderQueue } from "./cluster-view.js";
import { burstInFlight, setUpControls, updateBurst } from "./controls.js";
import { byId, el } from "./dom.js";
import { renderFeed } from "./feed.js";
import { chip, learnNodes } from "./nodes.js";

/** Milliseconds between two polls of the same endpoint. */
const POLL_MS = 1000;

/** Milliseconds between two polls of GET /tasks while a burst is running. */
const BUSY_POLL_MS = 500;

/** Rows in the feed; GET /tasks fetches more, for the chart and the burst. */
const FEED_ROWS = 20;
const TASKS_FETCHED = 200;

/** How many answers the round-robin strip remembers. */
const ANSWERS_SHOWN = 24;

const history = new History();

const state = {
  clockOffset: 0, // server clock − browser clock, seconds
  aliveByNode: new Map(), // node → alive at the previous poll (to announce changes)
  answers: [], // nodes that answered the latest requests, oldest first
  failing: new Map(), // poll name → its last error message (empty when all is well)
};

/** The server's clock now, in seconds since 1970 (timestamps in the API use it). */
const serverNow = () => Date.now() / 1000 + state.clockOffset;

/** Say something to screen-reader users without moving their focus. */
function announce(message) {
  byId("announcer").textContent = message;
}

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

/** The chart legend: one entry per node, plus the dashed queue line. */
function renderLegend(nodes) {
  const entries = nodes.map((node) => el("li", {}, chip(node)));
  entries.push(el("li", {}, el("span", { class: "legend-line", "aria-hidden": "true" }), "waiting in the queue"));
  byId("legend-nodes").replaceChildren(...entries);
}

/** Draw one GET /cluster answer. `sentAt` is when we asked (browser ms). */
function showCluster(cluster, sentAt) {
  // The server stamped `time` roughly halfway between our request and its answer.
  const midpoint = (sentAt + Date.now()) / 2000;
  state.clockOffset = cluster.time - midpoint;
  learnNodes(cluster.nodes.map((node) => node.node));
  announceNodeChanges(cluster.nodes);
  renderNodes(cluster.nodes);
  renderQueue(cluster.queue, cluster.nodes, cluster.valkey);
  renderLegend(cluster.nodes.map((node) => node.node));
  history.recordQueue(cluster.time, cluster.queue);
  redrawChart();
}

/** Draw one GET /tasks answer: feed, chart and burst. */
function showTasks(answer) {
  history.recordTasks(answer.tasks);
  renderFeed(answer.tasks.slice(0, FEED_ROWS), serverNow());
  updateBurst(answer.tasks);
  redrawChart();
}

/** Redraw the chart and the two numbers printed above it. */
function redrawChart() {
  const { throughput, waiting } = drawChart(byId("chart"), history, serverNow());
  byId("throughput").textContent = throughput.toFixed(1);
  byId("chart").setAttribute(
    "aria-label",
    `Chart of the last two minutes: ${throughput.toFixed(1)} tasks finished per second lately, ${waiting} waiting in the queue.`,
  );
}

// --- connection status --------------------------------------------------------

/** The header's status line and, when a poll fails, the problem banner. */
function showConnection() {
  const banner = byId("problem-banner");
  const status = byId("connection");
  if (state.failing.size > 0) {
    banner.hidden = false;
    banner.textContent = `The dashboard cannot refresh: ${[...new Set(state.failing.values())].join("; ")}`;
    status.dataset.state = "failing";
    status.textContent = "not refreshing";
    return;
  }
  banner.hidden = true;
  status.dataset.state = "live";
  status.textContent = "live";
}

/**
 * Run `poll` now and again `interval()` milliseconds after each answer, for
 * ever. A failure is shown (with the API's own `detail`) and retried next round.
 */
async function keepPolling(name, poll, interval = () => POLL_MS) {
  try {
    await poll();
    state.failing.delete(name);
  } catch (error) {
    // The gateway or Valkey is away: say so, keep the last picture, try again.
    state.failing.set(name, error.message);
    if (!(error instanceof ApiError)) {
      // Not the API's fault but a bug in this page: show it to developers too.
      console.error(error);
    }
  }
  showConnection();
  setTimeout(() => keepPolling(name, poll, interval), interval());
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
  keepPolling("cluster", async () => {
    const sentAt = Date.now();
    const cluster = await getCluster();
    showCluster(cluster, sentAt);
  });
  // While a burst runs, look twice as often: its cells fill in more smoothly.
  keepPolling(
    "tasks",
    async () => showTasks(await getRecentTasks(TASKS_FETCHED)),
    () => (burstInFlight() ? BUSY_POLL_MS : POLL_MS),
  );
  window.addEventListener("resize", redrawChart);
}

start();
