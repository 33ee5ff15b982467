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
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn
from tqdm import tqdm

import dataset
import evaluation
from cli import cli_errors, flag_values, frozen_flags, seeding
from encoders import bigru
from engine import meters, resume_check, training
from readers import dataset_table
from reporting import reports, visualise
from storage import run_folder

# resuming a run with one of these changed would silently mix two experiments
_RESUME_MUST_MATCH = ("finetune_dataset", "protocol", "view", "finetune", "data_ratio", "class_balanced",
                      "encoder", "hidden_size", "lr", "batch_size", "epochs", "schedule", "momentum",
                      "weight_decay", "seed", "subset_seed", "layout")
# the fields the saved classifier's shape depends on: a resume cannot allow them to change
_RESUME_FIXED = ("view", "encoder", "hidden_size", "layout")
SEMI_SUFFIX = "_semi"   # the released semi-supervised script's protocols: cross_subject_semi, cross_view_semi


def build_parser() -> argparse.ArgumentParser:
    parser = cli_errors.ArgumentParser(description=__doc__.split("\n\n")[0],
                                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    protocols = dataset_table.protocol_names()
    evaluation.add_common_arguments(parser, protocols + tuple(p + SEMI_SUFFIX for p in protocols))
    parser.add_argument("--lr", "--learning-rate", type=flag_values.positive, default=None,
                        help="initial learning rate (default 0.1 for linear evaluation, 0.01 with "
                             "--finetune, as in the released scripts)")
    parser.add_argument("-b", "--batch-size", type=flag_values.positive_count, default=64)
    parser.add_argument("--epochs", type=flag_values.positive_count, default=80)
    parser.add_argument("--schedule", type=flag_values.count, nargs="*", default=[50, 70],
                        help="epochs at which the learning rate is multiplied by 0.1")
    parser.add_argument("--momentum", type=flag_values.unit_interval, default=0.9, help="SGD momentum")
    parser.add_argument("--wd", "--weight-decay", type=flag_values.non_negative, default=0.0,
                        dest="weight_decay")
    parser.add_argument("--eval-freq", type=flag_values.positive_count, default=5,
                        help="evaluate on the test set every N epochs")
    parser.add_argument("--finetune", action="store_true",
                        help="train the whole network (semi-supervised and transfer), model in train mode")
    parser.add_argument("--data-ratio", type=flag_values.fraction, default=1.0,
                        help="fraction of the training labels used (semi-supervised: 0.01, 0.05, 0.1, 0.2)")
    parser.add_argument("--subset-seed", type=flag_values.seed, default=None,
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


def topk_correct(logits: torch.Tensor, target: torch.Tensor, ks=(1, 5)) -> dict:
    """Number of samples whose label is among the top-k logits, for each k (k capped at the class count)."""
    kmax = min(max(ks), logits.shape[1])
    pred = logits.topk(kmax, dim=1).indices
    hit = pred == target[:, None]
    return {k: int(hit[:, :min(k, kmax)].any(dim=1).sum()) for k in ks}


def train_one_epoch(model, loader, optimizer, device, linear: bool, epoch: int,
                    lr: float | None = None, guard: training.DivergenceCheck | None = None) -> dict:
    """One epoch; stops (cli_errors.RunStopped) at a non-finite or diverging loss (training.DivergenceCheck,
    `guard` kept over the run), read every step, or when the epoch left non-finite weights or weights
    beyond any sane scale, before anything of it is evaluated or saved."""
    guard = guard or training.DivergenceCheck()
    model.train(not linear)       # linear evaluation: the whole model stays in eval mode
    criterion = nn.CrossEntropyLoss()
    loss_meter, top1_meter = meters.AverageMeter("loss"), meters.AverageMeter("top1")
    bar = tqdm(loader, desc=f"epoch {epoch + 1}", leave=False, dynamic_ncols=True)
    for step, (x, y) in enumerate(bar):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        streams = model.stream_logits(x)
        # each stream trains its own head (and encoder): a sum of independent losses, as three separate runs
        loss = sum(criterion(logits, y) for logits in streams.values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        fused = model.fuse_logits(streams)
        loss_meter.update(loss.item(), len(y))
        if not np.isfinite(loss_meter.val):
            raise diverged(f"non-finite loss {loss_meter.val} at epoch {epoch + 1}, step {step}", lr)
        growth = guard.loss(loss_meter.val)
        if growth is not None:
            raise diverged(f"diverging loss at epoch {epoch + 1}, step {step}: {growth}", lr)
        top1_meter.update(100.0 * topk_correct(fused.detach(), y, (1,))[1] / len(y), len(y))
        bar.set_postfix(loss=f"{loss_meter.avg:.4f}", top1=f"{top1_meter.avg:.1f}")
    bad = training.nonfinite_tensors(model)
    if bad:
        raise diverged(f"non-finite weights after epoch {epoch + 1} ({', '.join(bad[:3])}"
                       f"{' ...' if len(bad) > 3 else ''})", lr)
    scale = guard.weights(model)
    if scale is not None:
        raise diverged(f"diverging weights after epoch {epoch + 1} (its last step {step}): {scale}", lr)
    return {"loss": loss_meter.avg, "train_top1": top1_meter.avg}


def diverged(what: str, lr: float | None) -> cli_errors.RunStopped:
    """The stop of a diverged run (exit status 1), naming the likely flag."""
    cause = "" if lr is None else f". Likely cause: a learning rate too high for this model (--lr {lr:g})"
    return cli_errors.RunStopped(f"{what}; stopping before writing a checkpoint or a result{cause}")


@torch.no_grad()
def evaluate(model, loader, device) -> dict:
    """Top-1 / top-5 (%) of the view on the test set; per-stream top-1 too for the fused view."""
    model.eval()
    correct, stream_correct, total = {1: 0, 5: 0}, {}, 0
    for x, y in tqdm(loader, desc="test", leave=False, dynamic_ncols=True):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        streams = model.stream_logits(x)
        fused = model.fuse_logits(streams)
        for k, v in topk_correct(fused, y, (1, 5)).items():
            correct[k] += v
        if len(streams) > 1:
            for mod, logits in streams.items():
                stream_correct[mod] = stream_correct.get(mod, 0) + topk_correct(logits, y, (1,))[1]
        total += len(y)
    result = {"top1": 100.0 * correct[1] / total, "top5": 100.0 * correct[5] / total}
    if stream_correct:
        result["stream_top1"] = {mod: 100.0 * c / total for mod, c in stream_correct.items()}
    return result


# ----------------------------------------------------------------------------------------------------
# the run


@dataclass
class Progress:
    """Where a run stands: what checkpoint_last.pth.tar holds besides the weights, restored by --resume."""
    start_epoch: int = 0
    best: dict | None = None
    history: list = field(default_factory=list)
    train_indices: np.ndarray | None = None       # the labelled subset (None: the whole training set)
    subset_seed: int | None = None
    resume_changes: list = field(default_factory=list)


def make_config(argv) -> frozen_flags.FrozenArgs:
    """The checked flags, with the released semi-supervised protocols and the default --lr resolved."""
    args = build_parser().parse_args(argv)
    resolved = {}
    if args.protocol.endswith(SEMI_SUFFIX):  # the released semi-supervised script: fine-tune that split
        resolved = {"released_protocol": args.protocol, "finetune": True,
                    "protocol": args.protocol[:-len(SEMI_SUFFIX)]}
    visualise.check_dependencies(args)
    default_lr = 0.01 if resolved.get("finetune", args.finetune) else 0.1
    cfg = frozen_flags.FrozenArgs(args, lr=default_lr if args.lr is None else args.lr,
                             workers=evaluation.loader_workers(args), **resolved)
    if resolved:
        print(f"=> --protocol {cfg.released_protocol}: fine-tuning on {cfg.protocol} (all parameters "
              f"trained, model in train mode, lr {cfg.lr}, --data-ratio {cfg.data_ratio})")
    evaluation.check_common_arguments(cfg)
    if cfg.checkpoint_path:
        resumes_here = run_folder.resumes_into(cfg.checkpoint_path, cfg.resume)
        run_folder.check_folder(cfg.checkpoint_path, resumes_here, cfg.overwrite)
    return cfg


def run_identity(cfg, source) -> dict:
    """What defines an evaluation run; a resume must keep it (resume_check)."""
    identity = resume_check.run_identity(cfg, _RESUME_MUST_MATCH, pretrained_sha256=source.sha256,
                                         data_dir=os.path.realpath(cfg.data_dir))
    return {k: v for k, v in identity.items() if not (k in ("encoder", "hidden_size") and v is None)}


def resume(cfg, store: training.RunCheckpoints, identity: dict, model, optimizer,
           progress: Progress) -> None:
    """Continue the run --resume names (a file, or a run folder's newest checkpoint that verifies);
    `--resume auto` with nothing to resume starts from scratch, saying so (as pretrain_cmd.py)."""
    path = store.locate(cfg.resume)
    if path is None:
        where = (f"no checkpoint in {cfg.checkpoint_path}" if cfg.checkpoint_path
                 else "no run folder (--checkpoint-path not given)")
        print(f"=> --resume auto: {where}, starting from scratch")
        return
    state = store.load(path)
    check_evaluation_checkpoint(state, path)
    progress.resume_changes = store.check(state, f"--resume {path}", identity, cfg.resume_allow_changes,
                                          model.encoder_record(), fixed=_RESUME_FIXED)
    try:
        model.load_state_dict(state["state_dict"], strict=True)
    except (RuntimeError, KeyError, TypeError) as exc:
        first = str(exc).strip().splitlines()
        raise ValueError(f"--resume {path}: its weights do not fit this classifier "
                         f"({' '.join(first[1:2] or first[:1])[:300]}); resume with the run's own settings, "
                         f"or start a new run in another --checkpoint-path") from None
    optimizer.load_state_dict(state["optimizer"])
    progress.start_epoch, progress.best = int(state["epoch"]), state.get("best")
    progress.history = list(state.get("history", []))
    if state.get("train_indices") is not None:
        progress.train_indices = state["train_indices"].numpy()
        progress.subset_seed = state.get("subset_seed")
    if "rng" in state:
        seeding.set_rng_state(state["rng"])
    print(f"=> resumed from {path} at epoch {progress.start_epoch}"
          + "".join(f"; allowed change: {c['field']} {c['checkpoint']!r} -> {c['now']!r}"
                    for c in progress.resume_changes))


def check_evaluation_checkpoint(state: dict, path: str) -> None:
    """--resume continues an evaluation run: a pretraining checkpoint (ours or a released one) is what
    --pretrained takes, and is refused here with that advice."""
    run = state.get("run") if isinstance(state.get("run"), dict) else {}
    weights = state.get("state_dict") if isinstance(state.get("state_dict"), dict) else {}
    if "pre_dataset" in run or any(k.split(".")[-1].startswith("queue") for k in weights):
        raise ValueError(f"--resume {path} is a pretraining checkpoint, not one of an evaluation run; give "
                         f"it as --pretrained {path} and leave out --resume (an evaluation resumes from the "
                         f"checkpoint_last.pth.tar of its own --checkpoint-path)")


def build_loaders(cfg, train_split, test_split, train_indices, device, window: int):
    """(training loader over the labelled subset, test loader), clips resized to `window` frames."""

    train_loader = evaluation.make_loader(train_split, train=True, batch_size=cfg.batch_size,
                                          workers=cfg.workers, device=device, shuffle=True,
                                          indices=train_indices, seed=cfg.seed, window=window)
    test_loader = evaluation.make_loader(test_split, train=False, batch_size=cfg.batch_size,
                                         workers=cfg.workers, device=device, shuffle=False, window=window)
    return train_loader, test_loader


def fit(cfg, model, optimizer, loaders, device, progress: Progress, store: training.RunCheckpoints,
        identity: dict) -> dict | None:
    """Epochs progress.start_epoch .. --epochs - 1; returns the last test evaluation (None: none ran)."""
    train_loader, test_loader = loaders
    linear = not cfg.finetune
    snapshot = frozen_snapshot(model) if linear else None
    last, guard = None, training.DivergenceCheck()
    for epoch in range(progress.start_epoch, cfg.epochs):
        lr = training.learning_rate(cfg.lr, epoch, cfg.schedule)
        training.set_learning_rate(optimizer, lr)
        train_loader.dataset.set_epoch(epoch)
        stats = train_one_epoch(model, train_loader, optimizer, device, linear, epoch, cfg.lr, guard)
        entry = {"epoch": epoch + 1, "lr": lr, **stats}
        if snapshot is not None and epoch == progress.start_epoch:
            sanity_check(model, snapshot)
        if (epoch + 1) % cfg.eval_freq == 0 or epoch + 1 == cfg.epochs:
            last = evaluate_and_keep_best(cfg, model, test_loader, device, entry, progress, store)
        progress.history.append(entry)
        if store.folder:
            store.save({
                "epoch": epoch + 1, "state_dict": model.state_dict(), "optimizer": optimizer.state_dict(),
                "best": progress.best, "history": progress.history, "args": frozen_flags.plain_args(cfg),
                "rng": seeding.rng_state(),
                "train_indices": None if progress.train_indices is None else torch.as_tensor(
                    progress.train_indices),
                "subset_seed": progress.subset_seed, "run": identity, **model.encoder_record()})
    return last


def evaluate_and_keep_best(cfg, model, test_loader, device, entry: dict, progress: Progress,
                           store: training.RunCheckpoints) -> dict:
    """Test the model after the epoch of `entry` (updated with the result); a new best is saved as
    model_best.pth.tar."""
    result = evaluate(model, test_loader, device)
    entry.update({f"test_{k}": v for k, v in result.items()})
    last = {"epoch": entry["epoch"], **result}
    if progress.best is None or result["top1"] > progress.best["top1"]:
        progress.best = dict(last)
        if store.folder:
            store.write("model_best.pth.tar", {"epoch": entry["epoch"], "state_dict": model.state_dict(),
                                               "best": progress.best, "args": frozen_flags.plain_args(cfg),
                                               **model.encoder_record()})
    best = progress.best
    print(f"epoch {entry['epoch']}: loss {entry['loss']:.4f}  test top-1 {result['top1']:.2f}  "
          f"top-5 {result['top5']:.2f}  (best top-1 {best['top1']:.2f} at epoch {best['epoch']})")
    return last


def write_results(cfg, run: dict, progress: Progress, last: dict, started: float) -> dict:
    """The results record (reports.results_record) and its one-row table; `run` holds benchmark, source,
    model_config, mode, num_train, num_test and device."""
    best, indices = progress.best, progress.train_indices
    metrics = {"last": last,
               "best": {**best, "note": "best evaluated epoch, chosen on the test set (as released)"}}
    extra = {"device": run["device"], "mode": run["mode"], "history": progress.history,
             "num_train": run["num_train"], "num_test": run["num_test"],
             "subset": None if indices is None else {
                 "ratio": cfg.data_ratio, "seed": progress.subset_seed,
                 "seed_given": cfg.subset_seed is not None,
                 "class_balanced": cfg.class_balanced, "size": int(len(indices)),
                 "indices_sha256": indices_digest(indices)},
             "resume_allowed_changes": progress.resume_changes}
    if run.get("gru_self_check") is not None:
        extra["gru_self_check"] = run["gru_self_check"]
    record = reports.results_record(cfg, run["benchmark"], run["source"], run["model_config"], run["mode"],
                                    metrics, cfg.epochs, started, extra)
    columns = [("top-1 (last)", last["top1"]), ("top-5 (last)", last["top5"]),
               ("top-1 (best on test)", best["top1"]), ("best epoch", best["epoch"]), ("epochs", cfg.epochs)]
    reports.report(cfg.output, record, columns, cfg.overwrite)
    return record


def main(argv=None) -> dict:
    cfg = make_config(argv)
    started = time.time()
    seeding.seed_everything(cfg.seed)
    device = evaluation.device_from_args(cfg)
    source = (evaluation.PretrainedSource(evaluation.RAW, None, {}, None, None)
              if cfg.pretrained == evaluation.RAW else evaluation.load_pretrained_source(cfg.pretrained))
    layout = evaluation.resolve_layout(cfg, source)
    benchmark, train_split, test_split = evaluation.load_benchmark(cfg, layout)
    model, model_config = evaluation.build_classifier(cfg, benchmark.num_class, source, device,
                                                        train_split, layout)
    gru_check = bigru.check_model(model, device)           # before the first step (CUDA)
    optimizer = torch.optim.SGD(prepare_heads(model, linear=not cfg.finetune), lr=cfg.lr,
                                momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    progress = Progress()
    progress.train_indices, progress.subset_seed = select_training_subset(
        train_split.labels, cfg.data_ratio, cfg.subset_seed, cfg.class_balanced)
    store, identity = training.RunCheckpoints(cfg.checkpoint_path), run_identity(cfg, source)
    if cfg.resume:
        resume(cfg, store, identity, model, optimizer, progress)
    lock = None
    if cfg.checkpoint_path:
        resumes_here = run_folder.resumes_into(cfg.checkpoint_path, cfg.resume)
        lock = run_folder.claim(cfg.checkpoint_path, resumes_here, cfg.overwrite)
    try:
        loaders = build_loaders(cfg, train_split, test_split, progress.train_indices, device,
                                model_config["window"])
        mode = "linear" if not cfg.finetune else ("semi-supervised" if progress.train_indices is not None
                                                  else "finetune")
        print(f"=> {mode} evaluation of {source.path or 'a randomly initialised encoder'} on "
              f"{benchmark.dataset} {benchmark.protocol}, view {cfg.view}: {len(loaders[0].dataset)} "
              f"training clips, {len(test_split)} test clips, {benchmark.num_class} classes, device {device}")
        last = fit(cfg, model, optimizer, loaders, device, progress, store, identity)
        if last is None:          # resumed from a run that had already finished
            last = {"epoch": progress.history[-1]["epoch"], **evaluate(model, loaders[1], device)}
        if cfg.tb_embedding or cfg.tsne:
            test_feat, test_lab = evaluation.extract_features(model, loaders[1], device, desc="test features")
            visualise.write_visualisations(cfg, test_feat.cpu().numpy(), test_lab.cpu().numpy())
        run = {"benchmark": benchmark, "source": source, "model_config": model_config, "mode": mode,
               "num_train": len(loaders[0].dataset), "num_test": len(test_split), "device": str(device),
               "gru_self_check": gru_check}
        return write_results(cfg, run, progress, last, started)
    finally:
        if lock is not None:
            lock.release()


if __name__ == "__main__":
    sys.exit(cli_errors.run_main(main))
