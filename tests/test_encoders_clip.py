"""biomedclip, medimageinsight, cxr-foundation: tiny random-weight models of the same architecture, saved in
the upstream on-disk layout, loaded through `radlens.encoders.get(name, weights=folder)`, on real NIH images.

Where each runs: biomedclip and the timm cross-check of medimageinsight need open_clip/timm (torchvision) and are
marked zoo_vision (.venv-zoo); the medimageinsight loader and the cxr-foundation encoding run in the main venv;
the cxr-foundation models need TensorFlow (`radlens[cxr-foundation]`) and skip without it.
Tolerances: preprocessing vs the upstream transform 1e-5 (both float32 from the same 8-bit Pillow image);
embeddings vs the upstream model 1e-4 (float32, different op order).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import run_cli
from radlens.encoders import get
from radlens.encoders.upstream import MissingWeightsError, pil_image

PRE_TOL, EMB_TOL = 1e-5, 1e-4


@pytest.fixture(scope="module")
def nih_pixels(nih_dir):
    from radlens.io import load_image

    man = pd.read_csv(nih_dir / "manifest.csv")
    return [load_image(nih_dir / p).pixels for p in man.path.head(3)]


def _small_manifest(nih_dir: Path, out: Path, n: int) -> Path:
    man = pd.read_csv(nih_dir / "manifest.csv", dtype={"patient_id": str}).head(n)
    man = man.assign(path=[str(nih_dir / p) for p in man.path])
    man.to_csv(out, index=False)
    return out


# ---------------------------------------------------------------- biomedclip (open_clip)

BERT_HUB_ID = "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract"
OPENAI_MEAN, OPENAI_STD = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]


def make_biomedclip_folder(root: Path, with_bert_config: bool = True):
    """BiomedCLIP's layout and config shape (timm ViT/16 image tower, HF BERT text tower with MLP projection and
    CLS pooling) at tiny size: vit_tiny_patch16_224 and a 2-layer BERT. Returns (folder, open_clip model)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    open_clip = pytest.importorskip("open_clip")
    from transformers import BertConfig, BertTokenizer

    bert = root / "bert-build"
    BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
               max_position_embeddings=64).save_pretrained(bert)
    mcfg = {"embed_dim": 16,
            "vision_cfg": {"timm_model_name": "vit_tiny_patch16_224", "timm_model_pretrained": False, "timm_pool": "",
                           "timm_proj": "linear", "image_size": 224},
            "text_cfg": {"hf_model_name": str(bert), "hf_tokenizer_name": str(bert), "hf_proj_type": "mlp",
                         "hf_pooler_type": "cls_last_hidden_state_pooler", "context_length": 64}}
    build = root / "build"
    build.mkdir()
    (build / "open_clip_config.json").write_text(json.dumps({"model_cfg": mcfg}))
    torch.manual_seed(0)
    model = open_clip.create_model(f"local-dir:{build}", pretrained_text=False).eval()
    with torch.no_grad():
        model.logit_scale.fill_(3.0)
    folder = root / "BiomedCLIP"
    folder.mkdir()
    torch.save(model.state_dict(), folder / "open_clip_pytorch_model.bin")
    mcfg["text_cfg"]["hf_model_name"] = mcfg["text_cfg"]["hf_tokenizer_name"] = BERT_HUB_ID  # as released
    (folder / "open_clip_config.json").write_text(json.dumps(
        {"model_cfg": mcfg, "preprocess_cfg": {"mean": OPENAI_MEAN, "std": OPENAI_STD}}))
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list("abcdefghijklmnopqrstuvwxyz") + \
        ["this", "is", "a", "photo", "of", "pleural", "effusion", "no", "finding", "chest"]
    (root / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizer(str(root / "vocab.txt")).save_pretrained(folder)
    if with_bert_config:
        (folder / "config.json").write_text((bert / "config.json").read_text())
    return folder, model


@pytest.mark.zoo_vision
def test_biomedclip_matches_open_clip_preprocessing_image_and_text(tmp_path, nih_pixels):
    folder, model = make_biomedclip_folder(tmp_path)
    import open_clip
    from open_clip.transform import PreprocessCfg, image_transform_v2

    enc = get("biomedclip", weights=folder)
    assert enc.embedding_dim == 16 and enc.spec.size == 224 and enc.spec.mean == tuple(OPENAI_MEAN)
    assert enc.spec.extra["resize_to"] == "shortest_edge" and enc.spec.extra["resample"] == "bicubic"
    upstream = image_transform_v2(PreprocessCfg(**model.visual.preprocess_cfg), is_train=False)
    ref = torch.stack([upstream(pil_image(p)) for p in nih_pixels])
    mine = np.stack([enc.preprocess(p) for p in nih_pixels])
    assert np.abs(mine - ref.numpy()).max() < PRE_TOL
    with torch.no_grad():
        e_ref = model.encode_image(ref).numpy()
    e = enc.embed(nih_pixels)
    assert e.shape == (3, 16) and e.dtype == np.float32
    assert np.abs(e - e_ref).max() < EMB_TOL
    texts = ["this is a photo of pleural effusion", "this is a photo of no finding"]
    tok = open_clip.get_tokenizer(f"local-dir:{folder}")
    with torch.no_grad():
        t_ref = model.encode_text(tok(texts)).numpy()
    assert np.abs(enc.embed_text(texts) - t_ref).max() < EMB_TOL
    assert enc.zero_shot == {"logit_scale": pytest.approx(float(np.exp(3.0))), "logit_bias": None,
                             "activation": "softmax", "prompt_template": "this is a photo of {}"}
    assert "config.json" in enc.text_config_source


@pytest.mark.zoo_vision
def test_biomedclip_without_a_bert_config_derives_it_and_image_embeddings_do_not_change(tmp_path, nih_pixels):
    folder, model = make_biomedclip_folder(tmp_path, with_bert_config=False)
    enc = get("biomedclip", weights=folder)
    assert "derived" in enc.text_config_source
    with torch.no_grad():
        e_ref = model.encode_image(torch.from_numpy(np.stack([enc.preprocess(p) for p in nih_pixels]))).numpy()
    assert np.abs(enc.embed(nih_pixels) - e_ref).max() < EMB_TOL


@pytest.mark.zoo_vision
def test_biomedclip_cli_zeroshot_and_compare_row_with_two_encoders(tmp_path, nih_dir):
    folder, _ = make_biomedclip_folder(tmp_path)
    manifest = _small_manifest(nih_dir, tmp_path / "manifest.csv", 60)
    preds = tmp_path / "zs.csv"
    proc = run_cli("zeroshot", str(manifest), "--encoder", "biomedclip", "--weights", str(folder), "--labels",
                   "Effusion=pleural effusion,No Finding=no finding", "--out", str(preds))
    df = pd.read_csv(preds)
    assert len(df) == 60 and {"p_Effusion", "p_No_Finding"} <= set(df.columns)
    np.testing.assert_allclose(df.p_Effusion + df.p_No_Finding, 1.0, atol=1e-6)
    summary = json.loads(preds.with_suffix(".summary.json").read_text())
    assert summary["labels"][0]["prompt"] == "this is a photo of pleural effusion"
    assert summary["evaluation"]["per_label"]["No Finding"]["auc"] is not None and "AUC" in proc.stdout
    run_cli("embed", str(manifest), "--encoder", "biomedclip", "--weights", str(folder), "--out", str(tmp_path / "bmc"))
    run_cli("embed", str(manifest), "--out", str(tmp_path / "cxr"))
    out = tmp_path / "cmp"
    run_cli("compare", str(tmp_path / "bmc"), str(tmp_path / "cxr"), "--out", str(out), "--adapters", "logreg",
            "--label-column", "view", "--task-kind", "multiclass", "--n-boot", "50", "--inner", "1",
            "--zeroshot", f"biomedclip={folder}", "--zeroshot-prompts",
            "AP=an anteroposterior chest radiograph,PA=a posteroanterior chest radiograph")
    res = json.loads((out / "results.json").read_text())
    rows = {(r["encoder"], r["adapter"]) for r in res["rows"]}
    assert rows == {("biomedclip", "logreg"), ("radlens-cxr", "logreg"), ("metadata-only", "logreg"),
                    ("biomedclip zero-shot", "zero-shot")}
    zs = res["meta"]["zero_shot"]["biomedclip zero-shot"]
    assert zs["embeddings"].startswith("store") and zs["prompts"]["view"]["PA"] == \
        "this is a photo of a posteroanterior chest radiograph"


def test_biomedclip_missing_weights_name_the_files(tmp_path):
    with pytest.raises(MissingWeightsError, match="open_clip_config.json"):
        get("biomedclip", weights=tmp_path / "nowhere")
    (tmp_path / "open_clip_config.json").write_text("{}")
    with pytest.raises(MissingWeightsError, match="open_clip_pytorch_model.bin") as e:
        get("biomedclip", weights=tmp_path)
    assert "microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224" in str(e.value)


# ---------------------------------------------------------------- medimageinsight (UniCL / DaViT)

MII_SPEC = {"DROP_RATE": 0.1, "DROP_PATH_RATE": 0.2, "PATCH_SIZE": [7, 3, 3, 3], "PATCH_STRIDE": [4, 2, 2, 2],
            "PATCH_PADDING": [3, 1, 1, 1], "PATCH_PRENORM": [False, True, True, True], "DIM_EMBED": [16, 32, 64, 128],
            "NUM_HEADS": [2, 2, 4, 4], "NUM_GROUPS": [2, 2, 4, 4], "DEPTHS": [1, 1, 2, 1], "WINDOW_SIZE": 12,
            "ENABLE_CHECKPOINT": True}
MII_CONFIG = {"IMAGE_ENCODER": {"NAME": "davit_v1", "NUM_CLASSES": 0, "IMAGE_SIZE": [480, 480],
                                "IMAGE_MEAN": [0.485, 0.456, 0.406], "IMAGE_STD": [0.229, 0.224, 0.225], "SPEC": MII_SPEC},
              "LANG_ENCODER": {"NAME": "transformer", "TOKENIZER": "clip", "CONTEXT_LENGTH": 77, "WIDTH": 32, "HEADS": 2,
                               "LAYERS": 2, "AUTOGRESSIVE": False},
              "UNICL_MODEL": {"DIM_PROJECTION": 24}, "AUG": {"INTERPOLATION": "bicubic"},
              "TEST": {"CENTER_CROP": False}}


def _clip_tokenizer_files(tdir: Path) -> int:
    """A minimal byte-level CLIP BPE vocabulary (every byte as a word-final and inner token, no merges); the
    special tokens come last so that end-of-text has the largest id, as in CLIP's own vocabulary."""
    # GPT-2/CLIP byte → unicode table: printable bytes map to themselves, the rest to 256 + n
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    chars = [chr(c) for c in cs]
    vocab = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    tdir.mkdir(parents=True)
    (tdir / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (tdir / "merges.txt").write_text("#version: 0.2\n")
    (tdir / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "CLIPTokenizer", "model_max_length": 77,
                                                            "do_lower_case": True, "pad_token": "<|endoftext|>"}))
    return len(vocab)


def make_mii_folder(root: Path, legacy_names: bool = False):
    """The released layout (config.yaml, vision_model/medimageinsigt-v1.0.0.pt as safetensors, the CLIP tokenizer
    folder) with a tiny random UniCL. `legacy_names`: the older key names upstream converts on load."""
    yaml = pytest.importorskip("yaml")  # config.yaml; PyYAML comes with radlens[hf]
    from safetensors.torch import save_file

    from radlens.encoders.medimageinsight import build_model

    folder = root / "2024.09.27"
    (folder / "vision_model").mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(MII_CONFIG))
    n_vocab = 514
    if _has_transformers():
        n_vocab = _clip_tokenizer_files(folder / "language_model" / "clip_tokenizer_4.16.2")
    shape_state = {"lang_encoder.token_embedding.weight": torch.zeros(n_vocab, 32)}
    torch.manual_seed(0)
    model = build_model(MII_CONFIG, shape_state).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2)
        model.logit_scale.fill_(2.5)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if legacy_names:
        legacy = {}
        for k, v in state.items():
            k = k.replace("image_encoder.", "visual.").replace("lang_encoder.", "text.")
            k = {"image_projection": "vision_projection", "lang_projection": "text_projection"}.get(k, k)
            k = k.replace("visual.convs", "visual.conv_embeds").replace("visual.blocks", "visual.main_blocks")
            k = k.replace("spatial_block.window_attn.fn", "0.attn").replace("channel_block.channel_attn.fn", "1.attn")
            legacy[k] = v
        state = legacy
    save_file(state, str(folder / "vision_model" / "medimageinsigt-v1.0.0.pt"))
    return folder, model


def _has_transformers() -> bool:
    try:
        import transformers  # noqa: F401
    except ImportError:
        return False
    return True


def _mii_reference(model, pixels: list[np.ndarray]) -> torch.Tensor:
    """Upstream's evaluation transform for this config (Resize((480, 480), bicubic) on the RGB image, ToTensor,
    Normalize) written out with Pillow and numpy, as torchvision does it on PIL images."""
    from PIL import Image

    out = []
    for p in pixels:
        im = pil_image(p).resize((480, 480), Image.Resampling.BICUBIC)
        a = np.asarray(im, dtype=np.float32) / 255.0
        a = (a - np.array([0.485, 0.456, 0.406], np.float32)) / np.array([0.229, 0.224, 0.225], np.float32)
        out.append(torch.from_numpy(a.transpose(2, 0, 1).copy()))
    return torch.stack(out)


@pytest.mark.parametrize("legacy", [False, True])
def test_medimageinsight_loads_the_released_layout_and_embeds(tmp_path, nih_pixels, legacy):
    folder, model = make_mii_folder(tmp_path, legacy_names=legacy)
    enc = get("medimageinsight", weights=folder)
    assert enc.spec.size == 480 and enc.spec.extra["resize_to"] == "square" and enc.embedding_dim == 24
    ref = _mii_reference(model, nih_pixels)
    assert np.abs(np.stack([enc.preprocess(p) for p in nih_pixels]) - ref.numpy()).max() < PRE_TOL
    e = enc.embed(nih_pixels)
    with torch.no_grad():
        e_ref = model.encode_image(ref).numpy()
    assert e.shape == (3, 24) and np.allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    assert np.abs(e - e_ref).max() < EMB_TOL
    assert enc.zero_shot["logit_scale"] == pytest.approx(float(np.exp(2.5)))


def test_medimageinsight_text_tower_pools_end_of_text_and_ignores_padding(tmp_path):
    pytest.importorskip("transformers")
    folder, model = make_mii_folder(tmp_path)
    enc = get("medimageinsight", weights=folder)
    one = enc.embed_text(["pleural effusion"])
    two = enc.embed_text(["pleural effusion", "a much longer description of a chest radiograph with a mass"])
    assert one.shape == (1, 24) and np.allclose(np.linalg.norm(two, axis=1), 1.0, atol=1e-5)
    assert np.abs(one[0] - two[0]).max() < 1e-5  # padding is masked: batch-mates do not change a text's embedding
    tok = enc.tokenizer()(["pleural effusion"], padding="max_length", max_length=77, return_tensors="pt")
    eot = int(tok["input_ids"][0].argmax())
    assert tok["input_ids"][0, eot] == enc.tokenizer().eos_token_id and tok["attention_mask"][0, eot + 1:].sum() == 0


def test_medimageinsight_missing_or_mismatched_files_are_named(tmp_path):
    yaml = pytest.importorskip("yaml")

    with pytest.raises(MissingWeightsError, match="config.yaml"):
        get("medimageinsight", weights=tmp_path / "nowhere")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(MII_CONFIG))
    with pytest.raises(MissingWeightsError, match="vision_model/medimageinsigt-v1.0.0.pt"):
        get("medimageinsight", weights=tmp_path)
    folder, _ = make_mii_folder(tmp_path / "other")
    cfg = {**MII_CONFIG, "UNICL_MODEL": {"DIM_PROJECTION": 32}}
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(ValueError, match="image_projection"):
        get("medimageinsight", weights=folder)


@pytest.mark.zoo_vision
def test_medimageinsight_davit_matches_timm_davit(tmp_path):
    """timm's DaViT (`davit_*_fl`: channel attention v2, 3x3 downsampling) is an independent implementation of the
    same architecture; timm's own converter maps the upstream (Florence/MSFT) key layout onto it, strictly."""
    pytest.importorskip("timm")
    from timm.models.davit import DaVit, checkpoint_filter_fn

    folder, model = make_mii_folder(tmp_path)
    davit = get("medimageinsight", weights=folder).model.image_encoder
    ref = DaVit(depths=tuple(MII_SPEC["DEPTHS"]), embed_dims=tuple(MII_SPEC["DIM_EMBED"]),
                num_heads=tuple(MII_SPEC["NUM_HEADS"]), window_size=12, down_kernel_size=3, channel_attn_v2=True,
                named_blocks=True, num_classes=0).eval()
    conv = checkpoint_filter_fn({"vision_tower." + k: v for k, v in davit.state_dict().items()}, ref)
    ref.load_state_dict({k.replace("norms.", "head.norm."): v for k, v in conv.items()}, strict=True)
    x = torch.randn(2, 3, 480, 480)
    with torch.no_grad():
        assert (davit.forward_features(x) - ref.forward_head(ref.forward_features(x), pre_logits=True)).abs().max() < EMB_TOL
        y = torch.randn(1, 3, 200, 328)  # sizes that need window padding at every stage
        assert (davit.forward_features(y) - ref.forward_head(ref.forward_features(y), pre_logits=True)).abs().max() < EMB_TOL


@pytest.mark.zoo_vision
def test_medimageinsight_preprocessing_matches_torchvision(tmp_path, nih_pixels):
    T = pytest.importorskip("torchvision.transforms")
    folder, _ = make_mii_folder(tmp_path)
    enc = get("medimageinsight", weights=folder)
    upstream = T.Compose([T.Resize((480, 480), interpolation=T.InterpolationMode.BICUBIC), T.ToTensor(),
                          T.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])])
    for p in nih_pixels:
        assert np.abs(enc.preprocess(p) - upstream(pil_image(p)).numpy()).max() < PRE_TOL


# ---------------------------------------------------------------- cxr-foundation (TensorFlow SavedModels)

def test_cxr_foundation_png_encoding_follows_the_notebook(nih_pixels):
    import io

    from PIL import Image

    from radlens.encoders.cxr_foundation import encode_png, png_array

    p = nih_pixels[0]
    a = png_array(p)  # NIH PNGs are 8-bit: the uint8 branch, minimum shifted to 0
    u8 = np.round(p * 255).astype(np.uint8)
    assert a.dtype == np.uint8 and np.array_equal(a, u8 - u8.min())
    q = np.clip(p + 1e-4, 0, 1).astype(np.float32)  # off the 8-bit grid: the 16-bit branch, stretched to 65535
    b = png_array(q)
    ref = q - q.min()
    ref *= 65535 / ref.max()
    assert b.dtype == np.uint16 and b.min() == 0 and b.max() >= 65534 and np.array_equal(b, ref.astype(np.uint16))
    for arr in (a, b):
        back = np.asarray(Image.open(io.BytesIO(encode_png(arr))))
        assert np.array_equal(back, arr)  # lossless: the model decodes exactly these pixels


def test_cxr_foundation_missing_files_are_named(tmp_path):
    with pytest.raises(MissingWeightsError, match="elixr-c-v2-pooled/saved_model.pb") as e:
        get("cxr-foundation", weights=tmp_path)
    assert "pax-elixr-b-text/saved_model.pb" in str(e.value) and "google/cxr-foundation" in str(e.value)


def _notebook_example(tf, image_array: np.ndarray) -> bytes:
    """Google's quick-start `png_to_tfexample` (pypng when installed, else TensorFlow's PNG encoder)."""
    image = image_array.astype(np.float32)
    image -= image.min()
    if image_array.dtype == np.uint8:
        pixel_array, bitdepth = image.astype(np.uint8), 8
    else:
        max_val = image.max()
        if max_val > 0:
            image *= 65535 / max_val
        pixel_array, bitdepth = image.astype(np.uint16), 16
    try:
        import io

        import png

        buf = io.BytesIO()
        png.Writer(width=pixel_array.shape[1], height=pixel_array.shape[0], greyscale=True,
                   bitdepth=bitdepth).write(buf, pixel_array.tolist())
        png_bytes = buf.getvalue()
    except ImportError:
        png_bytes = tf.io.encode_png(pixel_array[..., None]).numpy()
    ex = tf.train.Example()
    ex.features.feature["image/encoded"].bytes_list.value.append(png_bytes)
    ex.features.feature["image/format"].bytes_list.value.append(b"png")
    return ex.SerializeToString()


def make_cxr_foundation_folder(tf, root: Path) -> Path:
    """Tiny SavedModels with the released signatures and output keys, in the released folder layout."""
    folder = root / "cxr-foundation"
    rng = np.random.default_rng(0)

    class ElixrC(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = tf.Variable(rng.normal(size=(16, 1376)).astype(np.float32))

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="input_example")])
        def serve(self, input_example):
            feats = tf.io.parse_example(input_example, {"image/encoded": tf.io.FixedLenFeature([], tf.string),
                                                        "image/format": tf.io.FixedLenFeature([], tf.string)})

            def one(png):
                im = tf.cast(tf.io.decode_png(png, channels=1, dtype=tf.uint16), tf.float32) / 65535.0
                im = tf.image.resize(im, [32, 32], method="area")
                patches = tf.reshape(tf.nn.space_to_depth(im[None], 4), [8, 8, 16])
                return tf.tanh(tf.tensordot(patches, self.w, 1))

            return {"feature_maps_0": tf.map_fn(one, feats["image/encoded"], fn_output_signature=tf.float32)}

    class QFormer(tf.Module):
        def __init__(self):
            super().__init__()
            self.wc = tf.Variable(rng.normal(size=(1376, 128)).astype(np.float32) * 0.05)
            self.tc = tf.Variable(rng.normal(size=(32, 128)).astype(np.float32))
            self.wg = tf.Variable(rng.normal(size=(1376, 768)).astype(np.float32) * 0.05)
            self.tg = tf.Variable(rng.normal(size=(32, 768)).astype(np.float32))
            self.emb = tf.Variable(rng.normal(size=(30522, 128)).astype(np.float32))

        @tf.function(input_signature=[tf.TensorSpec([None, 8, 8, 1376], tf.float32, name="image_feature"),
                                      tf.TensorSpec([None, 1, 128], tf.int32, name="ids"),
                                      tf.TensorSpec([None, 1, 128], tf.float32, name="paddings")])
        def serve(self, image_feature, ids, paddings):
            pooled = tf.reduce_mean(image_feature, axis=[1, 2])
            txt = tf.reduce_sum(tf.gather(self.emb, ids[:, 0]) * (1.0 - paddings[:, 0, :, None]), axis=1)
            return {"all_contrastive_img_emb": (pooled @ self.wc)[:, None, :] + self.tc,
                    "img_emb": (pooled @ self.wg)[:, None, :] + self.tg, "contrastive_txt_emb": txt}

    for name, mod in (("elixr-c-v2-pooled", ElixrC()), ("pax-elixr-b-text", QFormer())):
        tf.saved_model.save(mod, str(folder / name), signatures={"serving_default": mod.serve.get_concrete_function()})
    return folder


def test_cxr_foundation_savedmodels_load_and_match_the_upstream_pipeline(tmp_path, nih_pixels):
    tf = pytest.importorskip("tensorflow")
    folder = make_cxr_foundation_folder(tf, tmp_path)
    enc = get("cxr-foundation", weights=folder)
    enc_c = get("cxr-foundation", weights=folder, output="elixr-c")
    enc_g = get("cxr-foundation", weights=folder, output="general")
    assert (enc.embedding_dim, enc_c.embedding_dim, enc_g.embedding_dim) == (4096, 1376, 24576)
    assert len({enc.encoder_id, enc_c.encoder_id, enc_g.encoder_id}) == 3
    # radlens's example carries the same pixels as the notebook's, under the same feature keys
    ours = enc.preprocess(nih_pixels[0])[()]
    theirs = _notebook_example(tf, np.round(nih_pixels[0] * 255).astype(np.uint8))
    spec = {"image/encoded": tf.io.FixedLenFeature([], tf.string), "image/format": tf.io.FixedLenFeature([], tf.string)}
    a, b = tf.io.parse_single_example(ours, spec), tf.io.parse_single_example(theirs, spec)
    assert a["image/format"].numpy() == b"png"
    assert np.array_equal(tf.io.decode_png(a["image/encoded"], dtype=tf.uint16).numpy(),
                          tf.io.decode_png(b["image/encoded"], dtype=tf.uint16).numpy())
    # embeddings = the SavedModels run the upstream way on the notebook's example
    c = tf.saved_model.load(str(folder / "elixr-c-v2-pooled")).signatures["serving_default"]
    q = tf.saved_model.load(str(folder / "pax-elixr-b-text")).signatures["serving_default"]
    refs = {"contrastive": [], "general": [], "elixr-c": []}
    for p in nih_pixels:
        fm = c(input_example=tf.constant([_notebook_example(tf, np.round(p * 255).astype(np.uint8))]))["feature_maps_0"]
        out = q(image_feature=fm, ids=tf.zeros([1, 1, 128], tf.int32), paddings=tf.zeros([1, 1, 128], tf.float32))
        refs["contrastive"].append(out["all_contrastive_img_emb"].numpy().reshape(-1))
        refs["general"].append(out["img_emb"].numpy().reshape(-1))
        refs["elixr-c"].append(fm.numpy()[0].mean(axis=(0, 1)))
    for e, key in ((enc, "contrastive"), (enc_g, "general"), (enc_c, "elixr-c")):
        got = e.embed(nih_pixels)
        assert got.dtype == np.float32 and np.abs(got - np.stack(refs[key])).max() < EMB_TOL
    # the embed job's path: preprocess → stacked object array → embed
    batch = np.stack([enc.preprocess(p) for p in nih_pixels])
    assert np.array_equal(enc.embed(batch), enc.embed(nih_pixels))


def test_cxr_foundation_embeds_into_a_store_via_the_cli(tmp_path, nih_dir):
    tf = pytest.importorskip("tensorflow")
    folder = make_cxr_foundation_folder(tf, tmp_path)
    manifest = _small_manifest(nih_dir, tmp_path / "manifest.csv", 6)
    run_cli("embed", str(manifest), "--encoder", "cxr-foundation", "--weights", str(folder), "--out",
            str(tmp_path / "store"), "--batch-size", "4")
    from radlens.store import load_store

    df, emb, info = load_store(tmp_path / "store")
    assert emb.shape == (6, 4096) and info.encoder_id.startswith("cxr-foundation-contrastive@")
