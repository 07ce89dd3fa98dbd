"""benchmarks/real_replies.py on a small trajectory of our own, in the reference's file
layout, run in a real child kernel; and its one-line skip when the data is absent."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import real_replies  # noqa: E402


def _reply(code: str) -> dict:
    return {"from": "gpt", "value": f"Let me look.\n<code>\n```python\n{code}\n```\n</code>\n"}


def _result(text: str) -> dict:
    return {"from": "observation",
            "value": f"<interpreter>\nText Result:\n{text}\nImage Result:\n</interpreter>\n"}


@pytest.fixture
def trajectory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "site" / "Made-up" / "task1"
    (folder / "images").mkdir(parents=True)
    Image.new("RGBA", (64, 48), (0, 0, 255, 0)).save(folder / "images" / "image_0.png")
    turns = [
        {"from": "human", "value": "<image_clue_0><image></image_clue_0>\nHow wide is it?"},
        _reply("w, h = image_clue_0.size\nprint(w, h, np.array(image_clue_0).shape[2])"),
        _result("64 48 3"),
        _reply("print(undefined_name)"),  # failed in the reference too
        {"from": "observation", "value": "<interpreter>Error: name 'undefined_name' is not defined"
                                         "</interpreter>\n"},
        _reply("    print(round(np.array(image_clue_0).mean(), 1))"),  # indented: failed there
        {"from": "observation", "value": "<interpreter>Error: unexpected indent (<string>, line 1)"
                                         "</interpreter>\n"},
        _reply("print(image_clue_0.getpixel((0, 0)))"),
        _result("(255, 255, 255)"),
        {"from": "gpt", "value": "<answer>\\boxed{64}</answer>"},
    ]
    (folder / "conversations.json").write_text(json.dumps(turns))
    monkeypatch.setenv("PYVISION_REALWORLD", str(tmp_path / "site"))
    return folder


def _rows(rows: list[dict]) -> dict[str, dict]:
    return {row["figure"]: row for row in rows}


def test_blocks_are_classified_against_the_recorded_results(trajectory):
    rows = _rows(real_replies.run(quick=True))
    parsed = next(row for name, row in rows.items() if name.startswith("real replies parsed"))
    assert (parsed["ours"], parsed["baseline"]) == (5, 5)
    ran = rows["blocks that ran in the reference and run here"]
    assert (ran["ours"], ran["baseline"]) == (2, 2)  # RGB input: 3 channels, white background
    assert rows["blocks: ran in both, same text"]["ours"] == 2
    assert rows["blocks: failed in both: reference's own error"]["ours"] == 1
    assert rows["blocks: failed in the reference, runs here"]["ours"] == 1
    assert not any(name.endswith(": ours") for name in rows)


def test_skips_in_one_line_without_the_data(tmp_path, monkeypatch):
    monkeypatch.setenv("PYVISION_REALWORLD", str(tmp_path))
    (row,) = real_replies.run(quick=True)
    assert row == {"figure": "real_replies: skipped, no ../shared/realworld (or PYVISION_REALWORLD)"}
