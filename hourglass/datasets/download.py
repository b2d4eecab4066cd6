"""Fetch the MPII, LSP and LSPET archives and unpack them into the layout the readers expect.

Standard library only (urllib): a partial download resumes from its ``.part`` file with an HTTP
Range request, a server that ignores Range restarts the file cleanly, every archive is checked
(size and checksum where one is published, otherwise against the sha256 recorded in
``<root>/downloads.json`` at the first download) and renamed into place atomically. Unpacking
refuses members that would land outside the target folder and skips archives whose contents are
already there. Layouts after a successful call::

    mpii/   images/*.jpg, mpii_human_pose_v1_u12_1.mat
    lsp/    images/im0001.jpg … im2000.jpg, joints.mat
    lspet/  images/im00001.jpg … im10000.jpg, joints.mat
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import shutil
import tarfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from tqdm import tqdm

from hourglass.errors import AlposeError
from hourglass.io import write_json

MANIFEST = "downloads.json"
CHUNK = 1 << 20


@dataclass(frozen=True)
class Archive:
    """One downloadable archive: where it lives, what it must hash to, what it puts in the root."""

    file_name: str
    url: str
    provides: tuple[
        str, ...
    ]  # top-level entries it adds to the root (found at most one folder down)
    mirrors: tuple[str, ...] = ()  # tried in order after ``url`` when a host cannot be reached
    size: int | None = None  # exact bytes; None: not published (the server's length is checked)
    md5: str | None = None
    sha256: str | None = None
    approx: str = ""  # human-readable size for messages, e.g. "12.9 GB"

    @property
    def urls(self) -> tuple[str, ...]:
        return (self.url, *self.mirrors)


@dataclass(frozen=True)
class DatasetSource:
    """A dataset: its archives, the paths that must exist afterwards, and where to get it by hand."""

    name: str
    archives: tuple[Archive, ...]
    layout: tuple[str, ...]
    manual: str  # the page a user downloads from by hand


# MPII Human Pose (Andriluka et al., CVPR 2014). URLs: the official download page
# http://human-pose.mpi-inf.mpg.de/#download (images 12.9 GB, annotations 12.5 MB).
# md5 of the image tarball: not published by MPII; the value is the one anibali/margipose states in
# src/margipose/data/mpii/__init__.py (commit 203977a) and anibali's torchdata MPII installer.
# The annotation zip has no published checksum: size and sha256 are recorded at first download.
# The tarball's members are ./images/<name>.jpg; the zip's .mat sits one folder down.
MPII = DatasetSource(
    name="mpii",
    archives=(
        Archive(
            file_name="mpii_human_pose_v1_u12_2.zip",
            url="https://datasets.d2.mpi-inf.mpg.de/andriluka14cvpr/mpii_human_pose_v1_u12_2.zip",
            provides=("mpii_human_pose_v1_u12_1.mat",),
            approx="12.5 MB",
        ),
        Archive(
            file_name="mpii_human_pose_v1.tar.gz",
            url="https://datasets.d2.mpi-inf.mpg.de/andriluka14cvpr/mpii_human_pose_v1.tar.gz",
            provides=("images",),
            md5="b6bc9c6869d3f035a5570b2e68ec84c4",
            approx="12.9 GB",
        ),
    ),
    layout=("images", "mpii_human_pose_v1_u12_1.mat"),
    manual="http://human-pose.mpi-inf.mpg.de/#download",
)

# Leeds Sports Pose (Johnson & Everingham, BMVC 2010). The original hosts
# (www.comp.leeds.ac.uk/mat4saj/, then sam.johnson.io/research/) are gone: see
# github.com/jiang-du/BlazePose-tensorflow/issues/14 (2021) and nkolot/SPIN/issues/105 (2021).
# No mirror with verifiable contents was found, so the default is the last official URL and then
# the Internet Archive's copy of it (not verified from here). No checksum is published.
# The zip holds images/, visualized/, joints.mat and README.txt at its top level.
LSP = DatasetSource(
    name="lsp",
    archives=(
        Archive(
            file_name="lsp_dataset.zip",
            url="http://sam.johnson.io/research/lsp_dataset.zip",
            mirrors=(
                "https://web.archive.org/web/2020id_/http://sam.johnson.io/research/lsp_dataset.zip",
            ),
            provides=("images", "joints.mat"),
        ),
    ),
    layout=("images", "joints.mat"),
    manual="http://sam.johnson.io/research/lsp.html (original host, now offline; any copy of lsp_dataset.zip)",
)

# LSP Extended (Johnson & Everingham, CVPR 2011). Original lspet_dataset.zip host is gone as for
# LSP; the copy in use today is github.com/axelcarlier/lsp at commit 8fabf31 (the 10,000
# original-size images and the official joints.mat; its earlier commit 5e07d9c has resized images
# and must not be used). GitHub builds the zip on the fly, so no checksum can be published: the
# sha256 is recorded at first download. Its members sit under lsp-<commit>/.
LSPET_COMMIT = "8fabf3183516b1be5f9d44bd1c516609637e983e"
LSPET = DatasetSource(
    name="lspet",
    archives=(
        Archive(
            file_name="lspet_dataset.zip",
            url=f"https://github.com/axelcarlier/lsp/archive/{LSPET_COMMIT}.zip",
            mirrors=("http://sam.johnson.io/research/lspet_dataset.zip",),
            provides=("images", "joints.mat"),
            approx="170 MB",
        ),
    ),
    layout=("images", "joints.mat"),
    manual=f"https://github.com/axelcarlier/lsp/tree/{LSPET_COMMIT}",
)

SOURCES: dict[str, DatasetSource] = {s.name: s for s in (MPII, LSP, LSPET)}


class _Unreachable(Exception):
    """This URL cannot serve the file (host down, HTTP error, a web page instead of an archive)."""


def download_dataset(
    name: str,
    root: str | Path,
    sources: Mapping[str, DatasetSource] | None = None,
    *,
    progress: bool = True,
    keep_archives: bool = False,
    timeout: float = 30.0,
    log: Callable[[str], None] = print,
) -> None:
    """Fetch and unpack dataset ``name`` (mpii, lsp, lspet) into ``root``; a no-op when it is there."""
    table = SOURCES if sources is None else sources
    if name not in table:
        raise AlposeError(f"no download for dataset '{name}'; known: {', '.join(sorted(table))}")
    source, root = table[name], Path(root)
    if all((root / p).exists() for p in source.layout):
        log(f"{name}: already unpacked in {root}")
        return
    root.mkdir(parents=True, exist_ok=True)
    for archive in source.archives:
        if all((root / p).exists() for p in archive.provides):
            continue
        path = root / archive.file_name
        if not path.exists():
            _fetch(archive, path, source, progress=progress, timeout=timeout, log=log)
        _unpack(archive, path, root, progress=progress)
        if not keep_archives:
            path.unlink()
    missing = [p for p in source.layout if not (root / p).exists()]
    if missing:
        raise AlposeError(f"{name}: {', '.join(missing)} missing in {root} after unpacking")
    log(f"{name}: ready in {root}")


# ---------------------------------------------------------------------------------------- fetch


def _fetch(
    archive: Archive,
    path: Path,
    source: DatasetSource,
    *,
    progress: bool,
    timeout: float,
    log: Callable[[str], None],
) -> None:
    """Download ``archive`` to ``path`` through ``path.part``, trying each URL, then verify it."""
    part = path.with_name(path.name + ".part")
    failures, used = [], archive.url
    for url in archive.urls:
        try:
            log(f"fetching {archive.file_name} ({archive.approx or 'size unknown'}) from {url}")
            _download(url, part, progress=progress, timeout=timeout)
            used = url
            break
        except _Unreachable as exc:
            failures.append(f"{urlsplit(url).netloc} ({exc})")
    else:
        raise AlposeError(
            f"cannot download {archive.file_name}: {'; '.join(failures)}. Get it by hand from "
            f"{source.manual}, put it (or its unpacked contents) in {path.parent} as data/README.md "
            "describes, and re-run"
        )
    _verify(archive, part, path.parent / MANIFEST, source, used)
    os.replace(part, path)


def _download(url: str, part: Path, *, progress: bool, timeout: float) -> None:
    """Append the rest of ``url`` to ``part`` (Range), or restart it when the server ignores Range."""
    for _attempt in range(2):
        offset = part.stat().st_size if part.exists() else 0
        headers = {"User-Agent": "alpose-download/1"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        try:
            resp = urllib.request.urlopen(
                urllib.request.Request(url, headers=headers), timeout=timeout
            )
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and offset:  # the .part is not a prefix the server recognises
                part.unlink()
                continue
            raise _Unreachable(f"HTTP {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise _Unreachable(getattr(exc, "reason", None) or exc) from None
        with resp:
            if resp.headers.get_content_type() == "text/html":
                raise _Unreachable("it returned a web page, not the archive")
            if offset and resp.status == 206:
                match = re.match(r"bytes (\d+)-\d+/(\d+|\*)", resp.headers.get("Content-Range", ""))
                if not match or int(match.group(1)) != offset:
                    part.unlink()  # a range we did not ask for: start over
                    continue
                total = None if match.group(2) == "*" else int(match.group(2))
                mode = "ab"
            else:  # 200: whole file (the server ignored Range, or nothing was there yet)
                offset, mode = 0, "wb"
                length = resp.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
            with (
                part.open(mode) as out,
                tqdm(
                    total=total,
                    initial=offset,
                    unit="B",
                    unit_scale=True,
                    unit_divisor=1024,
                    desc=part.name[: -len(".part")],
                    disable=not progress,
                    leave=False,
                ) as bar,
            ):
                try:
                    while chunk := resp.read(CHUNK):
                        out.write(chunk)
                        bar.update(len(chunk))
                except (OSError, http.client.HTTPException) as exc:
                    raise AlposeError(
                        f"download of {part.name[:-5]} broke off after {out.tell():,} bytes ({exc}); "
                        "re-run the same command to resume it"
                    ) from None
        got = part.stat().st_size
        if total is not None and got != total:
            raise AlposeError(
                f"download of {part.name[:-5]} stopped at {got:,} of {total:,} bytes; "
                "re-run the same command to resume it"
            )
        return
    raise _Unreachable("the server does not honour resume requests")


def _digests(path: Path) -> tuple[str, str]:
    """(sha256, md5) of a file, read once."""
    sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        while block := f.read(4 * CHUNK):
            sha.update(block)
            md5.update(block)
    return sha.hexdigest(), md5.hexdigest()


def _verify(archive: Archive, part: Path, manifest: Path, source: DatasetSource, url: str) -> None:
    """Check size and checksum (table first, else the manifest); on a mismatch delete ``part``."""
    records = json.loads(manifest.read_text()) if manifest.exists() else {}
    known = records.get(archive.file_name)
    size = part.stat().st_size
    problems = []
    if archive.size is not None and size != archive.size:
        problems.append(f"{size:,} bytes instead of {archive.size:,}")
    sha = md5 = ""
    if not problems:
        sha, md5 = _digests(part)
        if archive.sha256 and sha != archive.sha256:
            problems.append(f"sha256 {sha} instead of the published {archive.sha256}")
        if archive.md5 and md5 != archive.md5:
            problems.append(f"md5 {md5} instead of the published {archive.md5}")
        if not (archive.sha256 or archive.md5) and known and known.get("sha256") != sha:
            problems.append(
                f"sha256 {sha} instead of {known.get('sha256')} recorded in {manifest} at the first "
                "download (if the source really changed, delete that entry)"
            )
    if not problems and not _is_archive(part, archive.file_name):
        problems.append("not a readable archive")
    if problems:
        part.unlink()
        raise AlposeError(
            f"{archive.file_name} failed its check ({'; '.join(problems)}); the bad download was "
            f"deleted: re-run to fetch it again, or get it by hand from {source.manual}"
        )
    records[archive.file_name] = {
        "url": url,
        "bytes": size,
        "sha256": sha,
        "md5": md5,
        "checked_against": "published checksum"
        if (archive.sha256 or archive.md5)
        else ("earlier download" if known else "nothing published: recorded now"),
    }
    write_json(manifest, records)


def _is_archive(path: Path, file_name: str) -> bool:
    return zipfile.is_zipfile(path) if file_name.endswith(".zip") else tarfile.is_tarfile(path)


# --------------------------------------------------------------------------------------- unpack


def _unpack(archive: Archive, path: Path, root: Path, *, progress: bool) -> None:
    """Extract into a staging folder, then move each provided entry into ``root`` (atomic renames)."""
    staging = root / f".{archive.file_name}.unpack"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        try:
            if archive.file_name.endswith(".zip"):
                _extract_zip(path, staging, progress=progress)
            else:
                _extract_tar(path, staging, progress=progress)
        except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as exc:
            raise AlposeError(
                f"cannot unpack {path} ({exc}); delete it and re-run to download it again"
            ) from None
        for name in archive.provides:
            target = root / name
            if target.exists():
                continue
            found = _find_entry(staging, name)
            if found is None:
                raise AlposeError(
                    f"{archive.file_name} has no '{name}' at its top level or one folder down: it is "
                    f"not the expected archive; delete {path} and get it by hand (data/README.md)"
                )
            os.replace(found, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _find_entry(staging: Path, name: str) -> Path | None:
    """``staging/name`` or ``staging/<one folder>/name`` (archives that wrap everything in a folder)."""
    if (staging / name).exists():
        return staging / name
    for folder in sorted(p for p in staging.iterdir() if p.is_dir()):
        if (folder / name).exists():
            return folder / name
    return None


def _check_member(name: str, archive: Path) -> None:
    """Refuse absolute paths, drive letters and '..' (path traversal)."""
    p = PurePosixPath(name.replace("\\", "/"))
    if p.is_absolute() or ".." in p.parts or (p.parts and ":" in p.parts[0]):
        raise AlposeError(
            f"{archive.name} holds '{name}', which would land outside the target folder; "
            f"refusing to unpack it: delete {archive} and get the file from the official source"
        )


def _extract_zip(path: Path, dest: Path, *, progress: bool) -> None:
    with zipfile.ZipFile(path) as zf:
        members = zf.infolist()
        for info in members:
            _check_member(info.filename, path)
        for info in tqdm(members, desc=f"unpacking {path.name}", disable=not progress, leave=False):
            zf.extract(info, dest)


def _extract_tar(path: Path, dest: Path, *, progress: bool) -> None:
    """Stream the tarball once; links that leave ``dest`` and special files are refused."""
    with (
        tarfile.open(path, "r:*") as tar,
        tqdm(
            desc=f"unpacking {path.name}", unit=" files", disable=not progress, leave=False
        ) as bar,
    ):
        for member in tar:
            _check_member(member.name, path)
            if member.issym() or member.islnk():
                _check_member(member.linkname, path)
            try:
                if hasattr(tarfile, "data_filter"):  # Python >= 3.10.12 / 3.11.4
                    tar.extract(member, dest, filter="data")
                else:
                    tar.extract(member, dest)
            except tarfile.FilterError as exc:
                raise AlposeError(
                    f"{path.name}: refusing to unpack member '{member.name}' ({exc}); "
                    f"delete {path} and get the file from the official source"
                ) from None
            bar.update()
