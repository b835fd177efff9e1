"""Deterministic parser: clinical prompt -> structured findings (issue 7, part 1).

Rules (documented decisions):
- The prompt is split into groups at weak breaks (and, or, with, plus) and strong breaks (, ; . : but however).
  Modifiers (laterality, zone, severity, size) in a group apply to the findings of that group. A group with
  modifiers but no finding joins the next group of the same clause ("left and right effusion"), else the previous
  one ("nodules in the left and right upper zones").
- left + right in one finding -> "bilateral" (not an error). Two zones in one finding -> one Finding per zone.
- Negation before findings ("no", "without", "no evidence of", "negative for", ...) covers every finding after it
  until a strong break or "with"/"plus": "no effusion or pneumothorax" negates both; "effusion, no pneumothorax"
  only the second.
- Finding lists: a comma directly followed by an item (words up to the next break that contain a finding, with no
  negation word before that finding and no severity or size word; laterality and zone allowed), then optionally
  more ", item", then "and"/"or"/"nor"/"&" (or Oxford ", or") and a last item, is a list comma; so is a comma
  directly followed by "or"/"nor" and an item. A list comma does not end a negation: "no focal consolidation,
  effusion, or pneumothorax" negates all three. A comma not in such a list still ends it: "no effusion, left basal
  atelectasis" keeps the atelectasis positive, "small left effusion, no pneumothorax" negates only the
  pneumothorax, and "no pneumothorax, large left effusion and right basal atelectasis" keeps both positive (a
  finding with severity or size is described, so it is not part of a negated list). Outside a negation a list
  comma is an ordinary strong break. (Ambiguity, decided this way: "no effusion, left atelectasis and right
  pneumothorax" negates all three.)
- Negation after findings: "no", "not", "absent", "none", "nil", "negative", "excluded", "ruled out" are
  post-posed when the current group already has a finding and no finding follows before the next break
  ("effusion absent", "pneumothorax is not seen", "pneumothorax not present"; fillers and modifiers may follow).
  A post-posed negation negates the findings of its group and of the groups before it joined by "and"/"or"/
  "nor"/"&" or a list comma ("effusion and pneumothorax absent", "consolidation, effusion or pneumothorax not seen"),
  never across "with"/"plus" or another strong break ("cardiomegaly with effusion absent", "cardiomegaly, effusion
  absent": cardiomegaly stays positive) and never into an earlier group with severity or size ("small left effusion
  and pneumothorax absent": the effusion stays positive). "X: none" / "X: absent" / "X: no" (a colon, then only
  the negation) negates the group before the colon. Otherwise (e.g. "effusion no pneumothorax") these words
  negate forward.
- A normal heart ("normal heart size", "heart size is normal", "normal cardiac silhouette", "heart is not
  enlarged", ... see vocab.NORMAL_HEART) is a negated Cardiomegaly.
- Sizes: "12 mm", "1.5cm", "6-cm", and two or three dimensions ("3 x 2 cm", "30x20 mm", "1.5 x 1.2 cm",
  "3 by 2 cm", "1.2 cm x 0.8 cm"); size_mm is the largest dimension in mm.
- Mass vs nodule: a sized mass/nodule/lesion is a Mass at >= 30 mm (largest dimension) and a Nodule below; an
  unsized "lesion" is a Nodule.
- Cardiomegaly ignores laterality and zone words (the heart has none); they are consumed, not reported as unparsed.
- Severity is one of "mild" (trace/small/mild/minimal), "moderate", "severe" (large/massive/severe/extensive).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from radlens.synth.vocab import LESION, LIST_CONJ, phrase_table, vocabulary_summary

MASS_MIN_MM = 30.0
_TABLE = phrase_table()
_MAX_PHRASE = max(len(k) for k in _TABLE)
_NUM = r"\d+(?:\.\d+)?"
# One to three dimensions ("3 x 2 x 1 cm", "30x20 mm", "1.2 cm x 0.8 cm", "3 by 2 cm"); the last one has the unit.
_SIZE = rf"(?P<size>(?:{_NUM}(?:\s*(?:mm|cm))?\s*(?:x|×|by)\s*){{0,2}}{_NUM})\s*-?\s*(?P<unit>mm|cm)\b"
_TOKEN = re.compile(rf"{_SIZE}|(?P<word>[a-z]+|{_NUM})|(?P<punct>[,;.:&+])")
_DIM = re.compile(rf"({_NUM})\s*(mm|cm)?")


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


@dataclass(frozen=True)
class _Lex:
    kind: str  # a phrase_table kind (fill, weak, strong, neg, postneg, sev, zone, lat, latzone, find, negfind),
    # "size" or "unk"
    value: object
    phrase: str
    start: int
    end: int


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
    joiner: str | None = None  # the break that opened this group ("list" for a list comma)

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


def _size_mm(text: str, unit: str) -> float:
    """Largest dimension in mm; a dimension without its own unit takes the last one's."""
    return max(float(v) * (10.0 if (u or unit) == "cm" else 1.0) for v, u in _DIM.findall(text))


def _lex(prompt: str) -> list[_Lex]:
    low = re.sub(r"(?<=[a-z])-(?=[a-z])", " ", prompt.lower())
    toks = []
    for m in _TOKEN.finditer(low):
        if m.group("size"):
            toks.append(("<size>", m.start(), m.end(), _size_mm(m.group("size"), m.group("unit"))))
        else:
            toks.append((m.group(0), m.start(), m.end(), None))
    out: list[_Lex] = []
    i = 0
    while i < len(toks):
        word, s, e, size = toks[i]
        if word == "<size>":
            out.append(_Lex("size", size, word, s, e))
            i += 1
            continue
        for n in range(min(_MAX_PHRASE, len(toks) - i), 0, -1):
            key = tuple(t[0] for t in toks[i:i + n])
            if key in _TABLE:
                kind, value = _TABLE[key]
                out.append(_Lex(kind, value, " ".join(key), s, toks[i + n - 1][2]))
                i += n
                break
        else:
            out.append(_Lex("unk", None, word, s, e))
            i += 1
    return out


def _is_break(x: _Lex) -> bool:
    return x.kind in ("weak", "strong") or x.phrase == "nor"


def _item_end(lex: list[_Lex], k: int) -> int | None:
    """End index of a list item starting at k (a finding, no negation before it, no severity/size), else None."""
    found = False
    while k < len(lex) and not _is_break(lex[k]):
        if lex[k].kind == "find":
            found = True
        elif lex[k].kind in ("sev", "size") or (lex[k].kind in ("neg", "postneg", "negfind") and not found):
            return None
        k += 1
    return k if found else None


def _list_commas(lex: list[_Lex]) -> set[int]:
    """Indexes of the commas inside finding lists ("A, B, C or D", "A, B, or C", "A, or B")."""
    out: set[int] = set()
    n = len(lex)
    for c, x in enumerate(lex):
        if x.phrase != ",":
            continue
        if c + 1 < n and lex[c + 1].phrase in ("or", "nor"):  # "no effusion, or pneumothorax"
            if _item_end(lex, c + 2) is not None:
                out.add(c)
            continue
        commas = [c]
        end = _item_end(lex, c + 1)
        while end is not None and end < n:
            ph = lex[end].phrase
            if ph in LIST_CONJ or (ph == "," and end + 1 < n and lex[end + 1].phrase in LIST_CONJ):
                last = end + (1 if ph in LIST_CONJ else 2)
                if _item_end(lex, last) is not None:
                    out.update(commas + ([end] if ph == "," else []))
                break
            if ph != ",":
                break
            commas.append(end)
            end = _item_end(lex, end + 1)
    return out


def _post_target(lex: list[_Lex], j: int, groups: list[_Group]) -> int | None:
    """Index of the group a post-posed negation at lex[j] negates, or None when it negates forward."""
    k = j + 1
    while k < len(lex) and not _is_break(lex[k]):
        if lex[k].kind in ("find", "negfind"):
            return None
        k += 1
    if groups[-1].finds:
        return len(groups) - 1
    if groups[-1].start is None and groups[-1].joiner == ":" and len(groups) > 1 and groups[-2].finds:
        return len(groups) - 2  # "effusion: none"
    return None


def parse_prompt(prompt: str) -> ParsedPrompt:
    """Parse a clinical prompt; raises PromptError when no finding (positive or negated) is understood."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise PromptError("empty prompt; understood vocabulary:\n" + vocabulary_summary())
    lex = _lex(prompt)
    list_commas = _list_commas(lex)
    groups: list[_Group] = [_Group()]
    unparsed: list[str] = []
    neg = False
    clause = 0
    for j, x in enumerate(lex):
        g = groups[-1]
        kind, value, phrase, s, e = x.kind, x.value, x.phrase, x.start, x.end
        if kind == "unk":
            unparsed.append(prompt[s:e])
        elif kind == "size":
            g.size = value
            g.span(s, e)
        elif kind in ("weak", "strong"):
            in_list = j in list_commas
            if kind == "strong" and not (in_list and neg):
                clause += 1
                neg = False
            elif phrase in ("with", "along with", "plus"):
                neg = False
            groups.append(_Group(clause=clause, joiner="list" if in_list else phrase))
        elif kind == "postneg" and (t := _post_target(lex, j, groups)) is not None:
            while True:  # negate the group and the groups coordinated with it
                groups[t].finds = [(name, True) for name, _ in groups[t].finds]
                if t == 0 or groups[t].joiner not in LIST_CONJ + ("list",):
                    break
                t -= 1
                if groups[t].sev or groups[t].size is not None:  # "small left effusion and pneumothorax absent"
                    break
        elif kind in ("neg", "postneg"):
            neg = True
            if g.finds:  # "right effusion without pneumothorax": the negated part is its own group
                groups.append(_Group(clause=clause, joiner=phrase))
        elif kind in ("find", "negfind"):
            g.finds.append((value, neg or kind == "negfind"))
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
