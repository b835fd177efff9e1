"""Shared fixtures: where the real data lives, and how tests run the CLI as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
NIH_STORE_IMAGES = 240


def shared_data_dir() -> Path:
    """`../shared/data` beside the checkout, or `$RADLENS_SHARED_DATA`."""
    override = os.environ.get("RADLENS_SHARED_DATA")
    return Path(override) if override else REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def nih_dir() -> Path:
    root = shared_data_dir() / "nih-cxr14"
    if not (root / "manifest.csv").is_file():
        pytest.skip(f"NIH data not found at {root} (expected ../shared/data/nih-cxr14; set RADLENS_SHARED_DATA)")
    return root


@pytest.fixture(scope="session")
def lung_dir() -> Path:
    root = shared_data_dir() / "lung-masks"
    if not (root / "manifest.csv").is_file():
        pytest.skip(f"lung-masks data not found at {root} (expected ../shared/data/lung-masks; set RADLENS_SHARED_DATA)")
    return root


def run_cli(*args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run `radlens ...` in a fresh interpreter, as a user's shell would."""
    proc = subprocess.run([sys.executable, "-m", "radlens.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)
    if check and proc.returncode != 0:
        raise AssertionError(f"radlens {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="session")
def nih_store(nih_dir, tmp_path_factory):
    """The first N eval-split NIH images, embedded with the shipped encoder."""
    from radlens.io.splits import load_split

    root = tmp_path_factory.mktemp("nih_store")
    split = load_split("nih-cxr14")
    man = pd.read_csv(nih_dir / "manifest.csv", dtype={"patient_id": str})
    man = man[man.path.isin(split.path[split.split == "eval"])].head(NIH_STORE_IMAGES)
    man = man.assign(path=[str(nih_dir / p) for p in man.path])
    man.to_csv(root / "manifest.csv", index=False)
    run_cli("embed", str(root / "manifest.csv"), "--out", str(root / "store"))
    return root / "store", man
