// messages.js — short sentences for what went wrong, fitted to what the
// person was doing.
//
// The API's problem documents say precisely what to fix ("operand 'a' must
// be a number"): for bad input the page shows that detail as it is. For
// trouble that is not the person's fault (a rate limit, Valkey away, no
// node answering) it says in a few words what happened to *their* action and
// what to do, and keeps the long technical detail out of the way.

/** The kind of a failure, from its HTTP status (0: no answer at all). */
export function kindOf(error) {
  if (error.timedOut) {
    return "timeout";
  }
  if (error.status === 0 || error.status === undefined) {
    return "no-gateway";
  }
  if (error.status === 429) {
    return "rate-limited";
  }
  if (error.status === 503) {
    return "valkey";
  }
  if (error.status === 502 || error.status === 504) {
    return "no-node";
  }
  return error.status >= 500 ? "server" : "input";
}

/** "retry after 2 s" from a Retry-After, or "" without one. */
const retryHint = (error) => (error.retryAfter ? `; try again in ${error.retryAfter} s` : "");

/** What happened, as a short clause, for each kind of failure. */
const CAUSES = {
  timeout: () => "no answer within a few seconds",
  "no-gateway": () => "the gateway does not answer",
  "rate-limited": (error) => `too many requests (HTTP 429)${retryHint(error)}`,
  valkey: (error) => `Valkey does not answer (HTTP 503)${retryHint(error) || "; try again shortly"}`,
  "no-node": (error) => `no node answers behind the gateway (HTTP ${error.status})`,
  server: (error) => `the server failed (HTTP ${error.status}); the error is in its log`,
};

/**
 * One sentence for `error` after the person tried `action` ("Adding",
 * "Queueing the task"): the API's own detail for bad input, else a short
 * cause and what to do.
 */
export function explain(error, action) {
  const kind = kindOf(error);
  if (kind === "input") {
    return error.message;
  }
  return `${action} failed: ${CAUSES[kind](error)}.`;
}

/** The banner's short cause for a failed poll (no advice: the page retries by itself). */
const POLL_CAUSES = {
  timeout: "no answer within a few seconds",
  "no-gateway": "the gateway does not answer",
  "rate-limited": "the polls are rate limited (HTTP 429)",
  valkey: "Valkey does not answer (HTTP 503)",
  "no-node": "no node answers behind the gateway",
  server: "the server fails (HTTP 500)",
};

/** A short cause for a failed poll; the same kind always gives the same words. */
export function pollCause(error) {
  const kind = kindOf(error);
  return POLL_CAUSES[kind] || `HTTP ${error.status}`;
}
