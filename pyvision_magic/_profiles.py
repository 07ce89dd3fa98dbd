r"""Prompt profiles: which conversation layout the model is shown.

A profile is a set of pure message builders (:class:`PromptProfile`), so that
the session builds every request the same way from its records and the prefix
of consecutive requests stays byte-stable.

- ``default``: our own layout (:mod:`._prompt`): instructions in a system
  message, each image after a ``image_clue_N (name, WxH pixels):`` label, tool
  results inside ``<interpreter>`` with images listed by name.
- ``pyvision-format``: the layout the PyVision reference and the models trained
  on it (PyVision-RL's Qwen2.5-VL checkpoints) use, in our own words: no system
  message; one user turn holding the images wrapped as
  ``<image_clue_i>image</image_clue_i>``, the instructions, the image sizes and
  the question; tool results as ``<interpreter>Text Result: ... Image Result:
  <image_clue_k>image</image_clue_k></interpreter>``; the answer as ``\boxed{}``
  inside ``<answer>``.

A user template (``--system-prompt FILE``) replaces the instructions; its
``{{placeholders}}`` are listed in :data:`PLACEHOLDERS`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import _prompt
from ._errors import ConfigError
from ._records import ImageInput, Output

__all__ = ["PLACEHOLDERS", "PROFILES", "PromptFacts", "PromptProfile", "load_template",
           "make_profile"]

ImageURL = Callable[[ImageInput], str]
Part = dict[str, Any]


@dataclass(frozen=True)
class PromptFacts:
    """What the instructions state about the kernel, known once it has started."""

    libraries: Sequence[str]
    python: str
    timeout: float
    network: bool = True
    #: Sentences the session adds to the instructions (e.g. how it sends images the
    #: model has already seen); empty for none.
    notes: str = ""


#: Placeholders a user template may use, and what each becomes.
PLACEHOLDERS = {
    "question": "the user's question (pyvision-format only; default: after the template)",
    "images": "the input images, each wrapped as the profile wraps them (pyvision-format "
              "only; default: before the template)",
    "image_sizes": "one line per input image: 'image_clue_0: 640x480 pixels, file image_clue_0.png'",
    "image_count": "how many input images there are",
    "libraries": "the libraries the kernel can import, comma separated",
    "python": "the kernel's Python version, e.g. 3.11.9",
    "timeout": "seconds one code block may run, e.g. 60",
    "network": "'There is no network access. ' in the sandbox, else empty",
    "notes": "sentences pyvision adds about how the session works (e.g. how images the "
             "model has seen are sent again), with a leading space; often empty",
}
_USER_TURN_ONLY = ("question", "images")
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][\w-]*)\s*\}\}")


@dataclass(frozen=True)
class PromptProfile:
    """A conversation layout as pure message builders.

    ``opening(question, images, image_url, facts, last_turn)`` gives the first
    messages; ``feedback(outputs, note, image_url, last_turn)`` the message that
    carries a tool's results; ``nudge(last_turn)`` the one after a reply with
    neither code nor answer; ``tool_calls(names, last_turn)`` the one after a
    reply that only called functions. ``stop`` is sent as the stop sequences.
    """

    name: str
    opening: Callable[[str, Sequence[ImageInput], ImageURL, PromptFacts, bool], list[Part]]
    feedback: Callable[[Sequence[Output], str, ImageURL, bool], Part]
    nudge: Callable[[bool], Part]
    tool_calls: Callable[[Sequence[str], bool], Part]
    stop: tuple[str, ...] = field(default=tuple(_prompt.STOP_SEQUENCES))


# -- default: our own layout -------------------------------------------------------


def _default_opening(template: str | None) -> Callable[..., list[Part]]:
    def opening(question: str, images: Sequence[ImageInput], image_url: ImageURL,
                facts: PromptFacts, last_turn: bool) -> list[Part]:
        if template is None:
            system = _prompt.system_prompt(libraries=facts.libraries, python=facts.python,
                                           timeout=facts.timeout, network=facts.network)
            system += _values(question, images, facts)["notes"]
        else:
            # load_template refused {{images}} here: every piece is text.
            system = "".join(p or "" for p in _render(template, _values(question, images, facts)))
        return [{"role": "system", "content": system},
                _prompt.question_message(question, images, image_url, last_turn=last_turn)]
    return opening


def _default_profile(template: str | None) -> PromptProfile:
    return PromptProfile(
        name="default",
        opening=_default_opening(template),
        feedback=lambda outputs, note, url, last: _prompt.feedback_message(
            outputs, note, url, last_turn=last),
        nudge=lambda last: _prompt.nudge_message(last_turn=last),
        tool_calls=lambda names, last: _prompt.tool_calls_message(names, last_turn=last),
    )


# -- pyvision-format: the reference layout, in our own words -----------------------

PYVISION_TEMPLATE = """\
{{images}}

Solve the problem below one step at a time. You may write Python code, which runs in a \
Jupyter kernel, whenever looking closer would help: zoom in, crop, rotate, raise the \
contrast, count, measure or compute statistics on the pixels. Plan before each code \
block and think about what it returned before the next one.

The images above are already loaded, in order, as RGB PIL images: the i-th one is the \
variable `image_clue_i` (its file is in the working folder too, under the name given \
with its size). Variables \
persist from one code block to the next. Show an image with plt.show() (you will see \
it), and print() every value you want to read.

Write each code block like this, then stop and wait for its result:
<code>
```python
# your code
```
</code>
The result comes back as <interpreter>Text Result: what was printed  Image Result: \
the images shown</interpreter>; each image shown becomes the next `image_clue_k`.

The kernel runs Python {{python}} with these libraries: {{libraries}}. {{network}}\
Each code block may run for at most {{timeout}} seconds.{{notes}}

Image sizes:
{{image_sizes}}

Question:
{{question}}

When you are sure, end your reply with the final answer in this form:
<answer>
\\boxed{your answer}
</answer>"""

_PYVISION_LAST_TURN = ("This is your last turn: write no more code, and give your final "
                       "answer now as <answer>\n\\boxed{your answer}\n</answer>.")
_PYVISION_NUDGE = ("Your reply had neither a code block nor a final answer. Either write "
                   "Python code as <code>\n```python\n...\n```\n</code>, or give the final "
                   "answer as <answer>\n\\boxed{your answer}\n</answer>.")
_PYVISION_TOOL_CALLS = ("Your reply called functions ({names}), but none are available. "
                        "Write the code you want to run as <code>\n```python\n...\n```\n"
                        "</code> instead, or give the final answer as <answer>\n"
                        "\\boxed{{your answer}}\n</answer>.")


def _wrapped_image(name: str, url: str) -> list[Part]:
    return [{"type": "text", "text": f"<{name}>"},
            {"type": "image_url", "image_url": {"url": url}},
            {"type": "text", "text": f"</{name}>"}]


def _pyvision_opening(template: str) -> Callable[..., list[Part]]:
    def opening(question: str, images: Sequence[ImageInput], image_url: ImageURL,
                facts: PromptFacts, last_turn: bool) -> list[Part]:
        pieces = _render(template, _values(question, images, facts))
        if "images" not in _placeholders(template):
            pieces[:0] = [None, "\n\n"]
        if "question" not in _placeholders(template):
            pieces.append("\n\n" + question.strip())
        if last_turn:
            pieces.append("\n\n" + _PYVISION_LAST_TURN)
        image_parts = [p for i, image in enumerate(images)
                       for p in _wrapped_image(f"image_clue_{i}", image_url(image))]
        return [{"role": "user", "content": _parts(pieces, image_parts)}]
    return opening


def _result_text(outputs: Sequence[Output], note: str) -> str:
    lines = []
    for out in outputs:
        if out.kind == "text":
            lines.append(out.text.rstrip("\n"))
        elif out.kind == "error":
            lines.append(f"Error: {out.ename}: {out.evalue}" if out.ename else out.text.rstrip("\n"))
    if note:
        lines.append(note)
    return "\n".join(line for line in lines if line) or "None"


def _pyvision_feedback(outputs: Sequence[Output], note: str, image_url: ImageURL,
                       last_turn: bool) -> Part:
    head = f"<interpreter>\nText Result:\n{_result_text(outputs, note)}\nImage Result:\n"
    parts: list[Part] = []
    text = head
    for out in outputs:
        if out.kind == "image" and out.data:
            image = _prompt.output_as_image(out)
            wrapped = _wrapped_image(out.variable or "image", image_url(image))
            wrapped[0]["text"] = text + wrapped[0]["text"]
            parts += wrapped[:2]
            text = wrapped[2]["text"]
    if not parts:
        text += "None"
    text += "</interpreter>"
    if last_turn:
        text += "\n" + _PYVISION_LAST_TURN
    parts.append({"type": "text", "text": text})
    return {"role": "user", "content": parts}


def _pyvision_profile(template: str | None) -> PromptProfile:
    return PromptProfile(
        name="pyvision-format",
        opening=_pyvision_opening(template or PYVISION_TEMPLATE),
        feedback=_pyvision_feedback,
        nudge=lambda last: {"role": "user", "content": _PYVISION_NUDGE + (
            "\n" + _PYVISION_LAST_TURN if last else "")},
        tool_calls=lambda names, last: {"role": "user", "content": _PYVISION_TOOL_CALLS.format(
            names=", ".join(names) or "unnamed") + ("\n" + _PYVISION_LAST_TURN if last else "")},
    )


#: Profile name -> ``factory(template or None)``.
PROFILES: dict[str, Callable[[str | None], PromptProfile]] = {
    "default": _default_profile,
    "pyvision-format": _pyvision_profile,
}


# -- templates ---------------------------------------------------------------------


def _placeholders(template: str) -> list[str]:
    return _PLACEHOLDER.findall(template)


def _values(question: str, images: Sequence[ImageInput], facts: PromptFacts) -> dict[str, str]:
    libs = ", ".join(facts.libraries) if facts.libraries else "numpy, PIL, matplotlib"
    return {
        "question": question.strip(),
        "image_sizes": "\n".join(f"image_clue_{i}: {im.width}x{im.height} pixels, "
                                 f"file {im.file_name(i)}"
                                 for i, im in enumerate(images)) or "(no images)",
        "image_count": str(len(images)),
        "libraries": libs,
        "python": facts.python,
        "timeout": f"{facts.timeout:g}",
        "network": "" if facts.network else "There is no network access. ",
        "notes": " " + facts.notes.strip() if facts.notes.strip() else "",
    }


def _render(template: str, values: dict[str, str]) -> list[str | None]:
    """The template's text with values filled in; None marks where the images go."""
    pieces: list[str | None] = []
    at = 0
    for m in _PLACEHOLDER.finditer(template):
        pieces.append(template[at:m.start()])
        pieces.append(None if m.group(1) == "images" else values[m.group(1)])
        at = m.end()
    pieces.append(template[at:])
    return pieces


def _parts(pieces: Sequence[str | None], image_parts: list[Part]) -> list[Part]:
    """Content parts: the text pieces joined, the image parts where None stands."""
    parts: list[Part] = []
    text = ""
    for piece in pieces:
        if piece is not None:
            text += piece
            continue
        for part in image_parts:
            if part["type"] == "text":
                text += part["text"]
            else:
                if text:
                    parts.append({"type": "text", "text": text})
                parts.append(part)
                text = ""
    if text:
        parts.append({"type": "text", "text": text})
    return parts


def load_template(path: str | Path, profile: str) -> str:
    """The text of the user template at ``path``, checked for ``profile``.

    Raises
    ------
    ConfigError
        If the file cannot be read as UTF-8 text, is empty, or uses a placeholder
        that does not exist or that ``profile`` cannot place.
    """
    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"The prompt template {path} was not found; pass the path of a "
                          "text file to --system-prompt.") from None
    except UnicodeDecodeError:
        raise ConfigError(f"The prompt template {path} is not UTF-8 text; save it as UTF-8.") from None
    except OSError as exc:
        raise ConfigError(f"The prompt template {path} cannot be read ({exc.strerror or exc}); "
                          "pass a readable text file to --system-prompt.") from None
    if not text.strip():
        raise ConfigError(f"The prompt template {path} is empty; write the instructions "
                          "the model should get.")
    known = ", ".join("{{" + name + "}}" for name in PLACEHOLDERS)
    for name in _placeholders(text):
        if name not in PLACEHOLDERS:
            raise ConfigError(f"The prompt template {path} uses {{{{{name}}}}}, which is not a "
                              f"placeholder; use {known}.")
        if name in _USER_TURN_ONLY and profile == "default":
            raise ConfigError(f"The prompt template {path} uses {{{{{name}}}}}, which only the "
                              "pyvision-format profile can place (the default profile's "
                              "template is the system message); add --prompt-profile "
                              "pyvision-format or remove it.")
    return text


def make_profile(name: str, template_path: str | Path | None = None) -> PromptProfile:
    """The profile called ``name``, with the user template at ``template_path`` if given.

    Raises
    ------
    ConfigError
        For an unknown profile name or a bad template (see :func:`load_template`).
    """
    if name not in PROFILES:
        raise ConfigError(f"Unknown prompt profile {name!r}; use one of: {', '.join(PROFILES)}.")
    template = load_template(template_path, name) if template_path else None
    return PROFILES[name](template)
