"""What the desk suggests while the call-taker types: keyword highlights and a classification.

The highlights are the major-incident keywords of ``dialplan/keywords.toml``
found by the same compiled pattern that raises the supervisors' alert when the
note is saved (``KeywordSet.spans``): what the screen marks is what alerts.

The classification is a suggestion, never a decision: the call-taker confirms
it with one key or picks another. It comes from the keyword lists (a violent
or explosive major incident is priority 1) and from cue words of the everyday
types (fraud's "转账", traffic's "车祸" …); the first cue in the text wins over
later ones, a major-incident list over any cue. No cue: no suggestion.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from core.triage.classify import IncidentType, Priority
from core.triage.keywords import KeywordSet

# Keyword list of keywords.toml → the classification it suggests.
LIST_SUGGESTS: dict[str, tuple[IncidentType, Priority]] = {
    "violent": (IncidentType.PERSON, Priority.CRITICAL),
    "explosive_fire": (IncidentType.PERSON, Priority.CRITICAL),
    "mass_casualty": (IncidentType.PERSON, Priority.CRITICAL),
}

# Cue words of the everyday types, Chinese and English, with the priority a
# typical call of that kind gets.
CUES: tuple[tuple[IncidentType, Priority, tuple[str, ...]], ...] = (
    (IncidentType.FRAUD, Priority.HIGH,
     ("诈骗", "被骗", "转账", "验证码", "安全账户", "刷单", "冒充", "fraud", "scam", "scammed", "transfer money")),
    (IncidentType.FIRE_MEDICAL, Priority.CRITICAL,
     ("着火", "火灾", "失火", "冒烟", "昏迷", "晕倒", "心脏病", "fire", "smoke", "unconscious", "heart attack")),
    (IncidentType.TRAFFIC, Priority.HIGH,
     ("车祸", "撞车", "追尾", "撞人", "交通事故", "肇事", "crash", "collision", "hit and run", "car accident")),
    (IncidentType.PROPERTY, Priority.NORMAL,
     ("被盗", "偷", "小偷", "扒窃", "盗窃", "丢了", "stolen", "theft", "burglary", "pickpocket")),
    (IncidentType.DISPUTE, Priority.NORMAL,
     ("吵架", "纠纷", "打架", "争吵", "闹事", "quarrel", "dispute", "fight", "argument")),
    (IncidentType.PUBLIC_SERVICE, Priority.LOW,
     ("停水", "停电", "噪音", "路灯", "咨询", "投诉", "noise", "power cut", "street light", "enquiry")),
)

_LATIN = re.compile(r"[A-Za-z ]+")


def _cue_pattern(word: str) -> str:
    if _LATIN.fullmatch(word):
        return rf"(?<![A-Za-z0-9]){re.escape(word)}(?![A-Za-z0-9])"
    return re.escape(word)


_CUE = [(kind, priority, re.compile("|".join(_cue_pattern(w) for w in words), re.IGNORECASE))
        for kind, priority, words in CUES]


@dataclass(frozen=True, slots=True)
class Suggestion:
    type: IncidentType
    priority: Priority
    because: str  # the word that suggested it

    def to_json(self) -> dict[str, Any]:
        return {"type": str(self.type), "type_label": self.type.label, "priority": int(self.priority),
                "priority_label": self.priority.label, "because": self.because}


def highlights(keywords: KeywordSet, text: str) -> list[dict[str, Any]]:
    """The major-incident keywords in ``text`` with their character offsets (JavaScript's, for the screen)."""
    out = []
    for start, end, word, listed in keywords.spans(text):
        out.append({"start": _utf16(text, start), "end": _utf16(text, end), "word": word, "list": listed})
    return out


def suggest(keywords: KeywordSet, text: str) -> Suggestion | None:
    """The classification the text suggests, or None."""
    for _, _, word, listed in keywords.spans(text):
        if listed in LIST_SUGGESTS:
            kind, priority = LIST_SUGGESTS[listed]
            return Suggestion(kind, priority, word)
    best: tuple[int, Suggestion] | None = None
    for kind, priority, pattern in _CUE:
        hit = pattern.search(text or "")
        if hit is not None and (best is None or hit.start() < best[0]):
            best = (hit.start(), Suggestion(kind, priority, hit.group(0)))
    return None if best is None else best[1]


def _utf16(text: str, index: int) -> int:
    # Browsers count UTF-16 code units: a character outside the BMP is two.
    return index + sum(1 for ch in text[:index] if ord(ch) > 0xFFFF)
