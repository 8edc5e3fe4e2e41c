// nodes.js — one colour and one shape per node, used everywhere on the page.
//
// Colours come from the Okabe–Ito palette (M. Okabe and K. Ito, "Color
// Universal Design", 2008), chosen to stay distinct for the common kinds of
// colour blindness. Colour is never the only clue: every node also has its own
// shape (circle, square, triangle...) and its name is written next to it.
//
// A node keeps its colour for the life of the page: the first /cluster answer
// assigns them in name order (node-1, node-2, node-3...), and nodes seen later
// get the next free colour.

import { svg, el } from "./dom.js";

// Okabe–Ito, brightest first; black is left out (invisible on a dark page).
const PALETTE = ["#E69F00", "#56B4E9", "#009E73", "#F0E442", "#CC79A7", "#D55E00", "#0072B2"];

// Shapes drawn in a 12×12 box. Eight shapes against seven colours: the pairs
// stay different for 56 nodes before one repeats.
const SHAPES = {
  circle: () => svg("circle", { cx: 6, cy: 6, r: 5 }),
  square: () => svg("rect", { x: 1.5, y: 1.5, width: 9, height: 9 }),
  triangle: () => svg("polygon", { points: "6,0.8 11.4,11 0.6,11" }),
  diamond: () => svg("polygon", { points: "6,0.3 11.7,6 6,11.7 0.3,6" }),
  "triangle-down": () => svg("polygon", { points: "0.6,1 11.4,1 6,11.2" }),
  plus: () => svg("polygon", { points: "4,0.8 8,0.8 8,4 11.2,4 11.2,8 8,8 8,11.2 4,11.2 4,8 0.8,8 0.8,4 4,4" }),
  star: () => svg("polygon", { points: starPoints(6, 6, 5.8, 2.5) }),
  hexagon: () => svg("polygon", { points: "3,0.8 9,0.8 11.6,6 9,11.2 3,11.2 0.4,6" }),
};
const SHAPE_NAMES = Object.keys(SHAPES);

// Fill patterns of the chart's bars (drawn by chart.js): seven, one per
// colour, so a node's bars differ from the others' by more than colour.
const PATTERN_NAMES = ["solid", "stripes", "dots", "bars", "checks", "columns", "rings"];

/** The corners of a five-pointed star centred on (cx, cy), as SVG points. */
function starPoints(cx, cy, outer, inner) {
  const points = [];
  for (let i = 0; i < 10; i += 1) {
    const radius = i % 2 === 0 ? outer : inner;
    const angle = (Math.PI / 5) * i - Math.PI / 2;
    points.push(`${(cx + radius * Math.cos(angle)).toFixed(2)},${(cy + radius * Math.sin(angle)).toFixed(2)}`);
  }
  return points.join(" ");
}

// node name → its position in order of first sight (0, 1, 2...)
const order = new Map();

/** Compare "node-2" and "node-10" as people do (2 before 10). */
const naturalOrder = (a, b) => a.localeCompare(b, undefined, { numeric: true });

/** Give every node in `names` a colour, in name order, if it has none yet. */
export function learnNodes(names) {
  for (const name of [...names].sort(naturalOrder)) {
    styleOf(name);
  }
}

/** The node part of a worker id: "node-2/w1" → "node-2". */
export const nodeOf = (workerOrNode) => String(workerOrNode).split("/")[0];

/** The name of a node's fill pattern in the chart ("solid", "stripes"...). */
export const patternOf = (workerOrNode) => styleOf(workerOrNode).pattern;

/** {colour, shape, pattern} of a node (or of the node a worker id belongs to). */
export function styleOf(workerOrNode) {
  const node = nodeOf(workerOrNode);
  if (!order.has(node)) {
    order.set(node, order.size);
  }
  const index = order.get(node);
  return {
    colour: PALETTE[index % PALETTE.length],
    shape: SHAPE_NAMES[index % SHAPE_NAMES.length],
    pattern: PATTERN_NAMES[index % PATTERN_NAMES.length],
  };
}

/** The node's shape as a small inline SVG, filled with the text colour. */
export function shapeIcon(workerOrNode) {
  const { shape } = styleOf(workerOrNode);
  return svg(
    "svg",
    { class: "shape", viewBox: "0 0 12 12", width: 12, height: 12, "aria-hidden": "true", focusable: "false" },
    SHAPES[shape](),
  );
}

/**
 * A node or worker name in its node's colour, after its node's shape:
 * <span class="chip" style="--node: #E69F00">▲ node-2/w1</span>.
 * `down: true` greys it out (a node without heartbeat).
 */
export function chip(name, { down = false } = {}) {
  if (!name) {
    return el("span", { class: "chip chip--none" }, "—");
  }
  const { colour } = styleOf(name);
  return el(
    "span",
    { class: down ? "chip is-down" : "chip", style: `--node: ${colour}`, "data-node": nodeOf(name) },
    shapeIcon(name),
    name,
  );
}
