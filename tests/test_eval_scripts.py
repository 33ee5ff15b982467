"""The evaluation shell scripts: the commands they build, and a real semi-supervised sweep in miniature."""
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from helpers import write_benchmark
from reporting import reports

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(script, *args, **env):
    full_env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1", **env}
    return subprocess.run(["bash", os.path.join(REPO, "scripts", script), *args], cwd=REPO, env=full_env,
                          capture_output=True, text=True, check=True).stdout


def _commands(stdout):
    return [line[2:].split() for line in stdout.splitlines() if line.startswith("+ ")]


def _flag(cmd, name):
    return cmd[cmd.index(name) + 1]


def test_linear_eval_reads_the_pretraining_folders_of_all_five_benchmarks():
    cmds = _commands(_run("linear_eval.sh", "/ckpts", "--device", "cpu", DRY_RUN="1"))
    assert [_flag(c, "--pretrained") for c in cmds] == [
        "/ckpts/ntu60_cross_subject/checkpoint_0450.pth.tar",
        "/ckpts/ntu60_cross_view/checkpoint_0450.pth.tar",
        "/ckpts/ntu120_cross_subject/checkpoint_0450.pth.tar",
        "/ckpts/ntu120_cross_setup/checkpoint_0450.pth.tar",
        "/ckpts/pku_v2_cross_subject/checkpoint_1000.pth.tar"]
    for c in cmds:
        recipe = [_flag(c, name) for name in ("--lr", "--batch-size", "--epochs", "--wd", "--momentum")]
        assert recipe == ["0.1", "64", "80", "0", "0.9"]
        assert c[c.index("--schedule") + 1:c.index("--schedule") + 3] == ["50", "70"]
        assert "--finetune" not in c and c[-2:] == ["--device", "cpu"]      # extra arguments forwarded last


def test_knn_and_transfer_scripts():
    knn = _commands(_run("knn_eval.sh", "--device", "cpu", DRY_RUN="1", KNN="1 5"))
    assert len(knn) == 5
    assert _flag(knn[0], "--pretrained") == "./checkpoints/ntu60_cross_subject/checkpoint_0450.pth.tar"
    assert knn[0][knn[0].index("--knn-neighbours") + 1:][:2] == ["1", "5"]
    transfer = _commands(_run("transfer_pku2.sh", "/r", DRY_RUN="1"))
    assert [_flag(c, "--pretrained") for c in transfer] == ["/r/ntu60_cross_subject/checkpoint_0450.pth.tar",
                                                            "/r/ntu120_cross_subject/checkpoint_0450.pth.tar"]
    assert all("--finetune" in c and _flag(c, "--finetune-dataset") == "pku_v2" for c in transfer)


def test_semi_supervised_sweep_and_summary(tmp_path):
    data = write_benchmark(tmp_path / "data", n_train=24, n_val=6)
    results = tmp_path / "results"
    dry = _commands(_run("semi_supervised.sh", "/r", DRY_RUN="1"))
    assert len(dry) == 2 * 4 * 5                                     # protocols x fractions x seeds
    assert sorted({_flag(c, "--data-ratio") for c in dry}) == ["0.01", "0.05", "0.1", "0.2"]
    assert all(_flag(c, "--subset-seed") == _flag(c, "--seed") for c in dry)

    # a real sweep in miniature: later flags override the script's (argparse keeps the last value)
    out = _run("semi_supervised.sh", "--finetune-dataset", "custom", "--data-dir", data,
               "--pretrained", "none", "--hidden-size", "8", "--epochs", "1", "-j", "0", "--device", "cpu",
               "--batch-size", "8",
               PROTOCOLS="cross_subject", RATIOS="0.5", SEEDS="1 2", RESULTS=str(results))
    files = sorted(results.glob("*.json"))
    assert [f.name for f in files] == ["ntu60_cross_subject_ratio0.5_seed1.json",
                                       "ntu60_cross_subject_ratio0.5_seed2.json"]
    records = [json.loads(f.read_text()) for f in files]
    assert all(r["evaluation"] == "semi-supervised" and r["subset"]["size"] == 12 for r in records)
    assert records[0]["subset"]["indices_sha256"] != records[1]["subset"]["indices_sha256"]
    last = np.array([r["metrics"]["last"]["top1"] for r in records])
    summary_rows = [line for line in out.splitlines() if line.startswith("| custom") and "%" in line]
    row = summary_rows[-1]
    assert f"{last.mean():.2f} ± {last.std(ddof=1):.2f}" in row and "| 50% | 2 |" in row


def test_summarise_results_groups_and_averages(tmp_path):
    def write(name, ratio, last, best, protocol="cross_subject"):
        rec = {"benchmark": "ntu60", "protocol": protocol, "evaluation": "semi-supervised", "view": "joint",
               "checkpoint": "/x/checkpoint_0450.pth.tar", "subset": {"ratio": ratio},
               "metrics": {"last": {"top1": last}, "best": {"top1": best}}}
        (tmp_path / name).write_text(json.dumps(rec))
        return str(tmp_path / name)

    paths = [write("a", 0.01, 10.0, 12.0), write("b", 0.01, 14.0, 15.0), write("c", 0.01, 12.0, 18.0),
             write("d", 0.1, 50.0, 51.0), write("e", 0.1, 40.0, 41.0, protocol="cross_view")]
    rows = reports.summarise_results(paths)
    assert [(r["protocol"], r["data_ratio"], r["runs"]) for r in rows] == [
        ("cross_subject", 0.01, 3), ("cross_subject", 0.1, 1), ("cross_view", 0.1, 1)]
    assert rows[0]["last_mean"] == pytest.approx(12.0) and rows[0]["last_std"] == pytest.approx(2.0)
    assert rows[0]["best_mean"] == pytest.approx(15.0) and rows[0]["best_std"] == pytest.approx(3.0)
    assert rows[1]["last_std"] == 0.0
    table = reports.summary_table(rows)
    assert re.search(r"\| 1% \| 3 \| 12\.00 ± 2\.00 \| 15\.00 ± 3\.00 \|", table)


def test_scripts_evaluate_the_newest_checkpoint_of_a_run_folder(tmp_path):
    run = tmp_path / "synthetic_cross_subject"
    run.mkdir()
    for name in ("checkpoint_0009.pth.tar", "checkpoint_0010.pth.tar", "checkpoint_0002.pth.tar"):
        (run / name).touch()
    for script in ("linear_eval.sh", "knn_eval.sh"):
        cmds = _commands(_run(script, str(tmp_path), DRY_RUN="1", BENCHMARKS="synthetic:cross_subject"))
        assert [_flag(c, "--pretrained") for c in cmds] == [str(run / "checkpoint_0010.pth.tar")]
    (run / "checkpoint_last.pth.tar").touch()       # what pretrain_cmd.py writes every epoch
    cmds = _commands(_run("linear_eval.sh", str(tmp_path), DRY_RUN="1", BENCHMARKS="synthetic:cross_subject"))
    assert _flag(cmds[0], "--pretrained") == str(run / "checkpoint_last.pth.tar")
    cmds = _commands(_run("linear_eval.sh", str(tmp_path), DRY_RUN="1", BENCHMARKS="synthetic:cross_subject",
                          CHECKPOINT="checkpoint_0002.pth.tar"))
    assert _flag(cmds[0], "--pretrained") == str(run / "checkpoint_0002.pth.tar")


def test_scripts_pick_python_explicit_then_project_venv_then_python3():
    def chosen(**env):
        full_env = {k: v for k, v in os.environ.items() if k != "PYTHON"} | env
        return subprocess.run(["bash", "-c", "source scripts/python.sh && echo \"$PY\""], cwd=REPO,
                              env=full_env, capture_output=True, text=True, check=True).stdout.strip()
    assert chosen(PYTHON="/opt/my/python") == "/opt/my/python"
    venv = os.path.join(REPO, ".venv", "bin", "python")
    assert chosen() == (venv if os.access(venv, os.X_OK) else "python3")
