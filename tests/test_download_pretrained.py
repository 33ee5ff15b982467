"""download_pretrained.py against a local HTTP server (127.0.0.1, a free port) that serves a
released-format checkpoint made here: good, truncated, wrong checksum, not a checkpoint, interrupted and
resumed, plus --from a file and an archive."""
import hashlib
import http.server
import io
import json
import os
import tarfile
import threading
import zipfile

import pytest
import torch

import download_pretrained as dp
from helpers import released_state_dict


class Server:
    """Serves `files` {path: bytes} with Range support. `cut_after` {path: n}: the first request for that
    path announces the whole length but sends only n bytes, then closes (an interrupted download).
    `short` {path: n}: every response announces the whole length and sends n bytes (a truncated server)."""

    def __init__(self):
        self.files, self.cut_after, self.short, self.requests = {}, {}, {}, []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                rng = self.headers.get("Range")
                server.requests.append((self.path, rng))
                start = int(rng[len("bytes="):].split("-")[0]) if rng else 0
                if start >= len(body):
                    self.send_error(416)
                    return
                self.send_response(206 if rng else 200)
                if rng:
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                send = len(body) - start
                if self.path in server.cut_after:
                    send = min(send, server.cut_after.pop(self.path))
                if self.path in server.short:
                    send = min(send, server.short[self.path] - start)
                self.wfile.write(body[start:start + send])
                self.wfile.flush()
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path):
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.stop()


def released_checkpoint_bytes(seed=0) -> bytes:
    """A pretraining checkpoint as released: {'epoch', 'state_dict' (DDP `module.` prefix), 'optimizer'}."""
    sd = {f"module.{k}": v for k, v in released_state_dict(hidden=4, K=16, seed=seed).items()}
    buf = io.BytesIO()
    torch.save({"epoch": 451, "state_dict": sd, "optimizer": {"state": {}, "param_groups": []}}, buf)
    return buf.getvalue()


def write_manifest(tmp_path, url, sha256="unknown", benchmark="ntu60_cross_subject", **extra):
    entry = {"benchmark": benchmark, "url": url, "file_name": "checkpoint_0450.pth.tar",
             "destination": benchmark, "sha256": sha256, **extra}
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps({"checkpoints": [entry]}))
    return str(path)


def run(tmp_path, manifest, *extra):
    return dp.main(["--manifest", manifest, "--root", str(tmp_path / "pm"), "--timeout", "10", *extra])


def installed(tmp_path, benchmark="ntu60_cross_subject"):
    return tmp_path / "pm" / benchmark / "checkpoint_0450.pth.tar"


@pytest.mark.parametrize("with_sha", [True, False])
def test_good_download_is_checked_installed_and_its_sha256_printed(server, tmp_path, capsys, with_sha):
    body = released_checkpoint_bytes()
    server.files["/ckpt"] = body
    digest = hashlib.sha256(body).hexdigest()
    manifest = write_manifest(tmp_path, server.url("/ckpt"), digest if with_sha else "unknown")
    assert run(tmp_path, manifest) == 0
    assert installed(tmp_path).read_bytes() == body
    assert not os.path.exists(str(installed(tmp_path)) + ".part")
    assert f"sha256 {digest}" in capsys.readouterr().out
    # a second call leaves the good file alone and downloads nothing
    n = len(server.requests)
    assert run(tmp_path, write_manifest(tmp_path, server.url("/ckpt"))) == 0
    assert len(server.requests) == n and "already installed" in capsys.readouterr().out


def test_truncated_download_never_replaces_the_good_file(server, tmp_path, capsys):
    good = released_checkpoint_bytes(seed=1)
    installed(tmp_path).parent.mkdir(parents=True)
    installed(tmp_path).write_bytes(good)
    body = released_checkpoint_bytes(seed=2)
    server.files["/ckpt"] = body
    server.short["/ckpt"] = len(body) // 2        # every response stops half-way
    manifest = write_manifest(tmp_path, server.url("/ckpt"))
    assert run(tmp_path, manifest, "--force", "--retries", "2") == 1
    assert installed(tmp_path).read_bytes() == good
    assert "incomplete after 2 attempts" in capsys.readouterr().err
    # a server that announces the truncated length itself: the file fails to load as a checkpoint
    server.short.clear()
    server.files["/half"] = body[:len(body) // 2]
    assert run(tmp_path, write_manifest(tmp_path, server.url("/half")), "--force") == 1
    assert installed(tmp_path).read_bytes() == good
    assert "does not load with torch.load(weights_only=True)" in capsys.readouterr().err
    assert not os.path.exists(str(installed(tmp_path)) + ".part")


def test_wrong_checksum_is_rejected(server, tmp_path, capsys):
    server.files["/ckpt"] = released_checkpoint_bytes()
    assert run(tmp_path, write_manifest(tmp_path, server.url("/ckpt"), "0" * 64)) == 1
    assert not installed(tmp_path).exists()
    assert not os.path.exists(str(installed(tmp_path)) + ".part")
    assert "differs from the manifest's " + "0" * 64 in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["html", "other_tensors"])
def test_a_file_that_is_not_a_cmd_checkpoint_is_rejected(server, tmp_path, capsys, kind):
    if kind == "html":   # what a Google Drive link answers without a browser
        server.files["/ckpt"] = b"<!DOCTYPE html><html><body>Google Drive can't scan this file</body></html>"
    else:                # loads with weights_only=True, but holds other key names (a linear-eval checkpoint)
        buf = io.BytesIO()
        torch.save({"state_dict": {"fc.weight": torch.zeros(60, 8), "fc.bias": torch.zeros(60)}}, buf)
        server.files["/ckpt"] = buf.getvalue()
    assert run(tmp_path, write_manifest(tmp_path, server.url("/ckpt"))) == 1
    assert not installed(tmp_path).exists()
    err = capsys.readouterr().err
    assert ("does not load" if kind == "html" else "is not a CMD pretraining checkpoint") in err


def test_interrupted_download_resumes_from_the_partial_file(server, tmp_path, capsys):
    body = released_checkpoint_bytes()
    server.files["/ckpt"] = body
    cut = len(body) // 3
    server.cut_after["/ckpt"] = cut               # the first response closes after a third
    manifest = write_manifest(tmp_path, server.url("/ckpt"), hashlib.sha256(body).hexdigest())
    assert run(tmp_path, manifest) == 0
    assert server.requests == [("/ckpt", None), ("/ckpt", f"bytes={cut}-")]
    assert installed(tmp_path).read_bytes() == body
    assert "resuming" in capsys.readouterr().err


def test_interrupted_download_resumes_in_a_later_call(server, tmp_path):
    body = released_checkpoint_bytes()
    server.files["/ckpt"] = body
    server.cut_after["/ckpt"] = 1000
    manifest = write_manifest(tmp_path, server.url("/ckpt"))
    assert run(tmp_path, manifest, "--retries", "1") == 1        # gives up, keeps the .part
    assert os.path.getsize(str(installed(tmp_path)) + ".part") == 1000 and not installed(tmp_path).exists()
    assert run(tmp_path, manifest) == 0
    assert server.requests[-1] == ("/ckpt", "bytes=1000-")
    assert installed(tmp_path).read_bytes() == body


def test_browser_only_source_says_so_and_from_imports_a_file_or_archive(tmp_path, capsys):
    manifest = write_manifest(tmp_path, "https://drive.example/share", needs_browser=True, note="a share")
    assert run(tmp_path, manifest) == 3
    out = capsys.readouterr().out
    assert "needs a browser" in out and "--from PATH" in out
    body = released_checkpoint_bytes()
    by_hand = tmp_path / "Downloads" / "checkpoint_0450.pth.tar"
    by_hand.parent.mkdir()
    by_hand.write_bytes(b"not a checkpoint")
    assert run(tmp_path, manifest, "ntu60_cross_subject", "--from", str(by_hand)) == 1
    assert not installed(tmp_path).exists()
    by_hand.write_bytes(body)
    assert run(tmp_path, manifest, "ntu60_cross_subject", "--from", str(by_hand)) == 0
    assert installed(tmp_path).read_bytes() == body and by_hand.exists()      # the user's file stays
    # an archive holding two benchmarks, as a shared folder downloads
    two = tmp_path / "two.json"
    entries = [{"benchmark": b, "url": "https://drive.example/share", "needs_browser": True,
                "file_name": "checkpoint_0450.pth.tar", "destination": b, "sha256": "unknown"}
               for b in ("ntu60_cross_view", "ntu120_cross_subject")]
    two.write_text(json.dumps({"checkpoints": entries}))
    archive = tmp_path / "CMD.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("CMD/ntu60_xview/checkpoint_0450.pth.tar", released_checkpoint_bytes(seed=3))
        z.writestr("CMD/ntu120_xsub/checkpoint_0450.pth.tar", released_checkpoint_bytes(seed=4))
        z.writestr("CMD/readme.txt", "hello")
    assert run(tmp_path, str(two), "--from", str(archive)) == 0
    assert installed(tmp_path, "ntu60_cross_view").read_bytes() == released_checkpoint_bytes(seed=3)
    assert installed(tmp_path, "ntu120_cross_subject").read_bytes() == released_checkpoint_bytes(seed=4)
    # a tar.gz with a single checkpoint, for the one benchmark named
    member = tmp_path / "x" / "checkpoint_0450.pth.tar"
    member.parent.mkdir()
    member.write_bytes(released_checkpoint_bytes(seed=5))
    with tarfile.open(tmp_path / "one.tar.gz", "w:gz") as t:
        t.add(member, arcname="pretrained/checkpoint_0450.pth.tar")
    # (ntu60_cross_view is installed already: replaced only with --force, issue 25)
    assert run(tmp_path, str(two), "ntu60_cross_view", "--from", str(tmp_path / "one.tar.gz")) == 2
    assert installed(tmp_path, "ntu60_cross_view").read_bytes() == released_checkpoint_bytes(seed=3)
    assert run(tmp_path, str(two), "ntu60_cross_view", "--from", str(tmp_path / "one.tar.gz"), "--force") == 0
    assert installed(tmp_path, "ntu60_cross_view").read_bytes() == released_checkpoint_bytes(seed=5)


def test_the_repository_manifest_names_every_benchmark():
    manifest = dp.read_manifest(dp.DEFAULT_MANIFEST)
    assert sorted(manifest) == ["ntu120_cross_setup", "ntu120_cross_subject", "ntu60_cross_subject",
                                "ntu60_cross_view", "pku_v2_cross_subject"]
    for name, entry in manifest.items():
        assert entry["destination"] == name and entry["sha256"] == "unknown" or len(entry["sha256"]) == 64
