"""Hugging Face encoder families (rad-dino, medsiglip, hf:<folder>, med-flamingo) against transformers itself.

Each test builds a tiny random-weight model of the real architecture with transformers, saves it in the
upstream on-disk layout (config.json + model.safetensors + the real preprocessor_config.json), loads it
through `radlens.encoders.get`, embeds real NIH images and compares with the upstream processor's
`pixel_values` and the upstream model's own outputs. Image sizes are the real ones (518, 448, 224), so
the preprocessing checked is the real one; only the hidden sizes are tiny. No network.
"""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

transformers = pytest.importorskip("transformers")

from radlens.encoders import get  # noqa: E402
from radlens.encoders.upstream import MissingWeightsError, pil_image  # noqa: E402
from radlens.io import load_image  # noqa: E402

PRE_ATOL = 1e-5  # radlens preprocessing vs the HF processor's pixel_values (seen: <= 5e-7, float rounding)
EMB_ATOL = 1e-4  # radlens embedding vs the upstream model on the processor's pixel_values

# The released processor configs, verbatim in content.
RAD_DINO_PROCESSOR = {
    "crop_size": {"height": 518, "width": 518}, "do_center_crop": True, "do_convert_rgb": True, "do_normalize": True,
    "do_rescale": True, "do_resize": True, "image_mean": [0.5307, 0.5307, 0.5307],
    "image_processor_type": "BitImageProcessor", "image_std": [0.2583, 0.2583, 0.2583], "resample": 3,
    "rescale_factor": 0.00392156862745098, "size": {"shortest_edge": 518}}
MEDSIGLIP_PROCESSOR = {
    "do_convert_rgb": None, "do_normalize": True, "do_rescale": True, "do_resize": True,
    "image_mean": [0.5, 0.5, 0.5], "image_processor_type": "SiglipImageProcessor", "image_std": [0.5, 0.5, 0.5],
    "processor_class": "SiglipProcessor", "resample": 2, "rescale_factor": 0.00392156862745098,
    "size": {"height": 448, "width": 448}}
CLIP_L14_PROCESSOR = {  # openai/clip-vit-large-patch14 (legacy integer sizes)
    "crop_size": 224, "do_center_crop": True, "do_normalize": True, "do_resize": True,
    "feature_extractor_type": "CLIPFeatureExtractor", "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711], "resample": 3, "size": 224}
VIT_PROCESSOR = {
    "do_normalize": True, "do_rescale": True, "do_resize": True, "image_mean": [0.5, 0.5, 0.5],
    "image_processor_type": "ViTImageProcessor", "image_std": [0.5, 0.5, 0.5], "resample": 2,
    "rescale_factor": 0.00392156862745098, "size": {"height": 224, "width": 224}}


def _odd_crop_width(h: int, n: int = 518) -> int:
    """A width w < h for which the shortest-edge resize to n leaves (rows - n) = 3 mod 4, so the centre-crop
    offset is k + 0.5 with k odd: Hugging Face floors it (k), torchvision rounds it half-to-even (k + 1)."""
    return next(w for w in range(h - 1, n // 2, -1) if (int(n * h / w) - n) % 4 == 3)


def _assert_close(label, actual, desired, atol):
    """assert_allclose that also reports the max abs difference (shown with `pytest -s`)."""
    actual, desired = np.asarray(actual), np.asarray(desired)
    assert actual.shape == desired.shape, (label, actual.shape, desired.shape)
    print(f"[{label}] max abs diff {float(np.abs(actual - desired).max()):.3g} (tolerance {atol})")
    np.testing.assert_allclose(actual, desired, atol=atol, rtol=0, err_msg=label)


def _save_processor(folder, cfg):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "preprocessor_config.json").write_text(json.dumps(cfg, indent=2))


def _upstream_processor(folder):
    return transformers.AutoImageProcessor.from_pretrained(str(folder), local_files_only=True, backend="pil")


def _upstream_pixels(proc, images):
    """What a user of transformers gets: the 8-bit image as an RGB PIL image through the processor."""
    return torch.from_numpy(np.stack([proc(pil_image(im, "RGB"), return_tensors="np")["pixel_values"][0]
                                      for im in images]))


def _compare_preprocessing(enc, proc, images):
    ours = np.stack([enc.preprocess(im) for im in images])
    ref = _upstream_pixels(proc, images).numpy()
    assert ours.shape == ref.shape == (len(images), 3, enc.spec.size, enc.spec.size)
    _assert_close(f"{enc.name} preprocessing vs {type(proc).__name__}", ours, ref, PRE_ATOL)


@pytest.fixture(scope="module")
def nih_images(nih_dir):
    paths = pd.read_csv(nih_dir / "manifest.csv").path.head(3)
    ims = [load_image(nih_dir / p).pixels for p in paths]
    return ims + [ims[0][:, :_odd_crop_width(ims[0].shape[0])]]  # + one non-square crop (NIH PNGs are square)


# ---------------------------------------------------------------- rad-dino

def _tiny_rad_dino(folder, seed=0, processor=RAD_DINO_PROCESSOR):
    torch.manual_seed(seed)
    cfg = transformers.Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2,
                                    image_size=518, patch_size=14)
    model = transformers.Dinov2Model(cfg).eval()
    model.save_pretrained(folder)
    _save_processor(folder, processor)
    return model


@pytest.fixture(scope="module")
def rad_dino_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("rad-dino")
    _tiny_rad_dino(folder)
    return folder


def test_rad_dino_matches_upstream_processor_and_model(rad_dino_dir, nih_images):
    enc = get("rad-dino", weights=rad_dino_dir, threads=1)
    proc = _upstream_processor(rad_dino_dir)
    _compare_preprocessing(enc, proc, nih_images)  # includes the odd-offset non-square crop
    emb = enc.embed(nih_images)
    assert emb.shape == (len(nih_images), 32) and emb.dtype == np.float32 and np.isfinite(emb).all()
    upstream = transformers.Dinov2Model.from_pretrained(str(rad_dino_dir), local_files_only=True).eval()
    with torch.no_grad():
        out = upstream(pixel_values=_upstream_pixels(proc, nih_images))
    _assert_close('rad-dino CLS vs pooler_output', emb, out.pooler_output.numpy(), EMB_ATOL)  # model card: pooler = CLS
    _assert_close('rad-dino CLS vs last_hidden_state[:, 0]', emb, out.last_hidden_state[:, 0].numpy(), EMB_ATOL)
    patch = get("rad-dino-patch-mean", weights=rad_dino_dir).embed(nih_images)
    _assert_close('rad-dino-patch-mean', patch, out.last_hidden_state[:, 1:].mean(1).numpy(), EMB_ATOL)
    assert "CLS" in enc.spec.extra["embedding"] and enc.spec.extra["crop_offset"] == "floor"
    assert enc.spec.mean == (0.5307,) * 3 and enc.spec.size == 518 and enc.spec.extra["resample"] == "bicubic"


def test_hf_crop_offsets_differ_from_torchvision_rounding(rad_dino_dir, nih_images):
    """Why the spec records crop_offset: on the odd case, torchvision's rounding is one row off HF."""
    import dataclasses

    from radlens.encoders.upstream import pil_preprocess

    enc = get("rad-dino", weights=rad_dino_dir)
    im = nih_images[-1]
    rounded = dataclasses.replace(enc.spec, extra={**enc.spec.extra, "crop_offset": "round"})
    ref = _upstream_pixels(_upstream_processor(rad_dino_dir), [im])[0].numpy()
    assert np.abs(pil_preprocess(im, enc.spec) - ref).max() <= PRE_ATOL
    assert np.abs(pil_preprocess(im, rounded) - ref).max() > 0.1
    assert rounded.hash != enc.spec.hash


def test_rad_dino_ids_follow_weights_and_processor_config(rad_dino_dir, tmp_path):
    a = get("rad-dino", weights=rad_dino_dir)
    assert get("rad-dino", weights=rad_dino_dir).encoder_id == a.encoder_id  # stable across loads
    assert a.encoder_id.startswith("rad-dino@")
    other = tmp_path / "other-weights"
    _tiny_rad_dino(other, seed=1)
    b = get("rad-dino", weights=other)
    assert b.encoder_id != a.encoder_id and b.preprocess_hash == a.preprocess_hash
    cfg = tmp_path / "other-processor"
    _tiny_rad_dino(cfg, seed=0, processor={**RAD_DINO_PROCESSOR, "image_mean": [0.5, 0.5, 0.5]})
    c = get("rad-dino", weights=cfg)
    assert c.encoder_id == a.encoder_id and c.preprocess_hash != a.preprocess_hash
    assert get("rad-dino-patch-mean", weights=rad_dino_dir).preprocess_hash != a.preprocess_hash


def test_rad_dino_missing_files_are_named(tmp_path):
    with pytest.raises(MissingWeightsError, match=r"model\.safetensors.*microsoft/rad-dino"):
        get("rad-dino", weights=tmp_path)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(MissingWeightsError, match="preprocessor_config.json"):
        get("rad-dino", weights=tmp_path)
    with pytest.raises(MissingWeightsError, match="--weights"):
        get("rad-dino")


def test_allow_download_goes_through_huggingface_hub(rad_dino_dir, monkeypatch):
    import huggingface_hub

    calls = []
    monkeypatch.setattr(huggingface_hub, "snapshot_download",
                        lambda repo_id, **kw: calls.append(repo_id) or str(rad_dino_dir))
    get("rad-dino", weights=rad_dino_dir, allow_download=True)  # a local path wins: nothing fetched
    assert calls == []
    enc = get("rad-dino", allow_download=True)
    assert calls == ["microsoft/rad-dino"] and enc.encoder_id == get("rad-dino", weights=rad_dino_dir).encoder_id


def test_wrong_architecture_and_random_weights_are_refused(rad_dino_dir, tmp_path):
    with pytest.raises(ValueError, match="model_type='dinov2'"):
        get("medsiglip", weights=_medsiglip_like_without_weights(rad_dino_dir, tmp_path))
    # a folder whose weights lack tensors the model needs is refused, not silently random-initialised
    from safetensors.torch import load_file, save_file

    broken = tmp_path / "broken"
    _tiny_rad_dino(broken)
    sd = load_file(str(broken / "model.safetensors"))
    sd = {k: v for k, v in sd.items() if "layernorm" not in k or "encoder" in k}
    save_file(sd, str(broken / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ValueError, match="missing"):
        get("rad-dino", weights=broken)


def _medsiglip_like_without_weights(src, tmp_path):
    import shutil

    dst = tmp_path / "dino-as-siglip"
    shutil.copytree(src, dst)
    (dst / "tokenizer_config.json").write_text("{}")
    (dst / "tokenizer.json").write_text("{}")
    return dst


# ---------------------------------------------------------------- medsiglip

def _tiny_sentencepiece(folder):
    """A SiglipTokenizer built offline: a 64-piece unigram SentencePiece model trained on a few phrases."""
    spm = pytest.importorskip("sentencepiece")
    pytest.importorskip("google.protobuf")
    text = ["pleural effusion", "cardiomegaly", "a chest x-ray showing pneumonia", "no finding",
            "atelectasis and edema", "nodule mass hernia pneumothorax", "consolidation infiltration"] * 20
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(text), model_writer=buf, vocab_size=64,
                                   model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
                                   hard_vocab_limit=False, minloglevel=2)
    (folder / "spiece.model").write_bytes(buf.getvalue())
    tok = transformers.SiglipTokenizer(vocab_file=str(folder / "spiece.model"), model_max_length=64)
    (folder / "spiece.model").unlink()
    tok.save_pretrained(folder)
    return tok


@pytest.fixture(scope="module")
def medsiglip_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("medsiglip")
    tok = _tiny_sentencepiece(folder)
    torch.manual_seed(0)
    small = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
    cfg = transformers.SiglipConfig(
        text_config=dict(small, vocab_size=len(tok), max_position_embeddings=64, pad_token_id=tok.pad_token_id,
                         eos_token_id=tok.eos_token_id, bos_token_id=None),
        vision_config=dict(small, image_size=448, patch_size=16))
    model = transformers.SiglipModel(cfg).eval()
    with torch.no_grad():  # SigLIP's usual init (scale log 10, bias -10) saturates; keep probabilities readable
        model.logit_scale.fill_(math.log(4.0))
        model.logit_bias.fill_(-0.5)
    model.save_pretrained(folder)
    _save_processor(folder, MEDSIGLIP_PROCESSOR)
    return folder


def test_medsiglip_image_embedding_matches_upstream(medsiglip_dir, nih_images):
    enc = get("medsiglip", weights=medsiglip_dir, threads=1)
    proc = _upstream_processor(medsiglip_dir)
    _compare_preprocessing(enc, proc, nih_images)
    emb = enc.embed(nih_images)
    assert emb.shape == (len(nih_images), 32) == (len(nih_images), enc.embedding_dim)
    upstream = transformers.SiglipModel.from_pretrained(str(medsiglip_dir), local_files_only=True).eval()
    with torch.no_grad():
        ref = upstream.get_image_features(pixel_values=_upstream_pixels(proc, nih_images))
    ref = ref if isinstance(ref, torch.Tensor) else ref.pooler_output
    _assert_close('medsiglip image vs get_image_features', emb, ref.numpy(), EMB_ATOL)
    assert enc.spec.size == 448 and enc.spec.extra["resize_to"] == "square" and enc.spec.extra["crop"] is None
    assert enc.spec.extra["resample"] == "bilinear" and enc.spec.mean == (0.5,) * 3


def test_medsiglip_zero_shot_matches_upstream_logits(medsiglip_dir, nih_images):
    enc = get("medsiglip", weights=medsiglip_dir)
    zs = enc.zero_shot
    assert zs["activation"] == "sigmoid" and zs["prompt_template"] == "a chest X-ray showing {}"
    assert zs["logit_scale"] == pytest.approx(4.0, rel=1e-6) and zs["logit_bias"] == pytest.approx(-0.5, rel=1e-6)
    labels = ["pleural effusion", "cardiomegaly", "no finding"]
    texts = [zs["prompt_template"].format(lab) for lab in labels]
    txt = enc.embed_text(texts)
    assert txt.shape == (3, enc.embedding_dim) and enc.embed_text([]).shape == (0, enc.embedding_dim)

    upstream = transformers.SiglipModel.from_pretrained(str(medsiglip_dir), local_files_only=True).eval()
    tok = transformers.AutoTokenizer.from_pretrained(str(medsiglip_dir), local_files_only=True)
    # padding="max_length" as the SigLIP docs prescribe; input_ids only, as Google's MedSigLIP serving code
    ids = tok(texts, padding="max_length", return_tensors="pt")["input_ids"]
    assert ids.shape == (3, 64)
    with torch.no_grad():
        ref_txt = upstream.get_text_features(input_ids=ids)
        ref_txt = ref_txt if isinstance(ref_txt, torch.Tensor) else ref_txt.pooler_output
        out = upstream(input_ids=ids, pixel_values=_upstream_pixels(_upstream_processor(medsiglip_dir),
                                                                                  nih_images))
    _assert_close('medsiglip embed_text vs get_text_features', txt, ref_txt.numpy(), EMB_ATOL)

    # what `radlens zeroshot` computes from this interface: sigmoid(logit_scale * cos + logit_bias)
    img = enc.embed(nih_images)
    cos = (img / np.linalg.norm(img, axis=1, keepdims=True)) @ (txt / np.linalg.norm(txt, axis=1, keepdims=True)).T
    probs = 1 / (1 + np.exp(-(zs["logit_scale"] * cos + zs["logit_bias"])))
    ref_probs = torch.sigmoid(out.logits_per_image).numpy()
    assert probs.shape == ref_probs.shape == (len(nih_images), 3)
    _assert_close('medsiglip zero-shot probs vs sigmoid(logits_per_image)', probs, ref_probs, 1e-5)


def test_medsiglip_missing_files_are_named(tmp_path):
    with pytest.raises(MissingWeightsError, match=r"tokenizer_config\.json.*google/medsiglip-448"):
        get("medsiglip", weights=tmp_path)
    with pytest.raises(MissingWeightsError, match=r"spiece\.model or tokenizer\.json"):
        get("medsiglip", weights=tmp_path)


# ---------------------------------------------------------------- hf:<folder>

def test_hf_generic_uses_pooler_output_or_cls_and_says_which(tmp_path, nih_images, rad_dino_dir):
    torch.manual_seed(0)
    cfg = transformers.ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                 image_size=224, patch_size=16)
    vit = transformers.ViTModel(cfg).eval()
    vit.save_pretrained(tmp_path / "vit")
    _save_processor(tmp_path / "vit", VIT_PROCESSOR)
    enc = get(f"hf:{tmp_path / 'vit'}")
    proc = _upstream_processor(tmp_path / "vit")
    _compare_preprocessing(enc, proc, nih_images)
    with torch.no_grad():
        ref = vit(pixel_values=_upstream_pixels(proc, nih_images))
    _assert_close('hf:vit vs pooler_output', enc.embed(nih_images), ref.pooler_output.numpy(), EMB_ATOL)
    assert enc.spec.extra["embedding"].startswith("ViTModel pooler_output") and enc.encoder_id.startswith("hf:vit@")
    assert get("hf:vit", weights=tmp_path / "vit").encoder_id == enc.encoder_id  # the id names bytes, not paths

    # a folder saved from ViTForImageClassification has no pooler weights: CLS, never a random pooler
    clf_cfg = transformers.ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                     image_size=224, patch_size=16, num_labels=3)
    clf = transformers.ViTForImageClassification(clf_cfg).eval()
    clf.save_pretrained(tmp_path / "vit-clf")
    _save_processor(tmp_path / "vit-clf", VIT_PROCESSOR)
    enc2 = get(f"hf:{tmp_path / 'vit-clf'}")
    with torch.no_grad():
        ref2 = clf.vit(pixel_values=_upstream_pixels(proc, nih_images)).last_hidden_state[:, 0]
    _assert_close('hf:vit-clf vs CLS', enc2.embed(nih_images), ref2.numpy(), EMB_ATOL)
    assert "CLS" in enc2.spec.extra["embedding"] and "no pooler weights" in enc2.spec.extra["embedding"]

    # the rad-dino folder through the generic path gives the same vectors (DINOv2's pooler_output is its CLS)
    _assert_close("hf:<rad-dino folder> vs rad-dino", get(f"hf:{rad_dino_dir}").embed(nih_images[:1]),
                  get("rad-dino", weights=rad_dino_dir).embed(nih_images[:1]), 1e-6)


def test_hf_generic_refuses_processors_it_cannot_reproduce_and_names_missing_files(tmp_path):
    with pytest.raises(MissingWeightsError, match="does not exist"):
        get(f"hf:{tmp_path / 'nope'}")
    torch.manual_seed(0)
    cfg = transformers.ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                                 image_size=224, patch_size=16)
    transformers.ViTModel(cfg).save_pretrained(tmp_path / "m")
    with pytest.raises(MissingWeightsError, match="preprocessor_config.json"):
        get(f"hf:{tmp_path / 'm'}")
    _save_processor(tmp_path / "m", {"image_processor_type": "ConvNextImageProcessor", "size": {"shortest_edge": 224},
                                     "crop_pct": 0.875})
    with pytest.raises(ValueError, match="ConvNextImageProcessor.*own pipeline"):
        get(f"hf:{tmp_path / 'm'}")


# ---------------------------------------------------------------- med-flamingo

def _openflamingo_perceiver_state(dim, depth=2, heads=2, dim_head=64, num_latents=64, ff_mult=4):
    """Random tensors under OpenFlamingo's PerceiverResampler key names (open_flamingo/src/helpers.py),
    written out by hand — not produced by radlens's module."""
    g = torch.Generator().manual_seed(0)
    inner, ff = heads * dim_head, ff_mult * dim
    r = lambda *s: torch.randn(*s, generator=g) * 0.2  # noqa: E731
    sd = {"perceiver.latents": r(num_latents, dim), "perceiver.norm.weight": 1 + r(dim), "perceiver.norm.bias": r(dim)}
    for i in range(depth):
        p = f"perceiver.layers.{i}"
        sd.update({f"{p}.0.norm_media.weight": 1 + r(dim), f"{p}.0.norm_media.bias": r(dim),
                   f"{p}.0.norm_latents.weight": 1 + r(dim), f"{p}.0.norm_latents.bias": r(dim),
                   f"{p}.0.to_q.weight": r(inner, dim), f"{p}.0.to_kv.weight": r(2 * inner, dim),
                   f"{p}.0.to_out.weight": r(dim, inner),
                   f"{p}.1.0.weight": 1 + r(dim), f"{p}.1.0.bias": r(dim),
                   f"{p}.1.1.weight": r(ff, dim), f"{p}.1.3.weight": r(dim, ff)})
    return sd


def _reference_perceiver(sd, x, heads):
    """The resampler written functionally from the Flamingo/OpenFlamingo definition with torch's SDPA."""
    F = torch.nn.functional
    d = x.shape[-1]
    ln = lambda t, k: F.layer_norm(t, (d,), sd[f"{k}.weight"], sd[f"{k}.bias"])  # noqa: E731
    lat = sd["perceiver.latents"].expand(x.shape[0], -1, -1)
    depth = len({k.split(".")[2] for k in sd if k.startswith("perceiver.layers.")})
    for i in range(depth):
        p = f"perceiver.layers.{i}"
        xm, lm = ln(x, f"{p}.0.norm_media"), ln(lat, f"{p}.0.norm_latents")
        q = lm @ sd[f"{p}.0.to_q.weight"].T
        k, v = (torch.cat([xm, lm], 1) @ sd[f"{p}.0.to_kv.weight"].T).chunk(2, -1)
        split = lambda t: t.unflatten(-1, (heads, -1)).transpose(1, 2)  # noqa: E731
        a = F.scaled_dot_product_attention(split(q), split(k), split(v)).transpose(1, 2).flatten(2)
        lat = a @ sd[f"{p}.0.to_out.weight"].T + lat
        h = F.gelu(ln(lat, f"{p}.1.0") @ sd[f"{p}.1.1.weight"].T)
        lat = h @ sd[f"{p}.1.3.weight"].T + lat
    return ln(lat, "perceiver.norm")


@pytest.fixture(scope="module")
def med_flamingo_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("med-flamingo")
    torch.manual_seed(0)
    cfg = transformers.CLIPConfig(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=224, patch_size=14, hidden_act="quick_gelu"),
        text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                         vocab_size=100),
        projection_dim=16)
    clip = transformers.CLIPModel(cfg)
    with torch.no_grad():  # a trained ln_post is not the identity; make it matter for the pre-/post-ln choice
        clip.vision_model.post_layernorm.weight.normal_(1.0, 0.5)
        clip.vision_model.post_layernorm.bias.normal_(0.0, 0.5)
    clip.save_pretrained(folder / "clip-vit-large-patch14")  # a full CLIPModel folder (vision + text)
    _save_processor(folder / "clip-vit-large-patch14", CLIP_L14_PROCESSOR)
    sd = _openflamingo_perceiver_state(32)
    g = torch.Generator().manual_seed(1)  # the LM cross-attention layers the checkpoint also holds
    sd["lang_encoder.gated_cross_attn_layers.0.attn_gate"] = torch.zeros(1)
    sd["lang_encoder.gated_cross_attn_layers.0.attn.to_q.weight"] = torch.randn(8, 8, generator=g)
    torch.save(sd, folder / "model.pt")
    return folder


def test_med_flamingo_loads_openflamingo_keys_strictly_and_matches(med_flamingo_dir, nih_images):
    enc = get("med-flamingo", weights=med_flamingo_dir, threads=1)
    sd = torch.load(med_flamingo_dir / "model.pt", weights_only=True)
    perceiver_keys = {k[len("perceiver."):] for k in sd if k.startswith("perceiver.")}
    assert set(enc.perceiver.state_dict()) == perceiver_keys  # every checkpoint tensor used, every parameter set
    for k in perceiver_keys:
        assert torch.equal(enc.perceiver.state_dict()[k], sd[f"perceiver.{k}"])

    square = nih_images[:3]  # HF's CLIP processor floors crop offsets, open_clip rounds: same on square images
    proc = _upstream_processor(med_flamingo_dir / "clip-vit-large-patch14")
    _compare_preprocessing(enc, proc, square)
    assert enc.spec.extra["crop_offset"] == "round" and enc.spec.mean == tuple(CLIP_L14_PROCESSOR["image_mean"])

    emb = enc.embed(nih_images)
    assert emb.shape == (len(nih_images), 32) and np.isfinite(emb).all()
    vision = transformers.CLIPVisionModel.from_pretrained(str(med_flamingo_dir / "clip-vit-large-patch14"),
                                                          local_files_only=True).eval()
    with torch.no_grad():
        tokens = vision(pixel_values=_upstream_pixels(proc, square)).last_hidden_state[:, 1:]  # open_clip [1]
        lat = _reference_perceiver(sd, tokens, heads=2)
        ours = enc.latents(torch.from_numpy(np.stack([enc.preprocess(im) for im in square])))
    assert lat.shape == ours.shape == (3, 64, 32)
    _assert_close('med-flamingo latents vs reference perceiver', ours.numpy(), lat.numpy(), EMB_ATOL)
    _assert_close('med-flamingo embedding vs mean of reference latents', emb[:3], lat.mean(1).numpy(), EMB_ATOL)
    assert "64 Perceiver-resampler latents" in enc.spec.extra["embedding"]
    post = get("med-flamingo", weights=med_flamingo_dir, vision_tokens="post-ln")
    assert post.preprocess_hash != enc.preprocess_hash and np.abs(post.embed(square) - emb[:3]).max() > 1e-3


def test_med_flamingo_refuses_non_openflamingo_checkpoints(med_flamingo_dir, tmp_path):
    import shutil

    from safetensors.torch import save_file

    folder = tmp_path / "mf"
    shutil.copytree(med_flamingo_dir / "clip-vit-large-patch14", folder / "clip-vit-large-patch14")
    sd = _openflamingo_perceiver_state(32)
    save_file({**sd, "perceiver.layers.0.0.extra.weight": torch.zeros(2)}, str(folder / "model.safetensors"))
    with pytest.raises(ValueError, match="extra"):
        get("med-flamingo", weights=folder)
    save_file({k: v for k, v in sd.items() if k != "perceiver.layers.1.0.to_out.weight"},
              str(folder / "model.safetensors"))
    with pytest.raises(ValueError, match="to_out"):
        get("med-flamingo", weights=folder)
    save_file(sd, str(folder / "model.safetensors"))  # safetensors checkpoints load too
    assert get("med-flamingo", weights=folder).embedding_dim == 32
    save_file({"lang_encoder.x": torch.zeros(1)}, str(folder / "model.safetensors"))
    with pytest.raises(ValueError, match="no perceiver"):
        get("med-flamingo", weights=folder)


def test_med_flamingo_missing_files_are_named(tmp_path):
    with pytest.raises(MissingWeightsError, match=r"clip-vit-large-patch14/config\.json.*model\.pt.*"
                                                  r"openai/clip-vit-large-patch14.*med-flamingo/med-flamingo"):
        get("med-flamingo", weights=tmp_path)
