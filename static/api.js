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

/** An HTTP call that failed: `status` is 0 when no answer came at all;
 * `retryAfter` is the seconds a 429 or 503 asked us to wait (or null). */
export class ApiError extends Error {
  constructor(message, { status = 0, problem = null, retryAfter = null, timedOut = false } = {}) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.problem = problem;
    this.retryAfter = retryAfter;
    this.timedOut = timedOut;
  }
}

/** Build "path?name=value&..." from an object of query parameters. */
function withQuery(path, params) {
  const query = new URLSearchParams(params).toString();
  return query ? `${path}?${query}` : path;
}

/**
 * JSON.parse's reviver for exact numbers: an integer too large for a JS
 * number (above 2^53, where doubles skip integers) becomes a BigInt made
 * from its source text, so 94906267 × 94906267 shows as 9007199515875289,
 * not ...288. `context.source` is the number's text as it came on the wire
 * (TC39 "JSON.parse source text access", shipped in Chromium 114).
 */
export function exactNumbers(key, value, context) {
  if (typeof value !== "number" || Number.isSafeInteger(value)) {
    return value;
  }
  const source = context?.source;
  return typeof source === "string" && /^-?\d+$/.test(source) ? BigInt(source) : value;
}

/** Parse JSON text with exact integers of any size (see exactNumbers). */
export const parseJson = (text) => JSON.parse(text, exactNumbers);

/** Read a response body as JSON when it says it is JSON, else as text. */
async function readBody(response) {
  const type = response.headers.get("Content-Type") || "";
  const text = await response.text();
  if (type.includes("json") && text) {
    return parseJson(text);
  }
  return text;
}

/** Seconds from a Retry-After header (delay-seconds form), or null. */
function retryAfterOf(response) {
  const seconds = Number.parseInt(response.headers.get("Retry-After") || "", 10);
  return Number.isNaN(seconds) ? null : seconds;
}

/** Turn a non-2xx answer into an ApiError that reads well in the page. */
function problemError(response, body) {
  const problem = typeof body === "object" && body !== null ? body : null;
  const detail = problem?.detail || problem?.title || response.statusText || "request failed";
  const who = problem?.handled_by ? ` from ${problem.handled_by}` : "";
  return new ApiError(`${detail} (HTTP ${response.status}${who})`, {
    status: response.status,
    problem,
    retryAfter: retryAfterOf(response),
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
 * Send one request; returns the fetch Response (any status).
 * `timeoutMs` aborts a request that gets no answer in time (0: wait as long
 * as it takes). Throws ApiError with status 0 when no answer came.
 */
async function send(method, url, { headers = {}, timeoutMs = 0 } = {}) {
  const options = { method, headers: { Accept: "application/json", ...headers }, cache: "no-store" };
  if (timeoutMs > 0) {
    options.signal = AbortSignal.timeout(timeoutMs);
  }
  try {
    return await fetch(url, options);
  } catch (error) {
    // fetch() rejects only when no HTTP answer arrived at all: the gateway
    // is down, the network is, or our own time limit ran out.
    if (error.name === "TimeoutError") {
      throw new ApiError(`no answer within ${timeoutMs / 1000} s`, { timedOut: true });
    }
    throw new ApiError(`the gateway did not answer (${error.message})`);
  }
}

/**
 * Call the API and return its JSON body.
 * Throws ApiError carrying the problem's `detail` on any failure.
 */
export async function call(method, path, params = {}, options = {}) {
  const response = await send(method, withQuery(path, params), options);
  const body = await readBody(response);
  announceAnswer(body);
  if (!response.ok) {
    throw problemError(response, body);
  }
  return body;
}

// --- one small function per endpoint ---------------------------------------

/** Polls give up after this long, milliseconds: a frozen cluster shows as
 * "no answer" within seconds instead of a request hanging for a minute. */
export const POLL_TIMEOUT_MS = 4000;

/** GET /cluster → {time, nodes: [...], queue: {...}, handled_by} */
export const getCluster = () => call("GET", "cluster", {}, { timeoutMs: POLL_TIMEOUT_MS });

/**
 * GET /tasks?limit=N, sending the ETag of the last answer. Returns
 * {changed: false} when nothing changed (304, no body), else
 * {changed: true, tasks: [...newest first], etag, node}.
 */
export async function getRecentTasks(limit, etag = "") {
  const headers = etag ? { "If-None-Match": etag } : {};
  const response = await send("GET", withQuery("tasks", { limit }), { headers, timeoutMs: POLL_TIMEOUT_MS });
  if (response.status === 304) {
    return { changed: false };
  }
  const body = await readBody(response);
  announceAnswer(body);
  if (!response.ok) {
    throw problemError(response, body);
  }
  return { changed: true, tasks: body.tasks, etag: response.headers.get("ETag") || "", node: body.handled_by };
}

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
  call("POST", "task", { a, b, operation }, { headers: { "Idempotency-Key": key } });

/** GET /tasks/<id>/status → the task, plus `checked_by` (the node asked). */
export const taskStatus = (taskId) => call("GET", `tasks/${encodeURIComponent(taskId)}/status`);

/** True for the states a task never leaves. */
export const isFinished = (task) => task.status === "complete" || task.status === "failed";
