"""The built-in synthetic set as a raw format: generate NTU `.skeleton` files (synthetic.py), then read
them exactly as NTU files (readers/ntu.py).

The generated files are recorded in `synthetic_manifest.json` beside them (name, size and modification
time of each). A later generation into the same folder replaces or removes only files that record lists
and that are unchanged since; any other file with a name it would write (a user's real NTU recording,
say) stops it before anything is written, naming the file. Generated files have real NTU names, so they
never go into a folder that holds files the generation did not write (recordings would be mixed with
them): such a --raw-dir is refused, naming the folder and one of those files; and the readers of
recordings skip the files a manifest lists (readers/common.py, generated_files)."""
from __future__ import annotations

import contextlib
import json
import os

from readers.common import SYNTHETIC_MANIFEST, Job, RawFormat
from readers.ntu import _read_ntu, ntu_jobs
from storage import atomic_files, run_folder

MANIFEST = SYNTHETIC_MANIFEST
GENERATOR = "prepare_data.py synthetic"


class GenerationRecord:
    """The manifest of the generated files in `folder`: name -> [size, mtime_ns], or None for a name
    planned by a generation that did not finish (its file, if any, is still ours)."""

    def __init__(self, folder: str):
        self.folder, self.path = folder, os.path.join(folder, MANIFEST)
        self.files: dict = {}
        if os.path.lexists(self.path):
            try:
                with open(self.path) as f:
                    record = json.load(f)
                if record.get("generator") != GENERATOR or not isinstance(record.get("files"), dict):
                    raise ValueError("not written by " + GENERATOR)
            except (OSError, ValueError, AttributeError) as exc:
                raise ValueError(f"{self.path} is not the record of an earlier synthetic generation ({exc}); "
                                 f"it is never replaced: choose another --raw-dir, or move it away") from None
            self.files = record["files"]

    def _file(self, name: str) -> str:
        return os.path.join(self.folder, f"{name}.skeleton")

    def _stamp(self, name: str) -> list[int]:
        st = os.stat(self._file(name))
        return [st.st_size, st.st_mtime_ns]

    def owns(self, name: str) -> bool:
        """Whether the file of `name` is one this record lists, unchanged since it was written."""
        if name not in self.files:
            return False
        return self.files[name] is None or (os.path.isfile(self._file(name))
                                            and self._stamp(name) == self.files[name])

    def check(self, names) -> None:
        """ValueError naming the first existing file among `names` that is not ours."""
        for name in names:
            path = self._file(name)
            if os.path.lexists(path) and not self.owns(name):
                why = "was changed since it was generated" if name in self.files else \
                    f"was not written by an earlier synthetic generation (not in {self.path})"
                raise ValueError(f"{path} exists and {why}; it is never overwritten: choose another "
                                 f"--raw-dir, or move the file away")

    def check_folder(self, shown: str) -> None:
        """ValueError naming the folder and one file in it that no synthetic generation wrote (recordings
        among generated files with real NTU names would later pass for each other)."""
        if not os.path.isdir(self.folder):
            return
        ours = {MANIFEST, run_folder.LOCK_NAME} | {f"{name}.skeleton" for name in self.files}
        for entry in sorted(os.listdir(self.folder)):
            path = os.path.join(self.folder, entry)
            leftover = entry.endswith(".tmp") and entry[:-len(".tmp")] in ours   # an interrupted write
            if entry in ours or leftover or (os.path.isdir(path) and not os.path.islink(path)):
                continue
            raise ValueError(f"{shown} holds files that no synthetic generation wrote (e.g. {path}); "
                             f"generated clips carry real NTU names and would pass for recordings there: "
                             f"give the synthetic set an empty folder of its own (--raw-dir), or move those "
                             f"files away")

    def _write(self) -> None:
        atomic_files.atomic_write_json(self.path, {"generator": GENERATOR, "files": self.files})

    def begin(self, names) -> None:
        """Record `names` as planned before the first file is written (an interrupted generation leaves
        no file the next one would take for a user's)."""
        self.files = {**self.files, **dict.fromkeys(names)}
        self._write()

    def finish(self, names) -> list[str]:
        """Record the files of this generation; remove the recorded files of earlier ones that it did not
        write again (only those unchanged since). Returns the removed paths."""
        keep, removed = set(names), []
        for name in sorted(set(self.files) - keep):
            if self.owns(name) and os.path.exists(self._file(name)):
                os.remove(self._file(name))
                removed.append(self._file(name))
        self.files = {name: self._stamp(name) for name in sorted(keep)}
        self._write()
        return removed


def _synthetic_arguments(p, entry) -> None:
    from cli import flag_values  # noqa: PLC0415
    from readers import synthetic  # noqa: PLC0415
    p.add_argument("--raw-dir", default=None,
                   help="where the generated .skeleton files go (default <out>/raw); files that an earlier "
                        "generation did not record there are never overwritten")
    p.add_argument("--num-clips", type=flag_values.positive_count, default=synthetic.DEFAULT_NUM_CLIPS,
                   help="clips to generate")
    p.add_argument("--seed", type=flag_values.seed, default=0)


def _synthetic_jobs(args, entry, rules: dict, out: str) -> list[Job]:
    """Generate the built-in dataset's .skeleton files (recorded in MANIFEST), then read them as NTU files."""
    from readers import synthetic  # noqa: PLC0415
    raw_dir = args.raw_dir or os.path.join(out, "raw")
    planned = synthetic.clip_names(args.num_clips, args.seed)
    inside_out = os.path.commonpath([os.path.abspath(raw_dir), os.path.abspath(out)]) == os.path.abspath(out)
    run_folder.check_writable_folder(raw_dir, "--raw-dir")
    shown = f"--raw-dir {raw_dir}" if args.raw_dir else f"--out {out}: its raw folder {raw_dir}"
    record = GenerationRecord(raw_dir)
    record.check(planned)
    record.check_folder(shown)
    with run_folder.locked_folder(raw_dir) if not inside_out else contextlib.nullcontext():
        record = GenerationRecord(raw_dir)        # read again under the lock
        record.check(planned)
        record.check_folder(shown)
        record.begin(planned)
        names = synthetic.generate(raw_dir, num_clips=args.num_clips, seed=args.seed, workers=args.workers)
        removed = record.finish(names)
    if removed:
        print(f"removed {len(removed)} raw file(s) of an earlier generation from {raw_dir} (listed in "
              f"{record.path})")
    return ntu_jobs([raw_dir], rules, set(), only=set(names))   # not older files there


FORMAT = RawFormat(_synthetic_arguments, _synthetic_jobs, _read_ntu)
