import os
from pathlib import Path

import pytest

# ../shared/data beside the checkout; NEUROPIL_SHARED_DATA points elsewhere (e.g. from a git worktree)
SHARED_DATA = Path(
    os.environ.get("NEUROPIL_SHARED_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data")
)


@pytest.fixture
def shared_data() -> Path:
    """The real EM volumes beside the project (``../shared/data``); skips when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real EM data not found at {SHARED_DATA} (only present beside a development checkout)")
    return SHARED_DATA
