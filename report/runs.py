"""Reading runs for the table and the pictures: each metrics file read and checked, each run's
own weights found (the SHA-256 its record names) and evaluated on the test set as its trainer
evaluated it, the accuracy it records checked against them, and the robustness digits measured.
compare.py is the command that calls this; the demo's page and predict.py read their networks
with it too, so none of them imports a command or draws anything here (no matplotlib)."""
import pickle
import zipfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from data_loader import DATA_DIR, DataError, load_mnist
from harness.experiment import RESULTS_DIR, shown
from harness.metrics_file import file_sha256, load_metrics
from numpy_nn.cnn import CNN, saved_model_kind
from numpy_nn.neural_network import NeuralNetwork
from report.robustness import robustness_sets
from report.run import FRAMEWORK_NAMES, MODEL_NAMES, RunResult, name_runs, plural

ROOT = Path(__file__).resolve().parents[1]  # the repo: a run's record names its weights relative to it
WITH_ARTICLE = {"mlp": "an MLP", "cnn": "a CNN"}
# what np.load and torch.load raise on a file that is not what they expect
UNREADABLE = (OSError, ValueError, KeyError, RuntimeError, EOFError, zipfile.BadZipFile,
              pickle.UnpicklingError)


class CompareError(Exception):
    """Bad input or an unwritable output; the message is one line that says what to do."""


# ----------------------------------------------------------------------------- reading the runs

def how_to_make(path):
    """The trainer command that writes this metrics file, for the 'not found' message."""
    for framework in FRAMEWORK_NAMES:
        for model, flags in (("", ""), ("_cnn", " --model cnn")):
            for augment, more in (("", ""), ("_augment", " --augment")):
                if path.resolve() == (RESULTS_DIR / f"{framework}{model}{augment}_metrics.json").resolve():
                    return f"run `python {framework}_nn/train.py{flags}{more}` first"
    return (f"run `python numpy_nn/train.py --metrics {path}` or "
            f"`python pytorch_nn/train.py --metrics {path}` first")


def load_runs(paths, out_dir=None):
    """Read and check every metrics file; a missing one says which trainer writes it.
    The runs' names and keys come from report.run.name_runs (keys unique in out_dir)."""
    paths = [Path(shown(path)) for path in paths]
    records, seen = [], {}
    for path in paths:
        if not path.exists():
            raise CompareError(f"{path} not found: {how_to_make(path)}")
        # One file given twice (or by two names: a link, ../) would be compared with itself.
        # A copy is another file and is compared: it may be a kept run.
        file_id = (path.stat().st_dev, path.stat().st_ino)
        if file_id in seen:
            raise CompareError(f"{path} is the same file as {seen[file_id]}: give each run once")
        seen[file_id] = path
        record = load_metrics(path)
        if record["config"]["model"] not in MODEL_NAMES:
            raise CompareError(f"{path}: unknown model {record['config']['model']!r} (expected one "
                               f"of {', '.join(MODEL_NAMES)}, as the trainers' --model)")
        records.append(record)
    return [RunResult(path, record, name, key)
            for path, record, (name, key) in zip(paths, records, name_runs(records, paths, out_dir))]


# ----------------------------------------------------------------------------- the run's own weights

def weights_candidates(run, override=None):
    """Where the run's weights may be, in the order they are tried: the flag alone when given;
    else the copy beside the metrics file (a run kept in a folder of its own), then the path
    its trainer wrote them to (which a later run with the default paths writes over)."""
    if override is not None:
        return [Path(shown(override))]
    saved = run.record["config"].get("weights")
    if not saved:
        return []
    saved = Path(saved)
    written = saved if saved.is_absolute() else ROOT / saved  # recorded relative to the repo root
    beside = run.path.parent / saved.name
    candidates = [beside] + ([written] if written.resolve() != beside.resolve() else [])
    return [Path(shown(path)) for path in candidates]


def _sha256(path):
    try:
        return file_sha256(path)
    except OSError as e:
        raise CompareError(f"cannot read {path} ({e.strerror}); fix it, or use --no-inside") from None


def weights_kind(path, framework):
    """Which network a weights file of this framework holds, "mlp" or "cnn"; None when it is
    neither (another framework's file, or no weights file at all: the SHA-256 check refuses it).
    NumPy: numpy_nn.cnn's marker, in an .npz with an MLP's "sizes" or a CNN's "model" entry.
    PyTorch: the state_dict's keys, conv1.* for the CNN, out.* (and hidden.*) for the MLP."""
    try:
        if framework == "numpy":
            f = np.load(path)
            if not isinstance(f, np.lib.npyio.NpzFile):  # an .npy array, not an .npz of weights
                return None
            with f:
                ours = {"sizes", "model"} & set(f.files)  # a zip of other files (a .pt) has neither
            return saved_model_kind(path) if ours else None
        import torch  # needed for PyTorch runs only
        state = torch.load(path, map_location="cpu", weights_only=True)
    except UNREADABLE:
        return None
    if not isinstance(state, dict):
        return None
    return "cnn" if "conv1.weight" in state else "mlp" if "out.weight" in state else None


def _wrong_kind(run, path, kind, flag, given):
    """The refusal of a weights file that holds the other kind of network."""
    holds = f"{path} holds {MODEL_NAMES[kind]} weights but {run.path} is {WITH_ARTICLE[run.model]} run"
    if given:
        return f"{flag} {holds}: pass that run's own weights file, or use --no-inside"
    return (f"{holds} (written over by a later {MODEL_NAMES[kind]} run?): pass its own weights "
            f"with {flag}, or use --no-inside")


def _not_its_weights(run, files, flag, given):
    """The refusal when weights files are there but none is the one written with the run."""
    if given:
        return (f"{flag} {files[0]} is not the weights file written with {run.path} (the SHA-256 "
                f"it records differs): pass that run's own weights file, or use --no-inside")
    names = f"{files[0]} is not" if len(files) == 1 else f"neither {' nor '.join(map(str, files))} is"
    return (f"{names} the weights file written with {run.path} (the SHA-256 it records differs: "
            f"written over by a later run?): pass its own weights with {flag}, or use --no-inside")


def find_weights(runs, args):
    """Attach each run's own weights: the first candidate file whose SHA-256 is the one its
    metrics file records. Returns a note for every run with no candidate file at all; files
    that are there but are another run's are refused (CompareError), never drawn: first a
    file that holds the other kind of network (an MLP's for a CNN run, or the reverse),
    which says so, then any other."""
    notes = []
    for framework, name in FRAMEWORK_NAMES.items():
        flag = f"--{framework}-weights"
        override = getattr(args, f"{framework}_weights")
        matching = [run for run in runs if run.framework == framework]
        if override is not None and len(matching) != 1:
            raise CompareError(f"{flag} needs exactly one {name} run with a result, got {len(matching)}")
        if override is not None and not override.is_file():
            raise CompareError(f"{flag} {shown(override)} not found")
        for run in matching:
            candidates = weights_candidates(run, override)
            found = [path for path in candidates if path.is_file()]
            if not found:
                looked = " nor ".join(map(str, candidates))
                looked = f"neither {looked} exists" if len(candidates) > 1 else \
                    f"{looked} does not exist" if candidates else "its metrics name no weights file"
                notes.append(f"note: no saved weights for {run.label} ({looked}): skipping its "
                             f"pictures; pass the weights written with {run.path} as {flag}")
                continue
            kinds = {path: weights_kind(path, framework) for path in found}
            wrong_kind = [path for path in found if kinds[path] not in (None, run.model)]
            own = [path for path in found if _sha256(path) == run.record["weights_sha256"]]
            if own and own[0] not in wrong_kind:
                run.weights = own[0]
            elif wrong_kind:
                path = wrong_kind[0]
                raise CompareError(_wrong_kind(run, path, kinds[path], flag, override is not None))
            else:
                raise CompareError(_not_its_weights(run, found, flag, override is not None))
    return notes


@lru_cache(maxsize=None)
def load_test_set(dataset, data_dir=DATA_DIR):
    """The test images and labels of a dataset, loaded once however many runs use it."""
    try:
        _, _, x_test, y_test = load_mnist(dataset, data_dir)
    except DataError as e:
        raise CompareError(f"{e} (the test set is needed for the pictures; --no-inside "
                           f"skips them)") from None
    return x_test, y_test


@dataclass
class Evaluation:
    """What a run's saved weights give on the test set, computed as its trainer computed it."""
    logits: np.ndarray  # N,10 in the weights' own dtype
    correct: int        # test images classified right
    fan_ins: tuple      # how many terms each layer's dot products sum, input to output
    params: dict        # the weights in numpy_nn's layout {"W1": ..., "b1": ...}, for the pictures


def fan_ins(params):
    """The terms summed per output, layer by layer: a conv weight (O,C,kh,kw) sums C*kh*kw,
    a linear one (in, out) sums in. The MLP's 784, 128, 64; the CNN's 9, 288, 1600."""
    weights = [W for name, W in params.items() if name.startswith("W")]   # W1, W2, ... in order
    return tuple(int(np.prod(W.shape[1:])) if W.ndim == 4 else W.shape[0] for W in weights)


def _in_bites(forward, x, bite):
    """forward over x in consecutive slices of bite rows, the results stacked."""
    return np.concatenate([forward(x[start:start + bite]) for start in range(0, len(x), bite)])


def _evaluate_numpy(path, model, x_test, y_test):
    from numpy_nn.train import EVAL_BATCH
    net = (CNN if model == "cnn" else NeuralNetwork).load(path)
    x = x_test.astype(net.dtype, copy=False)
    logits = _in_bites(lambda xb: net.forward(xb)[0], x, EVAL_BATCH)
    return Evaluation(logits, int((logits.argmax(axis=1) == y_test).sum()), fan_ins(net.params),
                      net.params)


def _evaluate_pytorch(path, model, x_test, y_test, activation):
    import torch  # needed for PyTorch runs only

    from pytorch_nn import cnn
    from pytorch_nn import model as mlp
    from pytorch_nn.fast_step import channels_last  # the layout the trainer evaluates in: faster
    from pytorch_nn.numpy_weights import numpy_params
    from pytorch_nn.train import EVAL_BATCH
    # a state_dict holds no activation (it has no weights): the MLP's comes from the record
    network = channels_last(cnn.load_model(path)) if model == "cnn" else mlp.load_model(path, activation=activation)
    network.eval()                                 # as the trainer's evaluate(): dropout off
    x = torch.from_numpy(x_test).to(network.out.weight.dtype)
    with torch.inference_mode():
        logits = _in_bites(lambda xb: network(xb).numpy(), x, EVAL_BATCH)
    params = numpy_params(network)
    return Evaluation(logits, int((logits.argmax(axis=1) == y_test).sum()), fan_ins(params), params)


def evaluate_weights(run, x_test, y_test):
    """The run's weights on the test set through its own framework, in the dtype it trained
    in (another library, or another dtype, rounds differently), and in the slices its
    trainer's evaluate() takes (EVAL_BATCH): the logits, and so the count of right answers,
    are the ones the trainer computed."""
    try:
        if run.framework == "numpy":  # the .npz names the MLP's activation itself
            return _evaluate_numpy(run.weights, run.model, x_test, y_test)
        return _evaluate_pytorch(run.weights, run.model, x_test, y_test, run.record["config"]["activation"])
    except UNREADABLE as e:
        # their messages run to several lines; the type of error is enough to go on
        raise CompareError(f"cannot read {run.weights} as {FRAMEWORK_NAMES[run.framework]} weights "
                           f"({type(e).__name__}); run its trainer again, or use --no-inside") from None


# The committed results were evaluated on one CPU. Another CPU (another BLAS kernel: AVX2
# against AVX-512, or PyTorch's against OpenBLAS, or a GPU) sums each dot product in another
# order, so its logits differ in the last bits, and an image whose top two logits are that
# close can change class. A dot product of n terms rounds with an error of about sqrt(n) unit
# roundoffs u times its scale (rounding errors do not all lean one way; n u is the worst case,
# never seen); the layers of 784, 128 and 64 inputs add up to (28 + 11.3 + 8) u = 47 u on the
# scale of the logits, 1 + max |logit| (the CNN's, of 9, 288 and 1600 terms, to 60 u). Two
# machines' logits then differ by up to 2 x 47 u each, and two of them can swap order only if
# their margin is below twice that: 4 x 47 u, which is 1.1e-5 of the scale in float32
# (u = 2^-24 = 6e-8) and 2e-14 in float64 (u = 2^-53), where it spares no image in practice.
# Such a swap changes the count only when the true class is one of the two: a right answer
# may turn wrong, or a wrong one right. Measured on the committed NumPy
# network (98.25%): five OpenBLAS kernels (SSE to AVX-512), PyTorch's, and one image at a time
# agree within 13 u of the scale per logit, so no margin moved by more than 26 u, a seventh of
# the bound; its smallest margin is 3e-4 of the scale: none of its images is a tie.
TIE_ROUNDOFFS = 4  # two machines' rounding, on each of the two top logits


def rounding_ties(logits, y_true, fan_ins):
    """(right, wrong): how many images this machine gets right, and wrong, whose true class
    is within float rounding of the top logit together with another class, so that another
    CPU could count them the other way (see above). fan_ins: the terms each layer's dot
    products sum, input to output (784, 128, 64 for the MLP)."""
    u = np.finfo(logits.dtype).eps / 2                        # unit roundoff of the logits' dtype
    per_logit = u * sum(np.sqrt(n) for n in fan_ins)          # rounding per logit, on its scale
    logits = logits.astype(np.float64)                        # N,C  margins computed exactly
    top = logits.max(axis=1, keepdims=True)                   # N,1
    bound = TIE_ROUNDOFFS * per_logit * (1 + np.abs(logits).max(axis=1, keepdims=True))
    near_top = logits >= top - bound                          # N,C  classes that could be top
    tied = (near_top.sum(axis=1) > 1) & near_top[np.arange(len(y_true)), y_true]   # N
    right = logits.argmax(axis=1) == y_true                   # N
    return int((tied & right).sum()), int((tied & ~right).sum())


def check_accuracy(run, evaluation, y_test):
    """The weights must give the test accuracy the run recorded, to the image, except for
    images float rounding could tip (rounding_ties); returns the line that says they do."""
    n_recorded, n_test = run.record["data"]["test_samples"], len(y_test)
    recorded = round(run.record["final_test_acc"] * n_recorded)
    could_lose, could_gain = rounding_ties(evaluation.logits, y_test, evaluation.fan_ins)
    correct = evaluation.correct
    right = f"{correct:,} of {n_test:,} test images right"
    if n_recorded != n_test or not correct - could_lose <= recorded <= correct + could_gain:
        tipped = (f" (float rounding could turn only {could_lose} of them wrong and "
                  f"{plural(could_gain, 'other')} right)" if could_lose or could_gain else "")
        raise CompareError(f"{run.weights} gets {right} here but {run.path} records {recorded:,} "
                           f"of {n_recorded:,}{tipped}: the weights and the record disagree, so no "
                           f"picture is made from them; run the trainer again, or use --no-inside")
    within = f" (within {plural(abs(correct - recorded), 'rounding tie')})" if correct != recorded else ""
    return f"checked {run.weights}: its SHA-256 and its {right} are what {run.path} records{within}"


def check_weights(run, data_dir):
    """Evaluate a run's weights (found by find_weights) and check them against its record."""
    x_test, y_test = load_test_set(run.record["config"]["dataset"], data_dir)
    evaluation = evaluate_weights(run, x_test, y_test)
    return evaluation, check_accuracy(run, evaluation, y_test)


@lru_cache(maxsize=None)
def load_robustness_sets(data_dir=DATA_DIR):
    """MNIST's test digits perturbed and drawn (report/robustness.py), built once."""
    x_test, y_test = load_test_set("mnist", data_dir)
    print(f"measuring the networks on the {len(y_test):,} test digits perturbed and drawn "
          f"(report/robustness.py) ...", flush=True)
    return robustness_sets(x_test, y_test)


def measure_robustness(run, data_dir):
    """{"perturbed": accuracy, "drawn": accuracy}: the run's weights on each robustness set,
    evaluated as on the test set (evaluate_weights). None for a run on another dataset than
    MNIST: its perturbed and drawn copies are digits."""
    if run.record["config"]["dataset"] != "mnist":
        return None
    return {name: evaluate_weights(run, x, y).correct / len(y)
            for name, (x, y) in load_robustness_sets(data_dir).items()}
