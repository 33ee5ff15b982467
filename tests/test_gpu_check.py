"""scripts/gpu_check.sh --cpu-dry-run: every part of the GPU check runs end to end on the CPU at tiny
sizes."""
import os
import subprocess

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PARTS = ("selfcheck", "info", "exactness", "bench", "bench_amp", "data", "pretrain", "pretrain_amp",
         "torchrun", "gloo", "knn", "linear")


@pytest.mark.slow
def test_gpu_check_cpu_dry_run_passes_every_part(tmp_path):
    out = tmp_path / "check"
    env = dict(os.environ, OUT=str(out))   # the script's default output folder is $OUT
    proc = subprocess.run(["bash", "scripts/gpu_check.sh", "--cpu-dry-run"], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    summary = (out / "summary.txt").read_text()
    status = {line.split()[1]: line.split()[0] for line in summary.splitlines()
              if line.split() and line.split()[0] in ("PASS", "FAIL", "TIMEOUT", "SKIP")}
    assert status == {part: "PASS" for part in PARTS}, summary + proc.stderr[-2000:]
    assert proc.returncode == 0
    assert "0 part(s) did not pass" in summary
    assert "worst relative error" in (out / "exactness.log").read_text()
    assert summary.splitlines()[1].startswith("PASS    selfcheck")          # reported first
    assert "--- selfcheck\nself-check: 'custom' on cpu, autocast None: PASS" in summary
    for name in ("bench.json", "knn.json", "linear.json", "pretrain/checkpoint_last.pth.tar"):
        assert (out / name).exists(), name
