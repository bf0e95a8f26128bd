"""Put the repo root on sys.path so tests can `import data_loader` (and the trainers) from any
cwd; the fixtures and helpers the tests share (`from conftest import ...`): MNIST loaded once
for the whole run, and the trainers' main(argv) run in this process."""
import contextlib
import hashlib
import importlib
import io
import json
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

# One thread for NumPy's OpenBLAS and for torch (OpenMP) in the whole run, and in every process
# it starts, unless the user set a count: set before NumPy and torch load, as a user would set
# it (so the trainers' thread policy, harness/threads.py, leaves it there). Their waiting
# threads spin: on a 2-core machine shared with other work, the checker's tests (test_checker*.py)
# took 90-105 s with the libraries' two threads and 23-24 s with one. Only the last bits of
# the numbers change; the tests of thread counts set their own, or clear these variables.
ONE_THREAD = [name for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS") if not os.environ.get(name)]
os.environ.update(dict.fromkeys(ONE_THREAD, "1"))

import numpy as np  # noqa: E402
import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
if "OPENBLAS_NUM_THREADS" in ONE_THREAD:   # NumPy may have loaded before this file set it
    from harness import threads
    threads.set_openblas_threads(1)


# ----------------------------------------------------------------------------- MNIST, once

_MNIST = {}


def _loaded_mnist():
    """load_mnist()'s four arrays and the lines it logged, loaded (and checked against the
    known SHA-256 digests, data_fetch.py) once for the whole run; read-only."""
    if not _MNIST:
        from data_loader import load_mnist
        lines = []
        arrays = load_mnist(log=lines.append)
        for array in arrays:
            array.setflags(write=False)
        _MNIST.update(arrays=arrays, log=lines)
    return _MNIST["arrays"], _MNIST["log"]


def _digest(arrays):
    hashed = hashlib.sha256()
    for array in arrays:
        hashed.update(array.tobytes())
    return hashed.hexdigest()


def mnist_arrays():
    """The session's MNIST (the mnist fixture's arrays), for a helper that is not a fixture."""
    return _loaded_mnist()[0]


@pytest.fixture(scope="session")
def mnist():
    """MNIST as load_mnist() returns it (x_train, y_train, x_test, y_test), loaded once for the
    whole run. The arrays are read-only: a test that wrote into them would change what every
    later test sees, so a write raises instead (copy first). A tensor torch.from_numpy makes
    of them could still be written through: the arrays are checked unchanged at the end."""
    arrays, _ = _loaded_mnist()
    before = _digest(arrays)
    yield arrays
    assert _digest(arrays) == before, "a test wrote into the session's MNIST arrays"


# ----------------------------------------------------------------------------- the trainers, in process

@dataclass
class Ran:
    """What a command did, as subprocess.run's result says it: its exit status and its output."""
    returncode: int
    stdout: str
    stderr: str


def _cached_load_mnist(real_load, test_images):
    """experiment.load_mnist for a trainer run in process: the repo's MNIST from the run's one
    load, logged as the loader logs it; the test set cut to its first test_images if given. Any
    other dataset or folder: the real loader. The arrays stay read-only: a trainer never writes
    into its data (copying them for each run took 0.17 s, more than the rest of a short run)."""
    from data_fetch import DATA_DIR

    def load_mnist(dataset="mnist", data_dir=None, log=None):
        if dataset != "mnist" or Path(data_dir or DATA_DIR).resolve() != Path(DATA_DIR).resolve():
            return real_load(dataset, data_dir, log=log)
        arrays, lines = _loaded_mnist()
        for line in lines:
            if log:
                log(line)
        x_train, y_train, x_test, y_test = arrays
        return x_train, y_train, x_test[:test_images], y_test[:test_images]
    return load_mnist


class TimedOut(Exception):
    """A command run in process took longer than its test allows (run_in_process's timeout)."""


def _time_is_up(signum, frame):
    raise TimedOut("the command ran past its time limit (run_in_process's timeout)")


def run_in_process(main, script, argv, cwd=None, timeout=300):
    """`python script *argv` run in this process through the command's main(argv), from cwd: its
    exit status (SystemExit's, as Python's own exit gives it), stdout and stderr, as a Ran. A
    traceback is not caught: it fails the test. What a command may change in the process is put
    back after it: the signal handlers (the trainers and sweep.py take SIGINT and SIGTERM, and a
    trainer ignores them after its save), NumPy's error settings, sys.argv, sys.path, stdout,
    stderr, the cwd. A command still running after timeout seconds is stopped by SIGALRM and the
    test fails (TimedOut), as a subprocess's timeout would: a refusal that once waited forever
    (a FIFO opened for reading, an endless loop) hangs no suite if it comes back. (A command
    that sets the same timer, checker/guard.py for a learner's function, ends this one.)"""
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGALRM)}
    numpy_errors = np.geterr()
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", [str(script), *map(str, argv)])  # argparse's prog: the script's name
        patch.setattr(sys, "path", list(sys.path))                  # a script puts the repo first again
        if cwd is not None:
            patch.chdir(cwd)
        signal.signal(signal.SIGALRM, _time_is_up)
        signal.alarm(timeout)
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                main([str(arg) for arg in argv])
            code = 0
        except SystemExit as e:
            code = e.code
        finally:
            signal.alarm(0)
            for signum, handler in handlers.items():
                signal.signal(signum, handler)
            np.seterr(**numpy_errors)
    if code is None:
        code = 0
    elif not isinstance(code, int):  # sys.exit("error: ..."): Python prints it and exits 1
        err.write(f"{code}\n")
        code = 1
    return Ran(code, out.getvalue(), err.getvalue())


def run_trainer_main(framework, *argv, cwd=None, test_images=None, main=None):
    """`python <framework>_nn/train.py *argv` run in this process (run_in_process) with the
    session's MNIST. As in test_cli.py's subprocesses, OpenBLAS and torch use one thread
    (OPENBLAS_NUM_THREADS=1, OMP_NUM_THREADS=1): only timings change. Besides what
    run_in_process puts back: the stop state, the thread counts and torch's random state.
    test_images: evaluate on the first test_images test images only (whole-run tests that
    compare two runs, where what is compared does not need all 10,000). main: what runs the
    trainer, main(argv), if not the trainer module's main."""
    from harness import experiment, threads
    main = main or importlib.import_module(f"{framework}_nn.train").main
    blas_threads = threads.openblas_threads()
    torch = sys.modules.get("torch") if framework == "numpy" else importlib.import_module("torch")
    torch_state = (torch.get_num_threads(), torch.get_rng_state()) if torch else None
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(experiment, "stopping", experiment.Stopping())
        patch.setattr(experiment, "load_mnist", _cached_load_mnist(experiment.load_mnist, test_images))
        patch.setenv("OPENBLAS_NUM_THREADS", "1")
        patch.setenv("OMP_NUM_THREADS", "1")
        threads.set_openblas_threads(1)
        if framework == "pytorch":
            torch.set_num_threads(1)
        try:
            return run_in_process(main, REPO / f"{framework}_nn" / "train.py", argv, cwd)
        finally:
            if blas_threads:
                threads.set_openblas_threads(blas_threads)
            if torch_state:
                torch.set_num_threads(torch_state[0])
                torch.set_rng_state(torch_state[1])


def loss_and_gradients(net, x, y, l2=0.0, dropout=0.0, rng=None):
    """One forward and backward pass of a NumPy network on a batch, as the trainer's train_step
    makes them, without the update: returns the mean cross-entropy and net.grads (the same
    numbers as one vector in net.flat_grads)."""
    from numpy_nn.utils import cross_entropy_with_grad
    logits, cache = net.forward(x, dropout, rng)
    loss, dlogits = cross_entropy_with_grad(logits, y)
    net.backward(dlogits, cache, l2)
    return loss, net.grads


def relative_error(a, b):
    """max |a - b| / max(|a|, |b|), elementwise, with a floor so zeros compare sanely."""
    return float(np.max(np.abs(a - b) / np.maximum(np.maximum(np.abs(a), np.abs(b)), 1e-8)))


@pytest.fixture
def one_blas_thread(monkeypatch):
    """NumPy's OpenBLAS on one thread for the whole test, set as a user would (the trainers'
    policy then leaves it alone): a test comparing two runs bit for bit must not see their
    share of the cores change between them when a trainer starts elsewhere on the machine
    (another thread count adds a product's parts in another order)."""
    from harness import threads
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")
    before = threads.openblas_threads()
    threads.set_openblas_threads(1)
    yield
    if before:
        threads.set_openblas_threads(before)


FEW_DIGITS = 500  # the robustness sets' size in tests that only read compare.py's other output


@pytest.fixture(autouse=True, scope="session")
def few_robustness_digits():
    """compare.py measures every run with weights on 10,000 perturbed and 10,000 drawn test
    digits (report/robustness.py): about 15 s for a CNN. In tests, which read compare's other
    output (names, tables, pictures), it measures the first FEW_DIGITS of each set instead;
    tests/test_robustness.py checks the measure itself on subsets it builds."""
    from report import runs as report_runs
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(report_runs, "load_robustness_sets", _few_robustness_sets)
        yield


def _few_robustness_sets(data_dir):
    from report import runs as report_runs
    from report.robustness import robustness_sets
    key = str(data_dir)
    if key not in _FEW_SETS:
        x_test, y_test = report_runs.load_test_set("mnist", data_dir)
        _FEW_SETS[key] = robustness_sets(x_test[:FEW_DIGITS], y_test[:FEW_DIGITS])
    return _FEW_SETS[key]


_FEW_SETS = {}


# ----------------------------------------------------------------------------- float32 bounds
# A float32 result is compared with the exact one through a bound derived from its rounding,
# never a tolerance picked to pass: whatever order a CPU's BLAS kernel adds the products in, a
# dot product of n terms computed in floating point is within gamma(n) * sum |a_i b_i| of the
# exact value (Higham, Accuracy and Stability of Numerical Algorithms, 2nd ed., section 3.1),
# and an FMA only makes the error smaller.
U32, U64 = 2.0 ** -24, 2.0 ** -53      # the unit roundoffs of float32 and float64
ACTIVATION_ULPS = 4                     # float32 exp/tanh in NumPy's and PyTorch's SIMD code: a few ulps


def gamma(n, u=U32):
    """n u / (1 - n u): the relative error bound of a sum of n rounded terms."""
    return n * u / (1 - n * u)


def affine_error(h, e, W, b, fan_in, affine=lambda h, W, b: h @ W + b):
    """Bound on |computed affine(h, W, b) - exact|, elementwise, where the computed h (float32)
    is within e of the exact h: the rounding of this layer's sums (fan_in products and the bias,
    in float32, and in the float64 reference they are compared with) plus the error carried in,
    affine(e, |W|, 0). h, e, W, b: float64 arrays; affine: h @ W + b, or a convolution."""
    g = gamma(fan_in + 1) + gamma(fan_in + 1, U64)
    return g * affine(np.abs(h) + e, np.abs(W), np.abs(b)) + affine(e, np.abs(W), np.zeros_like(b))


def activation_error(h, e):
    """Bound after an activation: ReLU, tanh and sigmoid change by at most as much as their
    input does (slope at most 1), and the float32 function itself adds ACTIVATION_ULPS ulps of
    its output (an ulp of h is at most 2 u |h|)."""
    return e + ACTIVATION_ULPS * 2 * U32 * np.abs(h)


# ----------------------------------------------------------------------------- the checker's tests

def planted(function, old, new):
    """A copy of function with the line holding `old` changed to hold `new`: a learner's slip,
    compiled as `<planted NAME>` with its lines where the checker can show them."""
    import inspect
    import linecache
    import textwrap
    source = textwrap.dedent(inspect.getsource(function))
    assert source.count(old) == 1, f"{old!r} is not one place in {function.__qualname__}"
    source = source.replace(old, new)
    filename = f"<planted {function.__qualname__}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)  # so lines can be shown
    namespace = dict(function.__globals__)
    exec(compile(source, filename, "exec"), namespace)
    return namespace[function.__name__]


# ----------------------------------------------------------------------------- compare.py's tests' helpers
# Made-up records in the shape Run.save writes, runs saved as the trainers save them, and compare.py
# run in process (test_compare.py, test_report_cnn.py, test_learning_figure.py)
SIZES = (784, 128, 64, 10)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
HARDWARE = {"device": "cpu", "blas": "openblas", "blas_threads": None}


def make_record(framework="numpy", test_acc=(0.90, 0.95, 0.93), epoch_seconds=(1.0, 1.0, 1.0),
                status="completed", config=None, hardware=None, data=None):
    """A metrics record as Run.save writes it, with made-up numbers; each dict argument
    updates that part of the record. A diverged record diverged at epoch len(test_acc) + 1,
    batch 5, and claims no result."""
    from harness.metrics_file import SCHEMA_VERSION
    train_samples = 60000
    epochs = [{"epoch": i, "train_loss": 0.5 / i, "train_acc": acc + 0.02, "test_loss": 0.6 / i,
               "test_acc": acc, "epoch_seconds": seconds, "samples_per_second": train_samples / seconds}
              for i, (acc, seconds) in enumerate(zip(test_acc, epoch_seconds), start=1)]
    diverged = status == "diverged"
    record = {
        "schema": SCHEMA_VERSION,
        "framework": framework,
        "versions": {"python": "3.11.7", framework: "1.0"},
        "config": {"epochs": max(len(epochs), 1), "batch_size": 128, "lr": 3e-3, "optimizer": "adam",
                   "schedule": "cosine", "model": "mlp", "hidden": [128, 64], "weight_decay": 0.0, "dropout": 0.0,
                   "activation": "relu", "weight_init": "he",
                   "seed": 0, "dtype": "float32", "limit": None, "dataset": "mnist",
                   "data_dir": "data", "metrics": "m.json", "weights": "no/such/weights",
                   "no_progress": True},
        "seed": 0,
        "data": {"dataset": "mnist", "train_samples": train_samples, "test_samples": 10000},
        "hardware": {"cpu": "Test CPU", "cores": 2, "platform": "Linux", "device": "cpu",
                     "blas": "openblas", "blas_threads": 2},
        "started": "2026-01-01T00:00:00+0000",
        "status": status,
        "epochs": epochs,
        "total_train_seconds": float(sum(epoch_seconds)),
        "wall_seconds": float(sum(epoch_seconds)) + 1.0,
        "final_test_acc": epochs[-1]["test_acc"] if epochs and not diverged else None,
        "weights_sha256": None if diverged else "0" * 64,  # no file has it: not these weights
        "diverged": {"epoch": len(epochs) + 1, "batch": 5, "loss": "nan"} if diverged else None,
        "diagnostics": None,
    }
    for part, changes in (("config", config), ("hardware", hardware), ("data", data)):
        record[part].update(changes or {})
    return record


def write(folder, name, record):
    path = folder / name
    path.write_text(record if isinstance(record, str) else json.dumps(record))  # NaN as NaN
    return path


def mnist_test_set():
    """MNIST's test set, loaded once for the whole run (report/runs.py caches it)."""
    from report import runs as report_runs
    return report_runs.load_test_set("mnist")


def saved_run(folder, framework="numpy", seed=0, model="mlp"):
    """Train nothing, but write a run as a trainer does (experiment.finish: weights and
    metrics as a pair, the metrics naming the weights by SHA-256): an untrained network of
    one epoch (the MLP 784-128-64-10, or model="cnn" the CNN), drawn from seed, whose recorded
    test accuracy is what its trainer's evaluate() gives. Returns the metrics file; the
    weights lie beside it: <framework>_model.npz or .pt (the CNN's <framework>_cnn.*)."""
    from harness.experiment import build_parser, finish
    from harness.metrics_file import WEIGHT_SUFFIX, Run
    stem = "cnn" if model == "cnn" else "model"
    metrics = folder / (f"{framework}_cnn.json" if model == "cnn" else f"{framework}_metrics.json")
    weights = folder / f"{framework}_{stem}{WEIGHT_SUFFIX[framework]}"
    args = build_parser(framework, "test").parse_args(
        ["--model", model, "--epochs", "1", "--seed", str(seed), "--metrics", str(metrics), "--weights", str(weights)])
    if model == "cnn":
        args.hidden = None                         # as experiment.prepare records a CNN
    x_test, y_test = mnist_test_set()
    if framework == "numpy":
        from numpy_nn.cnn import CNN
        from numpy_nn.neural_network import NeuralNetwork
        from numpy_nn.train import evaluate
        net = CNN(seed=seed) if model == "cnn" else NeuralNetwork(SIZES, seed=seed)
        test_loss, test_acc = evaluate(net, x_test, y_test)
        versions, save = {"numpy": np.__version__}, net.save
    else:
        import torch

        from pytorch_nn.cnn import CNN
        from pytorch_nn.model import MLP
        from pytorch_nn.train import evaluate
        torch.manual_seed(seed)
        net = CNN() if model == "cnn" else MLP(SIZES)
        test_loss, test_acc = evaluate(net, torch.from_numpy(x_test), torch.from_numpy(y_test))
        versions = {"torch": torch.__version__}

        def save(f):
            torch.save(net.state_dict(), f)
    run = Run(framework, args, versions, HARDWARE, n_train=60000, n_test=len(y_test))
    buffer = io.BytesIO()
    save(buffer)
    run.log_epoch(1, 2.3, 0.1, test_loss, test_acc, 1.0, 60000, weights=buffer.getvalue())
    finish(run, args)
    return metrics


def run_result(record, name="NumPy", key="numpy"):
    from report.run import RunResult
    return RunResult(Path(f"{key}.json"), record, name, key)


def assert_png(path):
    """A real, readable PNG with some content (not an empty figure)."""
    import matplotlib.image
    raw = path.read_bytes()
    assert raw[:8] == PNG_SIGNATURE, path
    assert len(raw) > 20_000, (path, len(raw))
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[2] in (3, 4) and min(image.shape[:2]) > 400, image.shape


def run_main(*argv):
    import compare
    compare.main([str(arg) for arg in argv])


def pictures_not_drawn_in(patch, drawn=lambda fig: False):
    """compare.py with its figures made but not rendered, except those drawn(fig) picks: each
    other .png it writes holds one line naming the figure (its title) and its place among the
    figures made since, where the picture would be. For tests of which files compare.py writes
    and which it leaves alone: matplotlib's rendering took seconds a figure (5 s for a learning
    picture on a busy 2-core machine), and those tests read no pixel. The tests that look at a
    kind of picture (assert_png, and the CNN's in test_report_cnn.py) draw it. patch: a
    pytest.MonkeyPatch; returns the titles of the figures made, in order."""
    from matplotlib import pyplot as plt

    import compare
    from report.figure import png
    made = []

    def named(fig):
        title = fig._suptitle.get_text() if fig._suptitle else fig.axes[0].get_title() if fig.axes else ""
        made.append(title)
        if drawn(fig):
            return png(fig)
        plt.close(fig)
        return f"figure {len(made)} of this test, not drawn: {title}\n".encode()
    patch.setattr(compare, "png", named)
    return made


@pytest.fixture
def pictures_not_drawn(monkeypatch):
    """compare.py's pictures made but not drawn while the test runs: pictures_not_drawn_in."""
    return pictures_not_drawn_in(monkeypatch)


def error_of(*argv):
    """The message main exits with, checked to be one line starting with 'error:'."""
    with pytest.raises(SystemExit) as exit_info:
        run_main(*argv)
    message = str(exit_info.value.code)
    assert message.startswith("error: ") and "\n" not in message, message
    return message


def made_up_diagnostics(steps=(1, 32, 63), layers=("layer1", "layer2", "layer3")):
    """A diagnostics block in the shape the trainers write, with made-up numbers."""
    n = len(steps)
    histogram = {"counts": [5, 3, 0, 1], "edges": [0.0, 0.5, 1.0, 1.5, 2.0]}
    return {"every": 31, "probe_images": 256, "layers": list(layers), "steps": list(steps),
            "loss": [2.3, 0.5, None][:n],
            **{figure: {name: [10.0 ** -(i + 2)] * n for i, name in enumerate(layers)}
               for figure in ("grad_rms", "update_ratio", "activation_mean", "activation_std")},
            "dead_fraction": {name: [0.0, 0.1, 0.2][:n] for name in layers[:-1]},
            "histograms": {"init": {name: histogram for name in layers},
                           "end": {name: None if name == "layer3" else histogram for name in layers}}}


def anchors(text):
    """A markdown page's section anchors, as GitHub makes them from its headings (outside code
    blocks): lower case, punctuation dropped, spaces as hyphens."""
    import re
    found = set()
    for heading in re.findall(r"^#+ (.+)$", re.sub(r"^```.*?^```$", "", text, flags=re.M | re.S), flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        found.add(slug)
    return found


def line_of(path, text):
    """'path line N: text' as the checker names a line, for the one line of path holding text."""
    numbers = [n for n, line in enumerate(path.read_text().splitlines(), start=1) if text in line]
    assert len(numbers) == 1, (path, text)
    return f"{path} line {numbers[0]}: {text}"


def assert_twins_within_bound(net, model, x, exact, bound, label):
    """The float32 logits of a NumPy network and its PyTorch twin on x, each within bound of the
    exact (float64) logits, entry by entry; prints how close, as a share of the bound. Returns
    both networks' logits."""
    import torch
    logits_np = net.forward(x)[0]
    with torch.inference_mode():
        logits_t = model(torch.from_numpy(x)).numpy()
    for name, logits in (("numpy", logits_np), ("torch", logits_t)):
        err = np.abs(logits.astype(np.float64) - exact)
        print(f"{label} {name}: largest error {err.max():.1e}, {(err / bound).max():.1e} of its bound "
              f"(the largest bound {bound.max():.1e}, the largest logit {np.abs(exact).max():.1f})")
        assert (err <= bound).all(), name
    return logits_np, logits_t


def grade(name, batch, folder=None):
    """python check.py --exercise name, in this process, on the exercise file in folder (the
    committed one if None): (verdict, its lines)."""
    import check
    from checker.exercise import check_exercise
    args = check.parse(["--exercise", name])
    lines = []
    ok = check_exercise(name, *batch, lines.append,
                        lambda x, y, say: check.check_network(args, x, y, say), folder=folder)
    return ok, "\n".join(lines)


@pytest.fixture(scope="session")
def batch(mnist):
    """What check.py checks a network on: the first BATCH (32) training images, in float64."""
    from checker.network import BATCH
    x_train, y_train, _, _ = mnist
    return x_train[:BATCH].astype(np.float64), y_train[:BATCH].copy()

