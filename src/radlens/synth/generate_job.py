"""`radlens synth generate`: prompt → pseudo masks → images → expert filter → labelled dataset.

Every pair is kept in the run's record with its QC scores; only pairs the filter keeps enter `coco.json` and
`manifest.csv`, rejected ones are listed in `rejected.csv` with their reasons (see `radlens.synth.export`).
`generation.json` names the mask prior, the generator and the filter that made the set, so a later step can refuse
a set made by different models.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from radlens.synth.checks import check_sample
from radlens.synth.prompt import parse_prompt
from radlens.synth.sampler import MaskSampler


def render_and_judge(samples, parsed, prior, gen, filt, seed: int):
    """Images for mask samples and their QC: the masks' own consistency checks, then the expert filter. The one
    place generation and evaluation draw filtered pairs, so both judge pairs the same way. Returns (images, qcs)."""
    violations = [[str(v) for v in check_sample(s, parsed, prior)] for s in samples]
    images = gen.generate(samples, seed=seed)
    return images, filt.judge(images, samples, mask_violations=violations)


def generate(prompt: str, n: int, seed: int, out: Path, *, generator: str | None = None, filter_dir: str | None = None,
             prior: str | None = None, dicom: bool = False, sex: str | None = None, age: float | None = None,
             view: str | None = None) -> dict[str, Any]:
    from rich.progress import track

    from radlens.synth.expert_filter import ExpertFilter
    from radlens.synth.export import export_dataset
    from radlens.synth.image_gen import ImageGenerator
    from radlens.synth.render import pair_sheet

    parsed = parse_prompt(prompt)
    sampler = MaskSampler(prior)
    sampler.validate(parsed)
    gen = ImageGenerator(generator)
    filt = ExpertFilter(filter_dir)
    if filt.config["size"] != gen.size:
        raise ValueError(f"the filter was calibrated at {filt.config['size']} px, the generator draws {gen.size} px; "
                         "run `radlens synth fit-filter --size` for this generator")
    samples = [sampler.sample_one(parsed, seed, i, sex=sex, age=age, view=view)
               for i in track(range(n), description="masks", transient=True)]
    images, qcs = render_and_judge(samples, parsed, sampler.prior, gen, filt, seed)
    pairs = [{"id": f"{seed:04d}-{i:05d}", "image": images[i], "sample": samples[i], "prompt": prompt,
              "qc": qcs[i].to_json()} for i in range(n)]
    provenance = {"prompt": prompt, "seed": seed, "n": n, "prior_id": sampler.prior.prior_id,
                  "generator_id": gen.model_id, "filter": {k: filt.config[k] for k in ("encoder_id", "anatomy_model",
                                                                                      "dice_min", "size")},
                  "finding_expert": filt.adapter.meta.get("encoder_id"), "kept": sum(q.passed for q in qcs)}
    export_dataset(pairs, out, dicom=dicom)
    per_row = 8
    rows = [(prompt if k == 0 else "", [(images[i], samples[i], qcs[i].passed) for i in range(k, min(n, k + per_row))])
            for k in range(0, n, per_row)]
    pair_sheet(rows, out / "contact_sheet.png")
    (out / "generation.json").write_text(json.dumps(provenance, indent=1, default=str))
    return provenance
