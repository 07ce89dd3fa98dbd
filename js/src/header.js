// The top of the view: question, thumbnails, model/status/tokens/time, Stop,
// the isolation notice and, as soon as there is one, the answer.
import { formatSeconds, h, setText, show } from "./dom.js";
import { renderMarkdown } from "./markdown.js";

const STATUS_WORDS = {
  running: "running",
  answered: "answered",
  max_turns: "turn limit reached",
  stopped: "stopped",
  error: "error",
};

export class Header {
  constructor({ onStop }) {
    this.title = h("div", { class: "pyvision-title" });
    this.question = h("div", { class: "pyvision-question" });
    this.thumbs = h("div", { class: "pyvision-thumbs" });
    this.model = h("span", { class: "pyvision-model" });
    this.status = h("span", { class: "pyvision-status" });
    this.tokens = h("span", { class: "pyvision-tokens" });
    this.elapsed = h("span", { class: "pyvision-elapsed" });
    this.stop = h("button", { class: "pyvision-stop", type: "button", text: "Stop",
                              title: "End the session now, keeping every turn done so far" });
    this.stop.addEventListener("click", () => {
      if (this.stop.disabled) return;
      this.stopping = true;
      this.stop.disabled = true;
      this.stop.textContent = "Stopping…";
      onStop();
    });
    this.info = h("div", { class: "pyvision-info" }, this.model, this.status, this.tokens,
                  this.elapsed, this.stop);
    this.notice = h("div", { class: "pyvision-notice" });
    this.savedHint = h("div", { class: "pyvision-saved-hint", hidden: true },
      "Saved view: run the cell again, or ", h("code", { text: "%pyvision load" }),
      ", to edit and rerun.");
    this.answer = h("div", { class: "pyvision-answer", hidden: true, role: "status" });
    this.el = h("div", { class: "pyvision-header" }, this.title, this.question, this.thumbs,
                this.info, this.notice, this.savedHint, this.answer);
    this.stopping = false;
    this.answerKey = null;
    this.thumbKey = null;
  }

  setHeader(header, media) {
    const forkOf = header.fork_of;
    const title = forkOf ? `Fork from turn ${forkOf.turn + 1}` : header.title || "";
    setText(this.title, title);
    show(this.title, Boolean(title));
    setText(this.question, header.question || "");
    setText(this.model, header.model || "");
    show(this.model, Boolean(header.model));
    setText(this.notice, header.notice || "");
    show(this.notice, Boolean(header.notice));
    const key = JSON.stringify(header.images || []);
    if (key !== this.thumbKey) {
      this.thumbKey = key;
      this.thumbs.replaceChildren(...(header.images || []).map((image) => {
        const figure = h("figure", { class: "pyvision-thumb", title: "Click to enlarge" },
          h("img", { "data-key": image.key, src: media.url(image.key) || null,
                     alt: image.variable || image.name || "input image" }),
          h("figcaption", {}, h("code", { text: image.variable || "" }),
            image.name && image.name !== image.variable ? ` ${image.name}` : null));
        figure.addEventListener("click", () => figure.classList.toggle("pyvision-thumb-large"));
        return figure;
      }));
      show(this.thumbs, (header.images || []).length > 0);
    }
  }

  /** `live`: true (kernel answered), false (saved view) or null (not known yet). */
  setState(state, live) {
    const status = state.status || "running";
    const running = status === "running";
    setText(this.status, STATUS_WORDS[status] || status);
    this.status.className = `pyvision-status pyvision-status-${status}`;
    const usage = state.usage || {};
    const total = usage.total || 0;
    const liveTokens = state.live_tokens || 0;
    const cached = usage.cached || 0;
    const count = liveTokens > 0 ? `~${total + liveTokens} tokens` : `${total} tokens`;
    setText(this.tokens, cached > 0 ? `${count} (${cached} cached)` : count);
    show(this.stop, running && live !== false);
    if (!running) this.stopping = false;
    if (!this.stopping) {
      this.stop.disabled = live !== true;
      setText(this.stop, "Stop");
    }
    this.renderAnswer(state, status);
  }

  tick(seconds) {
    setText(this.elapsed, formatSeconds(seconds));
  }

  renderAnswer(state, status) {
    const key = JSON.stringify([status, state.answer, state.error, state.stale_answer]);
    if (key === this.answerKey) return;
    this.answerKey = key;
    const box = this.answer;
    const hasAnswer = state.answer !== null && state.answer !== undefined && state.answer !== "";
    let reason = null;
    if (!hasAnswer) {
      if (status === "max_turns") reason = "No answer: the model used all its turns without giving one.";
      else if (status === "stopped") reason = "Stopped before an answer.";
      else if (status === "error") reason = `No answer: ${state.error || "the session failed."}`;
    }
    if (hasAnswer) {
      box.className = "pyvision-answer";
      const body = h("div", { class: "pyvision-answer-body" });
      renderMarkdown(body, String(state.answer));
      const nodes = [h("div", { class: "pyvision-answer-label", text: "Answer" }), body];
      if (state.stale_answer) {
        nodes.push(h("div", { class: "pyvision-stale-note",
          text: `Based on the original outputs of turn ${state.stale_answer}, which was edited since.` }));
      }
      box.replaceChildren(...nodes);
    } else if (reason) {
      box.className = `pyvision-noanswer pyvision-noanswer-${status}`;
      box.replaceChildren(h("div", { class: "pyvision-reason", text: reason }));
    } else {
      box.replaceChildren();
    }
    show(box, hasAnswer || Boolean(reason));
  }

  setSaved(saved) {
    show(this.savedHint, saved);
  }
}
