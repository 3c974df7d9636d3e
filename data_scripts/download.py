"""Fetch, verify and unpack data set archives, and write converted label maps: the machinery of
``data_scripts/prepare_*.py``.

A module beside the scripts, not part of the library: a script run as ``python data_scripts/prepare_X.py`` has this
folder first on ``sys.path`` and imports it as ``download`` (the tests put the folder on ``sys.path`` the same way,
``tests/data_scripts_loader.py``). It needs numpy, pillow, tqdm and, for .mat label files, scipy.

Nothing here knows a data set; the scripts combine:

- ``download(url, target, md5=..., sha256=...)``: an http(s) address streamed to ``<target>.part`` (a partial file
  from an interrupted run is resumed with a Range request), or a ``file://`` address or local path copied; the
  checksum is verified and the file renamed into place. A complete target with a good checksum is not fetched again.
- ``extract(archive, root)``: .zip, .tar, .tar.gz and .tgz, after checking that every member stays inside ``root``.
  A marker file in ``root`` makes a second call a no-op.
- ``convert_labels(jobs, table)``: label maps (PNG, or a field of a MATLAB .mat file) mapped through a lookup table
  and written as 8-bit PNGs; outputs that exist are kept.
- ``require_files``: for data sets behind a login, the numbered manual steps and which archives are present.

Every output file is written under a temporary name and renamed, so a file that exists is complete, and an
interrupted run continues where it stopped.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import multiprocessing
import os
import posixpath
import re
import shutil
import stat
import sys
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from PIL import Image
from tqdm import tqdm

CHUNK_SIZE = 1 << 20
USER_AGENT = "contrastseg-data-scripts (python urllib)"
IGNORE_INDEX = 255
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")


class ChecksumError(ValueError):
    """A file's checksum differs from the published one."""


class UnsafeArchiveError(ValueError):
    """An archive member would be written outside the extraction folder, or is a device file."""


class IncompleteDownload(ConnectionError):
    """The server closed the connection before the whole file arrived (the ``.part`` file is kept for resuming)."""


# ----------------------------------------------------------------------------------------------------------------
# checksums


def file_digest(path: str | Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in chunks; ``algorithm`` is any name ``hashlib.new`` accepts."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as file:
        for chunk in iter(partial(file.read, CHUNK_SIZE), b""):
            digest.update(chunk)
    return digest.hexdigest()


def md5sum(path: str | Path) -> str:
    """MD5 hex digest of a file."""
    return file_digest(path, "md5")


def sha256sum(path: str | Path) -> str:
    """SHA-256 hex digest of a file."""
    return file_digest(path, "sha256")


def _expected_digests(md5: str | None, sha256: str | None, sha1: str | None = None) -> list[tuple[str, str]]:
    return [(name, value.strip().lower()) for name, value in (("md5", md5), ("sha1", sha1), ("sha256", sha256))
            if value]


def verify_checksum(path: str | Path, *, md5: str | None = None, sha256: str | None = None,
                    sha1: str | None = None) -> None:
    """Check a file against the given digests (none given: nothing to check).

    Raises:
        ChecksumError: a digest differs; the message names the file, the expected and the computed digest.
    """
    for algorithm, expected in _expected_digests(md5, sha256, sha1):
        got = file_digest(path, algorithm)
        if got != expected:
            raise ChecksumError(f"{algorithm} of {str(path)!r} is {got}, expected {expected}")


# ----------------------------------------------------------------------------------------------------------------
# download


def _local_source(url: str) -> Path | None:
    """The file a ``file://`` address or a plain path names; None for http(s)."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme in ("http", "https"):
        return None
    if parsed.scheme == "file":
        return Path(urllib.request.url2pathname(parsed.path))
    if parsed.scheme == "" or len(parsed.scheme) == 1:  # a relative or absolute path (one letter: a Windows drive)
        return Path(url)
    raise ValueError(f"cannot download {url!r}: only http, https, file:// addresses and local paths are supported")


def _progress_bar(total: int | None, initial: int, name: str, progress: bool) -> tqdm:
    return tqdm(total=total, initial=initial, desc=name, unit="B", unit_scale=True, unit_divisor=1024,
                disable=not progress, leave=False)


def _copy_local(source: Path, part: Path, progress: bool) -> None:
    if not source.is_file():
        raise FileNotFoundError(f"{str(source)!r} does not exist or is not a file")
    with open(source, "rb") as reader, open(part, "wb") as writer, \
            _progress_bar(source.stat().st_size, 0, source.name, progress) as bar:
        for chunk in iter(partial(reader.read, CHUNK_SIZE), b""):
            writer.write(chunk)
            bar.update(len(chunk))


def _content_range(headers) -> tuple[int | None, int | None]:
    """(first byte, total size) of a Content-Range header such as ``bytes 100-199/200`` or ``bytes */200``."""
    match = re.fullmatch(r"\s*bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)\s*", (headers or {}).get("Content-Range") or "")
    if not match:
        return None, None
    first, total = match.groups()
    return (int(first) if first else None), (int(total) if total != "*" else None)


def _http_once(url: str, part: Path, progress: bool, timeout: float) -> None:
    """One request: resume ``part`` from its size (or start it), stream the body into it, check the length."""
    offset = part.stat().st_size if part.is_file() else 0
    headers = {"User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as error:
        if error.code == 416 and offset:  # nothing left after offset: complete, or longer than the file
            if _content_range(error.headers)[1] == offset:
                return
            part.unlink()
            raise IncompleteDownload(f"the server refused to resume {url} at byte {offset}; restarting") from None
        raise
    with response:
        if offset and response.status == 206:
            first, _ = _content_range(response.headers)
            if first != offset:
                part.unlink()
                raise IncompleteDownload(f"the server sent bytes from {first}, asked for {offset}; restarting")
            start = offset
        else:  # 200: the server ignores Range and sends the whole file, so start again from zero
            start = 0
        length = response.headers.get("Content-Length")
        total = start + int(length) if length and length.isdigit() else None
        bar = _progress_bar(total, start, part.name.removesuffix(".part"), progress)
        with open(part, "ab" if start else "wb") as writer, bar:
            for chunk in iter(partial(response.read, CHUNK_SIZE), b""):
                writer.write(chunk)
                bar.update(len(chunk))
    size = part.stat().st_size
    if total is not None and size != total:
        raise IncompleteDownload(f"{url}: received {size} of {total} bytes")


def _http_download(url: str, part: Path, progress: bool, timeout: float, retries: int) -> None:
    for attempt in range(retries + 1):
        try:
            _http_once(url, part, progress, timeout)
            return
        except urllib.error.HTTPError as error:
            if error.code < 500 or attempt == retries:
                raise ConnectionError(f"downloading {url} failed: HTTP {error.code} {error.reason}") from error
            problem = f"HTTP {error.code}"
        except (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError) as error:
            if attempt == retries:
                kept = f"; {str(part)!r} is kept and the next run resumes it" if part.is_file() else ""
                raise ConnectionError(f"downloading {url} failed after {retries + 1} attempts: {error}{kept}") \
                    from error
            problem = str(error)
        wait = min(2 ** attempt, 30)
        print(f"download of {url} interrupted ({problem}); retrying in {wait} s", file=sys.stderr)
        time.sleep(wait)


def _move_aside(path: Path) -> Path:
    bad = path.with_name(path.name.removesuffix(".part") + ".bad")
    os.replace(path, bad)
    return bad


def download(url: str, target: str | Path, *, md5: str | None = None, sha256: str | None = None,
             sha1: str | None = None, progress: bool = True, timeout: float = 60.0, retries: int = 3) -> Path:
    """Fetch ``url`` to ``target``, resuming an interrupted download, and verify it.

    An http(s) address is streamed to ``<target>.part``; when that file exists from an interrupted run, only the rest
    is requested (HTTP Range). A server that ignores Range answers 200 with the whole file, which then replaces the
    partial one. A ``file://`` address or a local path is copied. After the checksum check the file is renamed to
    ``target``, so ``target`` only ever holds a complete file.

    Args:
        url: http(s) address, ``file://`` address, or local path.
        target: where the file goes.
        md5: published MD5 hex digest, if any.
        sha256: published SHA-256 hex digest, if any.
        sha1: published SHA-1 hex digest, if any (the digest GluonCV's loaders publish).
        progress: show a tqdm progress bar.
        timeout: seconds without data before a request fails.
        retries: further attempts after a dropped connection or a server error (5xx), each resuming the ``.part``.

    Returns:
        ``target``. When it already exists and matches the checksum (or none is given), nothing is requested.

    Raises:
        ChecksumError: the downloaded file does not match; it is moved to ``<target>.bad`` and the message names the
            file, the expected and the computed digest.
        ConnectionError: the server answered an error (the message names the address), or the connection kept
            failing.
        FileNotFoundError: a local source does not exist.
    """
    target = Path(target)
    expected = dict(md5=md5, sha256=sha256, sha1=sha1)
    source = _local_source(url)
    if target.is_file():
        try:
            verify_checksum(target, **expected)
            return target
        except ChecksumError as error:
            if source is not None and source.is_file() and source.samefile(target):
                raise
            print(f"{error}; moved to {str(_move_aside(target))!r} and downloading again", file=sys.stderr)
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    if source is not None:
        _copy_local(source, part, progress)
    else:
        _http_download(url, part, progress, timeout, retries)
    try:
        verify_checksum(part, **expected)
    except ChecksumError as error:
        bad = _move_aside(part)
        raise ChecksumError(f"checksum mismatch for {target.name} downloaded from {url}: {error}. The file was "
                            f"moved to {str(bad)!r}; delete it and run again, or check the address") from None
    os.replace(part, target)
    return target


NO_PUBLISHED_CHECKSUM = "no published checksum"
"""How ``Archive.checksum_source`` begins for an archive that nobody publishes a digest of; ``fetch`` then warns."""


def no_published_checksum(reason: str) -> str:
    """The ``checksum_source`` of an archive without a published digest: the marker and why there is none."""
    return f"{NO_PUBLISHED_CHECKSUM}: {reason}"


@dataclass(frozen=True)
class Archive:
    """A file a preparation script needs.

    Args:
        url: public address.
        filename: name in the download folder; default: the last part of the address.
        md5: published MD5 digest, if any.
        sha256: published SHA-256 digest, if any.
        sha1: published SHA-1 digest, if any.
        checksum_source: where the digest was published (a file of a well-kept loader, or a page), or, for an archive
            without one, ``no_published_checksum(reason)``.

    Raises:
        ValueError: a digest is given together with the ``NO_PUBLISHED_CHECKSUM`` marker.
    """

    url: str
    filename: str = ""
    md5: str = ""
    sha256: str = ""
    sha1: str = ""
    checksum_source: str = ""

    def __post_init__(self) -> None:
        if self.has_checksum and self.checksum_source.startswith(NO_PUBLISHED_CHECKSUM):
            raise ValueError(f"{self.name}: a digest is given, but checksum_source says {self.checksum_source!r}")

    @property
    def name(self) -> str:
        return self.filename or posixpath.basename(urllib.parse.urlparse(self.url).path)

    @property
    def has_checksum(self) -> bool:
        """Whether a published MD5, SHA-1 or SHA-256 digest is known."""
        return bool(self.md5 or self.sha1 or self.sha256)


def fetch(archive: Archive, download_dir: str | Path, *, url: str = "", skip_download: bool = False,
          verify: bool = True, progress: bool = True, report_sha256: bool = True) -> Path:
    """The path of ``archive`` in ``download_dir``, downloaded first unless ``skip_download``.

    An archive without a published checksum is used unverified: with ``verify``, a warning naming it goes to stderr.

    Args:
        archive: what to fetch.
        download_dir: folder of the archives.
        url: another address (a mirror, a ``file://`` address or a local path); default ``archive.url``.
        skip_download: only use a file already in ``download_dir``.
        verify: check the published checksum.
        progress: show progress bars.
        report_sha256: after downloading an archive without a published checksum, print the SHA-256 computed.

    Raises:
        FileNotFoundError: ``skip_download`` and the file is not there (the message says where to get it).
        ChecksumError: the file does not match the published checksum.
    """
    target = Path(download_dir) / archive.name
    checksums = dict(md5=archive.md5, sha256=archive.sha256, sha1=archive.sha1) if verify else {}
    if verify and not archive.has_checksum:
        reason = archive.checksum_source.removeprefix(NO_PUBLISHED_CHECKSUM).lstrip(": ")
        print(f"warning: {archive.name} has no published checksum{f' ({reason})' if reason else ''}; its contents "
              f"are not verified", file=sys.stderr)
    if skip_download:
        if not target.is_file():
            raise FileNotFoundError(f"{str(target)!r} is missing; download it from {url or archive.url} or run "
                                    f"without --skip-download")
        try:
            verify_checksum(target, **checksums)
        except ChecksumError as error:
            raise ChecksumError(f"{error}: the archive is damaged or another version; delete it and run without "
                                f"--skip-download, or pass --no-checksum for a deliberately re-packed copy") from None
        return target
    fresh = not target.is_file()
    download(url or archive.url, target, progress=progress, **checksums)
    if fresh and report_sha256 and not archive.has_checksum:
        print(f"{archive.name}: sha256 {sha256sum(target)} (no published checksum; compare with a colleague's copy)")
    return target


# ----------------------------------------------------------------------------------------------------------------
# extraction


HAS_TAR_DATA_FILTER = hasattr(tarfile, "data_filter")
"""Whether this Python has tarfile's ``"data"`` extraction filter (3.12 on, and the 3.10.12+ and 3.11.4+
backports); tar members are then written through it, after this module's own checks, which run either way."""
MAX_LINK_HOPS = 40  # symbolic links followed while resolving one path, as in the Linux kernel's limit


@dataclass(frozen=True)
class _Member:
    name: str  # as stored in the archive
    kind: str  # "file", "dir", "symlink", "hardlink" or "special" (device file, fifo, socket)
    link: str  # symlink target, or the archive name of a hard link's target
    info: tarfile.TarInfo | zipfile.ZipInfo


def _tar_members(tar: tarfile.TarFile) -> list[_Member]:
    members = []
    for info in tar.getmembers():
        kind = ("file" if info.isreg() else "dir" if info.isdir() else "symlink" if info.issym()
                else "hardlink" if info.islnk() else "special")
        members.append(_Member(info.name, kind, info.linkname, info))
    return members


def _zip_members(archive: zipfile.ZipFile) -> list[_Member]:
    """The members of a zip archive; one whose external attributes hold a Unix symlink mode is kind "symlink"."""
    members = []
    for info in archive.infolist():
        mode = info.external_attr >> 16
        if info.is_dir():
            kind = "dir"
        elif stat.S_ISLNK(mode):
            kind = "symlink"
        elif stat.S_IFMT(mode) not in (0, stat.S_IFREG):
            kind = "special"
        else:
            kind = "file"
        members.append(_Member(info.filename, kind, "", info))
    return members


def _is_absolute(name: str) -> bool:
    return name.startswith("/") or re.match(r"[A-Za-z]:", name) is not None


def _normalise(name: str) -> str | None:
    """A member name as a normalised relative posix path; None when absolute or climbing above the top with '..'."""
    name = name.replace("\\", "/")
    if _is_absolute(name):
        return None
    normal = posixpath.normpath(name)
    return None if normal == ".." or normal.startswith("../") else normal


def _select(normal: str, strip: str, include: Sequence[str]) -> str | None:
    """The path under the extraction root of a member, or None when ``strip``/``include`` leave it out."""
    if strip:
        if not normal.startswith(strip + "/"):
            return None
        normal = normal[len(strip) + 1:]
    if include and not any(normal == prefix or normal.startswith(prefix + "/") for prefix in include):
        return None
    return normal if normal != "." else None


def _resolve_through_links(path: str, links: dict[str, str]) -> str | None:
    """Where ``path`` (relative to the extraction root, posix) leads once the archive's own symbolic links are
    followed, component by component as the operating system does.

    Args:
        path: a relative path; '..' components are resolved against what came before, after following links.
        links: relative path -> target of every symbolic link the archive will create.

    Returns:
        The normalised relative path reached ("." for the root), or None when it climbs above the root, reaches an
        absolute target, or needs more than ``MAX_LINK_HOPS`` links.
    """
    pending = path.replace("\\", "/").split("/")
    reached: list[str] = []
    hops = 0
    while pending:
        part = pending.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            if not reached:
                return None
            reached.pop()
            continue
        reached.append(part)
        target = links.get("/".join(reached))
        if target is None:
            continue
        hops += 1
        if hops > MAX_LINK_HOPS or _is_absolute(target.replace("\\", "/")):
            return None
        reached.pop()  # the link's target is relative to the folder holding the link
        pending = target.replace("\\", "/").split("/") + pending
    return "/".join(reached) or "."


def _plan(archive: Path, root: Path, members: list[_Member], strip: str, include: Sequence[str],
          links_allowed: bool) -> list[tuple[_Member, str]]:
    """The selected members with their paths under root; raises on the first unsafe selected member.

    Every selected member's path, and every link target, is resolved through all the symbolic links the archive
    creates, whatever their order in the archive, so that a chain such as ``up -> here/..`` followed by
    ``here -> .`` is refused before anything is written.
    """

    def refuse(member: _Member, reason: str) -> UnsafeArchiveError:
        return UnsafeArchiveError(f"refusing to extract {str(archive)!r}: member {member.name!r} {reason}")

    plan = []
    for member in members:
        normal = _normalise(member.name)
        if normal is None:
            raise refuse(member, f"is an absolute path or climbs out of {str(root)!r} with '..'")
        relative = _select(normal, strip, include)
        if relative is None:
            continue
        if member.kind == "special":
            raise refuse(member, "is a device file, fifo or socket")
        if member.kind == "symlink" and not links_allowed:
            raise refuse(member, "is a symbolic link; links in zip archives are refused")
        if member.kind == "symlink" and _is_absolute(member.link.replace("\\", "/")):
            raise refuse(member, f"is a symbolic link to the absolute path {member.link!r}")
        plan.append((member, relative))

    links = {relative: member.link for member, relative in plan if member.kind == "symlink"}
    for member, relative in plan:
        if member.kind == "symlink":
            target = posixpath.join(posixpath.dirname(relative), member.link.replace("\\", "/"))
            if _resolve_through_links(target, links) is None:
                raise refuse(member, f"is a symbolic link to {member.link!r}, which leads outside {str(root)!r}")
        elif member.kind == "hardlink":
            linked = _normalise(member.link)
            selected = _select(linked, strip, include) if linked is not None else None
            if selected is None or _resolve_through_links(selected, links) is None:
                raise refuse(member, f"is a hard link to {member.link!r}, outside the extracted part")
        elif _resolve_through_links(relative, links) is None:
            raise refuse(member, f"would be written outside {str(root)!r} through the archive's symbolic links")
    return plan


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _check_on_disk(member: _Member, relative: str, root: Path, real_root: str, archive: Path) -> None:
    """Refuse a member whose destination, as the disk stands now, lies outside root through a symbolic link (one
    there before this extraction, or one written by it)."""
    destination = root / relative
    if not _inside(os.path.realpath(destination.parent), real_root) or (
            member.kind != "symlink" and not _inside(os.path.realpath(destination), real_root)):
        raise UnsafeArchiveError(f"refusing to extract {str(archive)!r}: member {member.name!r} would be written "
                                 f"outside {str(root)!r} through a symbolic link")
    if member.kind == "symlink" and not _inside(os.path.realpath(destination.parent / member.link), real_root):
        raise UnsafeArchiveError(f"refusing to extract {str(archive)!r}: member {member.name!r} is a symbolic "
                                 f"link that resolves outside {str(root)!r}")


def _write_stream(reader, destination: Path) -> None:
    temporary = destination.with_name(destination.name + ".extracting")
    with open(temporary, "wb") as writer:
        shutil.copyfileobj(reader, writer, CHUNK_SIZE)
    os.replace(temporary, destination)  # replaces a link rather than writing through it


def _hard_link_source(member: _Member, root: Path, strip: str) -> Path:
    return root / _select(_normalise(member.link), strip, ())


def _extract_checked_by_hand(archive_file, member: _Member, relative: str, root: Path, real_root: str, strip: str,
                             archive: Path) -> None:
    """Write one member with this module's own code (zip members, and tar members without tarfile's data filter).

    File modes are not copied: files get the default permissions of new files.
    """
    destination = root / relative
    if member.kind == "dir":
        destination.mkdir(parents=True, exist_ok=True)
        return
    destination.parent.mkdir(parents=True, exist_ok=True)
    if member.kind == "symlink":
        if destination.is_symlink() or destination.is_file():
            destination.unlink()
        os.symlink(member.link, destination)
    elif member.kind == "hardlink":
        source = _hard_link_source(member, root, strip)
        if not _inside(os.path.realpath(source), real_root):
            raise UnsafeArchiveError(f"refusing to extract {str(archive)!r}: member {member.name!r} is a hard link "
                                     f"that resolves outside {str(root)!r}")
        temporary = destination.with_name(destination.name + ".extracting")
        shutil.copyfile(source, temporary)
        os.replace(temporary, destination)
    elif isinstance(archive_file, tarfile.TarFile):
        with archive_file.extractfile(member.info) as reader:
            _write_stream(reader, destination)
    else:
        with archive_file.open(member.info) as reader:
            _write_stream(reader, destination)


def _extract_with_data_filter(tar: tarfile.TarFile, member: _Member, relative: str, root: Path, strip: str,
                              archive: Path) -> None:
    """Write one tar member with ``TarFile.extract(..., filter=...)``: tarfile's ``data_filter`` checks it again
    (names, link targets, modes) under the name it gets in root.

    Files and hard links are written under a temporary name and renamed, so a destination that exists is complete
    and a link already at the destination is replaced rather than written through.
    """
    destination = root / relative
    temporary = relative + ".extracting" if member.kind in ("file", "hardlink") else relative
    linkname = member.link
    if member.kind == "hardlink":
        linkname = _select(_normalise(member.link), strip, ())
    destination.parent.mkdir(parents=True, exist_ok=True)
    if member.kind == "symlink" and (destination.is_symlink() or destination.is_file()):
        destination.unlink()
    if temporary != relative:
        (root / temporary).unlink(missing_ok=True)  # left by an interrupted run; os.link needs a free name

    def rename_then_filter(info: tarfile.TarInfo, path: str) -> tarfile.TarInfo:
        return tarfile.data_filter(info.replace(name=temporary, linkname=linkname, deep=False), path)

    try:
        tar.extract(member.info, root, filter=rename_then_filter)
    except tarfile.FilterError as error:
        raise UnsafeArchiveError(f"refusing to extract {str(archive)!r}: member {member.name!r} is refused by "
                                 f"tarfile's data filter ({error})") from None
    if temporary != relative:
        os.replace(root / temporary, destination)


def _check_extracted_links(plan: list[tuple[_Member, str]], root: Path, real_root: str, archive: Path) -> None:
    """After writing: every symbolic link of the archive resolves inside root; one that does not is removed."""
    for member, relative in plan:
        link = root / relative
        if member.kind == "symlink" and link.is_symlink() and not _inside(os.path.realpath(link), real_root):
            link.unlink()
            raise UnsafeArchiveError(f"refusing to extract {str(archive)!r}: member {member.name!r} is a symbolic "
                                     f"link that resolves outside {str(root)!r}; it was removed")


def _marker_path(archive: Path, root: Path, strip: str, include: Sequence[str]) -> Path:
    selection = f"{strip}|{','.join(include)}"
    suffix = "" if selection == "|" else "." + hashlib.sha1(selection.encode()).hexdigest()[:8]
    return root / f".{archive.name}{suffix}.extracted"


def extract(archive: str | Path, root: str | Path, *, strip: str = "", include: Sequence[str] = (),
            progress: bool = True) -> Path:
    """Unpack a .zip, .tar, .tar.gz or .tgz archive into ``root``, safely and once.

    Every selected member is checked before anything is written: absolute names, names that climb out of ``root``
    with '..', symbolic or hard links that point outside ``root`` (resolved through all the archive's own symbolic
    links, in any order), device files, fifos and sockets, and symbolic links in zip archives are refused. While
    writing, each destination is checked again on disk, so a link already in ``root`` cannot lead a member out of
    it. Tar members are written through tarfile's ``"data"`` filter where Python has it (``HAS_TAR_DATA_FILTER``),
    which checks them once more and drops special permission bits; without it this module writes them itself. After
    writing, every extracted symbolic link is checked to resolve inside ``root``. A marker file
    ``root/.<archive name>[.<selection hash>].extracted`` records a finished extraction of the same archive (same
    size and selection); a call that finds it returns at once.

    Args:
        archive: the archive file; its format is read from its content.
        root: destination folder (created).
        strip: archive folder whose contents go to ``root`` (e.g. ``"ADEChallengeData2016"``); members outside it
            are skipped.
        include: paths (relative to ``strip``) to extract; empty means everything.
        progress: show a tqdm progress bar over the members.

    Returns:
        ``root``.

    Raises:
        UnsafeArchiveError: a selected member is unsafe; the message names the archive and the member.
        ValueError: not a zip or tar archive, or nothing in it matches ``strip``/``include``.
    """
    archive, root = Path(archive), Path(root)
    strip = strip.strip("/")
    include = tuple(prefix.strip("/") for prefix in include)
    marker = _marker_path(archive, root, strip, include)
    signature = {"archive": archive.name, "size": archive.stat().st_size, "strip": strip, "include": list(include)}
    if marker.is_file():
        try:
            if json.loads(marker.read_text()).get("signature") == signature:
                return root
        except ValueError:
            pass
    name = archive.name.lower()
    is_zip = name.endswith(".zip") or (not name.endswith(TAR_SUFFIXES) and zipfile.is_zipfile(archive))
    try:
        if is_zip:
            opened, list_members = zipfile.ZipFile(archive), _zip_members
        else:
            opened, list_members = tarfile.open(archive, "r:*"), _tar_members
    except (zipfile.BadZipFile, tarfile.TarError) as error:
        raise ValueError(f"{str(archive)!r} is not a readable {'zip' if is_zip else 'tar'} archive ({error}); a "
                         f"damaged or incomplete download? Delete it and run again") from None
    with opened as archive_file:
        members = list_members(archive_file)
        plan = _plan(archive, root, members, strip, include, links_allowed=not is_zip)
        if not plan:
            first = ", ".join(repr(member.name) for member in members[:3])
            raise ValueError(f"nothing in {str(archive)!r} lies under {strip or '.'!r} and {list(include) or 'all'}; "
                             f"its members start with {first}")
        root.mkdir(parents=True, exist_ok=True)
        real_root = os.path.realpath(root)
        with_data_filter = HAS_TAR_DATA_FILTER and not is_zip
        for member, relative in tqdm(plan, desc=f"extract {archive.name}", unit="file", disable=not progress,
                                     leave=False):
            _check_on_disk(member, relative, root, real_root, archive)
            if with_data_filter:
                _extract_with_data_filter(archive_file, member, relative, root, strip, archive)
            else:
                _extract_checked_by_hand(archive_file, member, relative, root, real_root, strip, archive)
        _check_extracted_links(plan, root, real_root, archive)
    marker.write_text(json.dumps({"signature": signature, "members": len(plan)}) + "\n")
    return root


# ----------------------------------------------------------------------------------------------------------------
# label maps


def lookup_table(mapping: dict[int, int], size: int = 256, fill: int = IGNORE_INDEX) -> np.ndarray:
    """A (size,) uint8 table: ``table[raw] = mapping[raw]``, ``fill`` for every value not in ``mapping``."""
    table = np.full(size, fill, dtype=np.uint8)
    for raw, train_id in mapping.items():
        table[raw] = train_id
    return table


def load_label(path: str | Path, key: str = "") -> np.ndarray:
    """A label map as a 2-D integer array, from a PNG (grey values or palette indices) or a MATLAB .mat file.

    Args:
        path: the label file.
        key: for .mat files, the variable, with dots into structs (``"LabelMap"``, ``"GTcls.Segmentation"``).

    Raises:
        ValueError: a colour PNG, a missing .mat field, or not a 2-D integer map; the message names the file.
    """
    path = Path(path)
    if path.suffix.lower() == ".mat":
        from scipy.io import loadmat

        value = loadmat(path, struct_as_record=False)
        for part in key.split("."):
            while isinstance(value, np.ndarray) and value.dtype == object and value.size == 1:
                value = value.flat[0]  # a MATLAB struct is a 1x1 array of structs
            value = value.get(part) if isinstance(value, dict) else getattr(value, part, None)
            if value is None:
                raise ValueError(f"{str(path)!r} has no field {key!r}")
        label = np.asarray(value)
    else:
        with Image.open(path) as image:
            if image.mode not in ("L", "P", "I", "I;16"):
                raise ValueError(f"label file {str(path)!r} has mode {image.mode!r}; expected a single-channel map")
            label = np.asarray(image)
    if label.ndim != 2:
        raise ValueError(f"label map in {str(path)!r} has shape {label.shape}; expected 2-D")
    if not np.issubdtype(label.dtype, np.integer):
        if not np.array_equal(label, np.round(label)):
            raise ValueError(f"label map in {str(path)!r} holds non-integer values")
        label = label.astype(np.int64)
    return label


def save_label(label: np.ndarray, path: str | Path) -> None:
    """Write a (H, W) uint8 label map as a grey PNG, under a temporary name first."""
    path = Path(path)
    if label.ndim != 2 or label.dtype != np.uint8:
        raise ValueError(f"a label map to write must be 2-D uint8, got {label.shape} {label.dtype}")
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".writing")
    Image.fromarray(label).save(temporary, format="PNG")
    os.replace(temporary, path)


def map_label(source: str | Path, target: str | Path, table: np.ndarray, key: str = "") -> None:
    """Read ``source`` (``load_label``), map every value through ``table`` and write ``target`` as an 8-bit PNG.

    Raises:
        ValueError: a value outside ``table`` (the message names the file and the values).
    """
    label = load_label(source, key)
    outside = label[(label < 0) | (label >= len(table))]
    if outside.size:
        raise ValueError(f"{str(source)!r} holds values {np.unique(outside)[:5].tolist()} outside the "
                         f"{len(table)}-entry lookup table")
    save_label(np.asarray(table, dtype=np.uint8)[label], target)


def _map_job(job: tuple[Path, Path], table: np.ndarray, key: str) -> None:
    map_label(job[0], job[1], table, key)


def convert_labels(jobs: Iterable[tuple[str | Path, str | Path]], table: np.ndarray, *, key: str = "",
                   workers: int = 1, desc: str = "labels", progress: bool = True) -> tuple[int, int]:
    """``map_label`` for every (source, target) pair whose target does not exist yet.

    Args:
        jobs: (source label file, target PNG) pairs.
        table: lookup table from source values to written values (uint8 entries).
        key: .mat field (``load_label``); PNG sources ignore it.
        workers: processes; 1 converts in this process.
        desc: progress bar title.
        progress: show a tqdm progress bar.

    Returns:
        (written, kept): files converted now, and targets that existed already.
    """
    jobs = [(Path(source), Path(target)) for source, target in jobs]
    todo = [job for job in jobs if not job[1].is_file()]
    convert = partial(_map_job, table=np.asarray(table, dtype=np.uint8), key=key)
    with tqdm(total=len(todo), desc=desc, unit="file", disable=not progress, leave=False) as bar:
        if workers > 1 and len(todo) > 1:
            with multiprocessing.get_context().Pool(min(workers, len(todo))) as pool:
                for _ in pool.imap_unordered(convert, todo, chunksize=16):
                    bar.update()
        else:
            for job in todo:
                convert(job)
                bar.update()
    return len(todo), len(jobs) - len(todo)


# ----------------------------------------------------------------------------------------------------------------
# files and lists


def link_or_copy(source: str | Path, target: str | Path) -> bool:
    """Place ``source`` at ``target`` as a hard link (no extra space), or a copy across file systems.

    Returns:
        True when placed now, False when ``target`` existed already (it is kept).
    """
    source, target = Path(source), Path(target)
    if target.is_file():
        return False
    if not source.is_file():
        raise FileNotFoundError(f"{str(source)!r} does not exist")
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(target.name + ".placing")
    temporary.unlink(missing_ok=True)
    try:
        os.link(source, temporary)
    except OSError:
        shutil.copyfile(source, temporary)
    os.replace(temporary, target)
    return True


def place_files(jobs: Iterable[tuple[str | Path, str | Path]], *, desc: str = "files",
                progress: bool = True) -> tuple[int, int]:
    """``link_or_copy`` for every (source, target) pair; returns (placed, kept)."""
    jobs = list(jobs)
    placed = sum(link_or_copy(source, target)
                 for source, target in tqdm(jobs, desc=desc, unit="file", disable=not progress, leave=False))
    return placed, len(jobs) - placed


def read_lines(path: str | Path) -> list[str]:
    """The non-empty, stripped lines of a text file (an id list)."""
    return [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]


def write_lines(path: str | Path, lines: Sequence[str], header: str = "") -> bool:
    """Write lines (after an optional ``#`` comment header) unless the file holds exactly that already.

    Returns:
        True when the file was written, False when it was up to date (so a second run changes nothing).
    """
    path = Path(path)
    text = "".join(f"# {line}\n" for line in header.splitlines()) + "".join(f"{line}\n" for line in lines)
    if path.is_file() and path.read_text() == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".writing")
    temporary.write_text(text)
    os.replace(temporary, path)
    return True


def count_files(folder: str | Path, pattern: str) -> int:
    """Files under ``folder`` matching a glob pattern (0 when the folder is missing)."""
    folder = Path(folder)
    return sum(1 for path in folder.glob(pattern) if path.is_file()) if folder.is_dir() else 0


# ----------------------------------------------------------------------------------------------------------------
# manual downloads and script options


def missing_files(directory: str | Path, names: Sequence[str]) -> list[str]:
    """The names of ``names`` that are not files in ``directory``."""
    return [name for name in names if not (Path(directory) / name).is_file()]


def manual_steps(title: str, steps: Sequence[str], directory: str | Path, names: Sequence[str]) -> str:
    """Numbered manual steps, followed by which of the expected files ``directory`` holds."""
    missing = set(missing_files(directory, names))
    lines = [title, *(f"  {number}. {step}" for number, step in enumerate(steps, 1)),
             f"Expected in {directory}:",
             *(f"  [{'missing' if name in missing else 'found'}] {name}" for name in names)]
    return "\n".join(lines)


def require_files(directory: str | Path, names: Sequence[str], steps: Sequence[str], *, title: str) -> list[Path]:
    """The paths of the files ``names`` in ``directory``; when any is missing, exit with the manual steps.

    Raises:
        SystemExit: some file is missing; its message (printed to stderr, exit status 1) lists the numbered steps
            and which files are found and missing.
    """
    if missing_files(directory, names):
        raise SystemExit(manual_steps(title, steps, directory, names))
    return [Path(directory) / name for name in names]


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every preparation script takes: --root, --download-dir, --skip-download, --no-checksum,
    --workers, --no-progress."""
    parser.add_argument("--root", required=True, type=Path, help="data set folder to write (what the loader reads)")
    parser.add_argument("--download-dir", type=Path, default=None,
                        help="folder of the archives (default ROOT/downloads)")
    parser.add_argument("--skip-download", action="store_true",
                        help="download nothing: use the archives already in the download folder")
    parser.add_argument("--no-checksum", action="store_true",
                        help="do not check the published checksums (for a deliberately re-packed archive)")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                        help="processes converting label maps (default: up to 8)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def script_parser(docstring: str, archives: dict[str, Archive] | None = None) -> argparse.ArgumentParser:
    """A preparation script's parser: its docstring's first paragraph as the description, the common options
    (``add_common_arguments``) and one ``--<key>-url`` per archive (``add_url_arguments``)."""
    parser = argparse.ArgumentParser(description=docstring.split("\n\n")[0])
    add_common_arguments(parser)
    add_url_arguments(parser, archives or {})
    return parser


def add_url_arguments(parser: argparse.ArgumentParser, archives: dict[str, Archive]) -> None:
    """One ``--<key>-url`` option per archive (``--url`` for the key ""): a mirror, a ``file://`` address or a local
    path to use instead of the archive's public address."""
    for key, archive in archives.items():
        option = f"--{key}-url" if key else "--url"
        parser.add_argument(option, default="", help=f"another address or a local path of {archive.url}")


def fetch_archive(args: argparse.Namespace, key: str, archive: Archive, **options) -> Path:
    """``fetch`` with a script's common options (``add_common_arguments``) and its ``--<key>-url``."""
    url = getattr(args, f"{key.replace('-', '_')}_url" if key else "url", "")
    return fetch(archive, download_dir(args), url=url, skip_download=args.skip_download,
                 verify=not args.no_checksum, progress=not args.no_progress, **options)


def download_dir(args: argparse.Namespace) -> Path:
    """``--download-dir``, or ``ROOT/downloads``."""
    return args.download_dir if args.download_dir is not None else args.root / "downloads"


def print_summary(title: str, rows: dict[str, dict[str, int]]) -> None:
    """One line per split with its counts, e.g. ``train: 2975 images, 2975 labels``."""
    print(title)
    for split, counts in rows.items():
        print(f"  {split}: " + ", ".join(f"{count} {what}" for what, count in counts.items()))
