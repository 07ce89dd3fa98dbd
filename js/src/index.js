// The %%pyvision session view: an anywidget front end. The contract with the
// Python side (traits, messages, class names) is docs/session_view.md.
import { Card } from "./card.js";
import { formatSeconds, h } from "./dom.js";
import { Header } from "./header.js";
import { insertCellBelow } from "./copy.js";
import { MediaCache } from "./media.js";

const ALIVE_TIMEOUT_MS = 3000;
const TICK_MS = 100;

// Per session (header.uid): which turns are open, and whether the view has
// collapsed them once the session ended. Kept across re-renders of the view.
const UI = new Map();
// Views of one session on the page, so only one of them answers insert_cell.
const VIEWS = new Map();

function uiFor(uid) {
  if (!UI.has(uid)) UI.set(uid, { open: new Map(), originals: new Map(), touched: new Set(),
                                  autoCollapsed: false });
  return UI.get(uid);
}

function isEditable(target) {
  return target instanceof Element && Boolean(target.closest(
    "input, textarea, select, [contenteditable=''], [contenteditable='true'], .cm-editor"));
}

function isOurButton(target) {
  return target instanceof Element && Boolean(target.closest("button, [role='button']"));
}

let anonymous = 0;

function render({ model, el, host }) {
  const header0 = model.get("header") || {};
  const uid = String(header0.uid || `view-${++anonymous}`);
  const ui = uiFor(uid);
  const media = new MediaCache();
  const cards = new Map();
  const forks = new Map(); // ref -> {div, controller}
  const timers = new Set();
  let state = model.get("state") || {};
  let stateAt = performance.now();
  let live = null; // null: not known yet; true: the kernel answered; false: saved view
  let ticker = null;
  let disposed = false;

  const send = (msg) => {
    try {
      model.send(msg);
    } catch (err) {
      console.warn("[pyvision] could not send", msg, err);
    }
  };

  const root = h("div", { class: "pyvision-view" });
  const header = new Header({ onStop: () => send({ action: "stop" }) });
  const turnsBox = h("div", { class: "pyvision-turns" });
  const liveStyle = h("style");
  root.append(header.el, turnsBox);
  el.append(root);

  const view = { root, requested: new Set() };
  if (!VIEWS.has(uid)) VIEWS.set(uid, new Set());
  VIEWS.get(uid).add(view);

  // Keys typed in the editor (or any editable element of the view) and Enter/Space
  // on our buttons must not reach the notebook's command-mode shortcuts.
  const keyGuard = (event) => {
    if (isEditable(event.target)
        || (isOurButton(event.target) && (event.key === "Enter" || event.key === " "))) {
      event.stopPropagation();
    }
  };
  for (const type of ["keydown", "keypress", "keyup"]) root.addEventListener(type, keyGuard);

  const running = () => (state.status || "running") === "running";
  const canAct = () => live === true && !running();

  const cardCtx = {
    send,
    media,
    ui,
    canAct,
    onToggle(index) {
      const card = cards.get(index);
      const open = card.el.classList.contains("pyvision-collapsed");
      ui.open.set(index, open);
      ui.touched.add(index);
      card.setOpen(open);
    },
    requestCopy(index) {
      view.requested.add(index);
    },
  };

  function isOpen(index, turn) {
    if (ui.open.has(index)) return ui.open.get(index);
    return !turn.inherited && !ui.autoCollapsed;
  }

  // -- turns -----------------------------------------------------------------------

  function renderTurns() {
    const turns = model.get("turns") || [];
    turns.forEach((turn, i) => {
      let card = cards.get(i);
      if (!card) {
        card = new Card(i, cardCtx);
        cards.set(i, card);
        card.setOpen(isOpen(i, turn));
      }
      card.update(turn);
      if (card.el.parentNode !== turnsBox || turnsBox.children[i] !== card.el) {
        turnsBox.insertBefore(card.el, turnsBox.children[i] || null);
      }
    });
    for (const [i, card] of cards) {
      if (i >= turns.length && !card.turn?.streaming) {
        card.destroy();
        cards.delete(i);
      }
    }
    applyState();
    syncForks();
  }

  function onDelta(msg) {
    const index = msg.turn;
    let card = cards.get(index);
    if (!card) {
      // The turn's first words came before the `turns` update that adds it.
      if (index !== cards.size) return;
      card = new Card(index, cardCtx);
      cards.set(index, card);
      card.setOpen(!ui.autoCollapsed);
      card.update({ index, prose: "", code: null, streaming: true, outputs: [] });
      turnsBox.append(card.el);
      card.json = null; // the next `turns` update always applies
    }
    card.delta(msg);
    if (typeof msg.tokens === "number" && msg.tokens > 0 && running()) {
      // The live estimate rides on the deltas; the next state update resets it.
      state = { ...state, live_tokens: msg.tokens };
      header.setState(state, live);
    }
  }

  // -- state -------------------------------------------------------------------------

  function applyState() {
    header.setState(state, live);
    if (!running() && !ui.autoCollapsed) {
      // The session ended: fold every turn the user has not opened or closed.
      ui.autoCollapsed = true;
      for (const [i, card] of cards) {
        if (!ui.touched.has(i)) {
          ui.open.set(i, false);
          card.setOpen(false);
        }
      }
    }
    for (const card of cards.values()) card.refreshButtons();
    tick();
    const needed = live !== false && (running() || (state.phase && state.phase !== "idle"));
    if (needed && !ticker) ticker = setInterval(tick, TICK_MS);
    if (!needed && ticker) {
      clearInterval(ticker);
      ticker = null;
    }
  }

  function tick() {
    const counting = live !== false && (running() || (state.phase && state.phase !== "idle"));
    const since = counting ? (performance.now() - stateAt) / 1000 : 0;
    header.tick((state.elapsed || 0) + since);
    const phaseSeconds = formatSeconds((state.phase_elapsed || 0) + since);
    for (const [i, card] of cards) {
      let line = "";
      if (state.phase_turn === i && live !== false) {
        if (state.phase === "tool") line = `running tool… ${phaseSeconds}`;
        else if (state.phase === "action") line = `working… ${phaseSeconds}`;
      }
      card.setRunning(line);
    }
  }

  // -- media, header -------------------------------------------------------------------

  function renderHeader() {
    const data = model.get("header") || {};
    root.classList.toggle("pyvision-fork-view", Boolean(data.fork_of));
    header.setHeader(data, media);
  }

  // -- forks ---------------------------------------------------------------------------

  function syncForks() {
    const list = model.get("forks") || [];
    const refs = new Set(list.map((f) => f.ref));
    for (const [ref, entry] of forks) {
      if (!refs.has(ref) || !entry.div.isConnected) {
        entry.controller.abort();
        entry.div.remove();
        forks.delete(ref);
      }
    }
    for (const fork of list) {
      if (forks.has(fork.ref)) continue;
      const card = cards.get(fork.turn);
      if (!card) continue; // drawn once the card exists
      const div = h("div", { class: "pyvision-fork-host" });
      const controller = new AbortController();
      forks.set(fork.ref, { div, controller });
      card.forkSlot.append(div);
      if (!host || typeof host.getWidget !== "function") {
        div.textContent = `Fork from turn ${fork.turn + 1}: shown in the notebook below`;
        continue;
      }
      host.getWidget(fork.ref)
        .then((child) => {
          if (!controller.signal.aborted) return child.render({ el: div, signal: controller.signal });
          return undefined;
        })
        .catch((err) => {
          if (controller.signal.aborted) return;
          console.warn("[pyvision] fork view", err);
          div.textContent = `Fork from turn ${fork.turn + 1}: shown in the notebook below`;
        });
    }
  }

  // -- messages ------------------------------------------------------------------------

  async function onInsertCell(msg) {
    const views = [...(VIEWS.get(uid) || [])].filter((v) => v.root.isConnected);
    const owner = views.find((v) => v.requested.has(msg.turn)) || views[0];
    if (owner !== view) return;
    view.requested.delete(msg.turn);
    const card = cards.get(msg.turn);
    let result;
    try {
      result = await insertCellBelow(root, String(msg.source ?? ""));
    } catch (err) {
      result = { ok: false, how: "none", message: `Copy failed: ${err}` };
    }
    if (disposed) return;
    card?.setLocalMessage(result.message, !result.ok);
    send({ action: "copied", turn: msg.turn, ok: result.ok, how: result.how });
  }

  function setLive(value) {
    live = value;
    root.classList.toggle("pyvision-live", value === true);
    root.classList.toggle("pyvision-saved", value === false);
    header.setSaved(value === false);
    if (value === true) {
      // Hide the static copy printed for viewers without widgets.
      liveStyle.textContent = `.pyvision-static-${uid.replace(/[^\w-]/g, "")} { display: none !important; }`;
      if (!liveStyle.isConnected) root.prepend(liveStyle);
    }
    applyState();
  }

  function onMessage(msg, buffers) {
    if (!msg || typeof msg !== "object") return;
    if (msg.type === "delta") onDelta(msg);
    else if (msg.type === "media") {
      if (media.add(msg.items, buffers)) media.refresh(root);
    }
    else if (msg.type === "insert_cell") onInsertCell(msg);
    else if (msg.type === "alive") {
      if (live !== true) setLive(true);
    }
  }

  const onState = () => {
    state = model.get("state") || {};
    stateAt = performance.now();
    applyState();
  };
  const handlers = {
    "change:header": renderHeader,
    "change:state": onState,
    "change:turns": renderTurns,
    "change:forks": syncForks,
    "msg:custom": onMessage,
  };
  for (const [name, fn] of Object.entries(handlers)) model.on(name, fn);

  renderHeader();
  renderTurns();
  send({ action: "hello" });
  const aliveTimer = setTimeout(() => {
    timers.delete(aliveTimer);
    if (live !== true) setLive(false);
  }, ALIVE_TIMEOUT_MS);
  timers.add(aliveTimer);

  return () => {
    disposed = true;
    for (const [name, fn] of Object.entries(handlers)) model.off(name, fn);
    for (const timer of timers) clearTimeout(timer);
    if (ticker) clearInterval(ticker);
    for (const entry of forks.values()) entry.controller.abort();
    forks.clear();
    for (const card of cards.values()) card.destroy();
    cards.clear();
    media.dispose();
    for (const type of ["keydown", "keypress", "keyup"]) root.removeEventListener(type, keyGuard);
    VIEWS.get(uid)?.delete(view);
    root.remove();
  };
}

export default { render };
