// cluster-view.js — draw what GET /cluster says: the nodes with their
// workers, the queue counters, and which node answered recent requests.
//
// A worker proves it is alive by writing a heartbeat key in Valkey that
// expires after one lease (WIZARD_LEASE_SECONDS). When a node dies, its
// workers stop writing, the keys expire, /cluster reports `alive: false`
// and the node's card turns grey. No node tells the others it is leaving:
// silence is the only signal a crashed process can give.

import { byId, el, formatSeconds, shortId } from "./dom.js";
import { chip, shapeIcon, styleOf } from "./nodes.js";

/** Sum of `tasks_done` over a node's workers (counters restart with a worker). */
const tasksDone = (node) => node.workers.reduce((sum, worker) => sum + (worker.tasks_done || 0), 0);

/** Seconds since the freshest heartbeat of any of the node's workers. */
const freshestHeartbeat = (node) => Math.min(...node.workers.map((w) => w.heartbeat_age_seconds));

/** "♥ 0.42 s ago": how long since the worker last proved it is alive. */
function heartbeatAge(worker) {
  return el(
    "span",
    { class: "worker-beat", title: "time since this worker's last heartbeat" },
    el("span", { class: "heart", "aria-hidden": "true" }, "♥"),
    ` ${formatSeconds(worker.heartbeat_age_seconds)} ago`,
  );
}

/** "working on 3f2a9c1e", "idle", or "no heartbeat" for a silent worker. */
function activity(worker) {
  if (!worker.alive) {
    return el("span", { class: "gone" }, "no heartbeat");
  }
  if (worker.current_task) {
    return el("span", { class: "busy" }, "working on ", el("code", {}, shortId(worker.current_task)));
  }
  return el("span", { class: "idle" }, "idle");
}

/** One line per worker: name, heartbeat age, tasks done, what it holds, pid. */
function workerLine(worker) {
  const name = worker.worker.split("/")[1] || worker.worker;
  return el(
    "li",
    { class: "worker", "data-worker": worker.worker, "data-alive": String(worker.alive) },
    el("span", { class: "worker-name" }, name),
    heartbeatAge(worker),
    el("span", { class: "worker-done" }, el("b", {}, String(worker.tasks_done ?? 0)), " done"),
    activity(worker),
    el("span", { class: "worker-pid" }, `pid ${worker.pid ?? "?"}`),
  );
}

/** The bar showing this node's part of all the tasks done so far. */
function shareBar(node, total) {
  const share = total > 0 ? tasksDone(node) / total : 0;
  const percent = Math.round(share * 100);
  return el(
    "div",
    { class: "share" },
    el("span", { class: "share-label" }, "share of the work"),
    el("span", { class: "share-track", "aria-hidden": "true" },
      el("span", { class: "share-fill", style: `width: ${percent}%` })),
    el("span", { class: "share-value" }, `${percent}%`),
  );
}

/** The "up" / "down" badge of a node (a word, not only a colour). */
function stateBadge(node) {
  if (node.alive) {
    return el("span", { class: "node-state is-up", "data-state": "up" }, "up");
  }
  const silent = formatSeconds(freshestHeartbeat(node));
  return el("span", { class: "node-state is-down", "data-state": "down", title: `no heartbeat for ${silent}` }, "down");
}

/** One node's card: name and shape in its colour, up/down, share, workers. */
function nodeCard(node, totalDone) {
  const attributes = {
    class: node.alive ? "node" : "node is-down",
    "data-node": node.node,
    "data-alive": String(node.alive),
    style: `--node: ${styleOf(node.node).colour}`,
  };
  return el(
    "li",
    attributes,
    el("div", { class: "node-head" }, chip(node.node, { down: !node.alive }), stateBadge(node)),
    shareBar(node, totalDone),
    el("ul", { class: "workers", "aria-label": `workers of ${node.node}` }, node.workers.map(workerLine)),
  );
}

/** Redraw every node card from one GET /cluster answer. */
export function renderNodes(nodes) {
  const total = nodes.reduce((sum, node) => sum + tasksDone(node), 0);
  const list = byId("nodes");
  if (nodes.length === 0) {
    list.replaceChildren(el("li", { class: "empty" }, "No worker has sent a heartbeat yet."));
    return;
  }
  list.replaceChildren(...nodes.map((node) => nodeCard(node, total)));
}

/**
 * Say which Valkey server is the primary, how the nodes found it (Sentinel
 * or VALKEY_URL) and how many replicas follow it: after a failover the
 * address changes here without any node restarting.
 */
function renderPrimary(valkey) {
  if (!valkey) return;
  const replicas = valkey.replicas.length;
  const via = valkey.via === "sentinel" ? "found through Sentinel" : "from VALKEY_URL";
  byId("q-primary").textContent =
    `primary ${valkey.primary} (${via}), ${replicas} replica${replicas === 1 ? "" : "s"}`;
}

/** Fill the queue counters (the <dd> elements of the tiles). */
export function renderQueue(queue, nodes, valkey) {
  renderPrimary(valkey);
  const workers = nodes.flatMap((node) => node.workers);
  byId("q-pending").textContent = String(queue.pending);
  byId("q-in-flight").textContent = String(queue.in_flight);
  byId("q-delayed").textContent = String(queue.delayed);
  byId("q-dead").textContent = String(queue.dead_letter);
  byId("q-workers").textContent = `${queue.workers_alive} / ${workers.length}`;
  byId("q-oldest").textContent = formatSeconds(queue.oldest_pending_age_seconds);
  byId("q-dead").closest(".tile").classList.toggle("is-warning", queue.dead_letter > 0);
}

/**
 * Show which node answered each of the last requests: with nginx's round
 * robin the shapes repeat in turn (●■▲●■▲...). `answers` is oldest first.
 */
export function renderAnswers(answers) {
  const items = answers.map((node, index) =>
    el("li", { class: "answer", style: `--node: ${styleOf(node).colour}`, title: `answered by ${node}`,
      "aria-current": index === answers.length - 1 ? "true" : false },
      shapeIcon(node), el("span", { class: "visually-hidden" }, node)));
  byId("answers").replaceChildren(...items);
  const last = answers[answers.length - 1];
  byId("last-answer").replaceChildren(last ? chip(last) : "");
}
