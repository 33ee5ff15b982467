"""kNN evaluation of frozen CMD features (SPEC.md section 5).

The chosen view's query encoder gives 2H-dim pre-head features (SPEC section 2, step 3) of the training
and test clips, both cut with the 0.95 centre crop; features are L2-normalised and every test clip takes
the majority label of its k most cosine-similar training clips, ties between classes going to the class
of the nearest neighbour among them. Similarities are computed in chunks on the model's device, so the
full N_train x N_test matrix is never held at once.

    python knn_eval.py --pretrained checkpoints/ntu60_cross_subject/checkpoint_0450.pth.tar \
        --finetune-dataset ntu60 --protocol cross_subject --knn-neighbours 1 5 20

`--pretrained raw` is the baseline without any encoder: the flattened centre-cropped clips are the features.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

import dataset
import evaluation
from cli import cli_errors, flag_values, seeding
from encoders import bigru
from reporting import reports, visualise
from storage import atomic_files, run_folder, write_faults


@torch.no_grad()
def knn_neighbours(train_features: torch.Tensor, test_features: torch.Tensor, k: int,
                   test_chunk: int = 1024, train_chunk: int = 16384) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices and similarities of the k most similar training rows for every test row (dot product).

    Works on blocks of at most `test_chunk x train_chunk` similarities, merging the running top-k of each
    training block, so memory stays bounded for any N_train x N_test. Rows come back sorted by
    decreasing similarity (the first column is the nearest neighbour).
    """
    n_train, n_test = train_features.shape[0], test_features.shape[0]
    if not 1 <= k <= n_train:
        raise ValueError(f"k={k} must lie in [1, number of training samples = {n_train}]")
    if train_features.shape[1] != test_features.shape[1]:
        raise ValueError(f"feature sizes differ: train {tuple(train_features.shape)}, "
                         f"test {tuple(test_features.shape)}")
    all_sims, all_idx = [], []
    for t0 in range(0, n_test, test_chunk):
        query = test_features[t0:t0 + test_chunk]
        best_sims = best_idx = None
        for r0 in range(0, n_train, train_chunk):
            block = query @ train_features[r0:r0 + train_chunk].T           # (chunk, train block)
            sims, idx = block.topk(min(k, block.shape[1]), dim=1)
            idx = idx + r0
            if best_sims is not None:
                sims = torch.cat([best_sims, sims], dim=1)
                idx = torch.cat([best_idx, idx], dim=1)
                sims, order = sims.topk(min(k, sims.shape[1]), dim=1)
                idx = idx.gather(1, order)
            best_sims, best_idx = sims, idx
        all_sims.append(best_sims)
        all_idx.append(best_idx)
    return torch.cat(all_sims), torch.cat(all_idx)


def majority_vote(neighbour_labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Most frequent label per row of `neighbour_labels` (N, k), columns ordered nearest first.

    Ties between classes go to the tied class whose member comes first in the row, i.e. the class of the
    nearest neighbour among the tied classes.
    """
    counts = F.one_hot(neighbour_labels, num_classes).sum(dim=1)              # (N, C)
    count_of_each_neighbour = counts.gather(1, neighbour_labels)              # (N, k)
    is_top = count_of_each_neighbour == counts.max(dim=1, keepdim=True).values
    first_top = is_top.to(torch.int8).argmax(dim=1, keepdim=True)             # argmax returns the first max
    return neighbour_labels.gather(1, first_top).squeeze(1)


@torch.no_grad()
def knn_predict(train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor,
                ks, test_chunk: int = 1024, train_chunk: int = 16384, normalize: bool = True) -> dict:
    """Cosine kNN predictions for each k in `ks`: {k: LongTensor (N_test,)}.

    With `normalize` the features are L2-normalised first, so a dot product is the cosine similarity.
    """
    ks = sorted({int(k) for k in ks})
    if normalize:
        train_features = F.normalize(train_features, dim=1)
        test_features = F.normalize(test_features, dim=1)
    # votes count over the classes present (their index in `classes`), whatever the label values are
    classes, train_labels = torch.unique(train_labels.to(train_features.device).long(), return_inverse=True)
    _, idx = knn_neighbours(train_features, test_features, max(ks), test_chunk, train_chunk)
    neighbour_labels = train_labels[idx]
    return {k: classes[majority_vote(neighbour_labels[:, :k], len(classes))] for k in ks}


def save_features(folder: str, arrays: dict, overwrite: bool) -> None:
    """`{name}.npy` in `folder` for each array, published together (run_folder.publish_files): an earlier
    file is replaced only with `overwrite`, and a disk fault leaves no temporary file."""
    os.makedirs(folder, exist_ok=True)
    pairs = [(os.path.join(folder, f".{name}.npy.{os.getpid()}.tmp"), os.path.join(folder, f"{name}.npy"))
             for name in arrays]
    try:
        for (tmp, _), array in zip(pairs, arrays.values()):
            with open(tmp, "wb") as f:
                np.save(f, array)
                f.flush()
                os.fsync(f.fileno())
        run_folder.publish_files(pairs, overwrite, "--save-features")
    except OSError as exc:
        write_faults.raise_write_failure(exc, folder)
    finally:
        for tmp, _ in pairs:
            atomic_files.remove_quietly(tmp)


def build_parser() -> argparse.ArgumentParser:
    parser = cli_errors.ArgumentParser(description=__doc__.split("\n\n")[0],
                                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    evaluation.add_common_arguments(parser)
    parser.add_argument("--knn-neighbours", type=flag_values.positive_count, nargs="+", default=[1],
                        help="k for the k-nearest-neighbour vote; several values give one accuracy each")
    parser.add_argument("-b", "--batch-size", type=flag_values.positive_count, default=64,
                        help="batch size of feature extraction")
    parser.add_argument("--chunk-size", type=flag_values.positive_count, default=1024,
                        help="test rows per block of the similarity computation")
    parser.add_argument("--train-chunk-size", type=flag_values.positive_count, default=16384,
                        help="training rows per block of the similarity computation")
    parser.add_argument("--lr", "--learning-rate", type=float, default=None,
                        help="accepted because the released retrieval script passes it; kNN trains "
                             "nothing, so it is ignored")
    parser.add_argument("--save-features", metavar="DIR", default=None,
                        help="write {train,test}_features.npy and {train,test}_labels.npy to DIR")
    return parser


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    args.workers = evaluation.loader_workers(args)
    if args.lr is not None:
        print(f"=> --lr {args.lr} is ignored: kNN evaluation trains nothing (the released retrieval script "
              f"passes it)")
    visualise.check_dependencies(args)
    evaluation.check_common_arguments(args)
    if args.save_features:
        for name in ("train_features", "train_labels", "test_features", "test_labels"):
            run_folder.check_output_file(os.path.join(args.save_features, f"{name}.npy"), args.overwrite,
                                         "--save-features")
    started = time.time()
    seeding.seed_everything(args.seed)
    device = evaluation.device_from_args(args)
    source = (evaluation.PretrainedSource(evaluation.RAW, None, {}, None, None)
              if args.pretrained == evaluation.RAW else evaluation.load_pretrained_source(args.pretrained))
    layout = evaluation.resolve_layout(args, source)
    benchmark, train_split, test_split = evaluation.load_benchmark(args, layout)
    if max(args.knn_neighbours) > len(train_split):
        raise ValueError(f"--knn-neighbours {max(args.knn_neighbours)} is larger than the training set "
                         f"({len(train_split)} clips in {train_split.path})")
    if args.pretrained == evaluation.RAW:       # no encoder: the coordinates themselves
        model = evaluation.RawCoordinates(args.view, layout)
        model_info = evaluation.model_info(None, args.window or dataset.WINDOW, layout)
    else:
        model, model_info = evaluation.build_classifier(args, benchmark.num_class, source, device,
                                                          train_split, layout)
    gru_check = bigru.check_model(model, device)            # before the features are computed (CUDA)
    model.eval()

    window = model_info["window"]
    train_loader = evaluation.make_loader(train_split, train=False, batch_size=args.batch_size,
                                          workers=args.workers, device=device, shuffle=False, window=window)
    test_loader = evaluation.make_loader(test_split, train=False, batch_size=args.batch_size,
                                         workers=args.workers, device=device, shuffle=False, window=window)
    train_feat, train_lab = evaluation.extract_features(model, train_loader, device, desc="train features")
    test_feat, test_lab = evaluation.extract_features(model, test_loader, device, desc="test features")

    preds = knn_predict(train_feat, train_lab, test_feat, args.knn_neighbours,
                        test_chunk=args.chunk_size, train_chunk=args.train_chunk_size)
    metrics = {f"top1_k{k}": 100.0 * (p == test_lab).double().mean().item() for k, p in preds.items()}

    if args.save_features:
        save_features(args.save_features, {"train_features": train_feat.cpu().numpy(),
                                           "train_labels": train_lab.cpu().numpy(),
                                           "test_features": test_feat.cpu().numpy(),
                                           "test_labels": test_lab.cpu().numpy()}, args.overwrite)
    test_np, test_lab_np = test_feat.cpu().numpy(), test_lab.cpu().numpy()
    visualise.write_visualisations(args, test_np, test_lab_np)

    record = reports.results_record(
        args, benchmark, source, model_info, protocol_name="knn", metrics=metrics, epochs=0,
        started=started, extra={"knn_neighbours": sorted(set(args.knn_neighbours)),
                                "num_train": int(train_lab.numel()), "num_test": int(test_lab.numel()),
                                **({} if gru_check is None else {"gru_self_check": gru_check})})
    columns = [(f"top-1 (k={k})", metrics[f"top1_k{k}"]) for k in sorted(preds)]
    reports.report(args.output, record, columns, args.overwrite)
    return record


if __name__ == "__main__":
    sys.exit(cli_errors.run_main(main))
