"""`radlens serve` for real: the service started on 127.0.0.1 in a subprocess, driven over HTTP and, for
the page, in headless Chromium. Adapter and index are built from real NIH embeddings by the CLI."""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import REPO, run_cli
from radlens.encoders import DEFAULT_ENCODER, get
from radlens.io import load_image
from radlens.search import EmbeddingIndex

MAX_UPLOAD_MB = 1.0
CHROMIUM = os.environ.get("RADLENS_CHROMIUM", "/usr/bin/chromium")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def artefacts(nih_store, tmp_path_factory):
    store, man = nih_store
    root = tmp_path_factory.mktemp("service")
    run_cli("train", str(store), "--out", str(root / "adapter"), "--adapter", "logreg", "--task", "nih-findings",
            "--n-boot", "50", "--inner", "1")
    run_cli("index", str(store), "--out", str(root / "index"))
    return root / "adapter", root / "index", man


@pytest.fixture(scope="module")
def server(artefacts):
    adapter, index, man = artefacts
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "radlens.cli", "serve", "--adapter", str(adapter), "--index", str(index),
                             "--port", str(port), "--max-upload-mb", str(MAX_UPLOAD_MB)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited {proc.returncode}:\n{proc.stdout.read()}")
        try:
            if httpx.get(f"{url}/api/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.3)
    else:
        proc.kill()
        raise AssertionError("server did not become healthy in 90 s")
    yield url, artefacts
    proc.terminate()
    proc.wait(timeout=20)


def _unseen_image(nih_dir: Path, man: pd.DataFrame) -> Path:
    """An NIH image that is not in the test store (so not in the index)."""
    all_ = pd.read_csv(nih_dir / "manifest.csv")
    indexed = {Path(p).name for p in man.path}
    return nih_dir / next(p for p in all_.path if Path(p).name not in indexed)


def _post(url: str, content: bytes, name: str = "x.png", ctype: str = "image/png", **params) -> httpx.Response:
    return httpx.post(f"{url}/api/predict", files={"file": (name, content, ctype)}, params=params, timeout=60)


def test_health_and_openapi_describe_the_service(server):
    url, (adapter, index, man) = server
    h = httpx.get(f"{url}/api/health").json()
    assert h["status"] == "ok" and h["indexed_cases"] == len(man) and h["task"] == "nih-findings"
    spec = httpx.get(f"{url}/openapi.json").json()
    post = spec["paths"]["/api/predict"]["post"]
    assert {"200", "400", "413"} <= set(post["responses"]) and "/api/health" in spec["paths"]


def test_prediction_matches_the_library_and_evidence_is_the_true_nearest_cases(server, nih_dir):
    url, (adapter_dir, index_dir, man) = server
    from radlens.adapters.artefact import load_adapter

    path = _unseen_image(nih_dir, man)
    r = _post(url, path.read_bytes(), name=path.name, k=7)
    assert r.status_code == 200, r.text
    d = r.json()
    enc = get(DEFAULT_ENCODER)
    q = enc.embed([load_image(path).pixels])
    ad = load_adapter(adapter_dir)
    P = ad.predict_proba(q)[0]
    got = {p["class_name"]: p for p in d["predictions"]}
    assert list(got) == ad.class_names
    np.testing.assert_allclose([got[c]["probability"] for c in ad.class_names], P, atol=1e-5)
    thr = ad.thresholds()
    assert [got[c]["decision"] for c in ad.class_names] == list(P >= thr)
    assert d["operating_point"]["kind"] == ad.meta["decision_operating_point"]
    assert all(0 <= c["sensitivity"] <= 1 for c in d["operating_point"]["classes"])
    # evidence = brute-force cosine top-7 over the store's embeddings (a real FAISS index answered)
    idx = EmbeddingIndex.load(index_dir)
    V = np.asarray(idx.vectors)
    s = V @ (q[0] / np.linalg.norm(q[0]))
    want = idx.rows._id.to_numpy()[np.argsort(-s)[:7]]
    assert [e["case_id"] for e in d["evidence"]] == list(want)
    np.testing.assert_allclose([e["similarity"] for e in d["evidence"]], np.sort(s)[::-1][:7], atol=1e-5)
    thumb = httpx.get(url + d["evidence"][0]["thumbnail_url"])
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(thumb.content)).size[0] > 32
    assert httpx.get(f"{url}/api/cases/999999/thumbnail").status_code == 404


def test_an_indexed_image_is_not_its_own_evidence_and_filters_hold(server, nih_dir):
    url, (_, _, man) = server
    row = man.iloc[0]
    d = _post(url, Path(row.path).read_bytes(), name="q.png", k=5).json()
    assert d["identical_cases_left_out"] == 1
    assert Path(row.path).name not in {e["image_name"] for e in d["evidence"]}
    f = _post(url, Path(row.path).read_bytes(), sex="F", age_min=40, age_max=60, view="PA", k=10).json()
    assert f["evidence"], "some PA women aged 40-60 are in the store"
    for e in f["evidence"]:
        assert e["sex"] == "F" and 40 <= e["age"] <= 60 and e["view"] == "PA"
    want = ((man.sex == "F") & man.age.between(40, 60) & (man.view == "PA") & (man.path != row.path)).sum()
    assert len(f["evidence"]) == min(10, want)  # never silently short
    e = _post(url, Path(row.path).read_bytes(), label="Effusion", k=10).json()
    assert e["evidence"] and all("Effusion" in x["labels"] for x in e["evidence"])


def test_dicom_upload_gives_the_same_answer_as_its_png(server, nih_dir, tmp_path):
    url, (_, _, man) = server
    from corpus.builders import make_ds

    path = _unseen_image(nih_dir, man)
    arr = np.asarray(Image.open(path).convert("L")).astype(float)
    # full 0..255 range, so the PNG's fixed 8-bit scaling and the window-less DICOM's stored-range scaling agree
    arr = np.round((arr - arr.min()) / (arr.max() - arr.min()) * 255).astype(np.uint8)
    png, buf = io.BytesIO(), io.BytesIO()
    Image.fromarray(arr).save(png, format="PNG")
    make_ds(arr).save_as(buf, enforce_file_format=True)
    a = _post(url, png.getvalue(), name=path.name).json()
    b = _post(url, buf.getvalue(), name="study", ctype="application/dicom").json()  # no extension: sniffed
    assert b["image"]["format"] == "dicom"
    np.testing.assert_allclose([p["probability"] for p in a["predictions"]], [p["probability"] for p in b["predictions"]],
                               atol=1e-4)
    assert [e["case_id"] for e in a["evidence"]] == [e["case_id"] for e in b["evidence"]]


def test_bad_uploads_get_400_or_413_with_a_reason(server, nih_dir, tmp_path):
    url, (_, _, man) = server
    png = Path(man.path.iloc[0]).read_bytes()
    r = _post(url, b"hello, not an image", name="a.png")
    assert r.status_code == 400 and "not an image" in r.json()["detail"]
    r = _post(url, png[: len(png) // 3], name="cut.png")
    assert r.status_code == 400 and "could not read" in r.json()["detail"]
    r = _post(url, png, name="a.txt", ctype="text/plain")
    assert r.status_code == 400 and "content type" in r.json()["detail"]
    r = _post(url, b"", name="empty.png")
    assert r.status_code == 400
    r = _post(url, png, operating_point="nonsense")
    assert r.status_code == 400 and "nonsense" in r.json()["detail"]
    big = os.urandom(int(MAX_UPLOAD_MB * 2**20) + 1000)
    r = _post(url, big, name="big.png")
    assert r.status_code == 413 and "limit" in r.json()["detail"]

    def chunks():  # no Content-Length: the limit must hold on the bytes actually received
        boundary = b"--b0undary"
        yield boundary + b'\r\nContent-Disposition: form-data; name="file"; filename="big.png"\r\nContent-Type: image/png\r\n\r\n'
        for _ in range(int(MAX_UPLOAD_MB * 16) + 2):
            yield b"\0" * 65536
        yield b"\r\n" + boundary + b"--\r\n"

    r = httpx.post(f"{url}/api/predict", content=chunks(), headers={"content-type": "multipart/form-data; boundary=b0undary"},
                   timeout=60)
    assert r.status_code == 413
    # a client file name is a label, never a path: nothing is written where it points
    evil = tmp_path / "evil.png"
    r = _post(url, png, name=str(evil))
    assert r.status_code == 200 and r.json()["image"]["name"] == "evil.png" and not evil.exists()
    assert httpx.get(f"{url}/api/health").status_code == 200  # still serving


def test_concurrent_requests_all_succeed(server):
    url, (_, _, man) = server
    payloads = [Path(p).read_bytes() for p in man.path[:8]]
    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda i: _post(url, payloads[i % 8], k=5).status_code, range(48)))
    assert codes == [200] * 48


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (Debian: apt-get install chromium; or set RADLENS_CHROMIUM)")
    from playwright.sync_api import sync_playwright

    flags = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync"]
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=flags)
        yield b
        b.close()


def test_page_shows_prediction_operating_point_and_evidence(server, browser, nih_dir, tmp_path):
    url, (adapter_dir, _, man) = server
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.goto(url + "/")
    page.wait_for_function("document.getElementById('service').textContent.includes('indexed cases')")
    page.fill("#k", "6")
    path = _unseen_image(nih_dir, man)
    page.set_input_files("#file", str(path))
    page.wait_for_selector(".case img", timeout=60000)
    page.wait_for_function("[...document.querySelectorAll('.case img')].every(i => i.complete && i.naturalWidth > 0)",
                           timeout=30000)
    assert page.locator(".case").count() == 6
    assert page.locator("#preds tbody tr").count() == 14
    assert page.locator("#opkind").inner_text() == "youden"
    assert page.eval_on_selector("#qimg", "i => i.naturalWidth") > 0
    shot = Path(os.environ.get("RADLENS_SCREENSHOT_DIR", tmp_path)) / "service-page.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 50_000
    # a bad file shows the server's reason instead of a result
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    page.set_input_files("#file", str(bad))
    page.wait_for_function("document.getElementById('error').textContent.length > 0", timeout=30000)
    assert "400" in page.inner_text("#error") and "not an image" in page.inner_text("#error")
    page.close()
