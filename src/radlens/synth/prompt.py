"""Deterministic parser: clinical prompt -> structured findings (issue 7, part 1).

Rules (documented decisions):
- The prompt is split into groups at weak breaks (and, or, with, plus) and strong breaks (, ; . but however).
  Modifiers (laterality, zone, severity, size) in a group apply to the findings of that group. A group with
  modifiers but no finding joins the next group of the same clause ("left and right effusion"), else the previous
  one ("nodules in the left and right upper zones").
- left + right in one finding -> "bilateral" (not an error). Two zones in one finding -> one Finding per zone.
- Negation ("no", "without", "no evidence of", "negative for", ...) covers every finding after it until a strong
  break or "with"/"plus": "no effusion or pneumothorax" negates both; "effusion, no pneumothorax" only the second.
- Mass vs nodule: a sized mass/nodule/lesion is a Mass at >= 30 mm and a Nodule below; an unsized "lesion" is a
  Nodule.
- Cardiomegaly ignores laterality and zone words (the heart has none); they are consumed, not reported as unparsed.
- Severity is one of "mild" (trace/small/mild/minimal), "moderate", "severe" (large/massive/severe/extensive).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from radlens.synth.vocab import LESION, phrase_table, vocabulary_summary

MASS_MIN_MM = 30.0
_TABLE = phrase_table()
_MAX_PHRASE = max(len(k) for k in _TABLE)
_TOKEN = re.compile(r"(?P<size>\d+(?:\.\d+)?)\s*-?\s*(?P<unit>mm|cm)\b|(?P<word>[a-z]+|\d+(?:\.\d+)?)|(?P<punct>[,;.:&+])")


class PromptError(ValueError):
    """Nothing in the prompt was understood; the message lists the vocabulary and the text not understood."""


@dataclass(frozen=True)
class Finding:
    name: str
    laterality: str | None = None  # left | right | bilateral
    zone: str | None = None  # upper | mid | lower | apical | basal | perihilar
    severity: str | None = None  # mild | moderate | severe
    size_mm: float | None = None
    negated: bool = False
    text: str = field(default="", compare=False)  # source span


@dataclass(frozen=True)
class ParsedPrompt:
    findings: tuple[Finding, ...]  # positive findings, prompt order
    negated: tuple[Finding, ...]  # negated findings (constraints), prompt order
    unparsed_text: str  # words not understood, space-joined ("" when everything was understood)


@dataclass
class _Group:
    finds: list = field(default_factory=list)  # (name, negated)
    lats: list = field(default_factory=list)
    zones: list = field(default_factory=list)
    sev: str | None = None
    size: float | None = None
    start: int | None = None
    end: int = 0
    clause: int = 0

    def span(self, s: int, e: int) -> None:
        self.start = s if self.start is None else min(self.start, s)
        self.end = max(self.end, e)

    def absorb(self, o: "_Group") -> None:
        self.finds += o.finds
        self.lats += o.lats
        self.zones += o.zones
        self.sev = self.sev or o.sev
        self.size = self.size if self.size is not None else o.size
        if o.start is not None:
            self.span(o.start, o.end)


def _tokens(text: str) -> list[tuple[str, int, int, float | None]]:
    low = re.sub(r"(?<=[a-z])-(?=[a-z])", " ", text.lower())
    out = []
    for m in _TOKEN.finditer(low):
        if m.group("size"):
            v = float(m.group("size")) * (10.0 if m.group("unit") == "cm" else 1.0)
            out.append(("<size>", m.start(), m.end(), v))
        else:
            out.append((m.group(0), m.start(), m.end(), None))
    return out


def parse_prompt(prompt: str) -> ParsedPrompt:
    """Parse a clinical prompt; raises PromptError when no finding (positive or negated) is understood."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise PromptError("empty prompt; understood vocabulary:\n" + vocabulary_summary())
    toks = _tokens(prompt)
    groups: list[_Group] = [_Group()]
    unparsed: list[str] = []
    neg = False
    clause = 0
    i = 0
    while i < len(toks):
        word, s, e, size = toks[i]
        g = groups[-1]
        if word == "<size>":
            g.size = size
            g.span(s, e)
            i += 1
            continue
        for n in range(min(_MAX_PHRASE, len(toks) - i), 0, -1):
            key = tuple(t[0] for t in toks[i:i + n])
            if key in _TABLE:
                break
        else:
            unparsed.append(prompt[s:e])
            i += 1
            continue
        kind, value = _TABLE[key]
        e = toks[i + n - 1][2]
        i += n
        phrase = " ".join(key)
        if kind in ("weak", "strong"):
            if kind == "strong":
                clause += 1
            if kind == "strong" or phrase in ("with", "along with", "plus"):
                neg = False
            groups.append(_Group(clause=clause))
        elif kind == "neg":
            neg = True
            if g.finds:  # "right effusion without pneumothorax": the negated part is its own group
                groups.append(_Group(clause=clause))
        elif kind == "find":
            g.finds.append((value, neg))
            g.span(s, e)
        elif kind == "lat":
            g.lats.append(value)
            g.span(s, e)
        elif kind == "zone":
            g.zones.append(value)
            g.span(s, e)
        elif kind == "latzone":
            g.lats.append(value[0])
            g.zones.append(value[1])
            g.span(s, e)
        elif kind == "sev":
            g.sev = value
            g.span(s, e)
    groups = _merge([g for g in groups if g.start is not None])
    found: list[Finding] = []
    for g in groups:
        found += _emit(g, prompt)
    if not found:
        raise PromptError(f"no finding understood in {prompt!r}; not understood: {' '.join(unparsed) or prompt!r}; "
                          "understood vocabulary:\n" + vocabulary_summary())
    return ParsedPrompt(tuple(f for f in found if not f.negated), tuple(f for f in found if f.negated),
                        " ".join(unparsed))


def _merge(groups: list[_Group]) -> list[_Group]:
    out: list[_Group] = []
    pending: list[_Group] = []
    for g in groups:
        if not g.finds:
            pending.append(g)
            continue
        for p in pending:
            if p.clause == g.clause:
                g.absorb(p)
            elif out:
                out[-1].absorb(p)
        pending = []
        out.append(g)
    for p in pending:
        if out:
            out[-1].absorb(p)
    return out


def _emit(g: _Group, prompt: str) -> list[Finding]:
    lats = set(g.lats)
    lat = None if not lats else ("bilateral" if len(lats) > 1 else lats.pop())
    zones = list(dict.fromkeys(g.zones)) or [None]
    text = prompt[g.start:g.end]
    out = []
    for name, negated in g.finds:
        if name in ("Mass", "Nodule", LESION):
            name = "Nodule" if g.size is None and name == LESION else name
            if g.size is not None:
                name = "Mass" if g.size >= MASS_MIN_MM else "Nodule"
        if name == "Cardiomegaly":
            out.append(Finding(name, None, None, g.sev, None, negated, text))
            continue
        for z in zones:
            out.append(Finding(name, lat, z, g.sev, g.size, negated, text))
    return out
