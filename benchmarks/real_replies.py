"""Real GPT-4.1 trajectories in the PyVision reference format, replayed through our
parser and child kernel, against the reference runtime's recorded results.

Run standalone: ``python benchmarks/real_replies.py [--quick] [--verbose]``.

The data (63 sessions published on the PyVision project page) is read from
``../shared/realworld`` relative to the project root, or from the folder in
``PYVISION_REALWORLD``; without it the benchmark skips with one line. Nothing of
it is copied into the repository.

For every trajectory, every ``gpt`` reply is parsed with
:func:`pyvision_magic._parsing.parse_reply`, and its code blocks run in order in
one fresh :class:`ChildKernel` with the trajectory's input image bound as
``image_clue_0`` (``images/image_0.*``; where it is missing, a real photo,
``skimage.data.astronaut``, resized to the size the question states, else to
1024x768). Each block is compared with the next recorded result
(``<interpreter>Text Result: ...`` or ``<interpreter>Error: ...``) and
classified by cause:

- ``ran in both``: the printed text is the same (but for the middle the
  reference cut from long texts), differs in numbers only (library versions,
  float rounding), or differs because the code draws random numbers
  (``random``), because the input is a stand-in (``missing input``), or
  otherwise (``other``: listed with ``--verbose``).
- ``failed in the reference``: it failed there too (``reference's own error``),
  or runs here only (``fixed here``: e.g. our parser's dedent).
- ``failed here only``: caused by code written for an older library version
  (``library version``, from :data:`VERSION_CHANGES`), by a stand-in input
  (``missing input``), by randomness, by a name an earlier failed block did not
  define (``follows an earlier failure``), or by us (``ours``). The goal is 0 of ours.

Rows: the parse rate (a reply's code, or its answer, is what the reference
took), the run rate (blocks that ran in the reference and run here), and one row
per cause. ``--quick`` takes the first 5 trajectories.
"""

from __future__ import annotations

import asyncio
import glob
import io
import json
import os
import re
import sys
from collections import Counter
from typing import Any

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

from pyvision_magic._parsing import parse_reply  # noqa: E402
from pyvision_magic._records import ImageInput  # noqa: E402

QUICK_TRAJECTORIES = 5
BLOCK_TIMEOUT = 60.0
_CODE = re.compile(r"<code>\s*```(?:python|py)?\s*\n(.*?)```\s*(?:</code>|$)", re.S)
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.S)
_TEXT_RESULT = re.compile(r"Text Result:\n?(.*?)(?:\nImage Result:|</interpreter>)", re.S)
_ERROR = re.compile(r"<interpreter>\s*Error:(.*?)</interpreter>", re.S)
_RANDOM = re.compile(r"random|KMeans|kmeans|shuffle|sample\(|RandomForest|MiniBatch|tsne|umap", re.I)
_STATED = re.compile(r"Image Width:\s*(\d+)\s*;\s*Image Height:\s*(\d+)", re.I)
_NUMBER = re.compile(r"-?(?:\d+(?:\.\d+)?(?:e-?\d+)?|nan|inf)")

#: Errors of code written for older library versions than the ones installed here:
#: (what the error says, which change causes it).
VERSION_CHANGES = [
    ("'numpy.bool' object cannot be interpreted as an integer",
     "numpy >= 2.3 refuses a bool as an index, so scipy.ndimage.find_objects refuses a "
     "boolean mask (scipy issue 23455)"),
    ("module 'numpy' has no attribute", "numpy 1.24+ removed the np.int/np.float aliases"),
    ("unexpected keyword argument 'indices'", "skimage.feature.peak_local_max lost indices= (0.20)"),
]


def data_folder() -> str | None:
    folder = os.environ.get("PYVISION_REALWORLD") or os.path.join(ROOT, "..", "shared", "realworld")
    folder = os.path.join(folder, "pyvision_site") if os.path.isdir(os.path.join(folder, "pyvision_site")) else folder
    return folder if glob.glob(os.path.join(folder, "*", "*", "conversations.json")) else None


def _stated_size(turns: list[dict]) -> tuple[int, int]:
    """The input's size as the question states it ("Image Width: W; Image Height: H"),
    else 1024x768."""
    match = _STATED.search(turns[0]["value"]) if turns else None
    return (int(match.group(1)), int(match.group(2))) if match else (1024, 768)


def _input_image(folder: str, turns: list[dict]) -> tuple[ImageInput, bool]:
    """The trajectory's input image, and whether it is a stand-in."""
    from pyvision_magic._images import load_image

    found = sorted(glob.glob(os.path.join(folder, "images", "image_0.*")) +
                   glob.glob(os.path.join(folder, "image_0.*")))
    if found:
        return load_image(found[0], name=os.path.basename(found[0])), False
    from PIL import Image
    from skimage import data

    photo = Image.fromarray(data.astronaut()).resize(_stated_size(turns), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    photo.save(buffer, "PNG")
    return load_image(buffer.getvalue(), name="stand-in.png"), True


def _reference(observation: str | None) -> tuple[str, str | None]:
    """(status, printed text) of a recorded result: ``ok``, ``error`` or ``not run``."""
    if observation is None:
        return "not run", None
    error = _ERROR.search(observation)
    if error:
        return "error", error.group(1).strip()
    text = _TEXT_RESULT.search(observation)
    return "ok", (text.group(1).strip() if text else "")


def _printed(result: Any) -> str:
    text = "".join(o.text for o in result.outputs if o.kind == "text" and o.stream == "stdout")
    lines = [line for line in text.strip().splitlines() if not line.startswith("[saved file ")]
    return "\n".join(lines).strip() or "None"


def _same_text(ours: str, theirs: str) -> bool:
    """Equal, or equal but for the middle the reference cut out of a long text ("...")."""
    if ours == theirs:
        return True
    head, cut, tail = theirs.partition("...")
    return bool(cut) and len(head) > 20 and ours.startswith(head) and ours.endswith(tail)


def _numbers_only_differ(ours: str, theirs: str) -> bool:
    return _NUMBER.sub("#", ours) == _NUMBER.sub("#", theirs)


async def _trajectory(path: str, kernel_factory: Any) -> dict[str, Any]:
    with open(path, encoding="utf-8") as file:
        turns = json.load(file)
    folder = os.path.dirname(path)
    image, stand_in = _input_image(folder, turns)
    report: dict[str, Any] = {"path": os.path.relpath(path, os.path.dirname(os.path.dirname(folder))),
                              "replies": 0, "parsed": 0, "blocks": []}
    kernel = kernel_factory()
    try:
        await kernel.bind_images([image])
        for index, turn in enumerate(turns):
            if turn["from"] != "gpt":
                continue
            report["replies"] += 1
            reply = turn["value"]
            parsed = parse_reply(reply)
            theirs = _CODE.search(reply)
            answer = _ANSWER.search(reply)
            if theirs and parsed.code is not None:
                report["parsed"] += parsed.code.strip() == theirs.group(1).strip() or (
                    _dedented(theirs.group(1)) == parsed.code.strip())
            elif answer and not theirs:
                report["parsed"] += parsed.answer is not None
            else:
                report["parsed"] += parsed.code is None and parsed.answer is None and not theirs
            if parsed.code is None:
                continue
            following = turns[index + 1]["value"] if index + 1 < len(turns) else None
            status, text = _reference(following if following and "<interpreter>" in following else None)
            result = await kernel.execute(parsed.code, timeout=BLOCK_TIMEOUT)
            block = _classify(parsed.code, status, text, result, stand_in)
            earlier = any(b["cause"].startswith("failed here only") for b in report["blocks"])
            if earlier and block["cause"] == "failed here only: ours" and "NameError" in block["detail"]:
                # A name an earlier block failed to define here.
                block["cause"] = "failed here only: follows an earlier failure"
            report["blocks"].append(block)
    finally:
        await kernel.shutdown()
    return report


def _dedented(code: str) -> str:
    import textwrap

    return textwrap.dedent(code).strip()


def _classify(code: str, status: str, text: str | None, result: Any, stand_in: bool) -> dict[str, Any]:
    ours_ok = result.status == "ok"
    error = next((o for o in result.outputs if o.kind == "error"), None)
    detail = f"{error.ename}: {error.evalue}" if error else result.note
    block = {"reference": status, "here": result.status, "detail": (detail or "")[:300],
             "code": code}
    randomish = bool(_RANDOM.search(code))
    if status == "not run":
        block["cause"] = "not run in the reference"
    elif status == "ok" and ours_ok:
        printed = _printed(result)
        if _same_text(printed, text or "None"):
            block["cause"] = "ran in both, same text"
        elif _numbers_only_differ(printed, text or "None"):
            block["cause"] = "ran in both, numbers differ: library versions or rounding"
            block["ours_text"], block["their_text"] = printed[:400], (text or "")[:400]
        elif randomish:
            block["cause"] = "ran in both, text differs: random"
        elif stand_in:
            block["cause"] = "ran in both, text differs: missing input"
        else:
            block["cause"] = "ran in both, text differs: other"
            block["ours_text"], block["their_text"] = printed[:400], (text or "")[:400]
    elif status == "error" and not ours_ok:
        block["cause"] = "failed in both: reference's own error"
        block["their_error"] = (text or "")[:200]
    elif status == "error":
        block["cause"] = "failed in the reference, runs here"
        block["their_error"] = (text or "")[:200]
    elif any(message in block["detail"] for message, _ in VERSION_CHANGES):
        block["cause"] = "failed here only: library version"
        block["detail"] += " -- " + next(why for message, why in VERSION_CHANGES if message in block["detail"])
    elif stand_in:
        block["cause"] = "failed here only: missing input"
    elif randomish:
        block["cause"] = "failed here only: random"
    else:
        block["cause"] = "failed here only: ours"
    return block


async def _replay(paths: list[str]) -> list[dict[str, Any]]:
    from pyvision_magic.kernel._child import ChildKernel

    reports = []
    for number, path in enumerate(paths, 1):
        reports.append(await _trajectory(path, lambda: ChildKernel(timeout=BLOCK_TIMEOUT)))
        print(f"[real_replies {number}/{len(paths)}: {reports[-1]['path']}]", file=sys.stderr)
    return reports


def run(quick: bool, verbose: bool = False) -> list[dict[str, Any]]:
    """Measure and return the rows (see the module docstring)."""
    folder = data_folder()
    if folder is None:
        # A note, not a "skipped" row: those name the package that would bring the figure.
        return [{"figure": "real_replies: skipped, no ../shared/realworld (or PYVISION_REALWORLD)"}]
    paths = sorted(glob.glob(os.path.join(folder, "*", "*", "conversations.json")))
    if quick:
        paths = paths[:QUICK_TRAJECTORIES]
    reports = asyncio.run(_replay(paths))
    replies = sum(r["replies"] for r in reports)
    parsed = sum(r["parsed"] for r in reports)
    blocks = [b for r in reports for b in r["blocks"]]
    causes = Counter(b["cause"] for b in blocks)
    ran_there = [b for b in blocks if b["reference"] == "ok"]
    ran_both = [b for b in ran_there if b["here"] == "ok"]
    if verbose:
        for report in reports:
            for block in report["blocks"]:
                if block["cause"].endswith(("ours", "other", "runs here")) or (
                        block["cause"].startswith("failed here")):
                    print(f"--- {report['path']}: {block['cause']}: {block['detail']}",
                          file=sys.stderr)
                    for key in ("their_error", "ours_text", "their_text"):
                        if key in block:
                            print(f"  {key}: {block[key]!r}", file=sys.stderr)
    rows = [
        {"figure": f"real replies parsed as the reference took them ({len(reports)} trajectories)",
         "ours": parsed, "baseline": replies, "ratio": parsed / max(replies, 1), "goal": "1.0"},
        {"figure": "blocks that ran in the reference and run here", "ours": len(ran_both),
         "baseline": len(ran_there), "ratio": len(ran_both) / max(len(ran_there), 1),
         "goal": "all but missing input/random"},
    ]
    for cause, count in sorted(causes.items()):
        goal = "0" if cause.endswith("ours") else "-"
        rows.append({"figure": f"blocks: {cause}", "ours": count, "baseline": len(blocks),
                     "ratio": count / max(len(blocks), 1), "goal": goal})
    return rows


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _table import format_rows

    arguments = sys.argv[1:]
    print(format_rows(run("--quick" in arguments, verbose="--verbose" in arguments)))
