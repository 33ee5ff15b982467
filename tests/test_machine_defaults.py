"""Defaults that fit the machine (issue 18): loader workers default to the usable cores left beside the
main process's threads, at most the released count, in every CLI; torch's DataLoader then has no reason
to warn ("This DataLoader will create 4 worker processes in total. Our suggested max number of worker
...") on a small machine."""
import os
import warnings

import pytest
import torch

import action_classification as ac
import dataset
import evaluation
import knn_eval
import prepare_data
import pretrain_cmd
from cli import parallelism
from helpers import one_torch_thread, write_benchmark  # noqa: F401  (autouse fixture)


@pytest.fixture
def cores(monkeypatch):
    """cores(n): this process may run on n cores (its CPU affinity), no OMP_NUM_THREADS set."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)

    def set_cores(n):
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(n)))
    return set_cores


@pytest.mark.parametrize("n, threads, pretrain, evaluate", [
    (1, 0, 0, 0),      # one core: load in the main process
    (2, 0, 0, 0),      # a 2-core laptop: loading in the main process, both cores for its threads (faster)
    (2, 2, 0, 0),      # --threads 2 takes both cores
    (4, 1, 3, 3),
    (16, 0, 8, 4),     # a large machine keeps the released defaults (8 for pretraining, 4 for evaluation)
    (16, 12, 4, 4),
])
def test_default_workers_fit_the_usable_cores(cores, n, threads, pretrain, evaluate):
    cores(n)
    assert parallelism.default_workers(pretrain_cmd.RELEASED_WORKERS, threads) == pretrain
    assert parallelism.default_workers(evaluation.RELEASED_WORKERS, threads) == evaluate


def test_omp_num_threads_counts_as_the_threads_taken(cores, monkeypatch):
    cores(4)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert parallelism.default_workers(8) == 1


def test_every_cli_resolves_its_default_from_the_machine(cores, tmp_path):
    cores(2)
    data = write_benchmark(tmp_path / "data")
    argv = ["--finetune-dataset", "custom", "--data-dir", data, "--pretrained", "none", "--device", "cpu"]
    assert ac.make_config(argv).workers == 0
    args = knn_eval.build_parser().parse_args(argv)
    assert args.workers is None and evaluation.loader_workers(args) == 0
    args = pretrain_cmd.build_parser().parse_args(["--device", "cpu"])
    assert args.workers is None and parallelism.loader_workers(args.workers, args.threads, 8) == 0
    assert parallelism.loader_workers(5, 0, 8) == 5                          # -j as given
    sub = prepare_data.build_parser().parse_args(["synthetic"])
    assert sub.workers == 2
    cores(3)                                     # above two cores, workers beside one thread again
    assert parallelism.loader_workers(args.workers, args.threads, 8) == 2


def test_no_dataloader_warning_with_the_default_workers_on_two_cores(cores, tmp_path):
    """torch warns when a loader has more workers than the cores of the process's affinity; the default
    never gets there (and the check itself is seen to warn with the old default of 4)."""
    cores(2)
    split = dataset.load_split(write_benchmark(tmp_path / "data", n_train=4, n_val=2), "train")
    device = torch.device("cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loader = evaluation.make_loader(split, train=False, batch_size=2, device=device, shuffle=False,
                                        workers=parallelism.default_workers(evaluation.RELEASED_WORKERS))
        loader.check_worker_number_rationality()
    with pytest.warns(UserWarning, match="worker processes in total"):
        evaluation.make_loader(split, train=False, batch_size=2, workers=4, device=device,
                               shuffle=False).check_worker_number_rationality()
