"""Shared fixtures. Real recorded files live in ../shared/data beside the checkout (see its README);
tests that need them skip with a reason when the folder is absent, as on a user's machine."""
import os

import pytest
import torch

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.environ.get("CMD_SHARED_DATA", os.path.join(REPO_ROOT, "..", "shared", "data"))

# CMD_TEST_THREADS=N runs the suite with N intra-op threads (torch.set_num_threads), in this process and,
# through OMP_NUM_THREADS, in the scripts the tests start. Other thread counts split reductions
# differently, so running the suite with 1 and with 2 shows whether a tolerance sits at the edge.
# ATEN_CPU_CAPABILITY=default|avx2|avx512 (read by torch itself) selects other vectorised kernels.
if os.environ.get("CMD_TEST_THREADS"):
    os.environ["OMP_NUM_THREADS"] = os.environ["CMD_TEST_THREADS"]
    torch.set_num_threads(int(os.environ["CMD_TEST_THREADS"]))


def pytest_report_header(config):
    return (f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
            f"CPU capability {torch.backends.cpu.get_cpu_capability()}")


def shared_path(*parts: str) -> str:
    return os.path.join(SHARED_DATA, *parts)


@pytest.fixture
def shared_data():
    """Path of ../shared/data, or skip when it is not there."""
    if not os.path.isdir(SHARED_DATA):
        pytest.skip(f"real sample files not found at {SHARED_DATA} (only present on the project's machines)")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _run_in_a_scratch_folder(tmp_path_factory, monkeypatch):
    """Each test runs in its own empty working folder, so that default outputs (./results, ./checkpoints)
    never land in the checkout. Tests that run the scripts pass cwd=REPO themselves."""
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))
