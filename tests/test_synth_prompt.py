"""radlens.synth.prompt: clinical prompt -> structured findings (issue 7, part 1)."""

from __future__ import annotations

import pytest

from radlens.synth import Finding, PromptError, parse_prompt


def F(name, lat=None, zone=None, sev=None, size=None, neg=False):  # noqa: N802 - table shorthand
    return (name, lat, zone, sev, size, neg)


N = dict(neg=True)
# (prompt, expected findings in prompt order: positives and negated together)
CASES = [
    ("moderate right pleural effusion with cardiomegaly", [F("Effusion", "right", sev="moderate"), F("Cardiomegaly")]),
    ("3 cm mass in the left upper zone", [F("Mass", "left", "upper", size=30.0)]),
    ("small left apical pneumothorax, no effusion", [F("Pneumothorax", "left", "apical", "mild"), F("Effusion", **N)]),
    ("bilateral lower zone consolidation", [F("Consolidation", "bilateral", "lower")]),
    ("no pneumothorax", [F("Pneumothorax", **N)]),
    ("enlarged cardiac silhouette", [F("Cardiomegaly")]),
    ("right basal atelectasis and a 12 mm nodule in the right mid zone",
     [F("Atelectasis", "right", "basal"), F("Nodule", "right", "mid", size=12.0)]),
    ("cardiomegaly", [F("Cardiomegaly")]),
    ("Cardiomegaly.", [F("Cardiomegaly")]),
    ("enlarged heart", [F("Cardiomegaly")]),
    ("The heart is enlarged.", [F("Cardiomegaly")]),
    ("cardiac enlargement", [F("Cardiomegaly")]),
    ("mild cardiomegaly", [F("Cardiomegaly", sev="mild")]),
    ("left cardiomegaly", [F("Cardiomegaly")]),  # laterality ignored for the heart
    ("effusion", [F("Effusion")]),
    ("right pleural effusion", [F("Effusion", "right")]),
    ("R pleural effusion", [F("Effusion", "right")]),
    ("L effusion", [F("Effusion", "left")]),
    ("right-sided effusion", [F("Effusion", "right")]),
    ("left sided pleural fluid", [F("Effusion", "left")]),
    ("bilateral pleural effusions", [F("Effusion", "bilateral")]),
    ("bilateral effusions", [F("Effusion", "bilateral")]),
    ("trace left effusion", [F("Effusion", "left", sev="mild")]),
    ("large right pleural effusion", [F("Effusion", "right", sev="severe")]),
    ("massive left hydrothorax", [F("Effusion", "left", sev="severe")]),
    ("small bilateral pleural effusions", [F("Effusion", "bilateral", sev="mild")]),
    ("left and right pleural effusion", [F("Effusion", "bilateral")]),
    ("effusions on both sides", [F("Effusion", "bilateral")]),
    ("effusion on the right", [F("Effusion", "right")]),
    ("blunting of the costophrenic angle on the left", [F("Effusion", "left")]),
    ("pneumothorax", [F("Pneumothorax")]),
    ("PTX", [F("Pneumothorax")]),
    ("right PTX", [F("Pneumothorax", "right")]),
    ("large right pneumothorax", [F("Pneumothorax", "right", sev="severe")]),
    ("small right apical pneumothorax", [F("Pneumothorax", "right", "apical", "mild")]),
    ("tiny left apical PTX", [F("Pneumothorax", "left", "apical", "mild")]),
    ("bilateral pneumothoraces", [F("Pneumothorax", "bilateral")]),
    ("collapsed lung on the left", [F("Pneumothorax", "left")]),
    ("left basal atelectasis", [F("Atelectasis", "left", "basal")]),
    ("bibasal atelectasis", [F("Atelectasis", "bilateral", "basal")]),
    ("bibasilar atelectasis", [F("Atelectasis", "bilateral", "basal")]),
    ("RLL collapse", [F("Atelectasis", "right", "lower")]),
    ("left lower lobe collapse", [F("Atelectasis", "left", "lower")]),
    ("LLL volume loss", [F("Atelectasis", "left", "lower")]),
    ("plate atelectasis at the right base", [F("Atelectasis", "right", "basal")]),
    ("right middle lobe atelectasis", [F("Atelectasis", "right", "mid")]),
    ("middle lobe collapse", [F("Atelectasis", "right", "mid")]),
    ("lingular atelectasis", [F("Atelectasis", "left", "mid")]),
    ("infiltrate", [F("Infiltration")]),
    ("right upper zone opacity", [F("Infiltration", "right", "upper")]),
    ("bilateral perihilar opacities", [F("Infiltration", "bilateral", "perihilar")]),
    ("left lower zone infiltrates", [F("Infiltration", "left", "lower")]),
    ("lingula opacity", [F("Infiltration", "left", "mid")]),
    ("RUL infiltration", [F("Infiltration", "right", "upper")]),
    ("hazy opacity in the left mid zone", [F("Infiltration", "left", "mid")]),
    ("12 mm nodule", [F("Nodule", size=12.0)]),
    ("a 1.5cm nodule in the left upper lobe", [F("Nodule", "left", "upper", size=15.0)]),
    ("8mm right lower zone nodule", [F("Nodule", "right", "lower", size=8.0)]),
    ("pulmonary nodule in the RUL", [F("Nodule", "right", "upper")]),
    ("nodules in the left and right upper zones", [F("Nodule", "bilateral", "upper")]),
    ("5 cm nodule in the right lower zone", [F("Mass", "right", "lower", size=50.0)]),  # >= 3 cm: mass
    ("2 cm mass in the left mid zone", [F("Nodule", "left", "mid", size=20.0)]),  # < 3 cm: nodule
    ("4 cm lesion in the right upper lobe", [F("Mass", "right", "upper", size=40.0)]),
    ("9 mm lesion at the left base", [F("Nodule", "left", "basal", size=9.0)]),
    ("lesion in the left upper zone", [F("Nodule", "left", "upper")]),
    ("30 mm lesion", [F("Mass", size=30.0)]),
    ("29 mm lesion", [F("Nodule", size=29.0)]),
    ("large left hilar mass", [F("Mass", "left", "perihilar", "severe")]),
    ("right upper lobe mass", [F("Mass", "right", "upper")]),
    ("a 6-cm tumour in the LUL", [F("Mass", "left", "upper", size=60.0)]),
    ("pneumonia", [F("Pneumonia")]),
    ("right lower lobe pneumonia", [F("Pneumonia", "right", "lower")]),
    ("left basal pneumonia", [F("Pneumonia", "left", "basal")]),
    ("consolidation", [F("Consolidation")]),
    ("RML consolidation", [F("Consolidation", "right", "mid")]),
    ("airspace consolidation in the left lower zone", [F("Consolidation", "left", "lower")]),
    ("consolidation in the right upper and lower zones",
     [F("Consolidation", "right", "upper"), F("Consolidation", "right", "lower")]),
    ("bilateral lower zone consolidation and bilateral effusions",
     [F("Consolidation", "bilateral", "lower"), F("Effusion", "bilateral")]),
    ("pulmonary fibrosis", [F("Fibrosis")]),
    ("bibasal fibrotic changes", [F("Fibrosis", "bilateral", "basal")]),
    ("right apical scarring", [F("Fibrosis", "right", "apical")]),
    ("emphysema", [F("Emphysema")]),
    ("upper zone emphysematous changes", [F("Emphysema", zone="upper")]),
    ("calcified granuloma in the left mid zone", [F("Calcification", "left", "mid")]),
    ("calcification", [F("Calcification")]),
    ("right rib fracture", [F("Fracture", "right")]),
    ("fractured ribs on the left", [F("Fracture", "left")]),
    ("left pleural thickening", [F("Pleural Thickening", "left")]),
    ("bilateral pleural plaques", [F("Pleural Thickening", "bilateral")]),
    ("right apical pleural thickening", [F("Pleural Thickening", "right", "apical")]),
    ("diffuse nodules", [F("Diffuse Nodule")]),
    ("miliary nodules in both lungs", [F("Diffuse Nodule", "bilateral")]),
    ("pulmonary oedema", [F("Edema")]),
    ("hiatus hernia", [F("Hernia")]),
    ("no effusion", [F("Effusion", **N)]),
    ("without pneumothorax", [F("Pneumothorax", **N)]),
    ("no evidence of effusion or pneumothorax", [F("Effusion", **N), F("Pneumothorax", **N)]),
    ("no pneumothorax or effusion.", [F("Pneumothorax", **N), F("Effusion", **N)]),
    ("negative for pneumonia", [F("Pneumonia", **N)]),
    ("no consolidation or effusion", [F("Consolidation", **N), F("Effusion", **N)]),
    ("cardiomegaly, no effusion", [F("Cardiomegaly"), F("Effusion", **N)]),
    ("right effusion without pneumothorax", [F("Effusion", "right"), F("Pneumothorax", **N)]),
    ("no pneumothorax. Large left effusion.", [F("Pneumothorax", **N), F("Effusion", "left", sev="severe")]),
    ("no effusion but a right upper zone mass", [F("Effusion", **N), F("Mass", "right", "upper")]),
    ("no left pneumothorax", [F("Pneumothorax", "left", **N)]),
    ("no pneumothorax with left basal consolidation",
     [F("Pneumothorax", **N), F("Consolidation", "left", "basal")]),
    ("There is a moderate left pleural effusion.", [F("Effusion", "left", sev="moderate")]),
    ("There is a small right apical pneumothorax and no effusion.",
     [F("Pneumothorax", "right", "apical", "mild"), F("Effusion", **N)]),
    ("Chest X-ray shows cardiomegaly with bilateral pleural effusions.",
     [F("Cardiomegaly"), F("Effusion", "bilateral")]),
    ("cardiomegaly; left effusion; right basal atelectasis",
     [F("Cardiomegaly"), F("Effusion", "left"), F("Atelectasis", "right", "basal")]),
    ("effusion, pneumothorax, nodule", [F("Effusion"), F("Pneumothorax"), F("Nodule")]),
    ("enlarged heart plus small bilateral effusions", [F("Cardiomegaly"), F("Effusion", "bilateral", sev="mild")]),
    ("moderate to large right effusion", [F("Effusion", "right", sev="severe")]),
    ("mild to moderate cardiomegaly", [F("Cardiomegaly", sev="moderate")]),
    ("extensive bilateral consolidation", [F("Consolidation", "bilateral", sev="severe")]),
    ("RUL mass and LLL consolidation", [F("Mass", "right", "upper"), F("Consolidation", "left", "lower")]),
    ("left upper zone 2.5 cm nodule with left effusion",
     [F("Nodule", "left", "upper", size=25.0), F("Effusion", "left")]),
    ("right lower zone pneumonia with a small right effusion, no pneumothorax",
     [F("Pneumonia", "right", "lower"), F("Effusion", "right", sev="mild"), F("Pneumothorax", **N)]),
    ("cardiomegaly and pulmonary edema", [F("Cardiomegaly"), F("Edema")]),
    ("left apical pneumothorax and right rib fractures", [F("Pneumothorax", "left", "apical"), F("Fracture", "right")]),
    # negated finding lists: a list comma carries the negation on
    ("no consolidation, effusion or pneumothorax",
     [F("Consolidation", **N), F("Effusion", **N), F("Pneumothorax", **N)]),
    ("No focal consolidation, effusion, or pneumothorax.",  # Oxford comma
     [F("Consolidation", **N), F("Effusion", **N), F("Pneumothorax", **N)]),
    ("No focal consolidation, pleural effusion, or pneumothorax is seen.",
     [F("Consolidation", **N), F("Effusion", **N), F("Pneumothorax", **N)]),
    ("no consolidation, effusion nor pneumothorax",
     [F("Consolidation", **N), F("Effusion", **N), F("Pneumothorax", **N)]),
    ("no evidence of consolidation, effusion, atelectasis and pneumothorax",
     [F("Consolidation", **N), F("Effusion", **N), F("Atelectasis", **N), F("Pneumothorax", **N)]),
    ("no effusion, or pneumothorax", [F("Effusion", **N), F("Pneumothorax", **N)]),
    ("neither effusion nor pneumothorax", [F("Effusion", **N), F("Pneumothorax", **N)]),
    ("no consolidation, left effusion or right pneumothorax",
     [F("Consolidation", **N), F("Effusion", "left", **N), F("Pneumothorax", "right", **N)]),
    ("right effusion, no pneumothorax, consolidation or nodule",
     [F("Effusion", "right"), F("Pneumothorax", **N), F("Consolidation", **N), F("Nodule", **N)]),
    # ... but not past a comma that does not open such a list
    ("small left effusion, no pneumothorax", [F("Effusion", "left", sev="mild"), F("Pneumothorax", **N)]),
    ("no effusion, left basal atelectasis", [F("Effusion", **N), F("Atelectasis", "left", "basal")]),
    ("no effusion, cardiomegaly", [F("Effusion", **N), F("Cardiomegaly")]),
    ("no effusion, and left basal atelectasis", [F("Effusion", **N), F("Atelectasis", "left", "basal")]),
    ("no pneumothorax; effusion or consolidation", [F("Pneumothorax", **N), F("Effusion"), F("Consolidation")]),
    ("no pneumothorax. Consolidation, effusion or atelectasis.",
     [F("Pneumothorax", **N), F("Consolidation"), F("Effusion"), F("Atelectasis")]),
    ("no effusion, but consolidation or atelectasis", [F("Effusion", **N), F("Consolidation"), F("Atelectasis")]),
    ("no pneumothorax with effusion, consolidation or atelectasis",
     [F("Pneumothorax", **N), F("Effusion"), F("Consolidation"), F("Atelectasis")]),
    ("no pneumothorax, large left effusion and right basal atelectasis",  # severity: described, so positive
     [F("Pneumothorax", **N), F("Effusion", "left", sev="severe"), F("Atelectasis", "right", "basal")]),
    ("effusion, pneumothorax and nodule", [F("Effusion"), F("Pneumothorax"), F("Nodule")]),
    # post-posed negation
    ("effusion absent", [F("Effusion", **N)]),
    ("pneumothorax is not seen", [F("Pneumothorax", **N)]),
    ("no pneumothorax is seen", [F("Pneumothorax", **N)]),
    ("effusion: none", [F("Effusion", **N)]),
    ("Pneumothorax: none. Effusion: small left.", [F("Pneumothorax", **N), F("Effusion", "left", sev="mild")]),
    ("pneumothorax not present", [F("Pneumothorax", **N)]),
    ("left pneumothorax not identified", [F("Pneumothorax", "left", **N)]),
    ("pneumothorax excluded", [F("Pneumothorax", **N)]),
    ("effusion and pneumothorax absent", [F("Effusion", **N), F("Pneumothorax", **N)]),
    ("consolidation, effusion or pneumothorax not seen",
     [F("Consolidation", **N), F("Effusion", **N), F("Pneumothorax", **N)]),
    ("pneumothorax is not seen and a small left effusion is present",
     [F("Pneumothorax", **N), F("Effusion", "left", sev="mild")]),
    ("cardiomegaly with effusion absent", [F("Cardiomegaly"), F("Effusion", **N)]),
    ("cardiomegaly, effusion absent", [F("Cardiomegaly"), F("Effusion", **N)]),
    ("small left effusion and pneumothorax absent", [F("Effusion", "left", sev="mild"), F("Pneumothorax", **N)]),
    ("right effusion no pneumothorax", [F("Effusion", "right"), F("Pneumothorax", **N)]),
    ("right effusion without left or right pneumothorax",
     [F("Effusion", "right"), F("Pneumothorax", "bilateral", **N)]),
    ("heart size normal", [F("Cardiomegaly", **N)]),
    ("heart size is normal", [F("Cardiomegaly", **N)]),
    ("normal heart size", [F("Cardiomegaly", **N)]),
    ("normal cardiac silhouette", [F("Cardiomegaly", **N)]),
    ("The heart is not enlarged.", [F("Cardiomegaly", **N)]),
    ("Heart size: normal. Pneumothorax: absent.", [F("Cardiomegaly", **N), F("Pneumothorax", **N)]),
    ("normal heart size, small right effusion", [F("Cardiomegaly", **N), F("Effusion", "right", sev="mild")]),
    # sizes with two or three dimensions: the largest one, in mm
    ("3 x 2 cm mass", [F("Mass", size=30.0)]),
    ("30x20 mm nodule", [F("Mass", size=30.0)]),
    ("1.5 x 1.2 cm nodule", [F("Nodule", size=15.0)]),
    ("2 x 1 cm mass in the left upper zone", [F("Nodule", "left", "upper", size=20.0)]),
    ("3 x 2 x 1 cm lesion", [F("Mass", size=30.0)]),
    ("12 x 8 mm nodule in the RUL", [F("Nodule", "right", "upper", size=12.0)]),
    ("1.2 cm x 0.8 cm nodule", [F("Nodule", size=12.0)]),
    ("4 by 3 cm mass", [F("Mass", size=40.0)]),
    ("2.5cm nodule", [F("Nodule", size=25.0)]),
    ("25 mm nodule", [F("Nodule", size=25.0)]),
    ("chest x-ray shows a 2 cm nodule", [F("Nodule", size=20.0)]),
]


def _as_tuple(f: Finding):
    return (f.name, f.laterality, f.zone, f.severity, f.size_mm, f.negated)


@pytest.mark.parametrize("prompt,expected", CASES, ids=[c[0] for c in CASES])
def test_prompt_table(prompt, expected):
    parsed = parse_prompt(prompt)
    got = sorted(parsed.findings + parsed.negated, key=lambda f: prompt.lower().find(f.text.lower()))
    assert [_as_tuple(f) for f in got] == expected
    assert all(f.negated for f in parsed.negated) and not any(f.negated for f in parsed.findings)
    assert parsed.unparsed_text == ""


def test_at_least_100_prompts():
    assert len(CASES) >= 100


def test_text_span_and_unparsed_kept():
    p = parse_prompt("small left apical pneumothorax with some wibble")
    assert p.findings[0].text == "small left apical pneumothorax"
    assert p.unparsed_text == "wibble"


@pytest.mark.parametrize("prompt", ["", "   ", "hello world", "asdf qwerty 42", "left upper zone", "moderate"])
def test_nothing_understood_raises(prompt):
    with pytest.raises(PromptError) as e:
        parse_prompt(prompt)
    assert "Pneumothorax" in str(e.value) and "laterality" in str(e.value)


def test_error_names_text_not_understood():
    with pytest.raises(PromptError, match="flibber"):
        parse_prompt("flibber jabber")


def test_only_negations_are_reported_negated():
    p = parse_prompt("no effusion, no pneumothorax")
    assert p.findings == () and [f.name for f in p.negated] == ["Effusion", "Pneumothorax"]


def test_deterministic():
    assert parse_prompt(CASES[6][0]) == parse_prompt(CASES[6][0])
