"""Install the authors' released CMD checkpoints where the evaluation scripts look for them.

    python download_pretrained.py [BENCHMARK ...]              # download (all of the manifest by default)
    python download_pretrained.py ntu60_cross_subject --from ~/Downloads/checkpoint_0450.pth.tar
    python download_pretrained.py --from ~/Downloads/CMD-pretrained.zip   # an archive downloaded by hand

The manifest (pretrained_models/manifest.json) names, per benchmark, the source URL, the file name, the
destination folder under pretrained_models/ and the file's sha256 ("unknown" until someone records it).
A download goes to `<file>.part` and resumes from there (HTTP Range) after an interruption; the file
is checked before it is moved into place: its sha256 when the manifest has one, otherwise it must load
with torch.load(weights_only=True) and hold the released pretraining key names (SPEC.md sections 2-3).
A file that fails a check never replaces anything. Sources that need a browser (a Google Drive share)
are not fetched: the script says so, and `--from PATH` imports what was downloaded by hand, with the
same checks. The sha256 of every installed file is printed.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile

import torch

import cmd_model
from cli import cli_errors
from storage import atomic_files, checkpoints, write_faults

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_MANIFEST = os.path.join(HERE, "pretrained_models", "manifest.json")
DEFAULT_ROOT = os.path.join(HERE, "pretrained_models")
CHUNK = 1 << 20


class CheckFailed(Exception):
    """The file is not the expected checkpoint (checksum, truncation, not a checkpoint, wrong keys)."""


def read_manifest(path: str) -> dict[str, dict]:
    """benchmark -> entry {url, file_name, destination, sha256, needs_browser, note}."""
    with open(path) as f:
        entries = json.load(f)["checkpoints"]
    for e in entries:
        missing = {"benchmark", "url", "file_name", "destination", "sha256"} - set(e)
        if missing:
            raise ValueError(f"{path}: entry {e.get('benchmark', e)!r} lacks {sorted(missing)}")
    return {e["benchmark"]: e for e in entries}


def released_key_names(mlp: bool) -> set[str]:
    """The key names of a released pretraining state_dict (six BiGRU encoders, three queues)."""
    model = cmd_model.CMD(hidden_size=4, dim=8, K=8, topk=4, mlp=mlp)
    return set(model.state_dict())


def check_file(path: str, sha256: str | None) -> str:
    """Raise CheckFailed unless `path` is the expected checkpoint; return its sha256."""
    digest = atomic_files.sha256_file(path)
    if sha256:
        if digest != sha256.lower():
            raise CheckFailed(f"{path}: sha256 {digest} differs from the manifest's {sha256}")
        return digest
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckFailed(f"{path} does not load with torch.load(weights_only=True): truncated, or not a "
                          f"checkpoint (a share link's HTML page, say) ({type(exc).__name__})") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict", ckpt), dict):
        raise CheckFailed(f"{path} loads, but holds a {type(ckpt).__name__}, not a checkpoint dict")
    keys = set(checkpoints.strip_module_prefix(checkpoints.extract_state_dict(ckpt)))
    expected = released_key_names(mlp="encoder_q.fc.0.weight" in keys)
    missing, unexpected = sorted(expected - keys), sorted(keys - expected)
    if missing or unexpected:
        raise CheckFailed(f"{path} is not a CMD pretraining checkpoint: missing {len(missing)} released keys "
                          f"{missing[:3]}, unexpected {len(unexpected)} {unexpected[:3]}")
    return digest


def install(candidate: str, entry: dict, root: str, keep_candidate: bool = False) -> str:
    """Check `candidate`, then move (or copy) it to its place; returns the installed path."""
    digest = check_file(candidate, None if entry["sha256"] in (None, "", "unknown") else entry["sha256"])
    dest = destination(entry, root)
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    if keep_candidate:                       # a file the user owns: copy next to dest first, then rename
        tmp = dest + ".import"
        try:
            shutil.copyfile(candidate, tmp)
        except OSError as exc:
            atomic_files.remove_quietly(tmp)
            write_faults.raise_write_failure(exc, dest, "nothing was replaced")
        candidate = tmp
    os.replace(candidate, dest)
    print(f"installed {entry['benchmark']}: {dest}\n  sha256 {digest}")
    return dest


def destination(entry: dict, root: str) -> str:
    return os.path.join(root, entry["destination"], entry["file_name"])


def download(url: str, part: str, retries: int, timeout: float) -> None:
    """Fetch `url` into `part`, resuming from its current size (HTTP Range); retry after a cut."""
    for attempt in range(1, retries + 1):
        have = os.path.getsize(part) if os.path.exists(part) else 0
        request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                if have and response.status != 206:        # the server ignored the Range: start over
                    have = 0
                total = _expected_total(response, have)
                with open(part, "ab" if have else "wb") as f:
                    for block in iter(lambda: response.read(CHUNK), b""):
                        f.write(block)
            size = os.path.getsize(part)
            if total is not None and size < total:
                raise ConnectionError(f"connection closed at {size} of {total} bytes")
            return
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and have:                  # Range beyond the end: the file is complete
                return
            raise CheckFailed(f"{url}: HTTP {exc.code} {exc.reason}") from None
        except (ConnectionError, http.client.IncompleteRead, TimeoutError, urllib.error.URLError) as exc:
            size = os.path.getsize(part) if os.path.exists(part) else 0
            print(f"  interrupted ({exc}); {size} bytes kept in {part}"
                  + ("; resuming" if attempt < retries else ""), file=sys.stderr)
    raise CheckFailed(f"{url}: incomplete after {retries} attempts; run the same command again to resume "
                      f"from {part}")


def _expected_total(response, offset: int) -> int | None:
    content_range = response.headers.get("Content-Range")
    if content_range and "/" in content_range and not content_range.endswith("/*"):
        return int(content_range.rsplit("/", 1)[1])
    length = response.headers.get("Content-Length")
    return offset + int(length) if length is not None else None


def fetch(entry: dict, root: str, force: bool, retries: int, timeout: float) -> bool:
    """Download and install one manifest entry; False when it needs a hand download."""
    dest = destination(entry, root)
    if os.path.exists(dest) and not force:
        sha = None if entry["sha256"] in (None, "", "unknown") else entry["sha256"]
        print(f"{entry['benchmark']}: already installed at {dest} (sha256 {check_file(dest, sha)}); "
              f"--force downloads it again")
        return True
    if not entry.get("url"):
        print(f"{entry['benchmark']}: no published checkpoint ({entry.get('note', '')}); a file you have "
              f"can be imported with: bash scripts/download_pretrained.sh {entry['benchmark']} --from PATH")
        return False
    if entry.get("needs_browser"):
        print(f"{entry['benchmark']}: the source needs a browser: {entry['url']} ({entry.get('note', '')}). "
              f"Download the file by hand, then: bash scripts/download_pretrained.sh {entry['benchmark']} "
              f"--from PATH (a checkpoint, or a zip/tar archive of several)")
        return False
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    part = dest + ".part"
    print(f"{entry['benchmark']}: {entry['url']} -> {dest}")
    download(entry["url"], part, retries, timeout)
    try:
        install(part, entry, root)
    except CheckFailed:
        os.remove(part)                      # complete but wrong: resuming it would not help
        raise
    return True


def checkpoint_members(names):
    return [n for n in names if re.search(r"\.(pth\.tar|pth|pt)$", n) and not n.endswith("/")]


def pick_member(members, entry: dict, several: bool) -> str | None:
    """The archive member for `entry`: the only checkpoint, or the one whose path names the benchmark."""
    if len(members) == 1 and not several:
        return members[0]
    dataset, _, protocol = entry["benchmark"].partition("_")
    short = {"cross_subject": "xsub", "cross_view": "xview", "cross_setup": "xset"}.get(protocol, protocol)
    hits = [m for m in members
            if entry["benchmark"] in m.lower() or re.search(rf"{dataset}.?{short}\b", m.lower())]
    return hits[0] if len(hits) == 1 else None


def _safe_extract(archive: tarfile.TarFile, member: str, folder: str) -> None:
    if os.path.isabs(member) or ".." in member.split("/"):
        raise CheckFailed(f"refusing the archive member {member!r} (an absolute or parent path)")
    try:
        archive.extract(member, folder, filter="data")
    except TypeError:                                   # Python < 3.11.4: no extraction filters
        archive.extract(member, folder)


def archive_kind(path: str) -> str | None:
    """'tar' or 'zip' for an archive of files, None for anything else. A tar is recognised first: one
    holding torch.save files ends with a zip directory (the last file's), which zipfile would take for the
    whole file. A torch.save file is a zip too, recognised by its `<name>/data.pkl`."""
    if tarfile.is_tarfile(path):
        return "tar"
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            return None if any(re.fullmatch(r"[^/]+/data\.pkl", n) for n in z.namelist()) else "zip"
    return None



class InstalledAlready(ValueError):
    """--from names a benchmark whose checkpoint is installed (exit status 2: nothing was read or copied)."""


def check_installed(path: str, entries: list[dict], root: str, force: bool) -> None:
    """--from never replaces an installed checkpoint without --force, nor the file it imports (checked
    before anything is read or copied)."""
    for entry in entries:
        dest = destination(entry, root)
        if os.path.exists(dest) and os.path.samefile(dest, path):
            raise InstalledAlready(f"--from {path} is the installed {entry['benchmark']} checkpoint itself; "
                                   f"nothing to import")
        if os.path.lexists(dest) and not force:
            raise InstalledAlready(f"{entry['benchmark']} is already installed at {dest}; --from {path} "
                                   f"replaces it only with --force (move the installed file away first to "
                                   f"keep a copy)")


def import_from(path: str, entries: list[dict], root: str, force: bool = False) -> int:
    """--from: a checkpoint file (one benchmark) or a zip/tar archive (each benchmark found in it)."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"--from {path!r} does not exist")
    kind = archive_kind(path)
    if kind is None and len(entries) == 1:
        check_installed(path, entries, root, force)
    if kind is None:
        if len(entries) != 1:
            raise ValueError(f"--from {path}: a single file needs exactly one BENCHMARK, got "
                             f"{[e['benchmark'] for e in entries]}")
        install(path, entries[0], root, keep_candidate=True)
        return 0
    failures = 0
    archive = zipfile.ZipFile(path) if kind == "zip" else tarfile.open(path)
    with archive, tempfile.TemporaryDirectory(dir=root) as tmp:
        if isinstance(archive, zipfile.ZipFile):
            members = checkpoint_members(archive.namelist())
        else:
            members = checkpoint_members([m.name for m in archive.getmembers() if m.isfile()])
        print(f"{path}: {len(members)} checkpoint file(s): {members}")
        found = {}
        for entry in entries:
            member = pick_member(members, entry, several=len(entries) > 1)
            if member is None:
                print(f"{entry['benchmark']}: no unambiguous file for it in {path}", file=sys.stderr)
                failures += 1
                continue
            found[entry["benchmark"]] = member
        check_installed(path, [e for e in entries if e["benchmark"] in found], root, force)
        for entry in entries:
            member = found.get(entry["benchmark"])
            if member is None:
                continue
            try:
                if isinstance(archive, zipfile.ZipFile):
                    extracted = archive.extract(member, tmp)
                else:
                    _safe_extract(archive, member, tmp)
                    extracted = os.path.join(tmp, member)
                install(extracted, entry, root)
            except CheckFailed as exc:
                print(f"{entry['benchmark']}: {exc}", file=sys.stderr)
                failures += 1
    return 1 if failures else 0


def build_parser() -> argparse.ArgumentParser:
    parser = cli_errors.ArgumentParser(description=__doc__.split("\n\n")[0],
                                        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("benchmarks", nargs="*", metavar="BENCHMARK",
                        help="manifest benchmarks, e.g. ntu60_cross_subject (default: all)")
    parser.add_argument("--from", dest="source", default=None, metavar="PATH",
                        help="import a checkpoint or a zip/tar archive downloaded by hand")
    parser.add_argument("--manifest", default=DEFAULT_MANIFEST)
    parser.add_argument("--root", default=DEFAULT_ROOT, help="where the destination folders are")
    parser.add_argument("--force", action="store_true",
                        help="download or import (--from) again over an installed file")
    parser.add_argument("--retries", type=int, default=3, help="resumed attempts per download")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds without data before a retry")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    manifest = read_manifest(args.manifest)
    unknown = [b for b in args.benchmarks if b not in manifest]
    if unknown:
        print(f"unknown benchmark(s) {unknown}; the manifest {args.manifest} has {sorted(manifest)}",
              file=sys.stderr)
        return 2
    entries = [manifest[b] for b in (args.benchmarks or manifest)]
    os.makedirs(args.root, exist_ok=True)
    if args.source:
        try:
            return import_from(args.source, entries, args.root, args.force)
        except InstalledAlready as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except (CheckFailed, FileNotFoundError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        except OSError as exc:              # a full disk while copying or extracting: nothing installed
            failure = write_faults.write_failure(exc, exc.filename or args.root)
            if failure is None:
                raise
            print(f"error: {failure}", file=sys.stderr)
            return 2
    failed, by_hand = [], []
    for entry in entries:
        try:
            if not fetch(entry, args.root, args.force, args.retries, args.timeout):
                by_hand.append(entry["benchmark"])
        except CheckFailed as exc:
            print(f"error: {entry['benchmark']}: {exc}", file=sys.stderr)
            failed.append(entry["benchmark"])
        except OSError as exc:              # a full disk: the .part file is kept for a later resume
            failure = write_faults.write_failure(exc, exc.filename or destination(entry, args.root),
                                            "nothing was replaced; what was downloaded is kept to resume")
            if failure is None:
                raise
            print(f"error: {failure}", file=sys.stderr)
            return 2
    if failed:
        print(f"not installed: {failed} (nothing was replaced)", file=sys.stderr)
        return 1
    return 3 if by_hand else 0


if __name__ == "__main__":
    sys.exit(main())
