import io, os, tarfile
from pathlib import Path
import pytest
from contrastseg.data.download import UnsafeArchiveError, extract


def link_member(name, target):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.SYMTYPE, target
    return info


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
