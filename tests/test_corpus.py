"""The bad-input corpus (tests/corpus/make_corpus.py) through every door radlens opens to a file.

One generated corpus (~240 files: truncated, bit-flipped, misnamed, bombs, odd pixel modes, broken
DICOM headers, links) goes through (a) `load_image` file by file with a time bound, (b) the real embed
job with the real default encoder, (c) the real service over HTTP, and (d) hypothesis mutates valid
files for `decode_bytes`. The promise checked everywhere: a file loads as its case says, or it is
refused with radlens' DecodeError and a reason that names the file and the defect. Never another
exception, never a hang, never a file that silently disappears.
"""

from __future__ import annotations

import csv
import re
import socket
import struct
import threading
import time
import zlib
from collections import Counter
from datetime import timedelta
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from corpus.builders import dicom_bytes, make_ds, pil_bytes, radiograph_array
from corpus.make_corpus import CHECKS, CorpusCase, build_corpus
from radlens.io import DecodeError, Radiograph, decode_bytes, load_image

PER_FILE_SECONDS = 5.0


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> tuple[Path, list[CorpusCase]]:
    root = tmp_path_factory.mktemp("corpus")
    return root, build_corpus(root)


def _mismatch(case: CorpusCase, outcome: Radiograph | DecodeError) -> str | None:
    """Why `outcome` breaks the case's expectation, or None."""
    if isinstance(outcome, DecodeError):
        if case.expect != "quarantine":
            return f"refused ({outcome.reason}) but should load"
        if not re.search(case.reason, outcome.reason, re.IGNORECASE):
            return f"reason {outcome.reason!r} does not match {case.reason!r}"
        return None
    if case.expect != "loads":
        return f"loaded {outcome.shape} but should be refused ({case.reason})"
    px = outcome.pixels
    if px.dtype != np.float32 or px.ndim != 2 or not np.isfinite(px).all() or px.min() < 0 or px.max() > 1:
        return f"breaks the pixel contract: {px.dtype} {px.shape} [{px.min()}, {px.max()}]"
    if case.shape and outcome.shape != case.shape:
        return f"shape {outcome.shape}, expected {case.shape}"
    if case.check and not CHECKS[case.check](px):
        return f"pixels fail the {case.check!r} check"
    return None


def test_corpus_is_large_and_varied(corpus):
    root, cases = corpus
    groups = Counter(c.group for c in cases)
    assert len(cases) >= 200 and len(groups) >= 12
    assert sum(c.expect == "loads" for c in cases) >= 60 and sum(c.expect == "quarantine" for c in cases) >= 120
    on_disk = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() or p.is_symlink()}
    assert on_disk == {c.name for c in cases if c.listed}


def test_every_file_loads_as_expected_or_is_refused_with_its_reason(corpus):
    """(a) File by file, in this process, timed: a load that matches, or a DecodeError naming file and defect."""
    root, cases = corpus
    failures, times, outcomes = [], {}, Counter()
    for case in cases:
        path = root / case.name
        start = time.perf_counter()
        try:
            outcome: Radiograph | DecodeError = load_image(path)
        except DecodeError as err:
            outcome = err
        except Exception as exc:  # noqa: BLE001 - any other exception is a crash: the failure under test
            failures.append(f"{case.name}: CRASH {type(exc).__name__}: {exc}")
            continue
        times[case.name] = time.perf_counter() - start
        outcomes[type(outcome).__name__] += 1
        problem = _mismatch(case, outcome)
        if isinstance(outcome, DecodeError) and (outcome.path != path or not str(outcome).startswith(str(path))):
            problem = f"error does not name the file: {outcome}"
        if problem:
            failures.append(f"{case.name}: {problem}")
    assert not failures, "\n".join(failures)
    slowest = max(times, key=times.get)
    print(f"\ncorpus: {len(cases)} files, {dict(outcomes)}; slowest {slowest} {times[slowest] * 1e3:.1f} ms")
    assert times[slowest] < PER_FILE_SECONDS, f"{slowest} took {times[slowest]:.1f} s"


def test_embed_job_accounts_for_every_file(corpus, tmp_path):
    """(b) The real embed job with the real default encoder: embedded + quarantined + duplicates == discovered,
    and the quarantine lists exactly the files expected to fail, each with its stage and reason."""
    from radlens.encoders import DEFAULT_ENCODER, get
    from radlens.store.embed_job import embed_to_store
    from radlens.store.embedding_store import QUARANTINE_FILE

    root, cases = corpus
    listed = [c for c in cases if c.listed]
    summary = embed_to_store(root, tmp_path / "store", get(DEFAULT_ENCODER), batch_size=32, workers=2)
    print(f"\nembed: {summary.to_dict()}")
    assert summary.discovered == len(listed)
    assert summary.embedded + summary.quarantined + summary.duplicates + summary.cached == summary.discovered
    assert summary.cached == 0

    with (tmp_path / "store" / QUARANTINE_FILE).open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    by_stage = {stage: {Path(r["path"]).relative_to(root.resolve()).as_posix(): r["reason"] for r in rows
                        if r["stage"] == stage} for stage in ("decode", "duplicate")}
    assert sum(map(len, by_stage.values())) == len(rows), "only decode and duplicate rows expected"
    expected_bad = {c.name: c for c in listed if c.expect == "quarantine"}
    assert set(by_stage["decode"]) == set(expected_bad)
    wrong = {n: r for n, r in by_stage["decode"].items() if not re.search(expected_bad[n].reason, r, re.IGNORECASE)}
    assert not wrong, wrong
    assert set(by_stage["duplicate"]) == {c.name for c in listed if c.duplicate_of}
    assert summary.quarantined == len(expected_bad) and summary.duplicates == len(by_stage["duplicate"])

    stored = pd.read_parquet(tmp_path / "store", columns=["path", "height", "width"])
    expected_good = {c.name for c in listed if c.expect == "loads" and not c.duplicate_of}
    assert {Path(p).relative_to(root.resolve()).as_posix() for p in stored.path} == expected_good
    assert len(stored) == summary.embedded == len(expected_good)


# ------------------------------------------------------------------------------------------ service


def _content_type(name: str) -> str:
    suffix = Path(name).suffix.lower()
    return {".png": "image/png", ".jpg": "image/jpeg", ".tif": "image/tiff", ".dcm": "application/dicom"}.get(
        suffix, "application/octet-stream")


@pytest.fixture(scope="module")
def service_url(tmp_path_factory):
    """A real uvicorn server on 127.0.0.1 serving the real app on a small adapter + index.

    Built from 48 generated images (bright vs dark film, a label column) so the module needs neither the
    NIH data nor minutes of training; the service path under test (decode → embed → adapter → search) is
    the same whatever the adapter learned.
    """
    import uvicorn
    from typer.testing import CliRunner

    from radlens.cli import app as cli
    from radlens.service.app import create_app
    from radlens.service.engine import Engine

    root = tmp_path_factory.mktemp("service")
    rng = np.random.default_rng(0)
    rows = []
    for i in range(48):
        bright = i % 2 == 0
        arr = np.clip(rng.normal(170 if bright else 80, 30, (96, 96)), 0, 255).astype(np.uint8)
        Image.fromarray(arr).save(root / f"img{i:02d}.png")
        rows.append({"path": f"img{i:02d}.png", "patient_id": f"p{i:02d}", "label": "Bright" if bright else "Dark",
                     "sex": "FM"[i % 2], "age": 30 + i, "view": "PA"})
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    runner = CliRunner()
    for args in (["embed", str(root / "manifest.csv"), "--out", str(root / "store")],
                 ["train", str(root / "store"), "--out", str(root / "adapter"), "--label-column", "label",
                  "--task-kind", "multiclass", "--n-boot", "20", "--inner", "1", "--group-column", "patient_id"],
                 ["index", str(root / "store"), "--out", str(root / "index")]):
        result = runner.invoke(cli, args)
        assert result.exit_code == 0, f"radlens {' '.join(args)}: {result.output}\n{result.exception!r}"
    engine = Engine.load(root / "adapter", root / "index")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(engine), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while not server.started:
        assert time.time() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.05)
    yield url
    server.should_exit = True
    thread.join(timeout=10)


def test_service_answers_every_corpus_file_with_a_result_or_a_reason(corpus, service_url):
    """(c) Every regular corpus file POSTed to /api/predict: 200 with predictions, or a 4xx whose JSON names
    the reason; never a 5xx, never a hang (client timeout)."""
    root, cases = corpus
    codes, failures = Counter(), []
    with httpx.Client(base_url=service_url, timeout=30) as client:
        for case in (c for c in cases if c.regular):
            data = (root / case.name).read_bytes()
            r = client.post("/api/predict", files={"file": (Path(case.name).name, data, _content_type(case.name))})
            codes[r.status_code] += 1
            if r.status_code >= 500:
                failures.append(f"{case.name}: {r.status_code} {r.text[:200]}")
            elif case.expect == "loads":
                if r.status_code != 200 or not r.json().get("predictions"):
                    failures.append(f"{case.name}: expected 200, got {r.status_code} {r.text[:200]}")
                elif r.json()["image"]["shape"] != list(case.shape or r.json()["image"]["shape"]):
                    failures.append(f"{case.name}: shape {r.json()['image']['shape']}, expected {case.shape}")
            else:
                detail = r.json().get("detail", "") if r.headers.get("content-type", "").startswith("application/json") else ""
                if not 400 <= r.status_code < 500 or not re.search(case.reason, detail, re.IGNORECASE):
                    failures.append(f"{case.name}: expected 4xx matching {case.reason!r}, got {r.status_code} {r.text[:200]}")
        assert client.get("/api/health").status_code == 200  # still serving after the whole corpus
    print(f"\nservice status codes: {dict(codes)}")
    assert not failures, "\n".join(failures)
    assert codes[200] == sum(c.regular and c.expect == "loads" for c in cases)


# ------------------------------------------------------------------------------------------ fuzzing

FUZZ = settings(max_examples=200, deadline=timedelta(seconds=2), derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
MAGICS = [b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"II*\x00", b"MM\x00*", b"GIF89a", b"BM", b"P5 ",
          b"\x00" * 128 + b"DICM", b"\x08\x00\x05\x00CS", b"\x02\x00\x10\x00UI"]
# Values that make length/size fields hostile when written over one: huge, negative, zero, off-by-one.
HOSTILE_WORDS = [b"\xff\xff\xff\xff", b"\x7f\xff\xff\xff", b"\xff\xff\xff\x7f", b"\x00\x00\x00\x00", b"\x00\x01\x00\x00",
                 b"\xff\xff", b"\x00\x00"]


def _seeds() -> list[bytes]:
    small = (24, 16)
    arr = radiograph_array(small, 5)
    return [pil_bytes(Image.fromarray(arr), "PNG"), pil_bytes(Image.fromarray(arr), "JPEG", quality=80),
            pil_bytes(Image.fromarray(radiograph_array(small, 6, "uint16", 4095)), "TIFF"),
            dicom_bytes(make_ds(radiograph_array(small, 7, "uint16", 4095), bits_stored=12, WindowCenter=2000,
                                WindowWidth=1000))]


SEEDS = _seeds()


@st.composite
def mutated_files(draw) -> bytes:
    """A valid PNG/JPEG/TIFF/DICOM with 1-8 random flips, truncations, insertions or hostile overwrites."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 8))):
        if not data:
            break
        op = draw(st.sampled_from(["flip", "truncate", "insert", "overwrite"]))
        i = draw(st.integers(0, len(data) - 1))
        if op == "flip":
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "truncate":
            del data[i:]
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=16))
        else:
            word = draw(st.sampled_from(HOSTILE_WORDS))
            data[i : i + len(word)] = word
    if data.startswith(b"\x89PNG") and draw(st.booleans()):
        _fix_png_crcs(data)  # past the checksums, into IHDR/IDAT parsing proper
    return bytes(data)


def _fix_png_crcs(data: bytearray) -> None:
    """Rewrite every complete chunk's CRC in place, so damage reaches the decoder instead of the CRC check."""
    pos = 8
    while pos + 12 <= len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        end = pos + 8 + length
        if end + 4 > len(data):
            return
        struct.pack_into(">I", data, end, zlib.crc32(bytes(data[pos + 4 : end])))
        pos = end + 4


def _decodes_or_refuses(data: bytes) -> None:
    """The only two outcomes allowed: a Radiograph that keeps the pixel contract, or a DecodeError naming the
    upload. Anything else raised here fails the example (a crash); a slow example fails the deadline."""
    try:
        rad = decode_bytes(data, name="fuzz.bin")
    except DecodeError as err:
        assert err.path.name == "fuzz.bin" and str(err).startswith("fuzz.bin: ") and err.reason
        return
    px = rad.pixels
    assert px.dtype == np.float32 and px.ndim == 2 and px.size > 0
    assert np.isfinite(px).all() and px.min() >= 0.0 and px.max() <= 1.0


@FUZZ
@given(st.tuples(st.sampled_from(MAGICS), st.binary(max_size=2048)))
def test_fuzz_arbitrary_bytes(parts):
    """(d) Arbitrary bytes, often behind a real magic number so they get past sniffing into a decoder."""
    _decodes_or_refuses(parts[0] + parts[1])


@FUZZ
@given(mutated_files())
def test_fuzz_mutated_valid_files(data):
    """(d) Valid files with random damage: where real-world corruption lives (headers, lengths, cut ends)."""
    _decodes_or_refuses(data)
