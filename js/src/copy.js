// Copy to cell: put `source` in a new code cell below the notebook cell that
// shows the view. JupyterLab 4 and Notebook 7 expose no API to page scripts, so
// this drives the notebook as a user would: select the cell (mousedown on its
// prompt), press "b" (insert below), then paste into the new cell's editor.
// Classic Notebook has Jupyter.notebook. Elsewhere the code goes to the
// clipboard, and failing that the user is told to copy it from the editor.

const WAIT_MS = 3000;

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Paste `text` into a CodeMirror 6 `.cm-content` (inserted as is, no auto-indent). */
function paste(content, text) {
  try {
    const data = new DataTransfer();
    data.setData("text/plain", text);
    const event = new ClipboardEvent("paste", { clipboardData: data, bubbles: true,
                                                 cancelable: true });
    // CodeMirror handles the paste and cancels the event.
    if (!content.dispatchEvent(event)) return true;
  } catch {
    // no DataTransfer / ClipboardEvent constructor: fall through
  }
  return false;
}

async function toClipboard(text) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    return false;
  }
}

async function clipboardFallback(source, why) {
  if (await toClipboard(source)) {
    return { ok: true, how: "clipboard", message: `${why} The code was copied to the clipboard instead.` };
  }
  return { ok: false, how: "none",
           message: `${why} The clipboard is not available either: copy the code from the editor above.` };
}

/**
 * Insert `source` as a new code cell below the cell containing `el`.
 * @returns {Promise<{ok: boolean, how: string, message: string}>}
 *   how: "cell" (inserted), "clipboard" or "none".
 */
export async function insertCellBelow(el, source) {
  const classic = window.Jupyter?.notebook;
  if (classic?.insert_cell_below) {
    try {
      const index = classic.find_cell_index?.(
        classic.get_cells().find((c) => c.element?.[0]?.contains(el)));
      const cell = index !== undefined && index >= 0
        ? classic.insert_cell_below("code", index) : classic.insert_cell_below("code");
      cell.set_text(source);
      return { ok: true, how: "cell", message: "Inserted as a new cell below." };
    } catch {
      // fall through to the JupyterLab way / clipboard
    }
  }
  const cell = el.closest(".jp-Cell");
  const notebook = cell?.closest(".jp-Notebook");
  if (!cell || !notebook) return clipboardFallback(source, "No notebook found to insert a cell in.");

  const before = cell.nextElementSibling;
  const prompt = cell.querySelector(".jp-InputPrompt") || cell;
  for (const type of ["mousedown", "mouseup"]) {
    prompt.dispatchEvent(new MouseEvent(type, { bubbles: true, cancelable: true, button: 0 }));
  }
  // JupyterLab matches key bindings on the focused element inside the notebook.
  let active = document.activeElement;
  if (!active || !notebook.contains(active)) {
    cell.focus();
    active = cell;
  }
  active.dispatchEvent(new KeyboardEvent("keydown", {
    key: "b", code: "KeyB", keyCode: 66, which: 66, bubbles: true, cancelable: true,
  }));

  const start = Date.now();
  let fresh = false;
  while (Date.now() - start < WAIT_MS) {
    const next = cell.nextElementSibling;
    // Only a cell that was not there before "b": never overwrite the user's next cell.
    fresh = Boolean(next && next !== before && next.classList.contains("jp-Cell"));
    const content = fresh && next.querySelector(".cm-content");
    if (content && paste(content, source)) {
      return { ok: true, how: "cell", message: "Inserted as a new cell below." };
    }
    await sleep(50);
  }
  return clipboardFallback(source, fresh
    ? "A new cell was inserted below, but its editor could not be written to."
    : "Could not insert a cell below this one.");
}
