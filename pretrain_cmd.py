"""Self-supervised CMD pretraining (SPEC.md section 3) on one CPU, one GPU, or several processes (torchrun).

    python pretrain_cmd.py --pre-dataset ntu60 --protocol cross_subject --mlp --topk 8192 ...
    torchrun --nproc_per_node=4 pretrain_cmd.py ...      # --batch-size stays the global batch

Every flag of the released script keeps its name, default and meaning; additions are --data-dir,
--encoder and the encoders' own flags (--hidden-size, ...; cmd_model.ENCODERS), --device, --save-freq,
--amp, --max-steps, --log-dir and --batch-augment.

Outputs (rank 0 only): in --checkpoint-path, `checkpoint_last.pth.tar` every epoch,
`checkpoint_{epoch:04d}.pth.tar` every --save-freq epochs (epoch index, as released) and at the last
epoch, `config.json` and `log.jsonl`; tensorboard events in --log-dir (default: --checkpoint-path).

Reproducibility: the shuffle order and every augmentation are functions of (--seed, epoch, sample index)
(or of (--seed, epoch, rank) with --batch-augment), so an interrupted run resumed with `--resume auto`
ends with the same weights and queues as an uninterrupted one.

Layout (as DINO's train_dino): `prepare` = `make_config` (flags checked once and frozen) + `build_data`,
`build_model`, `build_optimizer`, `wrap_for_training` (+ `restore` on --resume); `train` runs the epochs
and `train_one_epoch` the steps. Shared with action_classification.py: engine/training.py (schedule,
checkpoints); the distributed details: cli/distributed.py.
"""
from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
import time
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

import cmd_model
import dataset
import encoders
from augmentation import augment
from cli import cli_errors, devices, distributed, flag_values, frozen_flags, machine, parallelism, seeding
from encoders import bigru
from engine import resume_check, training, training_monitor
from engine.meters import DeviceMeters
from readers import dataset_table
from storage import atomic_files, checkpoints, run_folder

# tensorboard tags of the released code (per epoch), plus 'loss' and 'lr'
STAT_NAMES = ("loss", "loss_joint", "loss_motion", "loss_bone", "loss_sim",
              "top1_joint", "top1_motion", "top1_bone")
# arguments that fix the model's shape besides the encoder record: a resumed checkpoint must agree on them
MODEL_ARGS = ("mlp", "contrast_dim", "contrast_k")
RELEASED_WORKERS = 8          # the released -j default: the most loader workers chosen without -j
RUN_FILES = ("log.jsonl", "config.json")       # what a run appends to or rewrites in --checkpoint-path


class UsageError(Exception):
    """Bad flags or bad input data, found before training starts (exit status 2)."""


class NonFiniteLossError(cli_errors.RunStopped):
    """The loss or the weights became NaN or infinite (exit status 1); nothing of that epoch is saved."""


def build_parser() -> argparse.ArgumentParser:
    p = cli_errors.ArgumentParser(description="CMD self-supervised pretraining (Mao et al., ECCV 2022)",
                                   formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    _add_released_flags(p)
    _add_our_flags(p)
    return p


def _add_released_flags(p) -> None:
    """The released pretrain_cmd.py's flags: names, defaults and meaning as released."""
    p.add_argument("-j", "--workers", default=None, type=flag_values.processes, metavar="N",
                   help="data loading workers per process (default: as released, 8, but no more than the "
                        "usable cores left beside the main process's threads; 0 on one core)")
    p.add_argument("--epochs", default=451, type=flag_values.positive_count, metavar="N",
                   help="number of total epochs to run")
    p.add_argument("--start-epoch", default=0, type=flag_values.count, metavar="N",
                   help="manual epoch number (useful on restarts; --resume overrides it)")
    p.add_argument("-b", "--batch-size", default=64, type=flag_values.positive_count, metavar="N",
                   help="global mini-batch size, split evenly over the processes of a torchrun job")
    p.add_argument("--lr", "--learning-rate", default=0.01, type=flag_values.positive, metavar="LR",
                   dest="lr", help="initial learning rate")
    p.add_argument("--schedule", default=[351], nargs="*", type=flag_values.count,
                   help="epochs at which the learning rate drops by 10x (ignored with --cos)")
    p.add_argument("--cos", action="store_true", help="cosine learning-rate schedule instead of steps")
    p.add_argument("--momentum", default=0.9, type=flag_values.unit_interval, metavar="M",
                   help="SGD momentum, in [0, 1]")
    p.add_argument("--wd", "--weight-decay", default=1e-4, type=flag_values.non_negative, metavar="W",
                   dest="weight_decay", help="weight decay")
    p.add_argument("-p", "--print-freq", default=10, type=flag_values.positive_count, metavar="N",
                   help="read (and check) the training statistics and refresh the progress bar every N "
                        "steps")
    p.add_argument("--resume", default="", type=str, metavar="PATH",
                   help="checkpoint to resume from, or 'auto' for the newest one in --checkpoint-path")
    p.add_argument("--seed", default=None, type=flag_values.seed,
                   help="seed of initialisation, shuffling and augmentation (drawn at random and recorded "
                        "in config.json when not given)")
    p.add_argument("--checkpoint-path", default="./checkpoints", type=str, help="where checkpoints go")
    p.add_argument("--skeleton-representation", default="graph-based",
                   choices=cmd_model.SKELETON_REPRESENTATIONS,
                   help="the released flag: graph-based (the released scripts' value) is the clip layout "
                        "every encoder takes; seq-based is refused (SPEC section 7); --encoder picks the "
                        "encoder")
    p.add_argument("--pre-dataset", default="ntu60", type=str,
                   help=f"pretraining dataset: one of {', '.join(dataset_table.dataset_names())}")
    p.add_argument("--protocol", default="cross_subject", type=str,
                   help=f"split: one of {', '.join(dataset_table.protocol_names())}")
    p.add_argument("--contrast-dim", default=128, type=flag_values.positive_count,
                   help="feature dimension of the contrastive head")
    p.add_argument("--contrast-k", default=16384, type=flag_values.positive_count,
                   help="queue size (number of negative keys)")
    p.add_argument("--contrast-m", default=0.999, type=flag_values.unit_interval,
                   help="momentum of the key encoders, in [0, 1]")
    p.add_argument("--contrast-t", default=0.07, type=flag_values.positive, help="InfoNCE temperature (> 0)")
    p.add_argument("--teacher-t", default=0.05, type=flag_values.positive,
                   help="temperature of the teacher's distribution (> 0)")
    p.add_argument("--student-t", default=0.1, type=flag_values.positive,
                   help="temperature of the student's distribution (> 0)")
    p.add_argument("--cmd-weight", default=1.0, type=flag_values.non_negative,
                   help="weight of the cross-modal distillation loss (>= 0)")
    p.add_argument("--topk", default=8192, type=flag_values.positive_count,
                   help="nearest neighbours in the teacher's distribution")
    p.add_argument("--mlp", action="store_true", help="two-layer MLP projection head")


def _add_our_flags(p) -> None:
    """Additions to the released flags (docs/differences.md)."""
    p.add_argument("--data-dir", default="./data", type=str,
                   help="root of the prepared data (<data-dir>/<dataset>/<xsub|xview|xsetup>/); with "
                        "--pre-dataset custom, the folder holding train_data_joint.npy itself")
    dataset_table.add_layout_argument(p)
    cmd_model.add_encoder_arguments(p)
    p.add_argument("--device", default="auto", type=str,
                   help="auto (this process's CUDA GPU when present, else CPU), cpu, cuda, cuda:N")
    p.add_argument("--save-freq", default=10, type=flag_values.positive_count,
                   help="write checkpoint_{epoch:04d}.pth.tar when epoch %% save-freq == 0, "
                        "and at the last epoch")
    p.add_argument("--amp", action="store_true",
                   help="mixed precision: bfloat16 autocast where the device has it (CUDA, CPUs with "
                        "bfloat16 units), else float16 autocast + GradScaler on CUDA; float32 otherwise")
    p.add_argument("--max-steps", default=None, type=flag_values.positive_count,
                   help="stop after this many training steps (smoke runs); the cut epoch is saved "
                        "as the last")
    p.add_argument("--log-dir", default=None, type=str,
                   help="tensorboard folder (default: --checkpoint-path)")
    p.add_argument("--shuffle-bn", default=1, type=flag_values.positive_count, metavar="GROUPS",
                   help="encode each process's batch in GROUPS groups, the keys in a random order, so that "
                        "a clip's query and key get BatchNorm statistics of different clips (MoCo's "
                        "shuffling BN on one device; docs/differences.md); 1 = off, as released")
    p.add_argument("--batch-augment", action="store_true",
                   help="augment whole batches on the model's device (augment.augment_pretrain_batch) "
                        "instead of "
                        "per clip with numpy in the loader workers (the released way); same distributions")
    p.add_argument("--overwrite", action="store_true",
                   help="start again in a --checkpoint-path that holds a run, after moving it to "
                        "<folder>.backup-<time>")
    p.add_argument("--resume-allow-changes", nargs="+", default=[], metavar="FIELD",
                   help="fields that may differ from the resumed checkpoint's run (e.g. epochs); "
                        "recorded in log.jsonl")
    p.add_argument("--allow-nonfinite", action="store_true",
                   help="read NaN/inf values in the data as 0 (with a warning counting them) instead of "
                        "refusing the data")
    parallelism.add_threads_argument(p)
    p.add_argument("--monitor-every", default=100, type=flag_values.count, metavar="STEPS",
                   help="look at the query features (collapse, spread, validation 1-NN: engine/training_monitor.py) "
                        "after the first epoch that ends at least STEPS steps after the last look, and after "
                        "the last epoch; 0 = never. It changes nothing in the training")
    p.add_argument("--monitor-clips", default=200, type=flag_values.count, metavar="N",
                   help="training and validation clips of the monitor's 1-NN (0: no 1-NN)")
    _add_augment_flags(p)


def _add_augment_flags(p) -> None:
    """Opt-in changes of the pretraining views (defaults: the released augmentations, SPEC section 4)."""
    g = p.add_argument_group("pretraining views (defaults as released; docs/differences.md)")
    g.add_argument("--window", default=augment.WINDOW, type=flag_values.positive_count, metavar="T",
                   help="frames of every view (crops are resized to T); recorded in the checkpoint, so the "
                        "evaluations use the same")
    g.add_argument("--aug-crop-min", default=0.1, type=flag_values.unit_interval, metavar="S",
                   help="temporal crop scale ~ U(S, 1)")
    g.add_argument("--aug-corrupt-prob", default=0.5, type=flag_values.unit_interval, metavar="P",
                   help="probability of the joint corruption")
    g.add_argument("--aug-shear-prob", default=0.5, type=flag_values.unit_interval, metavar="P",
                   help="probability of the shear")
    g.add_argument("--aug-shear", default=1.0, type=flag_values.non_negative, metavar="A",
                   help="shear entries ~ U(-A, A)")
    g.add_argument("--aug-rotate", default=0.0, type=flag_values.non_negative, metavar="DEG",
                   help="random 3-D rotation of each view, U(-DEG, DEG) about x, y and z (0: off, as released)")
    g.add_argument("--aug-noise", default=0.0, type=flag_values.non_negative, metavar="STD",
                   help="Gaussian noise of this standard deviation on every coordinate (0: off, as released)")


def augment_options(args) -> augment.PretrainAugment:
    """The views' settings that the --aug-* flags choose."""
    return augment.PretrainAugment(crop_min_scale=args.aug_crop_min, corrupt_prob=args.aug_corrupt_prob,
                                   shear_prob=args.aug_shear_prob, shear=args.aug_shear,
                                   rotate=args.aug_rotate, noise=args.aug_noise)


def encoder_from_args(args) -> cmd_model.ModelSpec:
    """The model the flags choose (cmd_model.ModelSpec): --encoder (default bigru, whatever the released
    --skeleton-representation graph-based says), that encoder's flags over its defaults for the data's
    skeleton layout (the dataset's, or --layout for a custom folder)."""
    cmd_model.check_skeleton_representation(args.skeleton_representation, "--skeleton-representation")
    name = args.encoder or cmd_model.DEFAULT_ENCODER
    layout = dataset_table.resolve_layout(args.pre_dataset, getattr(args, "layout", None))
    return cmd_model.model_spec(name, layout, overrides=cmd_model.encoder_overrides(name, args))


@dataclass
class TrainResult:
    model: nn.Module            # the CMD model (not the DDP wrapper)
    epochs_done: int            # value of 'epoch' in the last checkpoint (epochs completed)
    steps: int                  # training steps run by this invocation
    checkpoint: str | None      # last checkpoint written or resumed from


# ---------------------------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class Config:
    """The run's settings, made once by `make_config` after the flags are checked, never changed later."""
    args: frozen_flags.FrozenArgs        # the flags, with encoder, seed, log_dir and start_epoch resolved
    dist: distributed.DistInfo
    device: torch.device
    amp_dtype: torch.dtype | None   # what --amp autocasts to; None: float32
    spec: cmd_model.ModelSpec       # the model: encoder, its config, the skeleton layout
    data_folder: str
    identity: dict                  # what a resume must keep (resume_check.PRETRAIN_FIELDS)

    @property
    def per_rank_batch(self) -> int:
        return self.args.batch_size // self.dist.world_size

    @property
    def encoder_record(self) -> dict:
        return self.spec.encoder_record()


@dataclass(frozen=True)
class Resume:
    path: str
    checkpoint: dict
    changes: list                   # the differences --resume-allow-changes allowed (resume_check)


def check_flags(args, world: int) -> cmd_model.ModelSpec:
    """The model spec of valid flags; UsageError naming the first bad one otherwise."""
    try:
        spec = encoder_from_args(args)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    if args.batch_size % world:
        raise UsageError(f"--batch-size {args.batch_size} is the global batch and must split evenly over "
                         f"{world} processes")
    if args.contrast_k % args.batch_size:
        raise UsageError(f"--contrast-k {args.contrast_k} must be a multiple of the global --batch-size "
                         f"{args.batch_size} (each step enqueues one batch of keys; the released code "
                         f"assumes it)")
    if not 1 <= args.topk <= args.contrast_k:
        raise UsageError(f"--topk {args.topk} must be between 1 and --contrast-k {args.contrast_k}")
    if args.batch_augment and (augment_options(args) != augment.RELEASED_AUGMENT or args.window != augment.WINDOW):
        raise UsageError("--batch-augment draws the released views only: leave --window and the --aug-* flags "
                         "at their defaults, or drop --batch-augment")
    if args.batch_size // world < 2 * args.shuffle_bn:
        raise UsageError(f"--shuffle-bn {args.shuffle_bn}: expected 1 (off) or a group count that leaves at "
                         f"least 2 clips per group of each process's batch ({args.batch_size // world})")
    return spec


def check_memory(args, spec: cmd_model.ModelSpec, device: torch.device, per_rank_batch: int) -> None:
    """Refuse sizes whose model and queues cannot fit the device, before anything is allocated."""
    needed = cmd_model.pretraining_bytes(spec, args.contrast_dim, args.contrast_k, args.mlp, per_rank_batch)
    try:
        machine.check_memory(needed, device, f"CMD pretraining (six {spec.encoder} encoders, three queues of "
                                             f"{args.contrast_dim} x {args.contrast_k})",
                             "lower the encoder's sizes (--hidden-size, --gru-layers, ...), --contrast-k or "
                             "--contrast-dim")
    except ValueError as exc:
        raise UsageError(str(exc)) from exc


def make_config(args, dist_info, device, store: training.RunCheckpoints, log) -> tuple[Config, Resume | None]:
    """The frozen settings, and the checkpoint to resume (checked against them) or None.

    A resumed run without --seed keeps the interrupted run's seed, so the rest of it is reproduced."""
    spec = check_flags(args, dist_info.world_size)
    check_memory(args, spec, device, args.batch_size // dist_info.world_size)
    if dist_info.is_main:      # before any work: never replace an earlier run's files by accident
        resumes_here = run_folder.resumes_into(args.checkpoint_path, args.resume)
        run_folder.check_folder(args.checkpoint_path, resumes_here, args.overwrite)
        if args.log_dir:
            run_folder.check_writable_folder(args.log_dir, "--log-dir")
        for name in RUN_FILES:        # written only as the folder's own regular files, never through a link
            run_folder.check_run_file(os.path.join(args.checkpoint_path, name))
        if resumes_here:
            read_log_records(os.path.join(args.checkpoint_path, "log.jsonl"))
    amp_dtype = devices.amp_dtype(device) if args.amp else None
    if args.amp and amp_dtype is None:
        log(f"warning: --amp: {device} has no native bfloat16 (and float16 with a GradScaler needs CUDA); "
            f"training in float32")
    try:
        data_folder = dataset_table.resolve_benchmark(args.pre_dataset, args.protocol, args.data_dir,
                                                      spec.layout).folder
    except (ValueError, OSError) as exc:
        raise UsageError(f"cannot load the pretraining data: {exc}") from exc
    path = store.locate(args.resume)
    checkpoint = store.load(path) if path is not None else None
    seed = args.seed
    if seed is None and checkpoint is not None:
        seed = (checkpoint.get("args") or {}).get("seed")
    if seed is None:
        seed = int.from_bytes(os.urandom(4), "little") % (2 ** 31)
    # every rank must initialise the same model and use the same order
    done = args.start_epoch if checkpoint is None else int(checkpoint.get("epoch", 0))
    frozen = frozen_flags.FrozenArgs(args, encoder=spec.encoder, seed=distributed.broadcast_int(seed, device),
                                log_dir=args.log_dir or args.checkpoint_path, start_epoch=done,
                                workers=parallelism.loader_workers(args.workers, args.threads,
                                                                   RELEASED_WORKERS))
    identity = resume_check.run_identity(
        frozen, world_size=dist_info.world_size, data_folder=os.path.realpath(data_folder),
        encoder_config=encoders.config_record(spec.config), layout=spec.layout.record(),
        code_version=resume_check.code_version())
    if identity.get("hidden_size") is None:   # not given: the encoder config holds the size
        identity.pop("hidden_size", None)
    cfg = Config(frozen, dist_info, device, amp_dtype, spec, data_folder, identity)
    if checkpoint is None:
        return cfg, None
    return cfg, Resume(path, checkpoint, check_resume(cfg, path, checkpoint))


def check_resume(cfg: Config, path: str, checkpoint: dict) -> list:
    """The allowed changes of a checkpoint of this run; UsageError for one of another run or model."""
    a = cfg.args
    changes = training.RunCheckpoints.check(checkpoint, path, cfg.identity, a.resume_allow_changes,
                                            cfg.encoder_record, fixed=resume_check.PRETRAIN_FIXED)
    saved = checkpoint.get("args") or {}       # older checkpoints record no identity: what their args hold
    differ = [f"--{k.replace('_', '-')} {saved[k]} (checkpoint) vs {getattr(a, k)} (now)"
              for k in MODEL_ARGS if k in saved and saved[k] != getattr(a, k)]
    if differ:
        raise UsageError(f"{path} was trained with a different model: " + "; ".join(differ))
    return changes


# ---------------------------------------------------------------------------------------------- building
@dataclass
class Data:
    train_set: dataset.PretrainFeeder
    sampler: DistributedSampler
    loader: DataLoader
    generator: torch.Generator      # the loader's shuffling and worker seeds, re-seeded every epoch
    val_split: dataset.SkeletonSplit | None = None      # the folder's labelled val part, for the monitor


def build_data(cfg: Config) -> Data:
    a = cfg.args
    try:
        benchmark = dataset_table.resolve_benchmark(a.pre_dataset, a.protocol, a.data_dir, cfg.spec.layout)
        split = dataset.load_split(cfg.data_folder, "train", benchmark.num_class, benchmark.skeleton)
        dataset.require_finite(split, allow=a.allow_nonfinite)
    except (ValueError, OSError) as exc:
        raise UsageError(f"cannot load the pretraining data: {exc}") from exc
    train_set = dataset.PretrainFeeder(split, window=a.window, seed=a.seed,
                                       augment="none" if a.batch_augment else "numpy",
                                       options=augment_options(a))
    sampler = DistributedSampler(train_set, num_replicas=cfg.dist.world_size, rank=cfg.dist.rank,
                                 shuffle=True, seed=a.seed, drop_last=False)
    generator = torch.Generator()
    loader = DataLoader(train_set, batch_size=cfg.per_rank_batch, sampler=sampler, num_workers=a.workers,
                        pin_memory=cfg.device.type == "cuda", drop_last=True, generator=generator,
                        persistent_workers=False, worker_init_fn=parallelism.worker_init)
    if len(loader) == 0:
        raise UsageError(f"{cfg.data_folder}: the training split has {len(split)} clips, fewer than one "
                         f"per-process batch of {cfg.per_rank_batch} (--batch-size {a.batch_size} over "
                         f"{cfg.dist.world_size} processes)")
    return Data(train_set, sampler, loader, generator, monitor_split(cfg, benchmark))


def monitor_split(cfg: Config, benchmark) -> dataset.SkeletonSplit | None:
    """The prepared folder's val part for the monitor's 1-NN (None: none, or the monitor's 1-NN is off)."""
    a = cfg.args
    if not a.monitor_every or not a.monitor_clips:
        return None
    if not os.path.exists(dataset.split_paths(cfg.data_folder, "val")["data"]):
        return None
    try:
        split = dataset.load_split(cfg.data_folder, "val", benchmark.num_class, benchmark.skeleton)
        dataset.require_finite(split, allow=a.allow_nonfinite)
    except (ValueError, OSError) as exc:
        raise UsageError(f"cannot load the validation clips the monitor reads (--monitor-clips 0 turns "
                         f"its 1-NN off): {exc}") from exc
    return split


def build_model(cfg: Config) -> cmd_model.CMD:
    """The CMD model on the run's device, initialised from --seed (SyncBatchNorm under torchrun on CUDA)."""
    a = cfg.args
    seeding.seed_everything(a.seed)
    try:
        model = cmd_model.CMD(spec=cfg.spec, dim=a.contrast_dim, K=a.contrast_k, m=a.contrast_m,
                              T=a.contrast_t, teacher_T=a.teacher_t, student_T=a.student_t,
                              cmd_weight=a.cmd_weight, topk=a.topk, mlp=a.mlp, shuffle_bn=a.shuffle_bn)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    model = model.to(cfg.device)
    if cfg.dist.distributed and cfg.device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if cfg.device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    return model


def build_optimizer(cfg: Config, model: nn.Module):
    """SGD as released, and the GradScaler that float16 autocast needs (disabled otherwise: bfloat16 has
    float32's range)."""
    a = cfg.args
    optimizer = training.sgd(model.parameters(), a.lr, momentum=a.momentum, weight_decay=a.weight_decay)
    return optimizer, torch.amp.GradScaler("cuda", enabled=cfg.amp_dtype == torch.float16)


def wrap_for_training(cfg: Config, model: nn.Module) -> nn.Module:
    """The module the steps call: DistributedDataParallel under torchrun, else the model itself.

    Buffers are not re-broadcast from rank 0 at every forward: the queues stay equal because every rank
    enqueues the keys gathered from all ranks (the fix to the released code), and a broadcast would both
    hide a broken gather and copy three (dim, K) queues per step."""
    if not cfg.dist.distributed:
        return model
    ddp_flags = inspect.signature(nn.parallel.DistributedDataParallel).parameters
    flag = "forward_sync_buffers" if "forward_sync_buffers" in ddp_flags else "broadcast_buffers"
    device_ids = [cfg.device.index] if cfg.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids, **{flag: False})


@dataclass
class Training:
    """What `train` runs on, as the build_* functions return it."""
    cfg: Config
    data: Data
    model: cmd_model.CMD            # the CMD model (not the DDP wrapper)
    train_model: nn.Module          # what the steps call (the DDP wrapper under torchrun)
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    store: training.RunCheckpoints  # the run folder's checkpoints; store.last: last written or resumed
    resume: Resume | None
    gru_check: dict | None = None   # the BiGRU self-check's record (bigru.check_model), in config.json


def prepare(args) -> Training:
    """Process group, settings, data, model and optimiser, with the resumed checkpoint's state loaded."""
    dist_info, device = distributed.init_distributed(args.device)
    log = distributed.main_process_log(dist_info.is_main)
    store = training.RunCheckpoints(args.checkpoint_path, log)
    cfg, resume = make_config(args, dist_info, device, store, log)
    parallelism.set_threads(args.threads, cfg.args.workers, log=log)
    data = build_data(cfg)
    model = build_model(cfg)
    gru_check = bigru.check_model(model, device, cfg.amp_dtype, log)   # before the first step (CUDA)
    optimizer, scaler = build_optimizer(cfg, model)
    t = Training(cfg, data, model, wrap_for_training(cfg, model), optimizer, scaler, store, resume, gru_check)
    if resume is not None:
        restore(t, log)
    elif args.resume == "auto":
        log(f"=> --resume auto: no checkpoint in {args.checkpoint_path}, starting from scratch")
    return t


def restore(t: Training, log) -> None:
    """Load the resumed checkpoint's weights, queues, optimiser, RNG and AMP scaler states."""
    path, ckpt = t.resume.path, t.resume.checkpoint
    try:
        checkpoints.load_pretraining_weights(t.model, ckpt["state_dict"], source=path)
    except (KeyError, RuntimeError) as exc:
        raise UsageError(str(exc)) from exc
    restored = ["model weights and queues (queue_ptr=%d)" % int(t.model.queue_ptr)]
    if "optimizer" in ckpt:
        t.optimizer.load_state_dict(ckpt["optimizer"])
        restored.append("optimizer state")
    restored.append(f"epoch counter ({t.cfg.args.start_epoch} epochs done)")
    if "rng" in ckpt:
        seeding.set_rng_state(ckpt["rng"])
        restored.append("RNG states")
    if t.cfg.amp_dtype is not None and "scaler" in ckpt:
        t.scaler.load_state_dict(ckpt["scaler"])
        restored.append("AMP scaler")
    log(f"=> resumed from {path}: " + ", ".join(restored))
    for change in t.resume.changes:
        log(f"=> --resume-allow-changes: {change['field']} {change['checkpoint']!r} -> {change['now']!r}")


# ---------------------------------------------------------------------------------------------- one epoch
def batch_views(cfg: Config, batch, generator):
    """The two augmented views of a batch on the device (augmented here with --batch-augment)."""
    if cfg.args.batch_augment:
        clips, num_frame = (t.to(cfg.device, non_blocking=True) for t in batch)
        return (augment.augment_pretrain_batch(clips, num_frame, generator=generator),
                augment.augment_pretrain_batch(clips, num_frame, generator=generator))
    return tuple(t.to(cfg.device, non_blocking=True) for t in batch)


def augment_generator(cfg: Config, epoch: int) -> torch.Generator | None:
    """--batch-augment's random stream of this epoch and rank (None: the loader workers augment)."""
    if not cfg.args.batch_augment:
        return None
    generator = torch.Generator(device=cfg.device)
    generator.manual_seed(seeding.derived_seed(cfg.args.seed, epoch, cfg.dist.rank, 1))
    return generator


@torch.no_grad()
def step_statistics(out: cmd_model.CMDOutput, ce: dict, loss: torch.Tensor) -> dict:
    """The named statistics of one step (STAT_NAMES), as device tensors."""
    stats = {"loss": loss, **{f"loss_{m}": ce[m] for m in cmd_model.MODALITIES}, "loss_sim": out.loss_cmd}
    for m in cmd_model.MODALITIES:
        stats[f"top1_{m}"] = (out.logits[m].argmax(dim=1) == out.targets).float().mean() * 100
    return stats


def train_one_epoch(cfg: Config, data: Data, train_model, optimizer, scaler, epoch: int,
                    steps_left: int | None, last_checkpoint: str | None = None,
                    guard: training.DivergenceCheck | None = None) -> tuple[dict, int]:
    """One epoch, cut after `steps_left` steps. No host synchronisation per step: the statistics are summed
    on the device and read (and checked for NaN/inf, naming the first bad step, and for divergence with
    `guard`, kept over the run) every --print-freq steps and at the end."""
    a = cfg.args
    guard = guard or training.DivergenceCheck()
    train_model.train()
    generator = augment_generator(cfg, epoch)
    meters = DeviceMeters(STAT_NAMES, cfg.device, no_step=len(data.loader))
    bar = tqdm(data.loader, desc=f"epoch {epoch}", total=len(data.loader), disable=not cfg.dist.is_main,
               dynamic_ncols=True, leave=False)
    start, means = time.perf_counter(), None
    for step, batch in enumerate(bar):
        x_q, x_k = batch_views(cfg, batch, generator)
        with torch.autocast(cfg.device.type, dtype=cfg.amp_dtype, enabled=cfg.amp_dtype is not None):
            out = train_model(x_q, x_k)
            ce, loss = out.contrastive_losses(), out.loss
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        meters.update(step, step_statistics(out, ce, loss))
        last_step = step + 1 == len(data.loader) or (steps_left is not None and step + 1 >= steps_left)
        if step % a.print_freq == 0 or last_step:
            means = read_statistics(cfg, data, meters, epoch, step, last_checkpoint, train_model, guard)
            show_progress(bar, means, meters.count * a.batch_size / max(time.perf_counter() - start, 1e-9))
        if last_step:
            break
    bar.close()
    elapsed = time.perf_counter() - start
    record = dict(means or dict.fromkeys(STAT_NAMES, 0.0), steps=meters.count,
                  samples=meters.count * a.batch_size, time_s=elapsed,
                  samples_per_s=meters.count * a.batch_size / max(elapsed, 1e-9))
    return record, meters.count


def read_statistics(cfg: Config, data: Data, meters: DeviceMeters, epoch: int, step: int,
                    last_checkpoint: str | None, train_model: nn.Module | None = None,
                    guard: training.DivergenceCheck | None = None) -> dict:
    """Global means over the epoch's steps so far (one host read); raises at a non-finite step, when the
    updates so far made a weight, a queue or a statistic of the model non-finite (one more read), or when
    the loss or the weights diverge while finite (`guard`: training.DivergenceCheck, one more read)."""
    reading = meters.read()
    checked = max(step - cfg.args.print_freq + 1, 0)
    window = f"found at the check of steps {checked}..{step}, made every --print-freq steps"
    if reading.first_bad is not None:
        detail = ", ".join(f"{name}={v:.4g}" for name, v in reading.bad_values.items())
        raise nonfinite_loss_error(cfg, data, epoch, reading.first_bad, f"{detail}; {window}",
                                   last_checkpoint)
    bad = training.nonfinite_tensors(getattr(train_model, "module", train_model)) if train_model else []
    if bad:
        shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        raise NonFiniteLossError(
            f"non-finite weights at epoch {epoch} after the update of step {step} ({shown}; {window}); "
            f"stopping before writing a checkpoint. Likely cause: {likely_flags(cfg.args)}. Last "
            f"checkpoint written or resumed: {last_checkpoint or 'none'}")
    if guard is not None:
        model = getattr(train_model, "module", train_model)
        growth = guard.loss(reading.means["loss"])
        scale = guard.weights(model) if growth is None and model is not None else None
        if growth or scale:
            what = (f"diverging loss at epoch {epoch}, step {step}: {growth}" if growth else
                    f"diverging weights at epoch {epoch} after the update of step {step}: {scale}")
            raise NonFiniteLossError(
                f"{what} ({window}); stopping before writing a checkpoint. Likely cause: "
                f"{likely_flags(cfg.args)}. Last checkpoint written or resumed: {last_checkpoint or 'none'}")
    return reading.means


# the flags whose values most often make training diverge, with the released values they are compared to
DIVERGENCE_FLAGS = ("lr", "weight_decay", "momentum", "contrast_m", "contrast_t", "teacher_t", "student_t",
                    "cmd_weight")


def likely_flags(args) -> str:
    """The divergence-prone flags that differ from the released values, or the learning rate."""
    parser = build_parser()
    option = {a.dest: a.option_strings[0] for a in parser._actions if a.option_strings}
    changed = [f"{option[k]} {getattr(args, k):g} (released {parser.get_default(k):g})"
               for k in DIVERGENCE_FLAGS if getattr(args, k) != parser.get_default(k)]
    return ("flags that differ from the released values: " + ", ".join(changed) if changed
            else f"a learning rate too high for this model and data (--lr {args.lr:g})")


def nonfinite_loss_error(cfg: Config, data: Data, epoch: int, step: int, detail: str,
                         last_checkpoint: str | None) -> NonFiniteLossError:
    """The stop at a non-finite loss, naming the step and this process's clips of that batch."""
    order = list(iter(data.sampler))          # this epoch's order (set_epoch was called)
    clips = order[step * cfg.per_rank_batch:(step + 1) * cfg.per_rank_batch]
    names = [data.train_set.split.names[i] for i in clips]
    shown = ", ".join(f"{i} ({n})" for i, n in zip(clips[:8], names[:8])) + (" ..." if len(clips) > 8 else "")
    return NonFiniteLossError(
        f"non-finite loss at epoch {epoch}, step {step} ({detail}); batch clips {shown}; stopping before "
        f"writing a checkpoint. The data were checked finite at load; likely cause: "
        f"{likely_flags(cfg.args)}, or these clips. Last checkpoint written or resumed: "
        f"{last_checkpoint or 'none'}")


def show_progress(bar, means: dict, samples_per_s: float) -> None:
    if bar.disable:
        return
    m = means
    bar.set_postfix(loss=f"{m['loss']:.3f}", j=f"{m['loss_joint']:.3f}", m=f"{m['loss_motion']:.3f}",
                    b=f"{m['loss_bone']:.3f}", cmd=f"{m['loss_sim']:.3f}",
                    top1=f"{m['top1_joint']:.1f}/{m['top1_motion']:.1f}/{m['top1_bone']:.1f}",
                    sps=f"{samples_per_s:.1f}", refresh=False)


# ---------------------------------------------------------------------------------------------- the run
class RunOutputs:
    """What rank 0 writes besides checkpoints: the run folder's lock, config.json, log.jsonl and the
    tensorboard events (tags: STAT_NAMES and 'lr', per epoch)."""

    def __init__(self, t: Training, resume_changes: list):
        a = t.cfg.args
        self.lock = run_folder.claim(a.checkpoint_path, run_folder.resumes_into(a.checkpoint_path, a.resume),
                                     a.overwrite)
        self.writer = None
        try:
            self._open(t, resume_changes)
        except BaseException:
            self.close()          # no lock left behind
            raise

    def _open(self, t: Training, resume_changes: list) -> None:
        a = t.cfg.args
        write_config(t)
        from torch.utils.tensorboard import SummaryWriter  # noqa: PLC0415  (heavy import, rank 0 only)
        # purge_step: tensorboard forgets what an interrupted run logged after its last checkpoint
        self.writer = SummaryWriter(log_dir=a.log_dir, purge_step=a.start_epoch or None)
        log_path = os.path.join(a.checkpoint_path, "log.jsonl")
        run_folder.check_run_file(log_path)
        _drop_records_from(log_path, a.start_epoch)
        self.jsonl = atomic_files.JsonlLogger(log_path)
        if resume_changes:      # epoch: the last one done, so a later resume keeps this record
            self.jsonl.write({"epoch": a.start_epoch - 1, "event": "resume_allowed_changes",
                              "checkpoint": t.store.last, "changes": resume_changes})

    def write_epoch(self, record: dict) -> None:
        self.jsonl.write(record)
        for name in STAT_NAMES:
            self.writer.add_scalar(name, record[name], record["epoch"])
        for name in (k for k in record if k.startswith("monitor_") and k != "monitor_s"):
            self.writer.add_scalar(name.replace("_", "/", 1), record[name], record["epoch"])
        self.writer.add_scalar("lr", record["lr"], record["epoch"])
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.lock.release()


def write_config(t: Training) -> None:
    cfg = t.cfg
    config = dict(frozen_flags.plain_args(cfg.args), world_size=cfg.dist.world_size,
                  per_process_batch=cfg.per_rank_batch, device=str(cfg.device), data_folder=cfg.data_folder,
                  train_clips=len(t.data.train_set), steps_per_epoch=len(t.data.loader),
                  torch_version=torch.__version__, argv=sys.argv)
    config.update(t.cfg.spec.record())
    if t.gru_check is not None:
        config["gru_self_check"] = t.gru_check
    atomic_files.atomic_write_json(os.path.join(cfg.args.checkpoint_path, "config.json"), config)


def checkpoint_state(t: Training, epoch: int) -> dict:
    """What every checkpoint holds after `epoch` (0-based): the released keys, then ours."""
    state = {"epoch": epoch + 1, "state_dict": t.model.state_dict(), "optimizer": t.optimizer.state_dict(),
             **t.cfg.spec.record(), "args": frozen_flags.plain_args(t.cfg.args),
             "rng": seeding.rng_state(), "run": t.cfg.identity}
    if t.cfg.amp_dtype is not None:
        state["scaler"] = t.scaler.state_dict()
    return state


def epoch_summary(r: dict) -> str:
    return (f"epoch {r['epoch']}: lr {r['lr']:.3g} loss {r['loss']:.4f} (joint {r['loss_joint']:.4f} "
            f"motion {r['loss_motion']:.4f} bone {r['loss_bone']:.4f} cmd {r['loss_sim']:.4f}) "
            f"top1 {r['top1_joint']:.1f}/{r['top1_motion']:.1f}/{r['top1_bone']:.1f} "
            f"{r['samples_per_s']:.1f} samples/s" + (" [stopped early: --max-steps]" * r["truncated"])
            + (training_monitor.summary(r) if "monitor_s" in r else ""))


def start_epoch(t: Training, epoch: int) -> float:
    """Set this epoch's data order, augmentations and learning rate; returns the learning rate."""
    a = t.cfg.args
    t.data.sampler.set_epoch(epoch)
    t.data.train_set.set_epoch(epoch)
    t.data.generator.manual_seed(seeding.derived_seed(a.seed, epoch, t.cfg.dist.rank, 0))
    lr = training.learning_rate(a.lr, epoch, a.schedule, a.epochs if a.cos else None)
    training.set_learning_rate(t.optimizer, lr)
    return lr


def build_monitor(t: Training) -> training_monitor.TrainingMonitor | None:
    a = t.cfg.args
    if not a.monitor_every or not t.cfg.dist.is_main:
        return None
    return training_monitor.TrainingMonitor(t.data.train_set.split, t.data.val_split, a.window, t.cfg.device,
                                            held=min(a.batch_size, len(t.data.train_set)),
                                            knn_clips=a.monitor_clips)


def train(t: Training) -> TrainResult:
    """Epochs --start-epoch (or the resumed count) .. --epochs - 1, or until --max-steps steps."""
    a, log = t.cfg.args, distributed.main_process_log(t.cfg.dist.is_main)
    if a.start_epoch >= a.epochs:
        log(f"=> nothing to do: {a.start_epoch} of {a.epochs} epochs already done")
        return TrainResult(t.model, a.start_epoch, 0, t.store.last)
    outputs = RunOutputs(t, t.resume.changes if t.resume else []) if t.cfg.dist.is_main else None
    log(f"=> pretraining CMD ({a.encoder}, {t.cfg.encoder_record['encoder_config']}) on {t.cfg.data_folder}: "
        f"{len(t.data.train_set)} clips, global batch {a.batch_size} = {t.cfg.dist.world_size} x "
        f"{t.cfg.per_rank_batch} on {t.cfg.device}, epochs {a.start_epoch}..{a.epochs - 1}, seed {a.seed}")
    total_steps, epochs_done, guard = 0, a.start_epoch, training.DivergenceCheck()
    monitor, monitored_at, warned = build_monitor(t), None, False
    try:
        for epoch in range(a.start_epoch, a.epochs):
            lr = start_epoch(t, epoch)
            steps_left = None if a.max_steps is None else a.max_steps - total_steps
            record, steps = train_one_epoch(t.cfg, t.data, t.train_model, t.optimizer, t.scaler, epoch,
                                            steps_left, t.store.last, guard)
            total_steps += steps
            last_epoch = epoch == a.epochs - 1 or (a.max_steps is not None and total_steps >= a.max_steps)
            record.update(epoch=epoch, lr=lr, truncated=steps < len(t.data.loader))
            if monitor is not None and (last_epoch or monitored_at is None
                                        or total_steps - monitored_at >= a.monitor_every):
                first_look, monitored_at = monitored_at is None, total_steps
                record.update(monitor.measure(t.model))
                warning = training_monitor.collapse_warning(record, epoch)
                if warning and not first_look and not warned:   # once; the first look precedes settled
                    log(warning)                                # BatchNorm statistics
                    warned = True
            if outputs is not None:  # logs first: a resume drops the records of epochs its checkpoint lacks
                outputs.write_epoch(record)
                numbered = epoch % a.save_freq == 0 or last_epoch
                t.store.save(checkpoint_state(t, epoch),
                             checkpoints.CHECKPOINT_PATTERN.format(epoch=epoch) if numbered else None)
                log(epoch_summary(record))
            epochs_done = epoch + 1
            if last_epoch:
                break
    finally:
        if outputs is not None:
            outputs.close()
    return TrainResult(t.model, epochs_done, total_steps, t.store.last)


def read_log_records(path: str) -> list[tuple[int, str]]:
    """(epoch, line) of every record of a run's log.jsonl. A last line cut short by a crash is left out;
    any other line that is not a record of ours (binary data, an edited line) is a UsageError naming it."""
    if not os.path.isfile(path):
        return []
    with open(path, "rb") as f:
        lines = [line for line in f.read().split(b"\n") if line.strip()]
    records = []
    for i, line in enumerate(lines):
        try:
            text = line.decode("utf-8")
            records.append((int(json.loads(text)["epoch"]), text + "\n"))
        except (UnicodeDecodeError, ValueError, KeyError, TypeError):
            if i == len(lines) - 1 and line.startswith(b"{") and line.isascii():
                continue                                   # a record cut short by a crash
            raise UsageError(f"{path}:{i + 1}: not a record of this run's log (binary data, or a line "
                             f"edited by hand); move the file aside, or repair that line, to continue the "
                             f"run") from None
    return records


def _drop_records_from(path: str, epoch: int) -> None:
    """Keep only the log.jsonl records of epochs before `epoch` (those the resumed checkpoint holds)."""
    if not os.path.isfile(path):
        return
    with open(path, "rb") as f:
        count = sum(1 for line in f if line.strip())
    kept = [line for record_epoch, line in read_log_records(path) if record_epoch < epoch]
    if len(kept) != count:
        atomic_files.atomic_write_text(path, "".join(kept))


def run(args) -> TrainResult:
    """Train with parsed arguments; raises UsageError / NonFiniteLossError (see main)."""
    return train(prepare(args))


def main(argv=None) -> int:
    parser = build_parser()
    argv, debug = cli_errors.pop_debug(sys.argv[1:] if argv is None else argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:           # a bad flag value (printed on one line) or --help
        return exc.code
    try:
        run(args)
    except cli_errors.USER_ERRORS + (UsageError,) as exc:
        if debug:
            raise
        print(f"{parser.prog}: error: {cli_errors.message(exc)}", file=sys.stderr)
        return 2
    except NonFiniteLossError as exc:
        if debug:
            raise
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:              # a disk or device fault outside the writers that name their file
        if debug or cli_errors.write_fault_message(exc) is None:
            raise
        print(f"{parser.prog}: error: {cli_errors.write_fault_message(exc)}", file=sys.stderr)
        return 2
    finally:
        distributed.cleanup_distributed()
    return 0


if __name__ == "__main__":
    sys.exit(main())
