"""Archives: extraction that never writes outside its root (links in either order, zip links refused, tarfile's data
filter where Python has it), and a published checksum for every archive a preparation script downloads."""

from __future__ import annotations

import os
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from data_scripts_loader import load_data_script  # puts data_scripts/ on sys.path, for `download`

from download import HAS_TAR_DATA_FILTER, UnsafeArchiveError, extract


def link_member(name, target):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.SYMTYPE, target
    return info


def test_a_symbolic_link_in_a_zip_archive_is_refused(tmp_path):
    archive = tmp_path / "links.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        link = zipfile.ZipInfo("data/escape")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        handle.writestr(link, "../../etc")
        handle.writestr("data/file.txt", "fine")
    with pytest.raises(UnsafeArchiveError, match="links in zip archives are refused"):
        extract(archive, tmp_path / "root", progress=False)
    assert not (tmp_path / "root" / "data" / "escape").is_symlink()


@pytest.mark.skipif(not HAS_TAR_DATA_FILTER, reason="this Python's tarfile has no data filter (before 3.11.4)")
def test_tar_members_go_through_the_data_filter(tmp_path):
    source = tmp_path / "tool"
    source.write_text("#!/bin/sh\n")
    archive = tmp_path / "modes.tar"
    with tarfile.open(archive, "w") as tar:
        info = tar.gettarinfo(str(source), arcname="data/tool")
        info.mode = 0o4777  # setuid, world-writable: the data filter clears both
        with source.open("rb") as stream:
            tar.addfile(info, stream)
    extract(archive, tmp_path / "root", progress=False)
    mode = (tmp_path / "root" / "data" / "tool").stat().st_mode
    assert not mode & stat.S_ISUID and not mode & stat.S_IWOTH


def test_link_chain_in_either_order(tmp_path):
    archive = tmp_path / "chain.tar"
    with tarfile.open(archive, "w") as tar:
        for info in (link_member("up", "here/.."), link_member("here", ".")):
            tar.addfile(info)
    root = tmp_path / "root"
    try:
        extract(archive, root, progress=False)
    except UnsafeArchiveError:
        pass
    real_root = os.path.realpath(root)
    escaping = [str(p) for p in root.rglob("*") if p.is_symlink()
                and not (os.path.realpath(p) + os.sep).startswith(real_root + os.sep) and os.path.realpath(p) != real_root]
    assert escaping == []


# --- every archive: a published checksum with its source, or the reason there is none ---------------------------

def every_archive():
    """(script, key, Archive) of every archive that a preparation script downloads."""
    from download import Archive

    found = []
    for script in sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "data_scripts").glob("prepare_*.py")):
        module = load_data_script(script)
        tables = [getattr(module, name) for name in ("ARCHIVE", "ARCHIVES") if hasattr(module, name)]
        while tables:
            table = tables.pop()
            if isinstance(table, Archive):
                found.append((script, table.name, table))
            elif isinstance(table, dict):
                tables.extend(table.values())
    return found


def test_every_archive_has_a_checksum_with_its_source_or_says_why_not():
    from download import NO_PUBLISHED_CHECKSUM

    archives = every_archive()
    assert len(archives) == 11
    for script, name, archive in archives:
        if archive.has_checksum:
            assert archive.checksum_source.startswith("https://"), f"{script}: {name} names no source of its digest"
        else:
            assert archive.checksum_source.startswith(f"{NO_PUBLISHED_CHECKSUM}: "), f"{script}: {name} says no reason"
    assert sum(archive.has_checksum for _, _, archive in archives) == 6


def test_a_sha1_digest_is_verified(tmp_path):
    import hashlib

    from download import Archive, ChecksumError, fetch

    source = tmp_path / "source.bin"
    source.write_bytes(b"contrastseg")
    good = Archive(str(source), filename="good.bin", sha1=hashlib.sha1(b"contrastseg").hexdigest(),
                   checksum_source="https://example.org/checksums")
    assert fetch(good, tmp_path / "downloads", progress=False).read_bytes() == b"contrastseg"
    bad = Archive(str(source), filename="bad.bin", sha1="0" * 40, checksum_source="https://example.org/checksums")
    with pytest.raises(ChecksumError, match="sha1 of .*bad.bin"):
        fetch(bad, tmp_path / "downloads", progress=False)
