// One CodeMirror 6 editor per tool: Python highlighting with theme colours
// (classes styled in style.css from JupyterLab's variables), Tab indents,
// Mod-Enter / Shift-Enter run, and no key event ever reaches the notebook.
import { Annotation, Compartment, EditorState, Transaction } from "@codemirror/state";
import { EditorView, keymap, drawSelection, highlightSpecialChars } from "@codemirror/view";
import {
  defaultKeymap, history, historyKeymap, indentLess, indentMore, insertNewlineAndIndent,
} from "@codemirror/commands";
import {
  HighlightStyle, bracketMatching, indentOnInput, indentUnit, syntaxHighlighting,
} from "@codemirror/language";
import { pythonLanguage } from "@codemirror/lang-python";
import { highlightCode, tags as t } from "@lezer/highlight";

/** Marks the transactions that carry text from Python (not the user's typing). */
const fromPython = Annotation.define();

const highlight = HighlightStyle.define([
  { tag: [t.keyword, t.controlKeyword, t.definitionKeyword, t.moduleKeyword,
          t.operatorKeyword, t.self, t.bool, t.null], class: "pv-tok-keyword" },
  { tag: [t.comment, t.lineComment, t.blockComment], class: "pv-tok-comment" },
  { tag: [t.string, t.docString, t.special(t.string), t.character], class: "pv-tok-string" },
  { tag: [t.number, t.integer, t.float], class: "pv-tok-number" },
  { tag: [t.operator, t.arithmeticOperator, t.logicOperator, t.bitwiseOperator,
          t.compareOperator, t.updateOperator, t.definitionOperator], class: "pv-tok-operator" },
  { tag: [t.definition(t.variableName), t.function(t.definition(t.variableName)),
          t.definition(t.className), t.className], class: "pv-tok-def" },
  { tag: [t.propertyName, t.attributeName], class: "pv-tok-property" },
  { tag: [t.punctuation, t.separator, t.paren, t.squareBracket, t.brace, t.bracket],
    class: "pv-tok-punctuation" },
  { tag: [t.escape, t.regexp, t.atom, t.constant(t.variableName)], class: "pv-tok-atom" },
  { tag: [t.meta, t.annotation, t.modifier], class: "pv-tok-meta" },
  { tag: t.invalid, class: "pv-tok-error" },
]);

/**
 * Python code as highlighted text in ``element`` (a <pre>), with the editor's
 * token classes and no editor: for code that is only read (the original code).
 */
export function highlightInto(element, code) {
  const nodes = [];
  highlightCode(code, pythonLanguage.parser.parse(code), highlight, (text, classes) => {
    if (!classes) {
      nodes.push(document.createTextNode(text));
      return;
    }
    const span = document.createElement("span");
    span.className = classes;
    span.textContent = text;
    nodes.push(span);
  }, () => nodes.push(document.createTextNode("\n")));
  element.replaceChildren(...nodes);
}

const theme = EditorView.theme({
  "&": { backgroundColor: "var(--pv-editor-bg)", color: "var(--pv-fg)",
         fontSize: "var(--jp-code-font-size, 13px)" },
  ".cm-scroller": { fontFamily: "var(--jp-code-font-family, monospace)", lineHeight: "1.45",
                    maxHeight: "40em", overflow: "auto" },
  ".cm-content": { caretColor: "var(--pv-cursor)", padding: "4px 0" },
  ".cm-line": { padding: "0 8px" },
  ".cm-cursor, .cm-dropCursor": { borderLeftColor: "var(--pv-cursor)" },
  "&.cm-focused": { outline: "1px solid var(--pv-focus)" },
  "&.cm-focused > .cm-scroller > .cm-selectionLayer .cm-selectionBackground, .cm-selectionBackground, .cm-content ::selection":
    { backgroundColor: "var(--pv-selection)" },
  "&.cm-focused .cm-matchingBracket": { backgroundColor: "var(--pv-selection)", color: "inherit" },
  "&.cm-focused .cm-nonmatchingBracket": { color: "var(--pv-error-fg)" },
});

const KEY_EVENTS = ["keydown", "keypress", "keyup"];

/**
 * A tool editor.
 *
 * @param {HTMLElement} parent  where the editor goes (gets the shortcut-suppressing attributes)
 * @param {object} options  {doc, readOnly, onRun(code), onUserChange(code)}
 */
export function createEditor(parent, { doc = "", readOnly = false, onRun, onUserChange }) {
  const editable = new Compartment();
  const run = (view) => {
    onRun?.(view.state.doc.toString());
    return true; // consumed, even when running is not allowed now
  };
  const view = new EditorView({
    parent,
    state: EditorState.create({
      doc,
      extensions: [
        history(),
        drawSelection(),
        highlightSpecialChars(),
        indentUnit.of("    "),
        EditorState.tabSize.of(4),
        indentOnInput(),
        bracketMatching(),
        pythonLanguage,
        syntaxHighlighting(highlight),
        theme,
        editable.of(editableExtensions(readOnly)),
        keymap.of([
          { key: "Mod-Enter", run, preventDefault: true },
          { key: "Shift-Enter", run, preventDefault: true },
          { key: "Enter", run: insertNewlineAndIndent },
          // indentWithTab, spelled out: Tab indents instead of moving focus.
          { key: "Tab", run: indentMore, shift: indentLess, preventDefault: true },
          ...historyKeymap,
          ...defaultKeymap,
        ]),
        EditorView.updateListener.of((update) => {
          if (!update.docChanged) return;
          const byUser = update.transactions.some(
            (tr) => tr.docChanged && !tr.annotation(fromPython));
          if (byUser) onUserChange?.(update.state.doc.toString());
        }),
        EditorView.contentAttributes.of({ "aria-label": "Tool code (Python)" }),
      ],
    }),
  });
  // The notebook must never see a key typed in the editor ("dd", "a", "b", Escape, ...).
  const stop = (event) => event.stopPropagation();
  for (const type of KEY_EVENTS) view.dom.addEventListener(type, stop);
  // JupyterLab 4 / Lumino skip their shortcuts for events from inside these.
  parent.classList.add("lm-suppress-shortcuts");
  parent.setAttribute("data-lm-suppress-shortcuts", "true");

  return {
    view,
    getDoc: () => view.state.doc.toString(),
    /** Replace the text with Python's, changing only the part that differs. */
    setDoc(text) {
      const old = view.state.doc.toString();
      if (old === text) return;
      let start = 0;
      const max = Math.min(old.length, text.length);
      while (start < max && old.charCodeAt(start) === text.charCodeAt(start)) start++;
      let endOld = old.length;
      let endNew = text.length;
      while (endOld > start && endNew > start
             && old.charCodeAt(endOld - 1) === text.charCodeAt(endNew - 1)) {
        endOld--;
        endNew--;
      }
      view.dispatch({
        changes: { from: start, to: endOld, insert: text.slice(start, endNew) },
        annotations: [fromPython.of(true), Transaction.addToHistory.of(false)],
      });
    },
    /** Append streamed text at the end. */
    append(text) {
      if (!text) return;
      const end = view.state.doc.length;
      view.dispatch({
        changes: { from: end, insert: text },
        annotations: [fromPython.of(true), Transaction.addToHistory.of(false)],
      });
    },
    setReadOnly(value) {
      if (value === readOnly) return;
      readOnly = value;
      view.dispatch({ effects: editable.reconfigure(editableExtensions(value)) });
    },
    destroy() {
      for (const type of KEY_EVENTS) view.dom.removeEventListener(type, stop);
      view.destroy();
    },
  };
}

function editableExtensions(readOnly) {
  return [EditorState.readOnly.of(readOnly), EditorView.editable.of(!readOnly)];
}
