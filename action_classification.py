"""Linear evaluation and fine-tuning of CMD query encoders (SPEC.md section 5).

Linear (default): the pretrained encoders are frozen and the whole model stays in eval mode (BatchNorm
statistics do not move); only the view's `fc` heads are trained, re-initialised N(0, 0.01) with zero
bias. After the first epoch a sanity check proves that no encoder tensor changed (the released habit).
`--finetune`: every parameter of the view's encoders is trained, model in train mode (semi-supervised
runs with `--data-ratio`, transfer to PKU-MMD II). The released semi-supervised script's protocols
`cross_subject_semi` / `cross_view_semi` mean that fine-tuning on the benchmark's cross-subject /
cross-view split (as the released `action_classification_cmd_semi.py`; `pku_v2 cross_subject_semi
--data-ratio 1.0` is the transfer experiment). The test set is evaluated every `--eval-freq` epochs
and after the last one; the report gives the last epoch's accuracy and the best evaluated epoch's, the
latter chosen on the test set as the released code does.

    python action_classification.py --pretrained checkpoints/ntu60_cross_subject/checkpoint_0450.pth.tar \
        --finetune-dataset ntu60 --protocol cross_subject --lr 0.1 --batch-size 64 --output linear.json
"""
from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
from tqdm import tqdm

import benchmarks
import checkpoints
import cli_errors
import dataset
import evaluation
import resume_check
import run_folder
import runtime

# resuming a run with one of these changed would silently mix two experiments
_RESUME_MUST_MATCH = ("finetune_dataset", "protocol", "view", "finetune", "data_ratio", "class_balanced",
                      "encoder", "hidden_size", "lr", "batch_size", "epochs", "schedule", "momentum",
                      "weight_decay", "seed", "subset_seed")
SEMI_SUFFIX = "_semi"   # the released semi-supervised script's protocols: cross_subject_semi, cross_view_semi


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    evaluation.add_common_arguments(parser,
                                    benchmarks.protocol_names() + tuple(p + SEMI_SUFFIX
                                                                        for p in benchmarks.protocol_names()))
    parser.add_argument("--lr", "--learning-rate", type=float, default=None,
                        help="initial learning rate (default 0.1 for linear evaluation, 0.01 with "
                             "--finetune, as in the released scripts)")
    parser.add_argument("-b", "--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=80)
    parser.add_argument("--schedule", type=int, nargs="*", default=[50, 70],
                        help="epochs at which the learning rate is multiplied by 0.1")
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--wd", "--weight-decay", type=float, default=0.0, dest="weight_decay")
    parser.add_argument("--eval-freq", type=int, default=5, help="evaluate on the test set every N epochs")
    parser.add_argument("--finetune", action="store_true",
                        help="train the whole network (semi-supervised and transfer), model in train mode")
    parser.add_argument("--data-ratio", type=float, default=1.0,
                        help="fraction of the training labels used (semi-supervised: 0.01, 0.05, 0.1, 0.2)")
    parser.add_argument("--subset-seed", type=int, default=None,
                        help="seed of the labelled subset (default: a fresh random one, recorded in the "
                             "results, as the released code draws it without a seed)")
    parser.add_argument("--class-balanced", action="store_true",
                        help="draw the labelled subset per class (round(ratio * n_c), at least 1, "
                             "from each class)")
    parser.add_argument("--checkpoint-path", default=None, metavar="DIR",
                        help="save checkpoint_last.pth.tar (every epoch) and model_best.pth.tar here")
    parser.add_argument("--resume", default="", metavar="PATH",
                        help="resume from a checkpoint written by this script (file or its directory)")
    parser.add_argument("--resume-allow-changes", nargs="+", default=[], metavar="FIELD",
                        help="fields that may differ from the resumed checkpoint's run (e.g. epochs); "
                             "recorded in the results")
    return parser


# ----------------------------------------------------------------------------------------------------
# the pieces of the protocol


def select_training_subset(labels, ratio: float, subset_seed: int | None, class_balanced: bool):
    """(indices or None for the whole set, the seed used). A missing seed is drawn fresh and returned."""
    if not 0 < ratio <= 1:
        raise ValueError(f"--data-ratio must be in (0, 1], got {ratio}")
    if ratio == 1:
        return None, None
    seed = subset_seed if subset_seed is not None else int(np.random.SeedSequence().entropy % (2 ** 31))
    return dataset.labelled_subset(labels, ratio, seed, class_balanced=class_balanced), seed


def indices_digest(indices) -> str:
    return hashlib.sha256(np.asarray(indices, dtype=np.int64).tobytes()).hexdigest()


def prepare_heads(model, linear: bool) -> list:
    """Re-initialise the view's heads (N(0, 0.01), bias 0) and choose what trains; returns the parameters."""
    for fc in model.heads():
        if not isinstance(fc, nn.Linear):
            raise TypeError(f"expected a Linear classification head, got {type(fc).__name__}")
        nn.init.normal_(fc.weight, mean=0.0, std=0.01)
        nn.init.zeros_(fc.bias)
    model.requires_grad_(not linear)
    if linear:
        for fc in model.heads():
            fc.requires_grad_(True)
        params = [p for fc in model.heads() for p in fc.parameters()]
        assert len(params) == 2 * len(model.heads()), "linear mode trains one weight and one bias per head"
    else:
        params = [p for enc in model.view_encoders() for p in enc.parameters()]
    return params


def frozen_snapshot(model) -> dict:
    """Copies of every state tensor (parameters and buffers) that is not part of a trained head."""
    head_ptrs = {t.data_ptr() for fc in model.heads() for t in fc.state_dict().values()}
    return {k: v.detach().clone() for k, v in model.state_dict().items() if v.data_ptr() not in head_ptrs}


def sanity_check(model, snapshot: dict) -> None:
    """Linear evaluation must not change the encoders: not a weight, not a BatchNorm statistic."""
    state = model.state_dict()
    changed = [k for k, v in snapshot.items() if not torch.equal(state[k].cpu(), v.cpu())]
    if changed:
        raise RuntimeError(f"linear evaluation changed {len(changed)} frozen encoder tensors: "
                           f"{', '.join(changed[:10])}{' ...' if len(changed) > 10 else ''}")
    print(f"=> sanity check passed: {len(snapshot)} frozen encoder tensors unchanged")


def learning_rate(base_lr: float, epoch: int, schedule) -> float:
    """Step schedule: x0.1 at every milestone reached (epoch counted from 0)."""
    return base_lr * 0.1 ** sum(epoch >= m for m in schedule)


def train_one_epoch(model, loader, optimizer, device, linear: bool, epoch: int) -> dict:
    model.train(not linear)       # linear evaluation: the whole model stays in eval mode
    criterion = nn.CrossEntropyLoss()
    loss_meter, top1_meter = runtime.AverageMeter("loss"), runtime.AverageMeter("top1")
    bar = tqdm(loader, desc=f"epoch {epoch + 1}", leave=False, dynamic_ncols=True)
    for x, y in bar:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        streams = model.stream_logits(x)
        # each stream trains its own head (and encoder): a sum of independent losses, as three separate runs
        loss = sum(criterion(logits, y) for logits in streams.values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        fused = model.fuse_logits(streams)
        loss_meter.update(loss.item(), len(y))
        top1_meter.update(100.0 * evaluation.topk_correct(fused.detach(), y, (1,))[1] / len(y), len(y))
        bar.set_postfix(loss=f"{loss_meter.avg:.4f}", top1=f"{top1_meter.avg:.1f}")
    return {"loss": loss_meter.avg, "train_top1": top1_meter.avg}


@torch.no_grad()
def evaluate(model, loader, device) -> dict:
    """Top-1 / top-5 (%) of the view on the test set; per-stream top-1 too for the fused view."""
    model.eval()
    correct, stream_correct, total = {1: 0, 5: 0}, {}, 0
    for x, y in tqdm(loader, desc="test", leave=False, dynamic_ncols=True):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        streams = model.stream_logits(x)
        fused = model.fuse_logits(streams)
        for k, v in evaluation.topk_correct(fused, y, (1, 5)).items():
            correct[k] += v
        if len(streams) > 1:
            for mod, logits in streams.items():
                stream_correct[mod] = stream_correct.get(mod, 0) + evaluation.topk_correct(logits, y, (1,))[1]
        total += len(y)
    result = {"top1": 100.0 * correct[1] / total, "top5": 100.0 * correct[5] / total}
    if stream_correct:
        result["stream_top1"] = {mod: 100.0 * c / total for mod, c in stream_correct.items()}
    return result


def _resume_path(path: str) -> str:
    """A file, or the newest checkpoint of a folder that verifies (saying which newer ones it skipped)."""
    if os.path.isdir(path):
        found, _, skipped = checkpoints.newest_verified_checkpoint(path)
        for reason in skipped:
            print(f"=> --resume {path}: skipping {reason}")
        if found is None:
            raise FileNotFoundError(f"--resume {path!r}: no usable checkpoint_*.pth.tar in that directory")
        return found
    return path


# ----------------------------------------------------------------------------------------------------


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    if args.protocol.endswith(SEMI_SUFFIX):  # the released semi-supervised script: fine-tune that split
        args.released_protocol, args.finetune = args.protocol, True
        args.protocol = args.protocol[:-len(SEMI_SUFFIX)]
    evaluation.check_visualisation_dependencies(args)
    if args.lr is None:
        args.lr = 0.01 if args.finetune else 0.1
    if getattr(args, "released_protocol", None):
        print(f"=> --protocol {args.released_protocol}: fine-tuning on {args.protocol} (all parameters "
              f"trained, model in train mode, lr {args.lr}, --data-ratio {args.data_ratio})")
    if args.epochs < 1 or args.eval_freq < 1:
        raise SystemExit(f"--epochs and --eval-freq must be >= 1, got {args.epochs} and {args.eval_freq}")
    evaluation.check_common_arguments(args)
    if args.checkpoint_path:
        resumes_here = run_folder.resumes_into(args.checkpoint_path, args.resume)
        run_folder.check_folder(args.checkpoint_path, resumes_here, args.overwrite)
    linear = not args.finetune
    started = time.time()
    evaluation.seed_from_args(args)
    device = evaluation.device_from_args(args)
    benchmark, train_split, test_split = evaluation.load_benchmark(args)
    source = evaluation.load_pretrained_source(args.pretrained)
    model, model_config = evaluation.build_classifier(args, benchmark.num_class, source, device)
    params = prepare_heads(model, linear)
    optimizer = torch.optim.SGD(params, lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay)

    train_indices, subset_seed = select_training_subset(train_split.labels, args.data_ratio, args.subset_seed,
                                                        args.class_balanced)
    start_epoch, best, history, resume_changes = 0, None, [], []
    if args.resume:
        path = _resume_path(args.resume)
        state = checkpoints.load_checkpoint(path)
        saved = state.get("run") or state.get("args", {})
        resume_changes = resume_check.check_resume(saved, _run_identity(args, source),
                                                   args.resume_allow_changes, f"--resume {path}")
        record = checkpoints.encoder_record(state, path)
        if record is not None and record != model.encoder_record():
            raise ValueError(f"--resume {path!r} was written with another encoder: {record} there, "
                             f"{model.encoder_record()} here")
        model.load_state_dict(state["state_dict"], strict=True)
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, best, history = int(state["epoch"]), state.get("best"), list(state.get("history", []))
        if state.get("train_indices") is not None:
            train_indices, subset_seed = state["train_indices"].numpy(), state.get("subset_seed")
        if "rng" in state:
            runtime.set_rng_state(state["rng"])
        print(f"=> resumed from {path} at epoch {start_epoch}"
              + "".join(f"; allowed change: {c['field']} {c['checkpoint']!r} -> {c['now']!r}"
                        for c in resume_changes))
    lock = None
    if args.checkpoint_path:
        lock = run_folder.claim(args.checkpoint_path, resumes_here, args.overwrite)

    train_loader = evaluation.make_loader(train_split, train=True, batch_size=args.batch_size,
                                          workers=args.workers, device=device, shuffle=True,
                                          indices=train_indices, seed=args.seed)
    test_loader = evaluation.make_loader(test_split, train=False, batch_size=args.batch_size,
                                         workers=args.workers, device=device, shuffle=False)
    mode = "linear" if linear else ("semi-supervised" if train_indices is not None else "finetune")
    print(f"=> {mode} evaluation of {source.path or 'a randomly initialised encoder'} on {benchmark.dataset} "
          f"{benchmark.protocol}, view {args.view}: {len(train_loader.dataset)} training clips, "
          f"{len(test_split)} test clips, {benchmark.num_class} classes, device {device}")

    snapshot = frozen_snapshot(model) if linear else None
    last = None
    for epoch in range(start_epoch, args.epochs):
        lr = learning_rate(args.lr, epoch, args.schedule)
        for group in optimizer.param_groups:
            group["lr"] = lr
        train_loader.dataset.set_epoch(epoch)
        stats = train_one_epoch(model, train_loader, optimizer, device, linear, epoch)
        entry = {"epoch": epoch + 1, "lr": lr, **stats}
        if snapshot is not None and epoch == start_epoch:
            sanity_check(model, snapshot)
        is_last = epoch + 1 == args.epochs
        if (epoch + 1) % args.eval_freq == 0 or is_last:
            result = evaluate(model, test_loader, device)
            entry.update({f"test_{k}": v for k, v in result.items()})
            last = {"epoch": epoch + 1, **result}
            if best is None or result["top1"] > best["top1"]:
                best = dict(last)
                if args.checkpoint_path:
                    best_state = {"epoch": epoch + 1, "state_dict": model.state_dict(), "best": best,
                                  "args": runtime.plain_args(args), **model.encoder_record()}
                    best_path = os.path.join(args.checkpoint_path, "model_best.pth.tar")
                    checkpoints.atomic_save(best_state, best_path)
            print(f"epoch {epoch + 1}: loss {entry['loss']:.4f}  test top-1 {result['top1']:.2f}  "
                  f"top-5 {result['top5']:.2f}  (best top-1 {best['top1']:.2f} at epoch {best['epoch']})")
        history.append(entry)
        if args.checkpoint_path:
            checkpoints.atomic_save({
                "epoch": epoch + 1, "state_dict": model.state_dict(), "optimizer": optimizer.state_dict(),
                "best": best, "history": history, "args": runtime.plain_args(args),
                "rng": runtime.rng_state(),
                "train_indices": None if train_indices is None else torch.as_tensor(train_indices),
                "subset_seed": subset_seed, "run": _run_identity(args, source),
                **model.encoder_record(),
            }, os.path.join(args.checkpoint_path, checkpoints.LAST_CHECKPOINT))
    if last is None:          # resumed from a run that had already finished
        last = {"epoch": history[-1]["epoch"], **evaluate(model, test_loader, device)}

    metrics = {"last": last,
               "best": {**best, "note": "best evaluated epoch, chosen on the test set (as released)"}}
    if args.tb_embedding or args.tsne:
        test_feat, test_lab = evaluation.extract_features(model, test_loader, device, desc="test features")
        evaluation.write_visualisations(args, test_feat.cpu().numpy(), test_lab.cpu().numpy())
    extra = {"device": str(device), "mode": mode, "history": history, "num_train": len(train_loader.dataset),
             "num_test": len(test_split),
             "subset": None if train_indices is None else {
                 "ratio": args.data_ratio, "seed": subset_seed, "seed_given": args.subset_seed is not None,
                 "class_balanced": args.class_balanced, "size": int(len(train_indices)),
                 "indices_sha256": indices_digest(train_indices)},
             "resume_allowed_changes": resume_changes}
    record = evaluation.results_record(args, benchmark, source, model_config, mode, metrics, args.epochs,
                                       started, extra)
    columns = [("top-1 (last)", last["top1"]), ("top-5 (last)", last["top5"]),
               ("top-1 (best on test)", best["top1"]), ("best epoch", best["epoch"]), ("epochs", args.epochs)]
    evaluation.report(args.output, record, columns)
    if lock is not None:
        lock.release()
    return record


def _run_identity(args, source) -> dict:
    """What defines an evaluation run; a resume must keep it (resume_check)."""
    identity = resume_check.run_identity(args, _RESUME_MUST_MATCH, pretrained_sha256=source.sha256,
                                         data_dir=os.path.realpath(args.data_dir))
    return {k: v for k, v in identity.items() if not (k in ("encoder", "hidden_size") and v is None)}


if __name__ == "__main__":
    sys.exit(cli_errors.run_main(main))
