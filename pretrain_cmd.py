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
"""
from __future__ import annotations

import argparse
import inspect
import json
import math
import os
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

import augment
import benchmarks
import checkpoints
import cli_errors
import cmd_model
import dataset
import encoders
import resume_check
import run_folder
import runtime

# tensorboard tags of the released code (per epoch), plus 'loss' and 'lr'
STAT_NAMES = ("loss", "loss_joint", "loss_motion", "loss_bone", "loss_sim",
              "top1_joint", "top1_motion", "top1_bone")
# arguments that fix the model's shape besides the encoder record: a resumed checkpoint must agree on them
MODEL_ARGS = ("mlp", "contrast_dim", "contrast_k")


class UsageError(Exception):
    """Bad flags or bad input data, found before training starts (exit status 2)."""


class NonFiniteLossError(Exception):
    """The loss became NaN or infinite (exit status 1); nothing of that epoch is saved."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="CMD self-supervised pretraining (Mao et al., ECCV 2022)",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    # --- released flags (names and meaning as in the released pretrain_cmd.py) ---
    p.add_argument("-j", "--workers", default=8, type=int, metavar="N",
                   help="data loading workers per process")
    p.add_argument("--epochs", default=451, type=int, metavar="N", help="number of total epochs to run")
    p.add_argument("--start-epoch", default=0, type=int, metavar="N",
                   help="manual epoch number (useful on restarts; --resume overrides it)")
    p.add_argument("-b", "--batch-size", default=64, type=int, metavar="N",
                   help="global mini-batch size, split evenly over the processes of a torchrun job")
    p.add_argument("--lr", "--learning-rate", default=0.01, type=float, metavar="LR", dest="lr",
                   help="initial learning rate")
    p.add_argument("--schedule", default=[351], nargs="*", type=int,
                   help="epochs at which the learning rate drops by 10x (ignored with --cos)")
    p.add_argument("--cos", action="store_true", help="cosine learning-rate schedule instead of steps")
    p.add_argument("--momentum", default=0.9, type=float, metavar="M", help="SGD momentum")
    p.add_argument("--wd", "--weight-decay", default=1e-4, type=float, metavar="W", dest="weight_decay",
                   help="weight decay")
    p.add_argument("-p", "--print-freq", default=10, type=int, metavar="N",
                   help="refresh the progress-bar statistics every N steps")
    p.add_argument("--resume", default="", type=str, metavar="PATH",
                   help="checkpoint to resume from, or 'auto' for the newest one in --checkpoint-path")
    p.add_argument("--seed", default=None, type=int,
                   help="seed of initialisation, shuffling and augmentation (drawn at random and recorded "
                        "in config.json when not given)")
    p.add_argument("--checkpoint-path", default="./checkpoints", type=str, help="where checkpoints go")
    p.add_argument("--skeleton-representation", default="graph-based",
                   choices=cmd_model.SKELETON_REPRESENTATIONS,
                   help="the released flag: graph-based (the released scripts' value) is the clip layout "
                        "every encoder takes; seq-based is refused (SPEC section 7); --encoder picks the "
                        "encoder")
    p.add_argument("--pre-dataset", default="ntu60", type=str,
                   help=f"pretraining dataset: one of {', '.join(benchmarks.dataset_names())}")
    p.add_argument("--protocol", default="cross_subject", type=str,
                   help=f"split: one of {', '.join(benchmarks.protocol_names())}")
    p.add_argument("--contrast-dim", default=128, type=int, help="feature dimension of the contrastive head")
    p.add_argument("--contrast-k", default=16384, type=int, help="queue size (number of negative keys)")
    p.add_argument("--contrast-m", default=0.999, type=float, help="momentum of the key encoders")
    p.add_argument("--contrast-t", default=0.07, type=float, help="InfoNCE temperature")
    p.add_argument("--teacher-t", default=0.05, type=float, help="temperature of the teacher's distribution")
    p.add_argument("--student-t", default=0.1, type=float, help="temperature of the student's distribution")
    p.add_argument("--cmd-weight", default=1.0, type=float,
                   help="weight of the cross-modal distillation loss")
    p.add_argument("--topk", default=8192, type=int, help="nearest neighbours in the teacher's distribution")
    p.add_argument("--mlp", action="store_true", help="two-layer MLP projection head")
    # --- additions ---
    p.add_argument("--data-dir", default="./data", type=str,
                   help="root of the prepared data (<data-dir>/<dataset>/<xsub|xview|xsetup>/); with "
                        "--pre-dataset custom, the folder holding train_data_joint.npy itself")
    cmd_model.add_encoder_arguments(p)
    p.add_argument("--device", default="auto", type=str,
                   help="auto (this process's CUDA GPU when present, else CPU), cpu, cuda, cuda:N")
    p.add_argument("--save-freq", default=10, type=int,
                   help="write checkpoint_{epoch:04d}.pth.tar when epoch %% save-freq == 0, "
                        "and at the last epoch")
    p.add_argument("--amp", action="store_true",
                   help="mixed precision: bfloat16 autocast where the device has it (CUDA, CPUs with "
                        "bfloat16 units), else float16 autocast + GradScaler on CUDA; float32 otherwise")
    p.add_argument("--max-steps", default=None, type=int,
                   help="stop after this many training steps (smoke runs); the cut epoch is saved "
                        "as the last")
    p.add_argument("--log-dir", default=None, type=str,
                   help="tensorboard folder (default: --checkpoint-path)")
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
    runtime.add_threads_argument(p)
    return p


def encoder_from_args(args):
    """(encoder name, its config) that the flags choose: --encoder (default bigru, whatever the released
    --skeleton-representation graph-based says) and that encoder's flags over its config defaults."""
    cmd_model.check_skeleton_representation(args.skeleton_representation, "--skeleton-representation")
    name = args.encoder or cmd_model.DEFAULT_ENCODER
    layout = cmd_model.layout_overrides(name, benchmarks.layout_of(args.pre_dataset))
    return name, cmd_model.make_encoder_config(name, **layout, **cmd_model.encoder_overrides(name, args))


def learning_rate(epoch: int, args) -> float:
    """The released per-epoch rule: cosine over --epochs, or x0.1 at every milestone reached."""
    lr = args.lr
    if args.cos:
        return lr * 0.5 * (1.0 + math.cos(math.pi * epoch / args.epochs))
    for milestone in args.schedule:
        lr *= 0.1 if epoch >= milestone else 1.0
    return lr


def _seed_from(*values: int) -> int:
    """A 63-bit seed that is a fixed function of the given integers."""
    return int(np.random.SeedSequence([int(v) % (2 ** 32) for v in values]).generate_state(2, np.uint64)[0]
               % (2 ** 63))


@dataclass
class TrainResult:
    model: nn.Module            # the CMD model (not the DDP wrapper)
    epochs_done: int            # value of 'epoch' in the last checkpoint (epochs completed)
    steps: int                  # training steps run by this invocation
    checkpoint: str | None      # last checkpoint written or resumed from


class Run:
    """Everything one pretraining invocation holds; `train()` is the loop."""

    def __init__(self, args):
        self.args = args
        self.dist_info, self.device = runtime.init_distributed(args.device)
        self.is_main = self.dist_info.is_main
        self.world = self.dist_info.world_size
        runtime.set_threads(args.threads, args.workers, log=self.log)
        self.writer = None
        self.jsonl = None
        self.last_checkpoint = None
        self._resume_cache = None
        self._auto_resume = None
        self.resume_changes = []
        self.lock = None
        self._validate_args()
        self._resolve_seed()
        self._build_data()
        self._build_model()

    # ------------------------------------------------------------------ set-up
    def log(self, msg: str) -> None:
        if self.is_main:
            tqdm.write(msg)

    def _validate_args(self) -> None:
        a = self.args
        try:
            a.encoder, self.encoder_config = encoder_from_args(a)
        except ValueError as exc:
            raise UsageError(str(exc)) from exc
        if a.batch_size < 1 or a.batch_size % self.world:
            raise UsageError(f"--batch-size {a.batch_size} is the global batch and must split evenly over "
                             f"{self.world} processes")
        if a.contrast_k % a.batch_size:
            raise UsageError(f"--contrast-k {a.contrast_k} must be a multiple of the global --batch-size "
                             f"{a.batch_size} (each step enqueues one batch of keys; the released code "
                             f"assumes it)")
        if not 1 <= a.topk <= a.contrast_k:
            raise UsageError(f"--topk {a.topk} must be between 1 and --contrast-k {a.contrast_k}")
        if a.save_freq < 1 or a.print_freq < 1:
            raise UsageError("--save-freq and --print-freq must be at least 1")
        if a.max_steps is not None and a.max_steps < 1:
            raise UsageError(f"--max-steps must be at least 1, got {a.max_steps}")
        if a.workers < 0:
            raise UsageError(f"-j/--workers {a.workers}: expected 0 (load in the main process) or more")
        if self.is_main:      # before any work: never replace an earlier run's files by accident
            run_folder.check_folder(a.checkpoint_path, run_folder.resumes_into(a.checkpoint_path, a.resume),
                                    a.overwrite)
        self.amp_dtype = runtime.amp_dtype(self.device) if a.amp else None
        self.use_amp = self.amp_dtype is not None
        if a.amp and not self.use_amp:
            self.log(f"warning: --amp: {self.device} has no native bfloat16 (and float16 with a GradScaler "
                     f"needs CUDA); training in float32")
        a.log_dir = a.log_dir or a.checkpoint_path

    def _resolve_seed(self) -> None:
        a = self.args
        if a.seed is None and a.resume:
            path = self._resume_path()
            if path is not None:  # keep the interrupted run's seed so the rest of it is reproduced
                a.seed = (self._load_resume_checkpoint(path).get("args") or {}).get("seed")
        if a.seed is None:
            a.seed = int.from_bytes(os.urandom(4), "little") % (2 ** 31)
        if self.dist_info.distributed:  # every rank must initialise the same model and use the same order
            seed = torch.tensor([a.seed], dtype=torch.int64, device=self._collective_device())
            dist.broadcast(seed, src=0)
            a.seed = int(seed.item())

    def _collective_device(self) -> torch.device:
        return self.device if dist.get_backend() == "nccl" else torch.device("cpu")

    def _build_data(self) -> None:
        a = self.args
        try:
            benchmark = benchmarks.resolve_benchmark(a.pre_dataset, a.protocol, a.data_dir)
            split = dataset.load_split(benchmark.folder, "train", benchmark.num_class, benchmark.layout)
            dataset.require_finite(split, allow=a.allow_nonfinite)
        except (ValueError, OSError) as exc:
            raise UsageError(f"cannot load the pretraining data: {exc}") from exc
        self.data_folder = benchmark.folder
        self.per_rank_batch = a.batch_size // self.world
        self.train_set = dataset.PretrainFeeder(split, seed=a.seed,
                                                augment="none" if a.batch_augment else "numpy")
        self.sampler = DistributedSampler(self.train_set, num_replicas=self.world, rank=self.dist_info.rank,
                                          shuffle=True, seed=a.seed, drop_last=False)
        self.loader_generator = torch.Generator()
        self.loader = DataLoader(self.train_set, batch_size=self.per_rank_batch, sampler=self.sampler,
                                 num_workers=a.workers, pin_memory=self.device.type == "cuda", drop_last=True,
                                 generator=self.loader_generator, persistent_workers=False,
                                 worker_init_fn=runtime.worker_init)
        if len(self.loader) == 0:
            raise UsageError(f"{benchmark.folder}: the training split has {len(split)} clips, fewer than one "
                             f"per-process batch of {self.per_rank_batch} (--batch-size {a.batch_size} over "
                             f"{self.world} processes)")

    def _build_model(self) -> None:
        a = self.args
        runtime.seed_everything(a.seed)
        try:
            model = cmd_model.CMD(encoder=a.encoder, encoder_config=self.encoder_config, dim=a.contrast_dim,
                                  K=a.contrast_k, m=a.contrast_m, T=a.contrast_t, teacher_T=a.teacher_t,
                                  student_T=a.student_t,
                                  cmd_weight=a.cmd_weight, topk=a.topk, mlp=a.mlp,
                                  layout=benchmarks.layout_of(a.pre_dataset))
        except ValueError as exc:
            raise UsageError(str(exc)) from exc
        model = model.to(self.device)
        if self.dist_info.distributed and self.device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.model = model
        self.optimizer = torch.optim.SGD(model.parameters(), a.lr, momentum=a.momentum,
                                         weight_decay=a.weight_decay)
        # a GradScaler only for float16 (bfloat16 has float32's range)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        if self.dist_info.distributed:
            # Buffers are not re-broadcast from rank 0 at every forward: the queues stay equal because
            # every rank enqueues the keys gathered from all ranks (the fix to the released code), and a
            # broadcast would both hide a broken gather and copy three (dim, K) queues per step.
            ddp_flags = inspect.signature(nn.parallel.DistributedDataParallel).parameters
            flag = "forward_sync_buffers" if "forward_sync_buffers" in ddp_flags else "broadcast_buffers"
            kw = {flag: False}
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.train_model = nn.parallel.DistributedDataParallel(model, device_ids=device_ids, **kw)
        else:
            self.train_model = model

    # ------------------------------------------------------------------ resume and checkpoints
    def _resume_path(self) -> str | None:
        a = self.args
        if a.resume == "auto":
            if self._auto_resume is None:     # the newest checkpoint that verifies, found once
                path, ckpt, skipped = checkpoints.newest_verified_checkpoint(a.checkpoint_path)
                for reason in skipped:
                    self.log(f"=> --resume auto: skipping {reason}")
                if path is None and skipped:
                    raise UsageError(f"--resume auto: none of the {len(skipped)} checkpoints in "
                                     f"{a.checkpoint_path} can be used (see above); start again with "
                                     f"--overwrite instead of --resume")
                self._auto_resume = (path,)
                if path is not None:
                    self._resume_cache = (path, ckpt)
            return self._auto_resume[0]
        if not os.path.isfile(a.resume):
            raise UsageError(f"--resume {a.resume}: no such checkpoint file")
        return a.resume

    def _load_resume_checkpoint(self, path: str) -> dict:
        if self._resume_cache is None or self._resume_cache[0] != path:
            try:
                self._resume_cache = (path, checkpoints.load_checkpoint(path))
            except checkpoints.CheckpointError as exc:
                raise UsageError(str(exc)) from exc
        return self._resume_cache[1]

    def resume(self) -> None:
        a = self.args
        if not a.resume:
            return
        path = self._resume_path()
        if path is None:
            self.log(f"=> --resume auto: no checkpoint in {a.checkpoint_path}, starting from scratch")
            return
        ckpt = self._load_resume_checkpoint(path)
        self._resume_cache = None
        saved_args = ckpt.get("args") or {}
        try:       # everything that defines the run (older checkpoints: what their args hold)
            self.resume_changes = resume_check.check_resume(ckpt.get("run") or saved_args,
                                                            self.run_identity(), a.resume_allow_changes, path)
        except resume_check.ResumeMismatch as exc:
            raise UsageError(str(exc)) from exc
        differ = [f"--{k.replace('_', '-')} {saved_args[k]} (checkpoint) vs {getattr(a, k)} (now)"
                  for k in MODEL_ARGS if k in saved_args and saved_args[k] != getattr(a, k)]
        record, own = checkpoints.encoder_record(ckpt, path), self.model.encoder_record()
        if record is not None and record != own:
            differ.append(f"encoder {record} (checkpoint) vs {own} (now)")
        if differ:
            raise UsageError(f"{path} was trained with a different model: " + "; ".join(differ))
        try:
            checkpoints.load_pretraining_weights(self.model, ckpt["state_dict"], source=path)
        except (KeyError, RuntimeError) as exc:
            raise UsageError(str(exc)) from exc
        restored = ["model weights and queues (queue_ptr=%d)" % int(self.model.queue_ptr)]
        if "optimizer" in ckpt:
            self.optimizer.load_state_dict(ckpt["optimizer"])
            restored.append("optimizer state")
        a.start_epoch = int(ckpt.get("epoch", 0))
        restored.append(f"epoch counter ({a.start_epoch} epochs done)")
        if "rng" in ckpt:
            runtime.set_rng_state(ckpt["rng"])
            restored.append("RNG states")
        if self.use_amp and "scaler" in ckpt:
            self.scaler.load_state_dict(ckpt["scaler"])
            restored.append("AMP scaler")
        self.last_checkpoint = path
        self.log(f"=> resumed from {path}: " + ", ".join(restored))
        for change in self.resume_changes:
            self.log(f"=> --resume-allow-changes: {change['field']} {change['checkpoint']!r} -> "
                     f"{change['now']!r}")

    def run_identity(self) -> dict:
        """What defines this run (resume_check.PRETRAIN_FIELDS), recorded in every checkpoint."""
        if not hasattr(self, "_identity"):
            identity = resume_check.run_identity(
                self.args, world_size=self.world, data_folder=os.path.realpath(self.data_folder),
                encoder_config=encoders.config_record(self.encoder_config),
                code_version=resume_check.code_version())
            if identity.get("hidden_size") is None:   # not given: the encoder config holds the size
                identity.pop("hidden_size", None)
            self._identity = identity
        return self._identity

    def nonfinite_loss_error(self, epoch: int, step: int, detail: str) -> NonFiniteLossError:
        """The stop at a non-finite loss, naming the step and this process's clips of that batch."""
        order = list(iter(self.sampler))          # this epoch's order (set_epoch was called)
        clips = order[step * self.per_rank_batch:(step + 1) * self.per_rank_batch]
        names = [self.train_set.split.names[i] for i in clips]
        shown = ", ".join(f"{i} ({n})" for i, n in zip(clips[:8], names[:8])) + (" ..." if len(clips) > 8
                                                                                  else "")
        return NonFiniteLossError(
            f"non-finite loss at epoch {epoch}, step {step} ({detail}); batch clips {shown}; stopping. The "
            f"data were checked finite at load: lower --lr, or check these clips. Last checkpoint written "
            f"or resumed: {self.last_checkpoint or 'none'}")

    def save(self, epoch: int, last_epoch: bool) -> None:
        """checkpoint_last every epoch; checkpoint_{epoch:04d} (epoch index) every --save-freq and at
        the last epoch."""
        a = self.args
        state = {"epoch": epoch + 1, "state_dict": self.model.state_dict(),
                 "optimizer": self.optimizer.state_dict(), **self.model.encoder_record(),
                 "args": runtime.plain_args(a), "rng": runtime.rng_state(), "run": self.run_identity()}
        if self.use_amp:
            state["scaler"] = self.scaler.state_dict()
        last = os.path.join(a.checkpoint_path, checkpoints.LAST_CHECKPOINT)
        checkpoints.atomic_save(state, last)
        self.last_checkpoint = last
        if epoch % a.save_freq == 0 or last_epoch:
            numbered = os.path.join(a.checkpoint_path, checkpoints.CHECKPOINT_PATTERN.format(epoch=epoch))
            _link_or_save(last, numbered, state)
            self.last_checkpoint = numbered

    # ------------------------------------------------------------------ training
    def _batch_views(self, batch, generator):
        if self.args.batch_augment:
            clips, num_frame = (t.to(self.device, non_blocking=True) for t in batch)
            return (augment.augment_pretrain_batch(clips, num_frame, generator=generator),
                    augment.augment_pretrain_batch(clips, num_frame, generator=generator))
        return tuple(t.to(self.device, non_blocking=True) for t in batch)

    def train_one_epoch(self, epoch: int, steps_left: int | None) -> tuple[dict, int]:
        """One epoch. No host synchronisation per step: the statistics are summed on the device and read
        (and checked for NaN/inf, naming the first bad step) every --print-freq steps and at the end."""
        a = self.args
        self.train_model.train()
        generator = None
        if a.batch_augment:
            generator = torch.Generator(device=self.device)
            generator.manual_seed(_seed_from(a.seed, epoch, self.dist_info.rank, 1))
        stats_dtype = torch.float64 if self.device.type != "mps" else torch.float32
        sums = torch.zeros(len(STAT_NAMES), dtype=stats_dtype, device=self.device)
        no_bad_step = len(self.loader)  # first_bad holds the first step with non-finite statistics
        first_bad = torch.full((1,), no_bad_step, dtype=torch.long, device=self.device)
        first_bad_stats = torch.zeros_like(sums)
        steps, start = 0, time.perf_counter()
        bar = tqdm(self.loader, desc=f"epoch {epoch}", total=len(self.loader), disable=not self.is_main,
                   dynamic_ncols=True, leave=False)
        mean = None
        for step, batch in enumerate(bar):
            x_q, x_k = self._batch_views(batch, generator)
            with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.use_amp):
                out = self.train_model(x_q, x_k)
                ce = out.contrastive_losses()
                loss = ce["joint"] + ce["motion"] + ce["bone"] + out.loss_cmd
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            with torch.no_grad():
                mods = cmd_model.MODALITIES
                top1 = [(out.logits[m].argmax(dim=1) == out.targets).float().mean() * 100 for m in mods]
                stats = torch.stack([loss.detach().float(), *(ce[m].detach().float() for m in mods),
                                     out.loss_cmd.detach().float(), *top1]).to(stats_dtype)
                sums += stats
                is_first_bad = (~torch.isfinite(stats).all()) & (first_bad == no_bad_step)
                first_bad.copy_(torch.where(is_first_bad, step, first_bad))
                first_bad_stats.copy_(torch.where(is_first_bad, stats, first_bad_stats))
            steps += 1
            last_step = step + 1 == len(self.loader) or (steps_left is not None and steps >= steps_left)
            if step % a.print_freq == 0 or last_step:
                mean = self._read_statistics(sums, first_bad, first_bad_stats, epoch, step, steps)
                if self.is_main:
                    rate = steps * a.batch_size / max(time.perf_counter() - start, 1e-9)
                    bar.set_postfix(loss=f"{mean[0]:.3f}", j=f"{mean[1]:.3f}", m=f"{mean[2]:.3f}",
                                    b=f"{mean[3]:.3f}", cmd=f"{mean[4]:.3f}",
                                    top1=f"{mean[5]:.1f}/{mean[6]:.1f}/{mean[7]:.1f}", sps=f"{rate:.1f}",
                                    refresh=False)
            if last_step:
                break
        bar.close()
        elapsed = time.perf_counter() - start
        record = {name: float(v) for name, v in zip(STAT_NAMES, mean or [0.0] * len(STAT_NAMES))}
        record.update(steps=steps, samples=steps * a.batch_size, time_s=elapsed,
                      samples_per_s=steps * a.batch_size / max(elapsed, 1e-9))
        return record, steps

    def _read_statistics(self, sums, first_bad, first_bad_stats, epoch, step, steps) -> list:
        """Global means over the epoch's steps so far (one host read); raises on a non-finite step."""
        if self.dist_info.distributed:  # two small all-reduces: global sums, earliest bad step on any rank
            dev = self._collective_device()
            sums, first_bad = sums.to(dev), first_bad.to(dev)
            dist.all_reduce(sums)
            sums = sums / self.world
            dist.all_reduce(first_bad, op=dist.ReduceOp.MIN)
        values = torch.cat([sums.double().cpu(), first_bad.double().cpu(),
                            first_bad_stats.double().cpu()]).tolist()
        n = len(STAT_NAMES)
        mean, bad = [v / steps for v in values[:n]], int(values[n])
        if bad < len(self.loader) or not all(math.isfinite(v) for v in mean):
            detail = ", ".join(f"{name}={v:.4g}" for name, v in zip(STAT_NAMES, values[n + 1:]))
            checked = max(step - self.args.print_freq + 1, 0)
            raise self.nonfinite_loss_error(
                epoch, bad, f"{detail}; found at the check of steps {checked}..{step}, made every "
                            f"--print-freq steps")
        return mean

    def write_config(self) -> None:
        a = self.args
        config = dict(runtime.plain_args(a), world_size=self.world, per_process_batch=self.per_rank_batch,
                      device=str(self.device), data_folder=self.data_folder, train_clips=len(self.train_set),
                      steps_per_epoch=len(self.loader), torch_version=torch.__version__, argv=sys.argv)
        config.update(self.model.encoder_record())
        runtime.atomic_write_json(os.path.join(a.checkpoint_path, "config.json"), config)

    def train(self) -> TrainResult:
        a = self.args
        self.resume()
        if a.start_epoch >= a.epochs:
            self.log(f"=> nothing to do: {a.start_epoch} of {a.epochs} epochs already done")
            return TrainResult(self.model, a.start_epoch, 0, self.last_checkpoint)
        if self.is_main:
            resumes_here = run_folder.resumes_into(a.checkpoint_path, a.resume)
            self.lock = run_folder.claim(a.checkpoint_path, resumes_here, a.overwrite)
            self.write_config()
            from torch.utils.tensorboard import SummaryWriter  # noqa: PLC0415  (heavy import, rank 0 only)
            # purge_step: tensorboard forgets what an interrupted run logged after its last checkpoint
            self.writer = SummaryWriter(log_dir=a.log_dir, purge_step=a.start_epoch or None)
            log_path = os.path.join(a.checkpoint_path, "log.jsonl")
            _drop_records_from(log_path, a.start_epoch)
            self.jsonl = runtime.JsonlLogger(log_path)
            if self.resume_changes:      # epoch: the last one done, so a later resume keeps this record
                self.jsonl.write({"epoch": a.start_epoch - 1, "event": "resume_allowed_changes",
                                  "checkpoint": self.last_checkpoint, "changes": self.resume_changes})
        self.log(f"=> pretraining CMD ({a.encoder}, {self.model.encoder_record()['encoder_config']}) on "
                 f"{self.data_folder}: "
                 f"{len(self.train_set)} clips, global batch {a.batch_size} = {self.world} x "
                 f"{self.per_rank_batch} "
                 f"on {self.device}, epochs {a.start_epoch}..{a.epochs - 1}, seed {a.seed}")
        total_steps, epochs_done = 0, a.start_epoch
        try:
            for epoch in range(a.start_epoch, a.epochs):
                self.sampler.set_epoch(epoch)
                self.train_set.set_epoch(epoch)
                self.loader_generator.manual_seed(_seed_from(a.seed, epoch, self.dist_info.rank, 0))
                lr = learning_rate(epoch, a)
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                steps_left = None if a.max_steps is None else a.max_steps - total_steps
                record, steps = self.train_one_epoch(epoch, steps_left)
                total_steps += steps
                truncated = steps < len(self.loader)
                last_epoch = epoch == a.epochs - 1 or (a.max_steps is not None and total_steps >= a.max_steps)
                record.update(epoch=epoch, lr=lr, truncated=truncated)
                if self.is_main:  # logs first: a resume drops the records of epochs its checkpoint lacks
                    self.jsonl.write(record)
                    for name in STAT_NAMES:
                        self.writer.add_scalar(name, record[name], epoch)
                    self.writer.add_scalar("lr", lr, epoch)
                    self.writer.flush()
                    self.save(epoch, last_epoch)
                    r = record
                    self.log(f"epoch {epoch}: lr {lr:.3g} loss {r['loss']:.4f} (joint {r['loss_joint']:.4f} "
                             f"motion {r['loss_motion']:.4f} bone {r['loss_bone']:.4f} "
                             f"cmd {r['loss_sim']:.4f}) "
                             f"top1 {r['top1_joint']:.1f}/{r['top1_motion']:.1f}/{r['top1_bone']:.1f} "
                             f"{r['samples_per_s']:.1f} samples/s"
                             + (" [stopped early: --max-steps]" if truncated else ""))
                epochs_done = epoch + 1
                if last_epoch:
                    break
        finally:
            if self.writer is not None:
                self.writer.close()
            if self.lock is not None:
                self.lock.release()
        return TrainResult(self.model, epochs_done, total_steps, self.last_checkpoint)


def _drop_records_from(path: str, epoch: int) -> None:
    """Keep only the log.jsonl records of epochs before `epoch` (those the resumed checkpoint holds)."""
    if not os.path.isfile(path):
        return
    with open(path) as f:
        lines = [line for line in f if line.strip()]
    kept = []
    for line in lines:
        try:
            if int(json.loads(line)["epoch"]) < epoch:
                kept.append(line if line.endswith("\n") else line + "\n")
        except (ValueError, KeyError, TypeError):
            continue  # a line cut short by a crash
    if len(kept) != len(lines):
        runtime.atomic_write_text(path, "".join(kept))


def _link_or_save(src: str, dst: str, state) -> None:
    """Make `dst` a hard link to the just-written `src` (no second write of a large file), else save a copy.

    `src` is later replaced by rename, which leaves the linked file's contents untouched.
    """
    tmp = dst + ".tmp"
    try:
        if os.path.lexists(tmp):
            os.remove(tmp)
        os.link(src, tmp)
        os.replace(tmp, dst)
    except OSError:
        checkpoints.atomic_save(state, dst)


def run(args) -> TrainResult:
    """Train with parsed arguments; raises UsageError / NonFiniteLossError (see main)."""
    return Run(args).train()


def main(argv=None) -> int:
    parser = build_parser()
    argv, debug = cli_errors.pop_debug(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
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
    finally:
        runtime.cleanup_distributed()
    return 0


if __name__ == "__main__":
    sys.exit(main())
