import os
from pathlib import Path

import pytest

# ../shared/data beside the checkout; NEUROPIL_SHARED_DATA (or the catalog's NEUROPIL_DATA) points
# elsewhere (e.g. from a git worktree)
SHARED_DATA = Path(
    os.environ.get("NEUROPIL_SHARED_DATA")
    or os.environ.get("NEUROPIL_DATA")
    or Path(__file__).resolve().parents[1].parent / "shared" / "data"
)


@pytest.fixture
def shared_data(monkeypatch) -> Path:
    """The real EM volumes beside the project (``../shared/data``); skips when absent.

    Also points the dataset catalog's data root at them.
    """
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real EM data not found at {SHARED_DATA} (only present beside a development checkout)")
    monkeypatch.setenv("NEUROPIL_DATA", str(SHARED_DATA))
    monkeypatch.delenv("NEUROPIL_CATALOG", raising=False)
    return SHARED_DATA
