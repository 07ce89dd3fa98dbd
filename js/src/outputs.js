// A tool's outputs: streams and tracebacks as <pre> (textContent only), images
// from the media cache with their variable name.
import { h } from "./dom.js";

/** Replace the children of `box` with `outputs`; `media` is a MediaCache. */
export function renderOutputs(box, outputs, media) {
  const nodes = [];
  for (const out of outputs || []) {
    if (out.kind === "stream") {
      const cls = out.name === "stderr" ? "pyvision-stderr" : "pyvision-stdout";
      nodes.push(h("pre", { class: cls, text: out.text || "" }));
    } else if (out.kind === "error") {
      const text = out.traceback || `${out.ename || "Error"}: ${out.evalue || ""}`;
      nodes.push(h("pre", { class: "pyvision-traceback", text }));
    } else if (out.kind === "image") {
      const img = h("img", {
        class: "pyvision-output-image", "data-key": out.key, src: media.url(out.key) || null,
        alt: out.variable || "tool image", width: out.width || null, height: out.height || null,
        loading: "lazy",
      });
      nodes.push(h("figure", { class: "pyvision-output-figure" },
        out.variable ? h("figcaption", { class: "pyvision-variable" }, h("code", { text: out.variable })) : null,
        img));
    } else {
      nodes.push(h("pre", { class: "pyvision-text", text: out.text ?? "" }));
    }
  }
  box.replaceChildren(...nodes);
  box.hidden = nodes.length === 0;
}
