// One card per turn. Updated in place: a new turn dict changes only the parts
// that differ, and the editor (with its undo history and focus) stays alive.
import { createEditor, highlightInto } from "./editor.js";
import { h, same, setText, show } from "./dom.js";
import { renderMarkdown } from "./markdown.js";
import { renderOutputs } from "./outputs.js";

const EXEC_WORDS = {
  ok: "tool ok",
  error: "tool error",
  timeout: "tool timed out",
  died: "kernel died",
  skipped: "tool skipped",
  stopped: "stopped",
};

// The line a folded turn shows: its first words, else its code's first line, else
// (a turn that only answers) the answer.
function summaryOf(prose, code, answer) {
  const pick = (text) => (text || "").split("\n").map((l) => l.trim())
    .find((l) => l && !/^(```|~~~)/.test(l)) || "";
  const plain = (text) => pick(text).replace(/[*`#>]+/g, "").trim();
  let line = plain(prose) || pick(code);
  if (!line && answer) line = `Answer: ${plain(answer)}`;
  if (line.length > 90) line = `${line.slice(0, 89)}…`;
  return line;
}

export class Card {
  /**
   * @param {number} index  0-based turn index
   * @param {object} ctx  {send, media, ui, canAct(), onToggle()}
   */
  constructor(index, ctx) {
    this.index = index;
    this.ctx = ctx;
    this.turn = null;
    this.json = null;
    this.prose = "";
    this.code = null; // what the editor shows from Python (streamed or turn.code)
    this.editor = null;
    this.dirty = false; // the user typed since Python's text was last applied
    this.editTimer = null;
    this.localBusy = null; // timer while a click waits for Python's answer
    this.localMessage = null;

    this.label = h("span", { class: "pyvision-turn-label", text: `Turn ${index + 1}` });
    this.exec = h("span", { class: "pyvision-exec" });
    this.badge = h("span", { class: "pyvision-badge", text: "edited", hidden: true });
    this.summary = h("span", { class: "pyvision-summary" });
    this.title = h("div", { class: "pyvision-card-title", role: "button", tabindex: "0" },
      h("span", { class: "pyvision-chevron", "aria-hidden": "true" }),
      this.label, this.exec, this.badge, this.summary);
    const toggle = () => ctx.onToggle(this.index);
    this.title.addEventListener("click", toggle);
    this.title.addEventListener("keydown", (event) => {
      if (event.key === "Enter" || event.key === " ") {
        event.preventDefault();
        toggle();
      }
    });
    this.staleNote = h("div", { class: "pyvision-stale-note", hidden: true });
    this.proseBox = h("div", { class: "pyvision-prose" });
    this.cursor = h("span", { class: "pyvision-cursor", "aria-hidden": "true" });
    this.editorBox = h("div", { class: "pyvision-editor", hidden: true });
    this.draftNote = h("div", { class: "pyvision-draft-note", text: "edited, not run", hidden: true });
    this.running = h("div", { class: "pyvision-running", hidden: true });
    this.runButton = h("button", { class: "pyvision-run", type: "button", text: "Run",
      title: "Run this code in the session's kernel (Shift-Enter in the editor)" });
    this.forkButton = h("button", { class: "pyvision-fork", type: "button", text: "Fork",
      title: "Let the model continue from this turn, with this code" });
    this.copyButton = h("button", { class: "pyvision-copy", type: "button", text: "Copy to cell",
      title: "Insert this code as a new notebook cell below" });
    this.message = h("span", { class: "pyvision-message", "aria-live": "polite" });
    this.buttons = h("div", { class: "pyvision-buttons", hidden: true },
      this.runButton, this.forkButton, this.copyButton, this.message);
    this.runButton.addEventListener("click", () => this.act("run"));
    this.forkButton.addEventListener("click", () => this.act("fork"));
    this.copyButton.addEventListener("click", () => this.act("copy"));
    this.outputs = h("div", { class: "pyvision-outputs", hidden: true });
    this.originalToggle = h("button", { class: "pyvision-original-toggle", type: "button",
                                        text: "show original outputs" });
    this.originalBlock = h("div", { class: "pyvision-original-block", hidden: true });
    this.original = h("div", { class: "pyvision-original", hidden: true },
                      this.originalToggle, this.originalBlock);
    this.originalToggle.addEventListener("click", () => {
      const open = !ctx.ui.originals.get(this.index);
      ctx.ui.originals.set(this.index, open);
      this.showOriginal(open);
    });
    this.note = h("div", { class: "pyvision-note", hidden: true });
    this.forkSlot = h("div", { class: "pyvision-fork-slot" });
    this.el = h("div", { class: "pyvision-card", "data-turn": String(index) },
      this.title, this.staleNote, this.proseBox, this.editorBox, this.draftNote, this.running,
      this.buttons, this.outputs, this.original, this.note, this.forkSlot);
  }

  // -- Python's turn dict ------------------------------------------------------

  update(turn) {
    const json = JSON.stringify(turn);
    if (json === this.json) return;
    const old = this.turn;
    this.turn = turn;
    this.json = json;
    if (this.localBusy) {
      clearTimeout(this.localBusy);
      this.localBusy = null;
    }
    const cls = this.el.classList;
    cls.toggle("pyvision-inherited", Boolean(turn.inherited));
    cls.toggle("pyvision-edited", Boolean(turn.edited));
    cls.toggle("pyvision-stale", Boolean(turn.stale));
    cls.toggle("pyvision-streaming", Boolean(turn.streaming));

    this.prose = turn.prose || "";
    this.renderProse();
    this.setCode(turn);

    if (!old || old.message !== turn.message || old.message_error !== turn.message_error) {
      this.localMessage = null;
      this.showMessage(turn.message || "", Boolean(turn.message_error));
    }
    if (!old || !same(old.outputs, turn.outputs)) renderOutputs(this.outputs, turn.outputs, this.ctx.media);
    setText(this.note, turn.note || "");
    show(this.note, Boolean(turn.note));
    setText(this.staleNote, turn.stale ? `Based on the original outputs of turn ${turn.stale}.` : "");
    show(this.staleNote, Boolean(turn.stale));
    if (!old || !same(old.original, turn.original)) this.renderOriginal(turn.original);
    this.renderTitle();
    this.refreshButtons();
  }

  renderTitle() {
    const turn = this.turn || {};
    let exec = "";
    if (turn.streaming) exec = "writing…";
    else if (turn.exec_status) {
      exec = EXEC_WORDS[turn.exec_status] || `tool ${turn.exec_status}`;
      if (["ok", "error", "timeout"].includes(turn.exec_status) && turn.seconds != null) {
        exec += ` in ${Number(turn.seconds).toFixed(2)} s`;
      }
    }
    setText(this.exec, exec);
    show(this.exec, Boolean(exec));
    this.exec.className = `pyvision-exec pyvision-exec-${turn.streaming ? "streaming" : turn.exec_status || "none"}`;
    show(this.badge, Boolean(turn.edited));
    setText(this.summary, summaryOf(this.prose, this.code, this.turn?.answer));
    const tip = [];
    if (turn.model_seconds) tip.push(`model ${Number(turn.model_seconds).toFixed(1)} s`);
    if (turn.tokens) tip.push(`${turn.tokens} tokens`);
    if (tip.length) this.title.title = tip.join(" · ");
  }

  renderProse() {
    renderMarkdown(this.proseBox, this.prose);
    if (this.turn?.streaming) {
      const last = this.proseBox.lastElementChild;
      (last && last.tagName === "P" ? last : this.proseBox).append(this.cursor);
    }
    show(this.proseBox, Boolean(this.prose) || Boolean(this.turn?.streaming));
  }

  /** The text the editor should show when the user has not typed. */
  setCode(turn) {
    const code = turn.code ?? null;
    this.code = code;
    const want = turn.draft ?? code;
    if (want === null && !this.editor) {
      show(this.editorBox, false);
      this.updateDraftNote();
      return;
    }
    this.ensureEditor(want ?? "");
    if (!this.dirty) this.editor.setDoc(want ?? "");
    else if (this.editor.getDoc() === want) this.dirty = false;
    this.editor.setReadOnly(Boolean(turn.streaming));
    show(this.editorBox, want !== null || this.dirty);
    this.updateDraftNote();
  }

  ensureEditor(doc) {
    if (this.editor) return;
    this.editor = createEditor(this.editorBox, {
      doc,
      readOnly: Boolean(this.turn?.streaming),
      onRun: (code) => this.act("run", code),
      onUserChange: (code) => this.userEdited(code),
    });
  }

  // -- streaming -----------------------------------------------------------------

  /** A `delta` message: append (or with reset, replace) prose and code in place. */
  delta({ prose, code, reset }) {
    if (!this.turn) this.turn = { index: this.index, streaming: true, outputs: [] };
    if (reset) this.prose = prose || "";
    else if (prose) this.prose += prose;
    if (prose || reset) this.renderProse();
    if (reset) {
      this.code = code ?? null;
      if (this.editor) this.editor.setDoc(code || "");
      else if (code) this.ensureEditor(code);
    } else if (code) {
      this.code = (this.code || "") + code;
      if (this.editor) this.editor.append(code);
      else this.ensureEditor(this.code);
    }
    if (this.editor) {
      this.dirty = false;
      show(this.editorBox, true);
    }
    setText(this.summary, summaryOf(this.prose, this.code, this.turn?.answer));
  }

  // -- the user --------------------------------------------------------------------

  userEdited(code) {
    this.dirty = true;
    this.updateDraftNote();
    clearTimeout(this.editTimer);
    this.editTimer = setTimeout(() => {
      this.editTimer = null;
      this.ctx.send({ action: "edit", turn: this.index, code });
    }, 400);
  }

  updateDraftNote() {
    const shown = this.editor ? this.editor.getDoc() : null;
    const draft = shown !== null && !this.turn?.streaming && shown !== (this.code ?? "");
    show(this.draftNote, draft);
    this.el.classList.toggle("pyvision-has-draft", draft);
  }

  act(action, code) {
    if (!this.ctx.canAct() || this.isBusy()) return;
    const text = code ?? (this.editor ? this.editor.getDoc() : this.code ?? "");
    if (action === "run" || action === "fork") {
      clearTimeout(this.editTimer);
      this.editTimer = null;
    }
    if (action === "copy") this.ctx.requestCopy(this.index);
    this.ctx.send({ action, turn: this.index, code: text });
    // Disabled until Python's next word on this turn (or 10 s, should none come).
    this.localBusy = setTimeout(() => {
      this.localBusy = null;
      this.refreshButtons();
    }, 10000);
    this.refreshButtons();
  }

  isBusy() {
    return Boolean(this.turn?.busy || this.localBusy || this.turn?.streaming);
  }

  refreshButtons() {
    const turn = this.turn || {};
    const hasCode = (this.code ?? null) !== null || this.dirty;
    show(this.buttons, hasCode || Boolean(turn.message) || Boolean(this.localMessage));
    const disabled = !this.ctx.canAct() || this.isBusy();
    for (const button of [this.runButton, this.forkButton, this.copyButton]) {
      button.disabled = disabled;
      show(button, hasCode);
    }
  }

  showMessage(text, error) {
    setText(this.message, text);
    this.message.classList.toggle("pyvision-message-error", Boolean(error));
    this.refreshButtons();
  }

  /** An outcome known only in the browser (a Copy's result). */
  setLocalMessage(text, error) {
    this.localMessage = text;
    if (this.localBusy) {
      clearTimeout(this.localBusy);
      this.localBusy = null;
    }
    this.showMessage(text, error);
  }

  // -- session state -----------------------------------------------------------------

  /** The "running tool… 2.1 s" line; `seconds` null hides it. */
  setRunning(text) {
    setText(this.running, text || "");
    show(this.running, Boolean(text));
  }

  setOpen(open) {
    this.el.classList.toggle("pyvision-collapsed", !open);
    this.title.setAttribute("aria-expanded", String(open));
  }

  renderOriginal(original) {
    show(this.original, Boolean(original));
    if (!original) {
      this.originalBlock.replaceChildren();
      return;
    }
    const outputs = h("div", { class: "pyvision-outputs" });
    renderOutputs(outputs, original.outputs, this.ctx.media);
    const status = original.exec_status ? (EXEC_WORDS[original.exec_status] || original.exec_status) : "";
    const code = h("pre", { class: "pyvision-original-code" });
    highlightInto(code, original.code || "");
    this.originalBlock.replaceChildren(
      h("div", { class: "pyvision-original-label",
                 text: `The model's code${status ? ` (${status})` : ""}:` }),
      code, outputs);
    this.showOriginal(Boolean(this.ctx.ui.originals.get(this.index)));
  }

  showOriginal(open) {
    show(this.originalBlock, open);
    setText(this.originalToggle, open ? "hide original outputs" : "show original outputs");
    this.originalToggle.setAttribute("aria-expanded", String(open));
  }

  destroy() {
    clearTimeout(this.editTimer);
    clearTimeout(this.localBusy);
    this.editor?.destroy();
    this.editor = null;
    this.el.remove();
  }
}

