"""Shared fixtures. Real recorded files live in ../shared/data beside the checkout (see its README);
tests that need them skip with a reason when the folder is absent, as on a user's machine."""
import os

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.environ.get("CMD_SHARED_DATA", os.path.join(REPO_ROOT, "..", "shared", "data"))


def shared_path(*parts: str) -> str:
    return os.path.join(SHARED_DATA, *parts)


@pytest.fixture
def shared_data():
    """Path of ../shared/data, or skip when it is not there."""
    if not os.path.isdir(SHARED_DATA):
        pytest.skip(f"real sample files not found at {SHARED_DATA} (only present on the project's machines)")
    return SHARED_DATA
