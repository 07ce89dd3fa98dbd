// Small DOM helpers. Text always goes in through textContent / text nodes:
// nothing the model or a tool wrote is ever parsed as HTML.

/** Create an element: h("div", {class: "x", onclick: fn}, child, "text", ...). */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "text") el.textContent = value;
    else if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else el.setAttribute(key, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Show or hide an element (the `hidden` attribute; CSS keeps it hidden). */
export function show(el, visible) {
  el.hidden = !visible;
}

/** Set textContent only when it changed (keeps selections and avoids reflows). */
export function setText(el, text) {
  const value = text === null || text === undefined ? "" : String(text);
  if (el.textContent !== value) el.textContent = value;
}

/** "0.4 s", "12.3 s", "2 min 05 s". */
export function formatSeconds(seconds) {
  const s = Math.max(0, Number(seconds) || 0);
  if (s < 60) return `${s.toFixed(1)} s`;
  const minutes = Math.floor(s / 60);
  const rest = Math.floor(s - minutes * 60);
  return `${minutes} min ${String(rest).padStart(2, "0")} s`;
}

/** Stable JSON for change detection (turn dicts are plain JSON). */
export function same(a, b) {
  return JSON.stringify(a) === JSON.stringify(b);
}
