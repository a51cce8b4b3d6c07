import pytest

from medvid.vlm.parse import parse_judgement
from medvid.vlm.prompts import default_template, load_template

THREE = ("text_alignment", "medical_plausibility", "visual_quality")


@pytest.mark.parametrize("text, scores", [
    ('{"text_alignment": {"score": 4, "reason": "shows a heart"}, "medical_plausibility": {"score": 3, '
     '"reason": "ok"}, "visual_quality": {"score": 5, "reason": "sharp"}}', (4, 3, 5)),
    ('Sure!\n```json\n{"text_alignment": 4, "medical_plausibility": 2, "visual_quality": "3/5"}\n```\nThanks', (4, 2, 3)),
    ("**Text alignment**: 4/5 - matches\n**Medical plausibility**: 2 - odd valve\n**Visual quality**: 5. crisp", (4, 2, 5)),
    ("Alignment 1, plausibility: 2, image quality = 3", (1, 2, 3)),
])
def test_parses_common_reply_shapes(text, scores):
    got, reasons, status = parse_judgement(text, THREE, (1, 5))
    assert tuple(got[c] for c in THREE) == scores and status == "ok"
    assert all(r != "unparsed" for r in reasons.values())


def test_reasons_are_kept():
    _, reasons, _ = parse_judgement("**Text alignment**: 4/5 - matches the prompt\nvisual quality: 2 - blurry", THREE)
    assert reasons["text_alignment"] == "matches the prompt" and reasons["visual_quality"] == "blurry"


@pytest.mark.parametrize("text", ["", "heart echo 5 the the valve", "{not json", "Text alignment: 9\nquality: 0",
                                  '{"text_alignment": true}', "assistant assistant"])
def test_gibberish_and_out_of_scale_are_unparsed(text):
    scores, reasons, status = parse_judgement(text, THREE, (1, 5))
    assert status == "unparsed" and all(v is None for v in scores.values())
    assert set(reasons.values()) == {"unparsed"}


def test_partial_and_other_scale():
    scores, reasons, status = parse_judgement("visual quality: 8", THREE, (1, 10))
    assert status == "partial" and scores["visual_quality"] == 8 and reasons["text_alignment"] == "unparsed"


def test_default_templates_load_and_format():
    cap = load_template(default_template("caption"), ("brief", "detailed"), {"context", "num_frames"})
    assert "{context}" in cap["brief"] and "8 images" in cap["detailed"].format(context="", num_frames=8)
    judge = load_template(default_template("judge"), ("with_prompt", "without_prompt"),
                          {"prompt", "num_frames", "scale_min", "scale_max"})
    text = judge["with_prompt"].format(prompt="an echo", num_frames=8, scale_min=1, scale_max=5)
    assert '"an echo"' in text and '{"text_alignment": {"score"' in text
    # the JSON example in the template is itself parseable by the parser
    assert parse_judgement(text[text.index("{"):], THREE)[2] == "ok"


def test_template_errors_name_the_problem(tmp_path):
    bad = tmp_path / "t.txt"
    bad.write_text("[brief]\nhello {context}\n")
    with pytest.raises(ValueError, match=r"missing section\(s\) \['detailed'\]"):
        load_template(bad, ("brief", "detailed"), {"context"})
    bad.write_text("[brief]\nhello {patient}\n[detailed]\nx\n")
    with pytest.raises(ValueError, match="unknown placeholder"):
        load_template(bad, ("brief", "detailed"), {"context"})
    with pytest.raises(ValueError, match="does not exist"):
        load_template(tmp_path / "nope.txt", ("brief",), set())
