import json

import pytest

from medvid.t2v.prompts import PromptFileError, load_prompts, parse_prompts


def write(tmp_path, obj, name="prompts.json"):
    p = tmp_path / name
    p.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return p


def test_strings_and_objects_get_names_and_seeds(tmp_path):
    specs = load_prompts(write(tmp_path, [
        "Echocardiogram, apical four-chamber view",
        {"prompt": "laparoscopic cholecystectomy", "seed": 7, "negative_prompt": "blurry", "name": "chole-1"},
    ]), base_seed=100)
    assert [s.name for s in specs] == ["0000-echocardiogram-apical-four-chamber-view", "chole-1"]
    assert [s.seed for s in specs] == [100, 7]
    assert specs[0].negative_prompt is None and specs[1].negative_prompt == "blurry"


@pytest.mark.parametrize("content, message", [
    ({"prompt": "a"}, "expected a JSON list"),
    ([], "empty"),
    (["ok", {"text": "no prompt key"}], "entry 1 has unknown key"),
    (["ok", {"seed": 3}], "entry 1 has no \"prompt\" key"),
    (["ok", "  "], "entry 1: the prompt is empty"),
    ([42], "entry 0 is a int"),
    ([{"prompt": ["a", "b"]}], "entry 0: \"prompt\" must be a string"),
    ([{"prompt": "a", "seed": "7"}], "entry 0: \"seed\" must be a non-negative integer"),
    ([{"prompt": "a", "seed": -1}], "entry 0: \"seed\""),
    ([{"prompt": "a", "negative_prompt": 3}], "entry 0: \"negative_prompt\" must be a string"),
    ([{"prompt": "a", "name": "../escape"}], "entry 0: \"name\""),
    ([{"prompt": "a", "name": "x"}, {"prompt": "b", "name": "x"}], "entry 1: \"name\" 'x' is already used by entry 0"),
])
def test_bad_prompt_files_name_the_entry(tmp_path, content, message):
    p = write(tmp_path, content)
    with pytest.raises(PromptFileError, match=message.replace("(", r"\(")) as e:
        load_prompts(p)
    assert str(p) in str(e.value)


def test_unreadable_files(tmp_path):
    with pytest.raises(PromptFileError, match="not valid JSON"):
        load_prompts(write(tmp_path, '["a", '))
    with pytest.raises(PromptFileError, match="does not exist"):
        load_prompts(tmp_path / "missing.json")
    assert isinstance(parse_prompts(["a"]), list)
