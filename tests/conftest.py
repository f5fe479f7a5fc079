"""Shared fixtures. Real photos come from FACEREC_TEST_DATA (default: ../shared/data)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_data_root() -> Path:
    return Path(os.environ.get("FACEREC_TEST_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """Root of the shared real-photo data. Skips only when it is missing outside CI."""
    root = test_data_root()
    if not (root / "celebrities").is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"test data missing at {root} (set FACEREC_TEST_DATA)")
        pytest.skip(f"test data missing at {root} (set FACEREC_TEST_DATA)")
    return root


@pytest.fixture(scope="session")
def celebrities(data_dir: Path) -> Path:
    return data_dir / "celebrities"
