"""Dataset download against a local HTTP server on 127.0.0.1 serving small archives built here."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import socket
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from hourglass.datasets.download import MANIFEST, SOURCES, Archive, DatasetSource, download_dataset
from hourglass.errors import AlposeError


def _zip(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _targz(entries: dict[str, bytes], symlinks: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (symlinks or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return buf.getvalue()


# Random-looking bytes so the archives are big enough to split and do not compress away.
BLOB = hashlib.sha256(b"alpose").digest() * 2000
LSP_ZIP = _zip(
    {"images/im0001.jpg": BLOB, "images/im0002.jpg": BLOB[::-1], "joints.mat": b"MATLAB 5.0"}
)
LSPET_ZIP = _zip(  # the GitHub-archive shape: everything one folder down, plus extras
    {
        "lsp-8fabf31/images/im00001.jpg": BLOB,
        "lsp-8fabf31/joints.mat": b"MATLAB 5.0 lspet",
        "lsp-8fabf31/labels.npz": b"extra",
    }
)
MPII_TAR = _targz({"./images/005808361.jpg": BLOB, "./images/052475643.jpg": BLOB[:999]})
MPII_ZIP = _zip({"mpii_human_pose_v1_u12_2/mpii_human_pose_v1_u12_1.mat": b"MATLAB 5.0 RELEASE"})


class Server:
    """Files by path; logs each GET with its Range header. Modes: range, ignore_range, truncate."""

    def __init__(self, files: dict[str, bytes]):
        self.files, self.log, self.mode = dict(files), [], "range"
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                data = owner.files.get(self.path)
                rng = self.headers.get("Range")
                owner.log.append((self.path, rng))
                if data is None:
                    self.send_error(404)
                    return
                start = 0
                if rng and owner.mode != "ignore_range":
                    start = int(rng.removeprefix("bytes=").split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                body = data[start:]
                if owner.mode == "truncate":  # the connection drops halfway
                    body = body[: len(body) // 2]
                    self.close_connection = True
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    srv = Server(
        {"/lsp.zip": LSP_ZIP, "/lspet.zip": LSPET_ZIP, "/mpii.tgz": MPII_TAR, "/mpii.zip": MPII_ZIP}
    )
    yield srv
    srv.close()


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _lsp(url: str, **kw) -> dict[str, DatasetSource]:
    arc = Archive("lsp_dataset.zip", url, provides=("images", "joints.mat"), **kw)
    return {"lsp": DatasetSource("lsp", (arc,), ("images", "joints.mat"), "https://example/lsp")}


def _get(name, root, sources):
    download_dataset(name, root, sources, progress=False, log=lambda _: None)


def test_full_download_and_unpack_mpii(server, tmp_path):
    sources = {
        "mpii": DatasetSource(
            "mpii",
            (
                Archive(
                    "mpii_human_pose_v1_u12_2.zip",
                    server.url + "/mpii.zip",
                    ("mpii_human_pose_v1_u12_1.mat",),
                ),
                Archive(
                    "mpii_human_pose_v1.tar.gz",
                    server.url + "/mpii.tgz",
                    ("images",),
                    size=len(MPII_TAR),
                    md5=_md5(MPII_TAR),
                ),
            ),
            ("images", "mpii_human_pose_v1_u12_1.mat"),
            "https://example/mpii",
        )
    }
    root = tmp_path / "mpii"
    _get("mpii", root, sources)
    assert (root / "images" / "005808361.jpg").read_bytes() == BLOB
    assert (root / "images" / "052475643.jpg").read_bytes() == BLOB[:999]
    assert (root / "mpii_human_pose_v1_u12_1.mat").read_bytes() == b"MATLAB 5.0 RELEASE"
    # archives removed after unpacking, no staging or partial files left behind
    assert sorted(p.name for p in root.iterdir()) == sorted(
        ["images", "mpii_human_pose_v1_u12_1.mat", MANIFEST]
    )
    manifest = json.loads((root / MANIFEST).read_text())
    assert manifest["mpii_human_pose_v1.tar.gz"]["sha256"] == hashlib.sha256(MPII_TAR).hexdigest()
    assert manifest["mpii_human_pose_v1.tar.gz"]["checked_against"] == "published checksum"
    assert manifest["mpii_human_pose_v1_u12_2.zip"]["bytes"] == len(MPII_ZIP)
    # a second call finds everything unpacked and asks the server for nothing
    n = len(server.log)
    _get("mpii", root, sources)
    assert len(server.log) == n


def test_wrapped_archive_is_flattened_and_extras_dropped(server, tmp_path):
    arc = Archive("lspet_dataset.zip", server.url + "/lspet.zip", ("images", "joints.mat"))
    sources = {"lspet": DatasetSource("lspet", (arc,), ("images", "joints.mat"), "x")}
    _get("lspet", tmp_path, sources)
    assert (tmp_path / "images" / "im00001.jpg").read_bytes() == BLOB
    assert (tmp_path / "joints.mat").read_bytes() == b"MATLAB 5.0 lspet"
    assert not (tmp_path / "labels.npz").exists()


def test_resume_requests_only_the_rest(server, tmp_path):
    cut = len(LSP_ZIP) // 3
    (tmp_path / "lsp_dataset.zip.part").write_bytes(LSP_ZIP[:cut])
    _get("lsp", tmp_path, _lsp(server.url + "/lsp.zip", md5=_md5(LSP_ZIP)))
    assert server.log == [("/lsp.zip", f"bytes={cut}-")]
    assert (tmp_path / "joints.mat").read_bytes() == b"MATLAB 5.0"
    assert (tmp_path / "images" / "im0002.jpg").read_bytes() == BLOB[::-1]
    assert not (tmp_path / "lsp_dataset.zip.part").exists()


def test_broken_connection_then_rerun_resumes(server, tmp_path):
    sources = _lsp(server.url + "/lsp.zip", sha256=hashlib.sha256(LSP_ZIP).hexdigest())
    server.mode = "truncate"
    with pytest.raises(AlposeError, match="resume"):
        _get("lsp", tmp_path, sources)
    part = tmp_path / "lsp_dataset.zip.part"
    got = part.stat().st_size
    assert 0 < got < len(LSP_ZIP) and not (tmp_path / "lsp_dataset.zip").exists()
    server.mode = "range"
    _get("lsp", tmp_path, sources)
    assert server.log[-1] == ("/lsp.zip", f"bytes={got}-")
    assert (tmp_path / "joints.mat").exists() and not part.exists()


def test_server_ignoring_range_restarts_cleanly(server, tmp_path):
    server.mode = "ignore_range"
    (tmp_path / "lsp_dataset.zip.part").write_bytes(b"garbage that is not a prefix" * 50)
    _get("lsp", tmp_path, _lsp(server.url + "/lsp.zip", md5=_md5(LSP_ZIP)))
    assert server.log[0][1] is not None  # it did ask for a range, and got the whole file
    assert (tmp_path / "joints.mat").read_bytes() == b"MATLAB 5.0"


def test_checksum_mismatch_deletes_the_download(server, tmp_path):
    with pytest.raises(AlposeError, match="failed its check.*md5.*re-run") as err:
        _get("lsp", tmp_path, _lsp(server.url + "/lsp.zip", md5="0" * 32))
    assert "\n" not in str(err.value)
    assert not (tmp_path / "lsp_dataset.zip").exists()
    assert not (tmp_path / "lsp_dataset.zip.part").exists()
    assert not (tmp_path / "images").exists() and not (tmp_path / "joints.mat").exists()


def test_redownload_is_checked_against_the_recorded_sha256(server, tmp_path):
    _get("lsp", tmp_path, _lsp(server.url + "/lsp.zip"))  # nothing published: recorded
    recorded = json.loads((tmp_path / MANIFEST).read_text())["lsp_dataset.zip"]
    assert recorded["sha256"] == hashlib.sha256(LSP_ZIP).hexdigest()
    shutil.rmtree(tmp_path / "images")  # the user deletes the data; the source changed since
    (tmp_path / "joints.mat").unlink()
    server.files["/lsp.zip"] = _zip({"images/x.jpg": b"other", "joints.mat": b"other"})
    with pytest.raises(AlposeError, match="recorded in"):
        _get("lsp", tmp_path, _lsp(server.url + "/lsp.zip"))
    assert not (tmp_path / "joints.mat").exists()


def test_archive_placed_by_hand_is_unpacked_without_network(server, tmp_path):
    (tmp_path / "lsp_dataset.zip").write_bytes(LSP_ZIP)
    _get("lsp", tmp_path, _lsp(server.url + "/lsp.zip"))
    assert server.log == [] and (tmp_path / "joints.mat").read_bytes() == b"MATLAB 5.0"
    (tmp_path / "joints.mat").unlink()
    (tmp_path / "lsp_dataset.zip").write_bytes(LSP_ZIP[:100])  # a truncated copy
    with pytest.raises(AlposeError, match="cannot unpack .*delete it"):
        _get("lsp", tmp_path, _lsp(server.url + "/lsp.zip"))


def test_unreachable_host_is_one_clear_line(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(AlposeError, match="by hand from https://example/lsp") as err:
        _get("lsp", tmp_path, _lsp(f"http://127.0.0.1:{port}/lsp.zip"))
    msg = str(err.value)
    assert f"127.0.0.1:{port}" in msg and "data/README.md" in msg and "\n" not in msg


def test_mirror_used_when_first_host_fails(server, tmp_path):
    _get("lsp", tmp_path, _lsp(server.url + "/missing.zip", mirrors=(server.url + "/lsp.zip",)))
    assert [p for p, _ in server.log] == ["/missing.zip", "/lsp.zip"]
    assert json.loads((tmp_path / MANIFEST).read_text())["lsp_dataset.zip"]["url"].endswith(
        "/lsp.zip"
    )


@pytest.mark.parametrize(
    "payload",
    [
        _zip({"images/a.jpg": b"a", "../evil.txt": b"x", "joints.mat": b"m"}),
        _targz({"images/a.jpg": b"a", "joints.mat": b"m"}, symlinks={"images/link": "../../evil"}),
    ],
    ids=["zip-dotdot", "tar-symlink"],
)
def test_path_traversal_is_refused(server, tmp_path, payload):
    name = "lsp_dataset.zip" if payload[:2] == b"PK" else "lsp_dataset.tar.gz"
    server.files["/bad"] = payload
    arc = Archive(name, server.url + "/bad", ("images", "joints.mat"))
    sources = {"lsp": DatasetSource("lsp", (arc,), ("images", "joints.mat"), "x")}
    root = tmp_path / "root"
    with pytest.raises(AlposeError, match="outside the target folder"):
        _get("lsp", root, sources)
    assert not (tmp_path / "evil.txt").exists() and not (root / "images").exists()
    assert not any(p.name.endswith(".unpack") for p in root.iterdir())


def test_default_table_and_unknown_name(tmp_path):
    assert set(SOURCES) == {"mpii", "lsp", "lspet"}
    assert SOURCES["mpii"].layout == ("images", "mpii_human_pose_v1_u12_1.mat")
    for src in SOURCES.values():  # every default archive is fetched over http(s)
        assert all(u.startswith(("http://", "https://")) for a in src.archives for u in a.urls)
    with pytest.raises(AlposeError, match="known: lsp, lspet, mpii"):
        download_dataset("coco", tmp_path)
    (tmp_path / "images").mkdir()
    (tmp_path / "joints.mat").write_bytes(b"")
    download_dataset("lsp", Path(tmp_path), log=lambda _: None)  # already there: no network
