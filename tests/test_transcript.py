"""Transcript records: JSON round trip and bad files."""

import json

import pytest

from pyvision_magic import ConfigError, ImageInput, Output, Transcript, Turn, Usage


def sample() -> Transcript:
    return Transcript(
        question="How many squares?",
        model="test-model",
        images=[ImageInput("a.png", b"\x89PNG fake", "image/png", 12, 8)],
        turns=[
            Turn(
                index=0,
                text="<code>...",
                code="print(2)",
                outputs=[
                    Output(kind="text", text="2\n", stream="stdout"),
                    Output(kind="image", mime="image/png", data="aGk=", width=3, height=4,
                           variable="image_clue_1"),
                    Output(kind="error", ename="ValueError", evalue="bad", text="Traceback...\nValueError: bad"),
                ],
                exec_status="error",
                usage=Usage(10, 5, 15),
                model_seconds=0.5,
                exec_seconds=0.25,
            ),
            Turn(index=1, text="<answer>2</answer>", answer="2", usage=Usage(20, 3, 23)),
        ],
        status="answered",
        answer="2",
        usage=Usage(30, 8, 38),
    )


def test_round_trip_through_a_file(tmp_path):
    t = sample()
    path = t.save(tmp_path / "t.json")
    loaded = Transcript.load(path)
    assert loaded == t
    data = json.loads(path.read_text())
    assert data["version"] == 1
    assert data["turns"][0]["outputs"][1] == {
        "kind": "image", "mime": "image/png", "data": "aGk=", "width": 3, "height": 4,
        "variable": "image_clue_1",
    }
    assert data["turns"][1]["code"] is None
    assert not list(tmp_path.glob("*.tmp")), "the atomic write left its temp file"


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        Transcript.load(tmp_path / "nope.json")


@pytest.mark.parametrize(
    "content,match",
    [
        ("{not json", "not a valid pyvision transcript"),
        ('{"a": 1}', "no 'question' or 'turns'"),
        ('{"version": 99, "question": "q", "turns": []}', "version 99"),
        ('{"version": 1, "question": "q", "turns": [{"index": 0, "text": "t", '
         '"outputs": [{"kind": "video"}]}]}', "unknown output kind"),
    ],
)
def test_bad_files_are_config_errors(tmp_path, content, match):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match=match):
        Transcript.load(path)


def test_save_to_a_missing_directory_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="Cannot write"):
        sample().save(tmp_path / "no" / "such" / "dir" / "t.json")


def test_usage_keeps_cached_and_reasoning_tokens(tmp_path):
    t = sample()
    t.turns[0].usage = Usage(10, 5, 15, cached_tokens=8, reasoning_tokens=2)
    t.usage = t.turns[0].usage + t.turns[1].usage
    assert t.usage == Usage(30, 8, 38, cached_tokens=8, reasoning_tokens=2)
    data = json.loads(t.save(tmp_path / "t.json").read_text())
    assert data["usage"] == {"prompt_tokens": 30, "completion_tokens": 8, "total_tokens": 38,
                             "cached_tokens": 8, "reasoning_tokens": 2}
    assert data["turns"][0]["usage"]["cached_tokens"] == 8
    assert Transcript.load(tmp_path / "t.json") == t


def test_a_transcript_saved_before_cached_tokens_loads(tmp_path):
    data = sample().to_dict()
    for usage in [data["usage"]] + [turn["usage"] for turn in data["turns"]]:
        del usage["cached_tokens"], usage["reasoning_tokens"]
    data["turns"][1]["usage"]["cached_tokens"] = None  # a null, as some writers leave
    path = tmp_path / "old.json"
    path.write_text(json.dumps(data))
    loaded = Transcript.load(path)
    assert loaded.usage == Usage(30, 8, 38)
    assert loaded.usage.cached_tokens == 0 and loaded.turns[1].usage.reasoning_tokens == 0


def test_raw_answer_round_trips_and_old_files_load_without_it(tmp_path):
    t = sample()
    t.turns[1].text, t.turns[1].raw_answer = "<answer>\\boxed{'2'}</answer>", "\\boxed{'2'}"
    path = t.save(tmp_path / "t.json")
    data = json.loads(path.read_text())
    assert data["turns"][1]["raw_answer"] == "\\boxed{'2'}"
    assert "raw_answer" not in data["turns"][0], "a turn without an answer writes no key"
    assert Transcript.load(path) == t
    del data["turns"][1]["raw_answer"]  # a transcript saved before the field existed
    path.write_text(json.dumps(data))
    old = Transcript.load(path)
    assert old.turns[1].raw_answer is None and old.turns[1].answer == "2"
