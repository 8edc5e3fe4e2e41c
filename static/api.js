// api.js — every call the dashboard makes to the Math Wizard API.
//
// The page was served by the gateway (nginx), so we call the same origin
// with *relative* URLs ("cluster", not "/cluster" or "http://host/cluster"):
// the dashboard then works under any host name, port or path prefix.
//
// nginx hands each request to the next node in turn (round robin), so two
// calls in a row are usually answered by two different nodes. Every JSON
// answer says which node served it (`handled_by`), and the dashboard shows it.
//
// A failed call answers with an RFC 9457 "problem details" document:
//   {"type": "...", "title": "Bad Request", "status": 400,
//    "detail": "operand 'a' must be a number, got 'x'", "handled_by": "node-2"}
// We turn it into an ApiError whose message is the human-readable `detail`.

/** An HTTP call that failed: `status` is 0 when no answer came at all. */
export class ApiError extends Error {
  constructor(message, { status = 0, problem = null } = {}) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.problem = problem;
  }
}

/** Build "path?name=value&..." from an object of query parameters. */
function withQuery(path, params) {
  const query = new URLSearchParams(params).toString();
  return query ? `${path}?${query}` : path;
}

/** Read a response body as JSON when it says it is JSON, else as text. */
async function readBody(response) {
  const type = response.headers.get("Content-Type") || "";
  if (type.includes("json")) {
    return response.json();
  }
  return response.text();
}

/** Turn a non-2xx answer into an ApiError that reads well in the page. */
function problemError(response, body) {
  const problem = typeof body === "object" && body !== null ? body : null;
  const detail = problem?.detail || problem?.title || response.statusText || "request failed";
  const who = problem?.handled_by ? ` from ${problem.handled_by}` : "";
  return new ApiError(`${detail} (HTTP ${response.status}${who})`, {
    status: response.status,
    problem,
  });
}

/**
 * Tell the page which node answered (an "answer" event on document), so it
 * can draw nginx's round robin without every caller having to report it.
 * A task's status names the node that answered `checked_by`, because its
 * `handled_by` is the worker that ran the task; every other body says
 * `handled_by`.
 */
function announceAnswer(body) {
  const isObject = typeof body === "object" && body !== null;
  const node = isObject ? body.checked_by || body.handled_by : null;
  if (node) {
    document.dispatchEvent(new CustomEvent("answer", { detail: { node } }));
  }
}

/**
 * Call the API and return its JSON body.
 * Throws ApiError carrying the problem's `detail` on any failure.
 */
export async function call(method, path, params = {}, headers = {}) {
  let response;
  try {
    response = await fetch(withQuery(path, params), {
      method,
      headers: { Accept: "application/json", ...headers },
      cache: "no-store",
    });
  } catch (error) {
    // fetch() rejects only when no HTTP answer arrived at all:
    // the gateway is down, or the network is.
    throw new ApiError(`the gateway did not answer (${error.message})`);
  }
  const body = await readBody(response);
  announceAnswer(body);
  if (!response.ok) {
    throw problemError(response, body);
  }
  return body;
}

// --- one small function per endpoint ---------------------------------------

/** GET /cluster → {time, nodes: [...], queue: {...}, handled_by} */
export const getCluster = () => call("GET", "cluster");

/** GET /tasks?limit=N → {tasks: [...newest first], handled_by} */
export const getRecentTasks = (limit) => call("GET", "tasks", { limit });

/** GET /add?a=&b= → {sum, elapsed_ms, handled_by}: blocks while it works. */
export const addNow = (a, b) => call("GET", "add", { a, b });

/**
 * A fresh Idempotency-Key: 32 random hex digits. crypto.getRandomValues works
 * on plain http too (crypto.randomUUID needs https or localhost).
 */
export function newIdempotencyKey() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("");
}

/**
 * POST /task?a=&b=&operation= → 202 {task_id, status, accepted_by, ...}
 * Every submit carries its own Idempotency-Key, so sending the same request
 * again (after a 504 from a frozen node, say) cannot create a second task.
 */
export const submitTask = (a, b, operation = "add", key = newIdempotencyKey()) =>
  call("POST", "task", { a, b, operation }, { "Idempotency-Key": key });

/** GET /tasks/<id>/status → the task, plus `checked_by` (the node asked). */
export const taskStatus = (taskId) => call("GET", `tasks/${encodeURIComponent(taskId)}/status`);

/** True for the states a task never leaves. */
export const isFinished = (task) => task.status === "complete" || task.status === "failed";
