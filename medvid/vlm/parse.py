"""Reading scores out of a model's free text.

Models are asked for JSON, but answer in many ways: JSON (possibly inside a code fence, with
trailing prose, or with flat ``"visual_quality": 4`` values), or lines such as
``**Visual quality**: 4/5 - sharp``. The parser tries JSON first, then per-criterion patterns;
a criterion without a number inside the scale is recorded as ``None`` with reason ``"unparsed"``.
"""

from __future__ import annotations

import json
import re
from typing import Any

CRITERIA = ("text_alignment", "medical_plausibility", "visual_quality")
ALIASES = {
    "text_alignment": ("text alignment", "text-alignment", "text_alignment", "alignment", "prompt alignment",
                       "text consistency"),
    "medical_plausibility": ("medical plausibility", "medical_plausibility", "medical-plausibility", "plausibility",
                             "medical accuracy", "medical realism"),
    "visual_quality": ("visual quality", "visual_quality", "visual-quality", "image quality", "video quality", "quality"),
}
UNPARSED = "unparsed"
_NUM = r"(-?\d+(?:\.\d+)?)"


def _canon(key: str) -> str | None:
    k = re.sub(r"[\s_\-]+", " ", key.strip().lower())
    for c, names in ALIASES.items():
        if k in {re.sub(r"[\s_\-]+", " ", n) for n in names}:
            return c
    return None


def _json_objects(text: str):
    """Every balanced ``{...}`` block that parses as a JSON object, outermost first."""
    starts = [i for i, ch in enumerate(text) if ch == "{"]
    for s in starts:
        depth = 0
        for e in range(s, len(text)):
            if text[e] == "{":
                depth += 1
            elif text[e] == "}":
                depth -= 1
                if depth == 0:
                    try:
                        obj = json.loads(text[s : e + 1])
                    except json.JSONDecodeError:
                        break
                    if isinstance(obj, dict):
                        yield obj
                    break


def _number(v: Any) -> float | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):
        m = re.match(r"\s*" + _NUM, v)
        return float(m.group(1)) if m else None
    return None


def parse_judgement(text: str, criteria=CRITERIA, scale=(1, 5)) -> tuple[dict, dict, str]:
    """``text`` -> ``(scores, reasons, status)``; status is ``ok``, ``partial`` or ``unparsed``."""
    lo, hi = scale
    scores: dict[str, float | None] = {c: None for c in criteria}
    reasons: dict[str, str] = {c: UNPARSED for c in criteria}

    def accept(c: str, value: float | None, reason: str) -> None:
        if c in scores and scores[c] is None and value is not None and lo <= value <= hi:
            scores[c] = value
            reasons[c] = reason.strip() or ""

    for obj in _json_objects(text or ""):
        flat = {(_canon(k) or k): v for k, v in obj.items()}
        for c in criteria:
            v = flat.get(c)
            if isinstance(v, dict):
                accept(c, _number(v.get("score", v.get("rating"))), str(v.get("reason", v.get("explanation", ""))))
            elif v is not None:
                accept(c, _number(v), str(flat.get(f"{c}_reason", obj.get("reason", ""))))
    for c in criteria:
        if scores[c] is not None:
            continue
        names = "|".join(re.escape(n) for n in sorted(ALIASES[c], key=len, reverse=True))
        m = re.search(rf"(?:{names})\W{{0,6}}?(?:score)?\W{{0,4}}{_NUM}\s*(?:/\s*\d+)?\s*(?:[-:–—,.)]\s*)?([^\n]*)",
                      text or "", flags=re.IGNORECASE)
        if m:
            accept(c, float(m.group(1)), m.group(2).strip(" *\"'"))
    parsed = sum(v is not None for v in scores.values())
    status = "ok" if parsed == len(criteria) else ("partial" if parsed else UNPARSED)
    return scores, reasons, status
