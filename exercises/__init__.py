"""The exercises: a learner's version of six key functions, graded by check.py and usable by
the NumPy trainer (exercises/README.md says how to work through them).

Each file exercises/NAME.py holds one function with the signature of the project's own, its
lines to fill marked with MARKER. This module is the plumbing around them:

    EXERCISES[name]               what each exercise is: its file, function, goal, the model it
                                  needs, where the solution is, the names it replaces
    blanks(name)                  the lines still to fill
    load(name)                    the learner's function, read fresh from the file
    original(name)                the project's own function, which the learner's replaces
    with installed(name, fn): ... the project runs fn in place of its own, inside the block
    install(name, fn)             ... for the rest of the program (the trainer's --exercise)

The checker (checker/exercise.py) grades them and holds the trainer's --exercise hook.
NumPy and the standard library only, like the rest of the from-scratch side.
"""
import contextlib
import importlib
import importlib.util
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

ROOT = Path(__file__).resolve().parents[1]  # the repo
FOLDER = Path(__file__).resolve().parent
MARKER = "...  # TODO"  # a blank: Python's Ellipsis, so the file imports while blank


class ExerciseError(Exception):
    """An exercise file that cannot be used (it does not import, or lacks its function); the
    message is one line naming the file and the line."""


@dataclass(frozen=True)
class Exercise:
    name: str
    function: str      # the function's name in the file
    goal: str          # one line
    model: str | None  # the --model it needs: "mlp", "cnn", or None (either)
    solution: str      # the project's own version: file, function
    targets: tuple     # (module name, attribute path) pairs that the learner's function replaces
    needs: dict = field(default_factory=dict)  # other trainer flags it needs, e.g. {"optimizer": "adam"}
    train_flags: dict = field(default_factory=dict)  # those of needs its training command names (not defaults)

    @property
    def file(self):
        return FOLDER / f"{self.name}.py"

    @property
    def path(self):
        """The file as the learner names it from the repo root."""
        return f"exercises/{self.name}.py"

    @property
    def train_command(self):
        flags = "".join(f" --{flag} {value}" for flag, value in
                        {**({"model": self.model} if self.model == "cnn" else {}), **self.train_flags}.items())
        return f"python numpy_nn/train.py --exercise {self.name}{flags}"


EXERCISES = {exercise.name: exercise for exercise in (  # in the suggested order
    Exercise("softmax_cross_entropy", "cross_entropy_with_grad",
             "the mean cross-entropy of softmax(logits) and its gradient (p - onehot) / B, computed stably",
             None, "numpy_nn/utils.py, cross_entropy_with_grad",
             # train.py imported the name, so its own binding is replaced too
             (("numpy_nn.utils", "cross_entropy_with_grad"), ("numpy_nn.train", "cross_entropy_with_grad"))),
    Exercise("mlp_backward", "backward",
             "the MLP's backward pass: dW and db of every layer from dLoss/dlogits, by the chain rule",
             "mlp", "numpy_nn/neural_network.py, NeuralNetwork.backward",
             (("numpy_nn.neural_network", "NeuralNetwork.backward"),),
             {"norm": "none"}),                    # its backward has no batch normalization
    Exercise("adam_step", "step",
             "one step of Adam: the running means m and v, bias-corrected, and the update of every weight",
             None, "numpy_nn/utils.py, Adam.step", (("numpy_nn.utils", "Adam.step"),),
             {"optimizer": "adam"}),
    Exercise("maxpool_backward", "maxpool2d_backward",
             "2x2 max-pooling's backward pass: each window's gradient to its (first) maximum",
             "cnn", "numpy_nn/layers.py, maxpool2d_backward", (("numpy_nn.cnn", "maxpool2d_backward"),)),
    Exercise("conv_backward", "conv2d_backward",
             "a convolution's backward pass through im2col: dx, dW and db as matrix products and col2im",
             "cnn", "numpy_nn/layers.py, conv2d_backward", (("numpy_nn.cnn", "conv2d_backward"),)),
    Exercise("batchnorm_backward", "batchnorm_backward",
             "batch normalization's backward pass: dz, dgamma and dbeta, through the batch's mean and variance",
             "mlp", "numpy_nn/batchnorm.py, batchnorm_backward",
             # neural_network.py imported the name, so its own binding is replaced too
             (("numpy_nn.batchnorm", "batchnorm_backward"), ("numpy_nn.neural_network", "batchnorm_backward")),
             {"norm": "batch"}, {"norm": "batch"}),
)}


def path_of(name, folder=None):
    """Exercise name's file (folder: a copy of the exercises elsewhere, for tests)."""
    return Path(folder) / f"{name}.py" if folder else EXERCISES[name].file


def shown(path):
    """A path as the learner would type it: from the repo root when it is inside."""
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def blanks(name, folder=None):
    """[(line number, line text)] of every line of exercise name's file still holding MARKER
    (folder: a copy of the exercises elsewhere, for tests)."""
    path = path_of(name, folder)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ExerciseError(f"{shown(path)}: no such file (git checkout {shown(path)} brings it back)") from None
    except UnicodeDecodeError as e:
        line = e.object[:e.start].count(b"\n") + 1
        raise ExerciseError(f"{shown(path)}, line {line}: not UTF-8 text (byte 0x{e.object[e.start]:02x}); "
                            f"save the file as UTF-8") from None
    except OSError as e:
        raise ExerciseError(f"{shown(path)}: cannot read it ({e.strerror})") from None
    return [(number, line) for number, line in enumerate(text.splitlines(), start=1) if MARKER in line]


def load(name, folder=None):
    """The learner's function from exercise name's file, imported afresh on every call (so an
    edited file is read again). A file that does not import raises ExerciseError (one line)."""
    exercise, path = EXERCISES[name], path_of(name, folder)
    where_file = shown(path)
    spec = importlib.util.spec_from_file_location(f"exercises._yours_{name}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except FileNotFoundError:
        raise ExerciseError(f"{where_file}: no such file (git checkout {where_file} brings it back)") from None
    except SyntaxError as e:  # the line is the file's own here, not a frame's
        raise ExerciseError(f"{where_file}, line {e.lineno}: {type(e).__name__}: {e.msg}") from None
    except (Exception, SystemExit, KeyboardInterrupt) as e:  # NameError, ImportError, sys.exit(), ...
        lines = [frame.lineno for frame in traceback.extract_tb(e.__traceback__)   # the deepest line in the file
                 if Path(frame.filename).resolve() == path.resolve()]
        where = f", line {lines[-1]}" if lines else ""
        if isinstance(e, (SystemExit, KeyboardInterrupt)):  # the file's own doing (check.py's Ctrl-C is another)
            raise ExerciseError(f"{where_file}{where}: {type(e).__name__} while the file was imported: it should "
                                f"only define {exercise.function}()") from None
        message = str(e).splitlines()[0] if str(e) else ""
        raise ExerciseError(f"{where_file}{where}: {type(e).__name__}: {message}") from None
    function = getattr(module, exercise.function, None)
    if not callable(function):
        raise ExerciseError(f"{where_file}: no function {exercise.function}() (git checkout {where_file} starts it over)")
    return function


def _modules(module_name):
    """The imported module module_name, and __main__ too when it is that very file: a trainer
    run as `python numpy_nn/train.py` is the module __main__, not numpy_nn.train."""
    module = importlib.import_module(module_name)
    found = [module]
    main = sys.modules.get("__main__")
    main_file = getattr(main, "__file__", None)
    if main is not module and main_file and Path(main_file).resolve() == Path(module.__file__).resolve():
        found.append(main)
    return found


def _targets(name):
    """[(owner, attribute)] of every place exercise name's function lives in the project."""
    found = []
    for module_name, attribute_path in EXERCISES[name].targets:
        for module in _modules(module_name):
            *owners, attribute = attribute_path.split(".")
            owner = module
            for part in owners:              # "NeuralNetwork.backward": the class, then its method
                owner = getattr(owner, part)
            found.append((owner, attribute))
    return found


def original(name):
    """The project's own function that exercise name's replaces (as it is now: inside
    installed(), the learner's)."""
    owner, attribute = _targets(name)[0]
    return getattr(owner, attribute)


@contextlib.contextmanager
def installed(name, function):
    """Inside the block, the project runs function in place of its own (every target of
    exercise name); the originals are back on leaving it, however it is left."""
    with contextlib.ExitStack() as patches:
        for owner, attribute in _targets(name):
            patches.enter_context(mock.patch.object(owner, attribute, function))
        yield function


def install(name, function):
    """installed(), for the rest of the program: what the trainer's --exercise does."""
    for owner, attribute in _targets(name):
        mock.patch.object(owner, attribute, function).start()
