"""Convert raw skeleton downloads to the training format (SPEC section 6), exactly as the released code.

    python prepare_data.py ntu60  --raw-dir RAW/nturgb+d_skeletons
    python prepare_data.py ntu120 --raw-dir RAW/nturgb+d_skeletons RAW/nturgbd_skeletons_s018_to_s032
    python prepare_data.py pku_v1 --root RAW/pku_mmd_v1      (skeleton/, label/, cross-subject.txt ...)
    python prepare_data.py pku_v2 --root RAW/pku_mmd_v2      (skeleton/, label/, cross_subject_v2.txt ...)
    python prepare_data.py nw_ucla --raw-dir RAW/all_sqe     (aAA_sSS_eEE_vVV.json)
    python prepare_data.py synthetic                       (generate the built-in dataset, then convert it)
    python prepare_data.py arrays --clips DIR --labels labels.csv --layout FILE.json --out data/mine
                                                   (numpy arrays of any skeleton layout; readers/arrays.py)

The subcommands are the datasets of dataset_table.py (`pku1`, `pku2`: the released names of pku_v1,
pku_v2), and `arrays` for skeletons of any layout; each reads its raw format with a reader of readers/.
Per benchmark and part, `{part}_data_joint.npy` float32 (N, 3, 300, V, 2), `{part}_label.pkl` =
(sample_names, labels) and `{part}_num_frame.npy` land in `--out/<xsub|xview|xsetup>/` (`arrays`:
in `--out` itself). Each file is parsed and normalised once (vectorised numpy, in `--workers`
processes) and written straight into memory-mapped outputs under temporary names, renamed when whole,
so memory stays at a few clips.
"""
from __future__ import annotations

import argparse
import errno
import hashlib
import multiprocessing as mp
import os
import pickle
import sys

import numpy as np
from tqdm import tqdm

import dataset
import graph
from cli import cli_errors, flag_values, machine
from readers import Job, RAW_FORMATS, Sample, SkeletonFileError, dataset_table
from storage import atomic_files, run_folder, write_faults

ARRAYS = "arrays"      # the subcommand (and raw format) of skeletons in numpy arrays, any layout


# ----------------------------------------------------------------------------------------------------
# the conversion driver: jobs -> workers -> memory-mapped outputs


def _run_job(job: Job):
    """(clips, error, notes): the samples of one file, or the message of its first error."""
    notes = []
    try:
        return RAW_FORMATS[job.kind].read(job, notes), None, notes
    except SkeletonFileError as e:
        return None, str(e), notes


def remove_leftover_temporaries(folder: str) -> list[str]:
    """Delete the hidden temporary files an interrupted conversion left in `folder`; returns their paths."""
    removed = []
    if os.path.isdir(folder):
        for name in sorted(os.listdir(folder)):
            is_ours = ((name.startswith(".") and name.endswith(".npy.tmp"))
                       or name.endswith(("_label.pkl.tmp", "_num_frame.npy.tmp")))
            if is_ours and os.path.isfile(os.path.join(folder, name)):
                os.remove(os.path.join(folder, name))
                removed.append(os.path.join(folder, name))
    return removed


def _reserve(path: str, final: str) -> None:
    """Allocate the whole file on disk now: a memory-mapped file that the disk cannot hold fails later,
    at some page write, with a bus error that no handler can catch; here it is a WriteFailed naming it."""
    try:
        with open(path, "r+b") as f:
            os.posix_fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size)
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL):       # a file system that cannot: as before
            return
        write_faults.raise_write_failure(exc, final, "nothing was replaced")
    except AttributeError:                                      # no posix_fallocate (not POSIX)
        return


def _open_data(path: str, final: str, shape: tuple):
    """A new memory-mapped float32 .npy of `shape` at `path`, its disk space reserved (see _reserve)."""
    try:
        data = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=shape)
    except OSError as exc:
        atomic_files.remove_quietly(path)
        write_faults.raise_write_failure(exc, final, "nothing was replaced")
    try:
        _reserve(path, final)
    except BaseException:
        del data
        atomic_files.remove_quietly(path)
        raise
    return data


class _PartWriter:
    """Memory-mapped {part}_data_joint.npy plus labels and frame counts, under temporary names."""

    def __init__(self, folder: str, part: str, capacity: int, num_joints: int):
        self.folder, self.part = folder, part
        os.makedirs(folder, exist_ok=True)
        self.tmp_data = os.path.join(folder, f".{part}_data_joint.npy.tmp")
        self.final = dataset.split_paths(folder, part)["data"]
        shape = (capacity, 3, dataset.CLIP_FRAMES, num_joints, dataset.NUM_PERSONS)
        self.data = _open_data(self.tmp_data, self.final, shape)
        self.names, self.labels, self.num_frame = [], [], []
        self.digests = []       # of each clip's bytes, to report test clips equal to training clips

    def add(self, clip: np.ndarray, sample: Sample, num_frame: int) -> None:
        self.data[len(self.names)] = clip
        self.digests.append(hashlib.sha1(np.ascontiguousarray(clip, dtype=np.float32).tobytes()).digest())
        self.names.append(sample.name)
        self.labels.append(int(sample.label))
        self.num_frame.append(int(num_frame))

    def _temporary(self, kind: str) -> str:
        name = os.path.basename(dataset.split_paths(self.folder, self.part)[kind])
        return os.path.join(self.folder, f".{name}.tmp")

    def discard(self) -> None:
        """Remove the temporary files (after an error)."""
        self.data = None
        for path in (self.tmp_data, self._temporary("label"), self._temporary("num_frame")):
            atomic_files.remove_quietly(path)

    def finish(self) -> None:
        """Complete the three files under their temporary names (nothing is replaced yet)."""
        count = len(self.names)
        if count == 0:
            self.discard()
            raise ValueError(f"no samples left for {self.folder} part {self.part!r}")
        self.data.flush()
        if count < self.data.shape[0]:          # skipped bad files: copy into a file of the right length
            short = os.path.join(self.folder, f".{self.part}_data_joint.short.npy.tmp")
            out = _open_data(short, self.final, (count,) + self.data.shape[1:])
            for i in range(0, count, 256):
                out[i:i + 256] = self.data[i:min(i + 256, count)]
            out.flush()
            del out
            self.data = None
            os.replace(short, self.tmp_data)
        self.data = None
        for kind, write in (("label", lambda f: pickle.dump((self.names, self.labels), f)),
                            ("num_frame", lambda f: np.save(f, np.asarray(self.num_frame, dtype=np.int64)))):
            path = self._temporary(kind)
            try:
                with open(path, "wb") as f:
                    write(f)
                    f.flush()
                    os.fsync(f.fileno())
            except OSError as exc:
                atomic_files.remove_quietly(path)
                write_faults.raise_write_failure(exc, dataset.split_paths(self.folder, self.part)[kind])

    def publish(self) -> str:
        """Rename the finished temporary files to their names (no disk space needed)."""
        paths = dataset.split_paths(self.folder, self.part)
        os.replace(self._temporary("label"), paths["label"])
        os.replace(self._temporary("num_frame"), paths["num_frame"])
        os.replace(self.tmp_data, paths["data"])
        return paths["data"]


def convert(jobs: list[Job], out_dir: str, folders: list[str], workers: int = 1, skip_bad: bool = False,
            desc: str = "preparing", num_joints: int = 25, optional=()) -> dict:
    """Process every job once and write each sample to the parts it belongs to in every benchmark.

    A benchmark in `optional` whose train or val part would be empty is left out with one line (NW-UCLA's
    validation protocol, when the files hold no view-2 clips); for any other it is an error."""
    if not jobs:
        raise ValueError("no input files to convert")
    capacity = {}
    for job in jobs:
        for sample in job.samples:
            for bench in folders:
                if sample.parts[bench] is None:         # left out of this benchmark (NW-UCLA's view 3
                    continue                            # in its validation protocol)
                key = (bench, sample.parts[bench])
                capacity[key] = capacity.get(key, 0) + 1
    left_out = []
    for bench in list(folders):
        for part in ("train", "val"):
            if capacity.get((bench, part), 0) == 0 and bench in optional and len(folders) > 1:
                left_out.append(f"note: benchmark {bench} not prepared: its {part} split would have no samples")
                folders = [f for f in folders if f != bench]
                break
            if capacity.get((bench, part), 0) == 0:
                raise ValueError(f"benchmark {bench}: the {part} split would have no samples "
                                 f"({sum(len(j.samples) for j in jobs)} samples found in total)")
    capacity = {key: n for key, n in capacity.items() if key[0] in folders}
    for bench in folders:
        for path in remove_leftover_temporaries(os.path.join(out_dir, bench)):
            print(f"removed {path}, left by an interrupted conversion", file=sys.stderr)
    writers = {}
    bad, notes = [], []
    pool = None
    # benchmark folders this conversion creates: removed again (when still empty) if it is refused
    created = [os.path.join(out_dir, b) for b in folders if not os.path.lexists(os.path.join(out_dir, b))]
    try:
        for key, n in sorted(capacity.items()):
            writers[key] = _PartWriter(os.path.join(out_dir, key[0]), key[1], n, num_joints)
        pool = mp.Pool(workers) if workers > 1 else None
        results = pool.imap(_run_job, jobs, chunksize=4) if pool else map(_run_job, jobs)
        for job, (clips, error, job_notes) in tqdm(zip(jobs, results), total=len(jobs), desc=desc,
                                                   unit="file", dynamic_ncols=True):
            notes.extend(job_notes)
            if error is not None:
                if not skip_bad:
                    raise SkeletonFileError(error + "  (use --skip-bad to skip malformed files)")
                tqdm.write(f"skipping malformed file: {error}")
                bad.append(error)
                continue
            for sample, (clip, num_frame) in zip(job.samples, clips):
                for bench in folders:
                    if sample.parts[bench] is not None:
                        writers[(bench, sample.parts[bench])].add(clip, sample, num_frame)
        written = {f"{bench}/{part}": len(w.names) for (bench, part), w in writers.items()}
        empty = [key for key, count in written.items() if count == 0]
        if empty:
            raise ValueError(f"no samples left in {', '.join(empty)} after skipping {len(bad)} "
                             f"malformed file(s)")
    except BaseException:
        for writer in writers.values():
            writer.discard()
        _remove_empty_folders(created)
        raise
    finally:
        if pool:
            pool.terminate()
            pool.join()
    try:          # every part complete before any earlier file is replaced
        for writer in writers.values():
            writer.finish()
        for writer in writers.values():
            writer.publish()
    except BaseException:
        for writer in writers.values():
            writer.discard()
        _remove_empty_folders(created)
        raise
    if bad:
        print(f"skipped {len(bad)} malformed file(s)", file=sys.stderr)
    for note in left_out:
        print(note, file=sys.stderr)
    duplicates = report_duplicates(writers, folders)
    if notes:
        print(f"warning: {len(notes)} PKU-MMD label row(s) end past their video and were clipped to its last "
              f"frame (frame count = frames kept); first: {notes[0]}", file=sys.stderr)
    return {"written": written, "skipped": len(bad), "clipped_rows": len(notes), "duplicates": duplicates}


def _remove_empty_folders(folders) -> None:
    """Remove the folders that are still empty (a refused conversion leaves none of its own behind)."""
    for folder in folders:
        try:
            os.rmdir(folder)
        except OSError:
            pass


def report_duplicates(writers: dict, folders: list[str]) -> dict:
    """Per benchmark folder, the test ('val') clips whose prepared data equal a training clip's, bit for
    bit: {folder: [(val name, train name), ...]}, with a warning naming the first. A test clip that is
    also a training clip is classified by 1-NN for free (NW-UCLA's distributed all_sqe holds 95)."""
    found = {}
    for bench in folders:
        train, val = writers.get((bench, "train")), writers.get((bench, "val"))
        if train is None or val is None:
            continue
        first_train = {}
        for name, digest in zip(train.names, train.digests):
            first_train.setdefault(digest, name)
        pairs = [(name, first_train[d]) for name, d in zip(val.names, val.digests) if d in first_train]
        if pairs:
            found[bench] = pairs
            print(f"warning: {bench}: {len(pairs)} of {len(val.names)} test clips hold the same data as a "
                  f"training clip (first: {pairs[0][0]} = {pairs[0][1]}); they inflate test accuracy, 1-NN's "
                  f"most", file=sys.stderr)
    return found


def build_parser() -> argparse.ArgumentParser:
    """One subcommand per dataset of dataset_table.py that has a raw format (its aliases too)."""
    parser = cli_errors.ArgumentParser(description=__doc__,
                                        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="dataset", required=True)
    for entry in dataset_table.ENTRIES.values():
        if entry.raw_format is None:
            continue
        folders = [spec.folder for spec in entry.protocols.values()]
        p = sub.add_parser(entry.name, aliases=list(entry.aliases))
        p.add_argument("--out", default=None, help=f"output root (default ./data/{entry.name}); "
                                                   f"one sub-folder per benchmark")
        p.add_argument("--benchmarks", nargs="+", default=folders, choices=folders)
        p.add_argument("--workers", type=flag_values.worker_processes,
                       default=max(1, min(8, machine.usable_cores())),
                       help="processes parsing and normalising files (default: the usable cores, at most 8)")
        p.add_argument("--skip-bad", action="store_true",
                       help="log and skip malformed files instead of failing")
        p.add_argument("--overwrite", action="store_true",
                       help="replace prepared files that --out already holds for these benchmarks")
        RAW_FORMATS[entry.raw_format].add_arguments(p, entry)
    p = sub.add_parser(ARRAYS, help="numpy arrays of any skeleton layout (readers/arrays.py)")
    p.add_argument("--out", required=True, help="the prepared folder (train_data_joint.npy, ... in it), "
                                                "read with --pre-dataset custom --data-dir OUT --layout ...")
    p.add_argument("--workers", type=flag_values.worker_processes,
                   default=max(1, min(8, machine.usable_cores())),
                   help="processes checking and normalising clips (default: the usable cores, at most 8)")
    p.add_argument("--skip-bad", action="store_true", help="log and skip malformed clips instead of failing")
    p.add_argument("--overwrite", action="store_true", help="replace prepared files that --out already holds")
    RAW_FORMATS[ARRAYS].add_arguments(p)
    return parser


def check_prepared(out: str, folders: list[str], overwrite: bool) -> None:
    """Prepared files of these benchmarks already in `out` are replaced only with --overwrite."""
    found = [os.path.relpath(path, out) for folder in folders for part in dataset.PARTS
             for path in dataset.split_paths(os.path.join(out, folder), part).values()
             if os.path.lexists(path)]
    if found and not overwrite:
        shown = ", ".join(found[:3]) + (f" and {len(found) - 3} more" if len(found) > 3 else "")
        raise run_folder.RunFolderError(f"--out {out} already holds prepared data ({shown}); add --overwrite "
                                        f"to replace it, or choose another --out")


def prepare_arrays(args) -> dict:
    """`prepare_data.py arrays`: the clips of --clips into the one folder --out (readers/arrays.py)."""
    out = os.path.normpath(args.out)
    parent, folder = os.path.dirname(out) or ".", os.path.basename(out)
    run_folder.check_writable_folder(out, "--out")
    check_prepared(parent, [folder], args.overwrite)
    with run_folder.locked_folder(out):
        jobs = RAW_FORMATS[ARRAYS].jobs(args, None, {folder: None}, parent)
        report = convert(jobs, parent, [folder], workers=args.workers, skip_bad=args.skip_bad, desc=ARRAYS,
                         num_joints=jobs[0].options["joints"])
    for key, count in sorted(report["written"].items()):
        print(f"{os.path.join(parent, key)}: {count} samples")
    return report


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    if args.dataset == ARRAYS:
        return prepare_arrays(args)
    entry = dataset_table.get(args.dataset)
    out = args.out or os.path.join("data", entry.name)
    run_folder.check_writable_folder(out, "--out")
    split_of = {spec.folder: spec.split for spec in entry.protocols.values()}
    rules = {folder: split_of[folder] for folder in args.benchmarks}
    check_prepared(out, list(rules), args.overwrite)
    with run_folder.locked_folder(out):          # a second conversion into --out is refused with our pid
        jobs = RAW_FORMATS[entry.raw_format].jobs(args, entry, rules, out)
        report = convert(jobs, out, list(rules), workers=args.workers, skip_bad=args.skip_bad,
                         desc=entry.name, num_joints=graph.get_layout(entry.layout).num_joints,
                         optional={spec.folder for spec in entry.protocols.values() if spec.optional})
    for key, count in sorted(report["written"].items()):
        print(f"{os.path.join(out, key)}: {count} samples")
    return report


if __name__ == "__main__":
    sys.exit(cli_errors.run_main(main))
