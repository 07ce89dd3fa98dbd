// Markdown-ish prose: paragraphs, line breaks, fenced code, `code`, **bold**,
// *emphasis*. Built as DOM nodes, so model text is never parsed as HTML.
import { h } from "./dom.js";

const INLINE = /(`+)([^`]|[^`][\s\S]*?[^`])\1(?!`)|\*\*([^*\n]+?)\*\*|(?<![*\w])\*([^*\s][^*\n]*?)\*(?![*\w])/g;

/** Append inline Markdown of `text` (one paragraph) to `parent`. */
function inline(parent, text) {
  let last = 0;
  INLINE.lastIndex = 0;
  for (let m = INLINE.exec(text); m; m = INLINE.exec(text)) {
    if (m.index > last) parent.append(text.slice(last, m.index));
    if (m[1] !== undefined) parent.append(h("code", { text: m[2] }));
    else if (m[3] !== undefined) parent.append(h("strong", { text: m[3] }));
    else parent.append(h("em", { text: m[4] }));
    last = INLINE.lastIndex;
  }
  if (last < text.length) parent.append(text.slice(last));
}

function paragraph(lines) {
  const p = h("p");
  lines.forEach((line, i) => {
    if (i) p.append(h("br"));
    inline(p, line);
  });
  return p;
}

/** Replace the children of `el` with the rendering of `text`. */
export function renderMarkdown(el, text) {
  const nodes = [];
  let para = [];
  let fence = null;
  const flush = () => {
    if (para.length) nodes.push(paragraph(para));
    para = [];
  };
  for (const line of String(text || "").replace(/\r\n?/g, "\n").split("\n")) {
    if (fence) {
      if (/^\s*(```|~~~)\s*$/.test(line)) {
        nodes.push(h("pre", { class: "pyvision-md-code" }, h("code", { text: fence.join("\n") })));
        fence = null;
      } else fence.push(line);
    } else if (/^\s*(```|~~~)/.test(line)) {
      flush();
      fence = [];
    } else if (!line.trim()) flush();
    else para.push(line);
  }
  if (fence) nodes.push(h("pre", { class: "pyvision-md-code" }, h("code", { text: fence.join("\n") })));
  flush();
  el.replaceChildren(...nodes);
}
