"""Vocabulary of :mod:`radlens.synth.prompt`: finding names, synonyms and modifier words.

Phrases are tuples of lower-case words (hyphens are split into spaces before matching); the longest phrase wins.
"""

from __future__ import annotations

# Canonical names: NIH ChestX-ray14 + ChestX-Det spellings (spaces, not NIH's underscore).
FINDINGS = (
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia", "Pneumothorax",
    "Consolidation", "Fibrosis", "Emphysema", "Calcification", "Fracture", "Pleural Thickening", "Diffuse Nodule",
    "Edema", "Hernia",
)
# NIH manifest spelling where it differs.
NIH_LABEL = {"Pleural Thickening": "Pleural_Thickening"}
LESION = "lesion"  # resolved to Mass or Nodule by size

_SYN: dict[str, tuple[str, ...]] = {
    "Atelectasis": ("atelectasis", "atelectases", "atelectatic change", "atelectatic changes", "collapse",
                    "lobar collapse", "volume loss", "subsegmental atelectasis", "plate atelectasis"),
    "Cardiomegaly": ("cardiomegaly", "enlarged heart", "enlarged cardiac silhouette", "cardiac enlargement",
                     "heart enlarged", "heart is enlarged", "cardiac silhouette is enlarged",
                     "cardiac silhouette enlarged", "large heart", "big heart", "enlarged cardiac shadow",
                     "increased cardiothoracic ratio"),
    "Effusion": ("effusion", "effusions", "pleural effusion", "pleural effusions", "pleural fluid", "hydrothorax",
                 "fluid in the pleural space", "costophrenic blunting", "blunted costophrenic angle",
                 "blunting of the costophrenic angle"),
    "Infiltration": ("infiltration", "infiltrate", "infiltrates", "opacity", "opacities", "opacification",
                     "hazy opacity", "airspace opacity", "airspace opacities", "shadowing"),
    "Mass": ("mass", "masses", "tumour", "tumor", "neoplasm"),
    "Nodule": ("nodule", "nodules", "nodular opacity", "coin lesion", "pulmonary nodule", "lung nodule"),
    LESION: ("lesion", "lesions"),
    "Pneumonia": ("pneumonia", "pneumonic change", "pneumonic changes", "chest infection"),
    "Pneumothorax": ("pneumothorax", "pneumothoraces", "ptx", "collapsed lung"),
    "Consolidation": ("consolidation", "consolidations", "consolidated", "airspace consolidation",
                      "airspace disease"),
    "Fibrosis": ("fibrosis", "fibrotic change", "fibrotic changes", "scarring", "interstitial fibrosis",
                 "pulmonary fibrosis"),
    "Emphysema": ("emphysema", "emphysematous change", "emphysematous changes", "bullae", "bullous emphysema"),
    "Calcification": ("calcification", "calcifications", "calcified granuloma", "calcified nodule",
                      "calcified nodules", "granuloma"),
    "Fracture": ("fracture", "fractures", "rib fracture", "rib fractures", "fractured rib", "fractured ribs",
                 "broken rib", "broken ribs"),
    "Pleural Thickening": ("pleural thickening", "thickened pleura", "pleural plaque", "pleural plaques",
                           "apical cap", "apical capping"),
    "Diffuse Nodule": ("diffuse nodule", "diffuse nodules", "diffuse nodularity", "miliary nodules", "miliary",
                       "diffuse nodular opacities", "innumerable nodules"),
    "Edema": ("edema", "oedema", "pulmonary edema", "pulmonary oedema"),
    "Hernia": ("hernia", "hiatus hernia", "hiatal hernia"),
}

LATERALITY = {"left": "left", "right": "right", "l": "left", "r": "right", "lt": "left", "rt": "right",
              "bilateral": "bilateral", "bilaterally": "bilateral", "both": "bilateral", "bibasal": "bilateral",
              "bibasilar": "bilateral"}
ZONE = {"upper": "upper", "mid": "mid", "middle": "mid", "lower": "lower", "apical": "apical", "apex": "apical",
        "apices": "apical", "basal": "basal", "base": "basal", "bases": "basal", "basilar": "basal",
        "bibasal": "basal", "bibasilar": "basal", "perihilar": "perihilar", "hilar": "perihilar",
        "hila": "perihilar", "hilum": "perihilar"}
# Lobe shorthand: laterality + zone (lingula = left mid zone, middle lobe = right mid zone).
LOBE = {"rul": ("right", "upper"), "rml": ("right", "mid"), "rll": ("right", "lower"), "lul": ("left", "upper"),
        "lll": ("left", "lower"), "lingula": ("left", "mid"), "lingular": ("left", "mid"),
        "middle lobe": ("right", "mid")}
SEVERITY = {"trace": "mild", "tiny": "mild", "small": "mild", "mild": "mild", "minimal": "mild", "slight": "mild",
            "minor": "mild", "moderate": "moderate", "medium": "moderate", "large": "severe", "massive": "severe",
            "severe": "severe", "extensive": "severe", "marked": "severe", "big": "severe", "huge": "severe",
            "gross": "severe", "moderate to large": "severe", "small to moderate": "moderate",
            "mild to moderate": "moderate", "moderate to severe": "severe"}
# Negation words that only ever stand before the findings they negate.
NEGATION = ("without", "nor", "neither", "no evidence of", "no sign of", "no signs of", "negative for",
            "free of", "absence of", "no convincing", "no definite", "there is no", "there are no")
# Negation words that stand before ("no effusion") or after ("effusion absent", "pneumothorax is not seen",
# "effusion: none") the findings they negate; the parser decides by position (see radlens.synth.prompt).
POST_NEGATION = ("no", "not", "absent", "none", "nil", "negative", "excluded", "ruled out")
# Conjunctions that join the items of a finding list ("no consolidation, effusion or pneumothorax").
LIST_CONJ = ("and", "or", "nor", "&")
# Phrases that state the heart is normal: each is a negated Cardiomegaly ("normal heart size",
# "heart size is normal", "cardiac silhouette is not enlarged").
_HEART = ("heart", "heart size", "cardiac size", "cardiac silhouette", "cardiac shadow", "cardiac contour",
          "heart shadow", "cardiomediastinal silhouette", "cardiomediastinal contour", "cardiomediastinal contours",
          "cardiothoracic ratio")
NORMAL_HEART = tuple(dict.fromkeys(
    f.format(s=s)
    for s in _HEART
    for f in ("normal {s}", "normal sized {s}", "normal size {s}", "{s} normal", "{s} is normal", "{s} are normal",
              "{s} appears normal", "{s} normal in size", "{s} is normal in size", "{s} within normal limits",
              "{s} is within normal limits", "{s} are within normal limits", "{s} not enlarged",
              "{s} is not enlarged", "{s} are not enlarged", "{s} : normal", "{s} : within normal limits",
              "{s} : not enlarged")))
STRONG_BREAK = (",", ";", ".", ":", "but", "however", "although", "though", "whereas")
WEAK_BREAK = ("and", "or", "with", "plus", "also", "as well as", "along with", "&", "+")
# "with" and the strong breaks end a negation's scope; "and"/"or"/"nor" carry it on. Exception: a comma inside a
# finding list ("no consolidation, effusion or pneumothorax") carries it on too (see radlens.synth.prompt).
ENDS_NEGATION = STRONG_BREAK + ("with", "along with", "plus")
FILLER = ("a", "an", "the", "of", "in", "at", "on", "is", "are", "there", "seen", "present", "noted", "lung",
          "lungs", "zone", "zones", "lobe", "lobes", "field", "fields", "side", "sides", "sided", "hemithorax", "measuring",
          "sized", "size", "pleural", "pulmonary", "evidence", "within", "involving", "to", "region", "segment",
          "patient", "shows", "showing", "chest", "x", "ray", "xray", "cxr", "radiograph", "identified", "visible",
          "appearance", "appearances", "of the", "consistent", "suggestive", "possible", "probable", "likely",
          "some", "small volume", "volume", "base of", "cardiac", "heart", "silhouette", "new", "apparent", "focal",
          "demonstrated", "visualised", "visualized", "evident", "appreciated", "detected", "shown")


def phrase_table() -> dict[tuple[str, ...], tuple[str, object]]:
    """Phrase (tuple of words) -> (kind, value)."""
    table: dict[tuple[str, ...], tuple[str, object]] = {}

    def add(phrase: str, kind: str, value: object) -> None:
        table[tuple(phrase.split())] = (kind, value)

    for w in FILLER:
        add(w, "fill", None)
    for w in WEAK_BREAK:
        add(w, "weak", w)
    for w in STRONG_BREAK:
        add(w, "strong", w)
    for w in NEGATION:
        add(w, "neg", w)
    for w in POST_NEGATION:
        add(w, "postneg", w)
    for w, v in SEVERITY.items():
        add(w, "sev", v)
    for w, v in ZONE.items():
        add(w, "zone", v)
    for w, v in LATERALITY.items():
        add(w, "lat", v)
    for w in ("bibasal", "bibasilar"):
        add(w, "latzone", ("bilateral", "basal"))
    for w, v in LOBE.items():
        add(w, "latzone", v)
    for name, syns in _SYN.items():
        for s in syns:
            add(s, "find", name)
    for s in NORMAL_HEART:
        add(s, "negfind", "Cardiomegaly")
    return table


def vocabulary_summary() -> str:
    """Human-readable list of what the parser understands (used in PromptError)."""
    lines = ["findings: " + "; ".join(f"{n} ({', '.join(_SYN[n])})" for n in FINDINGS),
             f"lesion/lesions -> Nodule below 30 mm, Mass at 30 mm or more",
             "laterality: " + ", ".join(sorted(LATERALITY)),
             "zones: " + ", ".join(sorted(ZONE)) + "; lobes: " + ", ".join(sorted(LOBE)),
             "severity: " + ", ".join(sorted(SEVERITY)),
             "sizes: '12 mm', '1.5cm', '3 cm', '3 x 2 cm', '30x20 mm' (largest dimension)",
             "negation before findings: " + ", ".join(NEGATION + POST_NEGATION),
             "negation after findings: " + ", ".join(POST_NEGATION) + " ('effusion absent', 'effusion: none')",
             "normal heart (negated Cardiomegaly): 'normal heart size', 'heart size is normal', "
             "'normal cardiac silhouette', 'heart not enlarged', ..."]
    return "\n".join(lines)
