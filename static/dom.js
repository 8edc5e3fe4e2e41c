// dom.js — tiny helpers to build the page with plain DOM calls (no framework).
//
//   el("li", { class: "worker" }, "node-1/w1 ", el("b", {}, "12"), " done")
//
// builds <li class="worker">node-1/w1 <b>12</b> done</li>. Strings become
// text nodes, so data from the API is never parsed as HTML.

const SVG_NS = "http://www.w3.org/2000/svg";

/** Set attributes on an element; `false`/`null` leaves one out. */
function setAttributes(node, attributes) {
  for (const [name, value] of Object.entries(attributes)) {
    if (value === false || value === null || value === undefined) {
      continue;
    }
    if (name === "style") {
      setStyle(node, String(value));
      continue;
    }
    node.setAttribute(name, value === true ? "" : String(value));
  }
}

/** Apply "prop: value; ..." through the CSSOM, never as a style attribute:
 *  the page's Content-Security-Policy (default-src 'self') refuses inline
 *  style attributes, but not styles set from its own script. */
function setStyle(node, declarations) {
  for (const declaration of declarations.split(";")) {
    const [property, ...value] = declaration.split(":");
    if (property.trim()) {
      node.style.setProperty(property.trim(), value.join(":").trim());
    }
  }
}

/** Append children: nodes as they are, anything else as text. */
function append(node, children) {
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) {
      continue;
    }
    node.append(child instanceof Node ? child : String(child));
  }
}

/** Create an HTML element with attributes and children. */
export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  setAttributes(node, attributes);
  append(node, children);
  return node;
}

/** Create an SVG element (same shape as el(), in the SVG namespace). */
export function svg(tag, attributes = {}, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  setAttributes(node, attributes);
  append(node, children);
  return node;
}

/** The element with this id (throws early if the HTML and JS disagree). */
export function byId(id) {
  const node = document.getElementById(id);
  if (!node) {
    throw new Error(`index.html has no element with id "${id}"`);
  }
  return node;
}

/**
 * Say something to screen-reader users without moving their focus (the
 * polite live region #announcer). Kept for milestones (a burst sent, a
 * burst done, a node down), never for every poll.
 */
export function announce(message) {
  byId("announcer").textContent = message;
}

/** "3f2a9c1e" from a 32-hex-digit task id: enough to tell tasks apart. */
export const shortId = (taskId) => String(taskId).slice(0, 8);

/** Seconds as text a person reads at a glance: "0.42 s", "12.3 s", "2 min 5 s". */
export function formatSeconds(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) {
    return "—";
  }
  if (seconds < 10) {
    return `${seconds.toFixed(2)} s`;
  }
  if (seconds < 120) {
    return `${seconds.toFixed(1)} s`;
  }
  return `${Math.floor(seconds / 60)} min ${Math.round(seconds % 60)} s`;
}

/** Read a whole number from an <input>, kept within [min, max]. */
export function readCount(input, fallback) {
  const value = Number.parseInt(input.value, 10);
  const min = Number(input.min || 1);
  const max = Number(input.max || 1000);
  if (Number.isNaN(value)) {
    input.value = String(fallback);
    return fallback;
  }
  const clamped = Math.min(max, Math.max(min, value));
  input.value = String(clamped);
  return clamped;
}

/** Resolve after `ms` milliseconds (to pace polling loops, never in tests). */
export const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
