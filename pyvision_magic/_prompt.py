"""The conversation we send to the model, built from the session's records.

Pure functions: the messages are derived from the question, the images and the
turns so far, so a session edited by the user (fork) rebuilds the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ._records import ImageInput, Output

__all__ = [
    "SYSTEM_PROMPT",
    "NUDGE",
    "TOOL_CALLS_NUDGE",
    "LAST_TURN",
    "STOP_SEQUENCES",
    "system_prompt",
    "question_message",
    "feedback_message",
]

STOP_SEQUENCES = ["</code>"]

SYSTEM_PROMPT = """\
You answer questions about images by thinking step by step and, whenever looking \
closer or measuring would help, by writing Python tools that run in a Jupyter kernel.

How it works:
- The images of the question are already loaded in the kernel as RGB PIL images named \
image_clue_0, image_clue_1, ... in the order they were given; each one's file is in \
the kernel's working folder under the name given with it.
- To run code, write it in one block and stop right after it:
<code>
```python
# your code
```
</code>
- You get back what the code printed, the value of its last line, any traceback, \
and every image it showed, inside <interpreter>...</interpreter>. Each image you \
show is also stored in the kernel as the next image_clue_N, so later code can use it.
- Variables persist between your code blocks. Write one block per reply, then wait \
for its result: never write the <interpreter> part yourself.
- Show images with plt.show() or display(img). Crop, zoom, rotate, enhance contrast, \
draw marks, segment, count, or measure pixels: invent the tool the question needs. \
Print numbers you will rely on.
- When you are sure, give the final answer inside <answer>...</answer>, short and \
exact (a letter for multiple choice, a number for counting), with no code in the same reply.

The kernel runs Python {python} with these libraries importable: {libraries}. \
{network}Each code block may run for at most {timeout} seconds."""

NUDGE = (
    "Your reply had neither code nor a final answer. Either write Python code in "
    "<code>```python ... ```</code> to examine the images, or give the final "
    "answer inside <answer>...</answer>."
)

TOOL_CALLS_NUDGE = (
    "Your reply called functions ({names}), but no functions are available here. "
    "Write the Python code you want to run in <code>```python ... ```</code> instead: it "
    "runs in the Jupyter kernel and you will see what it prints and shows. Or give the "
    "final answer inside <answer>...</answer>."
)

LAST_TURN = (
    "This is your last turn: do not write more code. Give your best final answer "
    "now inside <answer>...</answer>."
)

ImageURL = Callable[[ImageInput], str]


def system_prompt(*, libraries: Sequence[str], python: str, timeout: float,
                  network: bool = True) -> str:
    """The system prompt, stating what the child kernel can import.

    ``network`` False (the sandbox) tells the model there is no network access;
    otherwise nothing is said about it.
    """
    libs = ", ".join(libraries) if libraries else "numpy, PIL, matplotlib"
    return SYSTEM_PROMPT.format(libraries=libs, python=python, timeout=f"{timeout:g}",
                                network="" if network else "There is no network access. ")


def _image_part(url: str) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url}}


def question_message(
    question: str, images: Sequence[ImageInput], image_url: ImageURL, *, last_turn: bool = False
) -> dict[str, Any]:
    """The first user message: the question, then each image with its name and size."""
    parts: list[dict[str, Any]] = []
    for i, image in enumerate(images):
        parts.append(
            {
                "type": "text",
                "text": f"image_clue_{i} ({image.name}, {image.width}x{image.height} pixels, "
                f"file {image.file_name(i)}):",
            }
        )
        parts.append(_image_part(image_url(image)))
    text = question.strip()
    if last_turn:
        text += "\n\n" + LAST_TURN
    parts.append({"type": "text", "text": text})
    return {"role": "user", "content": parts}


def describe_output_text(outputs: Sequence[Output]) -> str:
    """The text the model reads for a tool's outputs (images are listed by name)."""
    lines: list[str] = []
    for out in outputs:
        if out.kind == "text":
            lines.append(out.text.rstrip("\n"))
        elif out.kind == "error":
            lines.append(out.text.rstrip("\n") or f"{out.ename}: {out.evalue}")
        elif out.kind == "image":
            name = out.variable or "image"
            lines.append(f"[{name}: {out.width}x{out.height} image, shown below]")
    return "\n".join(line for line in lines if line)


def feedback_message(
    outputs: Sequence[Output],
    note: str,
    image_url: ImageURL,
    *,
    last_turn: bool = False,
) -> dict[str, Any]:
    """The user message that carries a tool's outputs back inside ``<interpreter>``."""
    body = describe_output_text(outputs)
    if note:
        body = f"{body}\n{note}" if body else note
    if not body:
        body = "(no output: the code printed and showed nothing)"
    parts: list[dict[str, Any]] = [
        {"type": "text", "text": f"<interpreter>\n{body}\n</interpreter>"}
    ]
    for out in outputs:
        if out.kind == "image" and out.data:
            image = output_as_image(out)
            parts.append({"type": "text", "text": f"{image.name}:"})
            parts.append(_image_part(image_url(image)))
    if last_turn:
        parts.append({"type": "text", "text": LAST_TURN})
    return {"role": "user", "content": parts}


def nudge_message(*, last_turn: bool = False) -> dict[str, Any]:
    """The user message sent after a reply with neither code nor answer."""
    return {"role": "user", "content": NUDGE + ("\n" + LAST_TURN if last_turn else "")}


def tool_calls_message(names: Sequence[str], *, last_turn: bool = False) -> dict[str, Any]:
    """The user message sent after a reply that only called functions."""
    content = TOOL_CALLS_NUDGE.format(names=", ".join(names) or "unnamed")
    return {"role": "user", "content": content + ("\n" + LAST_TURN if last_turn else "")}


def output_as_image(out: Output) -> ImageInput:
    """An image output as an :class:`ImageInput`, for encoding to the model."""
    import base64

    return ImageInput(
        name=out.variable or "image",
        data=base64.b64decode(out.data or ""),
        mime=out.mime or "image/png",
        width=out.width or 0,
        height=out.height or 0,
    )
