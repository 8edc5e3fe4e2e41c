// feed.js — the table of recent tasks, newest first, from GET /tasks.
//
// Read one row from left to right and you follow a task through the system:
// the node that *accepted* it (the producer nginx picked for the POST), the
// worker that *handled* it (whichever consumer took it from the queue first)
// and the node that *checked* it (the one whose answer brought the row's
// current state to this page). The three are usually different nodes: they
// share nothing but Valkey.

import { byId, el, formatSeconds, shortId } from "./dom.js";
import { chip } from "./nodes.js";

/** How each operation is written between its operands. */
const SYMBOLS = { add: "+", subtract: "−", multiply: "×", divide: "÷" };

/** Status glyphs, so a status never depends on its colour alone. */
const STATUS_MARKS = { pending: "◷", running: "▶", complete: "✓", failed: "✕" };

/** "add 2 + 3 = 5" (or without "= ..." while it is not finished). */
export function describeOperation(task) {
  const symbol = SYMBOLS[task.operation];
  const sum = symbol ? `${task.a} ${symbol} ${task.b}` : `${task.operation}(${task.a}, ${task.b})`;
  const result = task.status === "complete" ? ` = ${task.result}` : "";
  return `${sum}${result}`;
}

/** A status badge: glyph + word, coloured by CSS through data-status. */
export function statusBadge(task) {
  const reason = task.error || task.reason || "";
  return el(
    "span",
    { class: "status", "data-status": task.status, title: reason || false },
    el("span", { class: "status-mark", "aria-hidden": "true" }, STATUS_MARKS[task.status] || "?"),
    task.status,
  );
}

/** Submit → finish, or how long it has waited so far (server clock). */
function turnaround(task, now) {
  if (task.duration_ms !== undefined) {
    return formatSeconds(task.duration_ms / 1000);
  }
  return el("span", { class: "waiting" }, `${formatSeconds(Math.max(0, now - task.created_at))}…`);
}

/** One cell, labelled for the narrow layout (CSS shows data-label there). */
const cell = (field, label, ...content) => el("td", { "data-field": field, "data-label": label }, ...content);

/** One table row for one task. */
function taskRow(task, now) {
  const failedNote = task.error ? el("span", { class: "error-note" }, task.error) : null;
  return el(
    "tr",
    { "data-task-id": task.task_id, "data-status": task.status },
    cell("task_id", "Task", el("code", { title: task.task_id }, shortId(task.task_id))),
    cell("operation", "Operation", el("span", { class: "op-name" }, task.operation), " ", describeOperation(task), failedNote),
    cell("status", "Status", statusBadge(task)),
    cell("accepted_by", "Accepted by", chip(task.accepted_by)),
    cell("handled_by", "Handled by", chip(task.handled_by)),
    cell("checked_by", "Checked by", chip(task.checked_by)),
    cell("attempts", "Tries", String(task.attempts ?? 0)),
    cell("turnaround", "Submit → finish", turnaround(task, now)),
  );
}

/** Count tasks by status: {pending: 2, running: 3, complete: 10, ...}. */
function countByStatus(tasks) {
  const counts = {};
  for (const task of tasks) {
    counts[task.status] = (counts[task.status] || 0) + 1;
  }
  return counts;
}

/**
 * Redraw the feed with `tasks` (newest first) at server time `now`.
 * The summary line is not a live region (it would speak at every poll of
 * a burst); app.js and controls.js announce the milestones instead.
 */
export function renderFeed(tasks, now) {
  const rows = tasks.map((task) => taskRow(task, now));
  if (rows.length === 0) {
    rows.push(el("tr", { class: "empty" }, el("td", { colspan: 8 }, "No tasks yet: press “Send burst”.")));
  }
  byId("feed-rows").replaceChildren(...rows);
  const counts = countByStatus(tasks);
  const parts = ["pending", "running", "complete", "failed"]
    .filter((status) => counts[status])
    .map((status) => `${counts[status]} ${status}`);
  const summary = parts.length ? `newest ${tasks.length}: ${parts.join(" · ")}` : "";
  const line = byId("feed-summary");
  if (line.textContent !== summary) {
    line.textContent = summary;
  }
}
