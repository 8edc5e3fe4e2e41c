// controls.js — the four experiments of the "Try it" panel.
//
//   1. Add now        GET /add: the node does the work while you wait.
//   2. Queue a task   POST /task answers 202 at once; then we poll its status
//                     and watch it go pending → running → complete.
//   3. Burst          N tasks at once: nginx spreads the POSTs over the nodes
//                     (round robin) and every worker takes from one queue.
//   4. Sync vs async  the central lesson: N blocking calls one after another
//                     against N queued tasks worked on in parallel.
//
// Each experiment shows its own result. A mistake in the input is shown in
// the API's own words (the `detail` of its problem document); trouble that
// is not the person's fault (a rate limit, Valkey away) in a short sentence
// about what happened to what they did (messages.js). Screen readers hear
// milestones only (sent, done), never every poll.

import { addNow, isFinished, submitTask, taskStatus } from "./api.js";
import { announce, byId, el, formatSeconds, pause, readCount, shortId } from "./dom.js";
import { describeOperation, statusBadge } from "./feed.js";
import { explain, kindOf } from "./messages.js";
import { chip, shapeIcon, styleOf } from "./nodes.js";

/** How often a waiting client asks for a task's status, milliseconds. */
const STATUS_POLL_MS = 150;

// --- shared helpers ---------------------------------------------------------

/** Replace `target`'s content with a short error message for `action`. */
function showError(target, error, action) {
  target.replaceChildren(
    el("p", { class: "error" }, el("strong", {}, "Error: "), explain(error, action)),
  );
}

/** Tell the page that work was queued (it then polls the feed at once). */
const workQueued = () => document.dispatchEvent(new Event("work"));

/**
 * Run `job` with `button` marked busy; a second press meanwhile is ignored.
 * We use aria-disabled rather than `disabled`, so the keyboard focus stays
 * on the button instead of jumping back to the top of the page.
 */
async function whileBusy(button, job) {
  if (button.getAttribute("aria-disabled") === "true") {
    return;
  }
  button.setAttribute("aria-disabled", "true");
  try {
    await job();
  } finally {
    button.removeAttribute("aria-disabled");
  }
}

/** "[node-1] ×4 [node-2] ×3" from a list of node or worker names. */
function tally(names) {
  const counts = new Map();
  for (const name of names) {
    counts.set(name, (counts.get(name) || 0) + 1);
  }
  const sorted = [...counts.entries()].sort(([a], [b]) => a.localeCompare(b, undefined, { numeric: true }));
  return sorted.map(([name, count]) => el("span", { class: "tally" }, chip(name), ` ×${count}`));
}

/** Seconds since `started` (a performance.now() reading). */
const secondsSince = (started) => (performance.now() - started) / 1000;

// --- 1. Add now (synchronous) ---------------------------------------------

/** GET /add and show the sum, who answered and how long the call blocked. */
async function runSyncAdd(a, b) {
  const out = byId("sync-result");
  out.replaceChildren(el("p", { class: "working" }, "GET /add… the browser waits while one node does the work."));
  const started = performance.now();
  try {
    const answer = await addNow(a, b);
    const blocked = secondsSince(started);
    out.replaceChildren(
      el("p", {}, `${answer.a} + ${answer.b} = `, el("b", { class: "big" }, String(answer.sum))),
      el("p", { class: "detail" }, "answered by ", chip(answer.handled_by), " after blocking ",
        el("b", {}, formatSeconds(blocked)), ` (${formatSeconds(answer.elapsed_ms / 1000)} of work)`),
    );
  } catch (error) {
    // A 400 for a bad operand, or 502 when no node answered: say it plainly.
    showError(out, error, "Adding");
  }
}

// --- 2. Queue a task (asynchronous) ---------------------------------------

/** Which step a status has reached: 0 pending, 1 running, 2 complete or failed. */
const STEP_REACHED = { pending: 0, running: 1, complete: 2, failed: 2 };

/** What the "running" step says: the worker, and how long the task queued. */
function runningAbout(task) {
  if (!task.handled_by) {
    return [];
  }
  const queued = formatSeconds(task.started_at - task.created_at);
  return ["on ", chip(task.handled_by), ` after ${queued} in the queue`];
}

/** What the last step says: the result or the error, and the time worked. */
function endingAbout(task) {
  const worked = task.finished_at ? ` · worked ${formatSeconds(task.finished_at - task.started_at)}` : "";
  if (task.status === "failed") {
    return [task.error || task.reason || "no reason given", worked];
  }
  return task.status === "complete" ? [describeOperation(task), worked] : [];
}

/** The three steps of a task's life, each with what we know of it so far. */
function stepsOf(task) {
  const reached = STEP_REACHED[task.status] ?? 0;
  const steps = [
    { name: "pending", about: ["accepted by ", chip(task.accepted_by)] },
    { name: "running", about: runningAbout(task) },
    { name: task.status === "failed" ? "failed" : "complete", about: endingAbout(task) },
  ];
  return steps.map((step, index) => ({
    ...step,
    reached: index <= reached,
    current: index === reached && !isFinished(task),
  }));
}

/** One step of the stepper; CSS draws ✓ (done), a ring (now) or ○ (not yet). */
function stepItem(step) {
  const classes = [
    "step",
    step.reached ? "is-done" : "",
    step.current ? "is-current" : "",
    step.name === "failed" ? "is-failed" : "",
  ];
  const words = step.current ? " (now)" : step.reached ? " (done)" : " (not yet)";
  return el(
    "li",
    { class: classes.filter(Boolean).join(" ") },
    el("span", { class: "step-name" }, step.name),
    el("span", { class: "visually-hidden" }, words),
    el("span", { class: "step-about" }, ...step.about),
  );
}

/** Draw the task's progress and which nodes answered its status polls. */
function renderSteps(out, task, checkers) {
  const asked = checkers.length === 0 ? null : el(
    "p",
    { class: "detail" },
    `status asked ${checkers.length}× — answered by `,
    ...tally(checkers),
    el("span", { class: "hint" }, " (any node can answer: the task lives in Valkey)"),
  );
  out.replaceChildren(
    el("p", { class: "detail" }, "task ", el("code", {}, shortId(task.task_id)), " ", statusBadge(task)),
    el("ol", { class: "steps" }, stepsOf(task).map(stepItem)),
    asked,
  );
}

/** POST /task, then poll its status until it is complete or failed. */
async function runOneTask(a, b, operation) {
  const out = byId("async-result");
  out.replaceChildren(el("p", { class: "working" }, "POST /task…"));
  try {
    const accepted = await submitTask(a, b, operation);
    workQueued();
    let task = { ...accepted, a, b, status: "pending", handled_by: null, created_at: null };
    const checkers = [];
    renderSteps(out, task, checkers);
    while (!isFinished(task)) {
      await pause(STATUS_POLL_MS);
      task = await taskStatus(accepted.task_id);
      checkers.push(task.checked_by);
      renderSteps(out, task, checkers);
    }
    announce(`Task ${shortId(task.task_id)} ${task.status}: ${endingAbout(task).join("")}`);
  } catch (error) {
    // Invalid input (400), unknown task (404) or no node (502): show why.
    showError(out, error, "Queueing the task");
  }
}

// --- 3. Burst ---------------------------------------------------------------

// The burst in progress: one entry per request sent, in order, with what
// became of it; the last state seen of each accepted task; the summary.
const burst = {
  requests: [], // [{taskId} | {refused: ApiError} | {failed: ApiError}]
  tasks: new Map(), // task id → last state seen
  sentSeconds: 0,
  announcedDone: false,
};

/** The ids of the burst's accepted tasks, in order. */
const acceptedIds = () => burst.requests.filter((r) => r.taskId).map((r) => r.taskId);

/** One cell per task: outlined while waiting, filled in the worker's colour once done. */
function burstCell(taskId, task) {
  const status = task ? task.status : "pending";
  const worker = task?.handled_by;
  const label = worker ? `task ${shortId(taskId)} ${status} on ${worker}` : `task ${shortId(taskId)} ${status}`;
  return el(
    "li",
    { class: "cell", "data-task-id": taskId, "data-status": status, title: label,
      style: worker ? `--node: ${styleOf(worker).colour}` : false },
    worker ? shapeIcon(worker) : null,
    el("span", { class: "visually-hidden" }, label),
  );
}

/** A crossed-out cell for a request that never became a task. */
function refusedCell(error, index) {
  const label = `request ${index + 1} ${error.status === 429 ? "refused (HTTP 429)" : `failed (${kindOf(error)})`}`;
  return el("li", { class: "cell", "data-status": "refused", title: label },
    el("span", { class: "visually-hidden" }, label));
}

/** "1 s", or "" when no refusal said how long to wait. */
function longestRetryAfter(errors) {
  const seconds = errors.map((error) => error.retryAfter).filter((value) => value !== null);
  return seconds.length ? Math.max(...seconds) : null;
}

/** One summary line per kind of outcome: sent, accepted, refused, failed, finished. */
function summaryLines(tasks, finished) {
  const sent = burst.requests.length;
  const accepted = burst.requests.filter((r) => r.taskId);
  const refused = burst.requests.filter((r) => r.refused).map((r) => r.refused);
  const failed = burst.requests.filter((r) => r.failed).map((r) => r.failed);
  const lines = [el("p", { "data-line": "sent" }, `${sent} sent in ${formatSeconds(burst.sentSeconds)}`)];
  lines.push(el("p", { "data-line": "accepted" }, `${accepted.length} accepted`,
    accepted.length ? " by " : "", ...tally(tasks.filter(Boolean).map((task) => task.accepted_by).filter(Boolean))));
  if (refused.length) {
    const wait = longestRetryAfter(refused);
    const advice = wait === null ? "" : `; the nodes ask to wait ${wait} s before sending more`;
    lines.push(el("p", { class: "error", "data-line": "refused" },
      `${refused.length} refused: too many requests (HTTP 429), over the rate limit${advice}`));
  }
  const byCause = new Map();
  for (const error of failed) {
    const cause = explain(error, "Sending");
    byCause.set(cause, (byCause.get(cause) || 0) + 1);
  }
  for (const [cause, count] of byCause) {
    lines.push(el("p", { class: "error", "data-line": "failed" }, `${count} failed · ${cause}`));
  }
  if (accepted.length) {
    lines.push(el("p", { "data-line": "finished" }, `${finished.length} / ${accepted.length} finished`,
      finished.length ? " · handled by " : "", ...tally(finished.map((task) => task.handled_by).filter(Boolean))));
  }
  return lines;
}

/** Redraw the burst cells and its summary, one line per kind of outcome. */
function renderBurst() {
  const ids = acceptedIds();
  const tasks = ids.map((id) => burst.tasks.get(id));
  const cells = burst.requests.map((request, index) =>
    (request.taskId ? burstCell(request.taskId, burst.tasks.get(request.taskId)) : refusedCell(request.refused || request.failed, index)));
  byId("burst-grid").replaceChildren(...cells);
  const finished = tasks.filter((task) => task && isFinished(task));
  const lines = summaryLines(tasks, finished);
  if (finished.length === ids.length && finished.length > 0) {
    const first = Math.min(...finished.map((task) => task.created_at));
    const last = Math.max(...finished.map((task) => task.finished_at));
    const took = formatSeconds(last - first);
    lines.push(el("p", { class: "detail", "data-line": "done" }, `all done ${took} after the first was queued`));
    if (!burst.announcedDone) {
      burst.announcedDone = true;
      announce(`Burst done: ${ids.length} tasks finished ${took} after the first was queued.`);
    }
  }
  byId("burst-summary").replaceChildren(...lines);
}

/** Say once, briefly, what became of the burst's requests. */
function announceSent() {
  const accepted = acceptedIds().length;
  const refused = burst.requests.filter((r) => r.refused).length;
  const failed = burst.requests.filter((r) => r.failed).length;
  const parts = [`${accepted} accepted`];
  if (refused) {
    parts.push(`${refused} refused by the rate limit`);
  }
  if (failed) {
    parts.push(`${failed} failed`);
  }
  announce(`Burst of ${burst.requests.length} sent: ${parts.join(", ")}.`);
}

/** Send `count` tasks at once; their progress arrives with the feed's polls. */
async function runBurst(count) {
  burst.requests = [];
  burst.tasks = new Map();
  burst.announcedDone = false;
  byId("burst-grid").replaceChildren();
  byId("burst-summary").replaceChildren(el("p", { class: "working" }, `sending ${count} tasks…`));
  const started = performance.now();
  const sends = Array.from({ length: count }, (_, i) => submitTask(i + 1, count, "add"));
  const results = await Promise.allSettled(sends);
  burst.sentSeconds = secondsSince(started);
  for (const result of results) {
    if (result.status === "fulfilled") {
      burst.requests.push({ taskId: result.value.task_id });
      burst.tasks.set(result.value.task_id, { ...result.value, handled_by: null });
    } else if (result.reason.status === 429) {
      burst.requests.push({ refused: result.reason });
    } else {
      burst.requests.push({ failed: result.reason });
    }
  }
  renderBurst();
  announceSent();
  workQueued();
}

/** True while some accepted task of the last burst is not finished yet. */
export function burstInFlight() {
  return acceptedIds().some((id) => !isFinished(burst.tasks.get(id)));
}

/** How many tasks the last burst queued (the feed asks for that many more). */
export const burstSize = () => (burstInFlight() ? acceptedIds().length : 0);

/** Called with every GET /tasks answer: update the cells of the burst. */
export function updateBurst(tasks) {
  if (burst.requests.length === 0) {
    return;
  }
  let changed = false;
  for (const task of tasks) {
    const known = burst.tasks.get(task.task_id);
    if (known && known.status !== task.status) {
      burst.tasks.set(task.task_id, task);
      changed = true;
    }
  }
  if (changed) {
    renderBurst();
  }
}

// --- 4. Sync vs async -------------------------------------------------------

/** Show one lane of the race: progress text and a bar of `fraction` width. */
function renderLane(lane, text, fraction) {
  byId(`race-${lane}-time`).textContent = text;
  byId(`race-${lane}-bar`).style.width = `${Math.round(Math.min(1, fraction) * 100)}%`;
}

/** N × GET /add, each waiting for the previous one: returns total seconds. */
async function raceSync(count) {
  const started = performance.now();
  for (let i = 0; i < count; i += 1) {
    renderLane("sync", `${i} / ${count} done · ${formatSeconds(secondsSince(started))}`, i / count);
    await addNow(i + 1, i + 1);
  }
  return secondsSince(started);
}

/** N × POST /task at once, then poll until all are finished: total seconds. */
async function raceAsync(count) {
  const started = performance.now();
  const accepted = await Promise.all(Array.from({ length: count }, (_, i) => submitTask(i + 1, i + 1, "add")));
  workQueued();
  let waiting = accepted.map((answer) => answer.task_id);
  while (waiting.length > 0) {
    renderLane("async", `${count - waiting.length} / ${count} done · ${formatSeconds(secondsSince(started))}`,
      (count - waiting.length) / count);
    await pause(STATUS_POLL_MS);
    const states = await Promise.all(waiting.map(taskStatus));
    waiting = states.filter((task) => !isFinished(task)).map((task) => task.task_id);
  }
  return secondsSince(started);
}

/** Run both lanes, one after the other, and compare their totals. */
async function runRace(count) {
  const verdict = byId("race-verdict");
  verdict.replaceChildren();
  renderLane("sync", "waiting…", 0);
  renderLane("async", "waiting…", 0);
  try {
    const syncSeconds = await raceSync(count);
    renderLane("sync", formatSeconds(syncSeconds), 1);
    const asyncSeconds = await raceAsync(count);
    const longest = Math.max(syncSeconds, asyncSeconds);
    renderLane("sync", formatSeconds(syncSeconds), syncSeconds / longest);
    renderLane("async", formatSeconds(asyncSeconds), asyncSeconds / longest);
    const ratio = syncSeconds / asyncSeconds;
    verdict.textContent = ratio >= 1
      ? `${count} tasks: async was ${ratio.toFixed(1)}× faster (${formatSeconds(syncSeconds)} vs ${formatSeconds(asyncSeconds)}).`
      : `${count} tasks: sync was faster this time (${formatSeconds(syncSeconds)} vs ${formatSeconds(asyncSeconds)}): the work is too short to be worth queueing.`;
  } catch (error) {
    // One call failed (a node down, Valkey away): the race has no winner.
    showError(verdict, error, "The race");
  }
}

// --- wiring -------------------------------------------------------------------

/** Connect the forms of the "Try it" panel to the experiments above. */
export function setUpControls() {
  byId("one-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const a = byId("one-a").value.trim();
    const b = byId("one-b").value.trim();
    // The button pressed (or the first one, for Enter in a field) picks the experiment.
    const button = event.submitter || byId("sync-button");
    if (button.id === "task-button") {
      whileBusy(button, () => runOneTask(a, b, byId("one-operation").value));
    } else {
      whileBusy(button, () => runSyncAdd(a, b));
    }
  });
  byId("burst-form").addEventListener("submit", (event) => {
    event.preventDefault();
    whileBusy(byId("burst-button"), () => runBurst(readCount(byId("burst-count"), 10)));
  });
  byId("race-form").addEventListener("submit", (event) => {
    event.preventDefault();
    whileBusy(byId("race-button"), () => runRace(readCount(byId("race-count"), 6)));
  });
}
