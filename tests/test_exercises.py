"""exercises/: each exercise, filled with its solution (tests/exercise_answers.py), trains
exactly as the project's own function does; while blank it imports, lists its blanks, and
the trainer refuses it in one line; a broken file is one line naming it; the swap of the
project's functions is undone however the block ends. (check.py --exercise has its own tests.)

The trainer runs through its main(argv) in this process (conftest.run_trainer_main), on one
BLAS thread, as in test_cli.py: only timings change.
"""
import contextlib
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import exercises
from checker.exercise import exercise_flags, use_exercise
from conftest import run_trainer_main
from exercise_answers import ANSWERS, blank_copy, fill_into
from exercises import EXERCISES, MARKER, ExerciseError, blanks, installed, load
from harness.flags import build_parser
from harness.metrics_file import MetricsError, Run, _check_values

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
QUICK = ["--epochs", "1", "--dtype", "float64", "--no-progress", "--no-diagnostics"]
# flags, training images, test images: each branch the function meets in training (dropout's
# mask, the L2 term) and a few steps; the plain CNN is slow, so it gets few images
TRAINING = {
    "mlp_backward": (["--batch-size", "64", "--dropout", "0.2", "--weight-decay", "1e-3"], 512, 500),
    "softmax_cross_entropy": (["--batch-size", "64"], 512, 500),
    "adam_step": (["--batch-size", "64", "--weight-decay", "1e-3"], 512, 500),
    "batchnorm_backward": (["--norm", "batch", "--batch-size", "64", "--dropout", "0.2", "--weight-decay", "1e-3"],
                           512, 500),
    "maxpool_backward": (["--model", "cnn", "--layers", "plain", "--batch-size", "32", "--dropout", "0.25",
                          "--weight-decay", "1e-3"], 96, 64),
    "conv_backward": (["--model", "cnn", "--layers", "plain", "--batch-size", "32", "--dropout", "0.25",
                       "--weight-decay", "1e-3"], 96, 64),
}


@pytest.fixture(scope="module")
def solved(tmp_path_factory):
    """A folder holding every exercise filled with its solution."""
    return fill_into(tmp_path_factory.mktemp("solved"))


def originals():
    """Every object the exercises replace, where it lives now: {(module, path): object}."""
    found = {}
    for exercise in EXERCISES.values():
        for module_name, attribute_path in exercise.targets:
            owner = importlib.import_module(module_name)
            for part in attribute_path.split("."):
                owner = getattr(owner, part)
            found[module_name, attribute_path] = owner
    return found


@contextlib.contextmanager
def restoring():
    """Undo a permanent install() (the trainer's hook) when the test ends."""
    before = originals()
    try:
        yield
    finally:
        for (module_name, attribute_path), original in before.items():
            *owners, attribute = attribute_path.split(".")
            owner = importlib.import_module(module_name)
            for part in owners:
                owner = getattr(owner, part)
            setattr(owner, attribute, original)


def train_small(mnist, name, function=None, dtype="float64"):
    """numpy_nn/train.py's train() on a small run (float64 unless told) for exercise name's
    flags, with function in place of the project's own when given: (every epoch's losses and
    accuracies, the final weights)."""
    from numpy_nn.train import train
    flags, n_train, n_test = TRAINING[name]
    x_train, y_train, x_test, y_test = mnist
    data = (x_train[:n_train].astype(dtype), y_train[:n_train], x_test[:n_test].astype(dtype), y_test[:n_test])
    args = build_parser("numpy", "test").parse_args([*flags, *QUICK, "--dtype", dtype])
    with installed(name, function) if function else contextlib.nullcontext():
        net, run = train(args, *data)
    net = getattr(net, "net", net)                         # the CNN trains in Halves (parallel.py)
    results = [(e["train_loss"], e["train_acc"], e["test_loss"], e["test_acc"]) for e in run.record["epochs"]]
    return results, net.flat_params.copy()


@pytest.mark.parametrize("name", list(EXERCISES))
def test_solved_exercise_trains_exactly_as_the_project(mnist, solved, name, one_blas_thread):
    """Filled with its solution, the learner's function trains the network to the very same
    numbers as the project's own, in float64: == on every loss, accuracy and weight (the
    solution is the project's own arithmetic, operation for operation). A counter proves the
    learner's function was the one called."""
    calls = []
    yours = load(name, solved)

    def counted(*args, **kwargs):
        calls.append(1)
        return yours(*args, **kwargs)

    theirs_results, theirs_weights = train_small(mnist, name)
    yours_results, yours_weights = train_small(mnist, name, counted)
    print(f"{name}: {len(calls)} calls; epoch 1 {yours_results[0]}")
    assert calls                                           # the swap took effect
    assert yours_results == theirs_results
    assert np.array_equal(yours_weights, theirs_weights)


@pytest.mark.parametrize("name", [name for name, exercise in EXERCISES.items() if exercise.model != "cnn"])
def test_solved_exercise_trains_exactly_as_the_project_in_float32_on_one_thread_count(mnist, solved, name,
                                                                                     one_blas_thread):
    """What exercises/README.md promises: in float32 too, the very same numbers, when both runs'
    products use the same number of threads (here 1). (The CNN exercises train the slow plain
    CNN: float64 above covers them.)"""
    theirs = train_small(mnist, name, dtype="float32")
    yours = train_small(mnist, name, load(name, solved), dtype="float32")
    assert yours[0] == theirs[0]
    assert yours[1].dtype == np.float32 and np.array_equal(yours[1], theirs[1])


@pytest.mark.parametrize("name", list(EXERCISES))
def test_blank_exercise_imports_and_lists_its_blanks(name):
    """While blank, the file still imports (its blanks are Ellipsis) and blanks() lists every
    line with the marker: 3 to 6 of them, one per answer in the key."""
    assert callable(load(name))
    text = EXERCISES[name].file.read_text(encoding="utf-8").splitlines()
    found = blanks(name)
    assert [number for number, _ in found] == [n for n, line in enumerate(text, start=1) if MARKER in line]
    assert all(line == text[number - 1] for number, line in found)
    assert 3 <= len(found) <= 6 and len(found) == len(ANSWERS[name])


@pytest.mark.parametrize("name", list(EXERCISES))
def test_trainer_refuses_a_blank_exercise_in_one_line(tmp_path, name):
    """The trainer's main(argv), as a learner runs it: exit 2, one error line naming the file
    and its blank lines, no traceback, no file written."""
    model = ["--model", EXERCISES[name].model] if EXERCISES[name].model else []
    metrics, weights = tmp_path / "m.json", tmp_path / "w.npz"
    done = run_trainer_main("numpy", "--exercise", name, *model, "--epochs", "1", "--limit", "100",
                            "--metrics", metrics, "--weights", weights)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if "error:" in line]
    lines = ", ".join(str(number) for number, _ in blanks(name))
    assert errors == [f"train.py: error: argument --exercise: exercises/{name}.py still has "
                      f"{len(blanks(name))} blanks (lines {lines}): fill them, then run "
                      f"python check.py --exercise {name}"], done.stderr
    assert list(tmp_path.iterdir()) == []


def trainer_parser():
    """The NumPy trainer's flags, --exercise's included (numpy_nn/train.py main)."""
    parser = build_parser("numpy", "test")
    exercise_flags(parser)
    return parser


def hook(argv):
    """The NumPy trainer's flags and its --exercise hook, in this process: the args it leaves,
    or the one line of a refusal (SystemExit 2)."""
    parser = trainer_parser()
    args = parser.parse_args(argv)
    use_exercise(parser, args)
    return args


def test_trainer_hook_installs_a_solved_exercise_and_records_it(solved, monkeypatch, capsys):
    """With every exercise solved, the hook installs the learner's function for the run; a CNN
    exercise trains the plain CNN (its name lives in numpy_nn/cnn.py); the record's config
    names the exercise, and the record reader takes it. Flags the exercise cannot train with
    are refused, each in one line."""
    import numpy_nn.cnn
    import numpy_nn.neural_network
    monkeypatch.setattr(exercises, "FOLDER", solved)
    with restoring():   # (unchecked: the checks before training have a test of their own)
        args = hook(["--exercise", "mlp_backward", "--exercise-unchecked"])
        assert numpy_nn.neural_network.NeuralNetwork.backward.__module__ == "exercises._yours_mlp_backward"
        record = record_of(args)
        assert record["config"]["exercise"] == "mlp_backward" and record["config"]["exercise_unchecked"] is True
        _check_values(record)
        args = hook(["--exercise", "conv_backward", "--model", "cnn", "--exercise-unchecked"])
        assert args.layers == "plain" and numpy_nn.cnn.conv2d_backward.__module__ == "exercises._yours_conv_backward"
    assert numpy_nn.cnn.conv2d_backward.__module__ == "numpy_nn.layers"   # restored by restoring()
    refusals = {("mlp_backward", "--model", "cnn"): "mlp_backward trains with --model mlp, got --model cnn",
                ("maxpool_backward",): "maxpool_backward trains with --model cnn, got --model mlp",
                ("conv_backward", "--model", "cnn", "--layers", "fast"): "drop --layers fast",
                ("adam_step", "--optimizer", "sgd"): "adam_step trains with --optimizer adam, got --optimizer sgd",
                ("batchnorm_backward",): "batchnorm_backward trains with --norm batch, got --norm none",
                ("mlp_backward", "--norm", "batch"): "mlp_backward trains with --norm none, got --norm batch"}
    for (name, *flags), message in refusals.items():
        with restoring(), pytest.raises(SystemExit) as stop:
            hook(["--exercise", name, *flags])
        assert stop.value.code == 2
        errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
        assert len(errors) == 1 and message in errors[0], errors
    assert originals() == originals_at_import


originals_at_import = originals()


def record_of(args):
    """The record a run with these flags starts (metrics_file.Run), with made-up hardware."""
    return Run("numpy", args, {}, {"device": "cpu", "blas": "?", "blas_threads": 1}, 1, 1).record


def test_record_without_the_field_still_reads():
    """A record from before --exercise (or from the PyTorch trainer) has no "exercise" key in
    its config: the reader's check accepts it; one whose "exercise" is not a name or null is
    refused."""
    record = record_of(trainer_parser().parse_args([]))
    assert record["config"]["exercise"] is None
    _check_values(record)
    del record["config"]["exercise"]
    _check_values(record)
    record["config"]["exercise"] = 3
    with pytest.raises(MetricsError, match="exercise"):
        _check_values(record)


@pytest.mark.parametrize("broken, line, kind", [
    ("def backward(self, dlogits, cache, l2=0.0):\n    dz = (dlogits\n", 2, "SyntaxError"),
    ("import numpy as np\n\nSCALE = undefined_name * 2\n", 3, "NameError"),
])
def test_a_file_that_does_not_import_is_one_line_naming_it(tmp_path, broken, line, kind):
    """A file that fails to import: ExerciseError, one line with the file and the line."""
    (tmp_path / "mlp_backward.py").write_text(broken, encoding="utf-8")
    with pytest.raises(ExerciseError) as error:
        load("mlp_backward", tmp_path)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"{tmp_path / 'mlp_backward.py'}, line {line}: {kind}"), message


def test_a_file_without_its_function_is_one_line(tmp_path):
    (tmp_path / "adam_step.py").write_text("def stop(self, grads):\n    pass\n", encoding="utf-8")
    with pytest.raises(ExerciseError, match=r"adam_step.py: no function step\(\)"):
        load("adam_step", tmp_path)


def test_load_reads_an_edited_file_again(tmp_path):
    """Each load() imports the file afresh: an edit between two calls is seen."""
    blank_copy(tmp_path, "maxpool_backward")
    first = load("maxpool_backward", tmp_path)
    fill_into(tmp_path, ["maxpool_backward"])
    second = load("maxpool_backward", tmp_path)
    assert ... in first.__code__.co_consts and ... not in second.__code__.co_consts  # the blanks, then none
    assert blanks("maxpool_backward", tmp_path) == []


@pytest.mark.parametrize("name", list(EXERCISES))
def test_installed_restores_every_target_even_when_the_body_raises(name):
    """installed() puts the function in every target and takes it out again on an exception."""
    def stand_in(*args, **kwargs):
        raise AssertionError("not to be called")

    before = originals()
    with pytest.raises(ZeroDivisionError):
        with installed(name, stand_in):
            now = originals()
            for target in EXERCISES[name].targets:
                assert now[target] is stand_in
            1 / 0
    assert originals() == before


def train_command(folder, tmp_path, *flags):
    """`python numpy_nn/train.py *flags`, with the exercises in folder, as a learner runs it: the
    script run as the module __main__ (runpy, as Python runs a script), not numpy_nn.train's
    main, so the learner's function must replace __main__'s own names too. In this process
    (conftest.run_trainer_main), the project's functions put back after it (the hook installs
    the learner's for the rest of the process). A short run, its files in tmp_path, evaluated on
    the first 1,000 test images (what is tested is that it runs and writes; the plain CNN layers
    took ~8 s over all 10,000)."""
    import runpy

    def as_a_script(argv):                      # (sys.argv is the script's and argv already)
        runpy.run_path(str(REPO / "numpy_nn" / "train.py"), run_name="__main__")
    with restoring(), pytest.MonkeyPatch.context() as patch:
        patch.setattr(exercises, "FOLDER", Path(folder))
        return run_trainer_main("numpy", *flags, "--epochs", "1", "--limit", "256", "--no-progress",
                                "--metrics", tmp_path / "m.json", "--weights", tmp_path / "w.npz",
                                test_images=1000, main=as_a_script)


def written(tmp_path):
    return sorted(p.name for p in tmp_path.iterdir() if p.name in ("m.json", "w.npz"))


@pytest.mark.slow
@pytest.mark.parametrize("name", list(EXERCISES))
def test_each_solved_exercise_trains_as_a_learner_runs_it(solved, tmp_path, name):
    """The command the checker prints on success (`Train with it: ...`), run as the learner runs
    it: the checks, then training with the learner's function guarded (its results checked at
    every call), exit 0 and the run's files written. (batchnorm_backward's results were not
    known to the guard: the run stopped with a KeyError traceback.)"""
    command = EXERCISES[name].train_command.split()[2:]     # after `python numpy_nn/train.py`
    done = train_command(solved, tmp_path, *command)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert written(tmp_path) == ["m.json", "w.npz"]
    assert json.loads((tmp_path / "m.json").read_text())["config"]["exercise"] == name


def test_a_wrong_exercise_is_refused_before_training(tmp_path):
    """The trainer runs check.py's checks first: a backward pass without the activation's
    derivative (dz = dh: it trained to 81% and exited 0) is refused in one line naming the first
    wrong gradient and the command that shows why; nothing is written. --exercise-unchecked
    trains with it anyway, saying so on stderr."""
    from exercise_answers import edited
    folder, out = tmp_path / "yours", tmp_path / "out"
    folder.mkdir()
    out.mkdir()
    edited(folder, "mlp_backward", 'dh * self.f_grad(cache[f"a{i - 1}"])  #', "dh  #")
    done = train_command(folder, out, "--exercise", "mlp_backward")
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        "train.py: error: argument --exercise: your exercises/mlp_backward.py does not pass its checks (first "
        "wrong: dz2): `python check.py --exercise mlp_backward` shows why (--exercise-unchecked trains with it "
        "anyway)"], done.stderr
    assert written(out) == []
    done = train_command(folder, out, "--exercise", "mlp_backward", "--exercise-unchecked")
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines()[0] == (
        "warning: --exercise-unchecked: your exercises/mlp_backward.py was NOT checked; this run's numbers mean "
        "nothing until `python check.py --exercise mlp_backward` passes")
    assert json.loads((out / "m.json").read_text())["config"]["exercise_unchecked"] is True


def test_the_trainers_refusal_names_the_first_problem():
    """first_problem reads check.py's lines as they are printed: a table row's status after its
    shape (which holds spaces), the first wrong gradient, a call that stopped or returned the
    wrong thing; a hint line (->) or a sentence is never taken for a row."""
    from checker.exercise import first_problem
    unit = ["maxpool2d_backward on 2 images of 3 channels, 7x7 (an odd size; ReLU's zeros make ties):",
            "  dx       (2, 3, 7, 7)      type    ", "      -> the string 'dx', where a NumPy array of numbers belongs",
            "", "Your function alone is not right yet: fix that first (the network's checks would only repeat it)."]
    assert first_problem(unit) == "dx is type"
    assert first_problem(["  logits   (32, 10)          close   max|diff|  6.1e-16   rel  4.8e-16",
                          "  dz2      (32, 64)          wrong   max|diff|  2.1e-02   rel  1.1e+00",
                          "  First wrong: dz2. Everything before it is right, so look first at"]) == "first wrong: dz2"
    assert first_problem(["  step 1 stopped with ValueError: bad"]) == "step 1 stopped with ValueError: bad"
    assert first_problem(["  overfit                    wrong   32 images: loss 2.3 -> 2.3"]) == "overfit is wrong"


def test_a_nan_from_the_exercise_is_blamed_on_it_not_on_the_learning_rate(tmp_path):
    """A loss that returns NaN: the checks refuse it; trained unchecked, its first call is
    found to give NaN where the project's own function gives finite numbers on the same input,
    and the run stops there in one line naming the exercise (it used to be recorded as
    diverged, with a smaller --lr suggested). Nothing is written."""
    from exercise_answers import filled
    answers = list(ANSWERS["softmax_cross_entropy"])
    answers[2] = "float('nan')"                            # the loss
    (tmp_path / "softmax_cross_entropy.py").write_text(filled("softmax_cross_entropy", answers), encoding="utf-8")
    done = train_command(tmp_path, tmp_path, "--exercise", "softmax_cross_entropy")
    assert done.returncode == 2 and "does not pass its checks (first wrong: loss)" in done.stderr, done.stderr
    done = train_command(tmp_path, tmp_path, "--exercise", "softmax_cross_entropy", "--exercise-unchecked")
    assert done.returncode == 1, done.stderr
    errors = [line for line in done.stderr.splitlines() if not line.startswith("warning:")]
    assert errors == [f"error: your {tmp_path / 'softmax_cross_entropy.py'} (cross_entropy_with_grad) gave NaN or "
                      f"inf where the project's own (numpy_nn/utils.py, cross_entropy_with_grad) gives finite numbers "
                      f"on the same input, in its 1st call while training: python check.py --exercise "
                      f"softmax_cross_entropy shows more"], done.stderr
    assert "learning rate" not in done.stderr and written(tmp_path) == []


@pytest.mark.parametrize("raised, said", [
    ("sys.exit(0)", "raised SystemExit: your code called sys.exit(0)"),
    ("raise KeyboardInterrupt", "raised KeyboardInterrupt: your code raised KeyboardInterrupt"),
])
def test_a_learners_exit_while_training_is_their_codes_failure(tmp_path, raised, said):
    """sys.exit(0) or KeyboardInterrupt in the learner's function (it exited 0, writing nothing
    and saying nothing): refused by the checks, and trained unchecked, one line naming it and
    its line, exit 1. Nothing is written."""
    from exercise_answers import edited
    edited(tmp_path, "softmax_cross_entropy", "    n = len(y)\n", f"    import sys\n    {raised}\n")
    done = train_command(tmp_path, tmp_path, "--exercise", "softmax_cross_entropy")
    assert done.returncode == 2 and f"(cross_entropy_with_grad stopped with {said.split(' ', 1)[1]}" in done.stderr, \
        done.stderr
    done = train_command(tmp_path, tmp_path, "--exercise", "softmax_cross_entropy", "--exercise-unchecked")
    assert done.returncode == 1, done.stderr
    errors = [line for line in done.stderr.splitlines() if not line.startswith("warning:")]
    assert len(errors) == 1 and errors[0].startswith(
        f"error: your {tmp_path / 'softmax_cross_entropy.py'} (cross_entropy_with_grad) {said}"), done.stderr
    line = (tmp_path / "softmax_cross_entropy.py").read_text().splitlines().index(f"    {raised}") + 1
    assert f"softmax_cross_entropy.py line {line}: {raised}, in its 1st call while training" in errors[0]
    assert written(tmp_path) == []


def test_a_result_of_another_shape_while_training_is_one_line(tmp_path):
    """dlogits returned transposed, trained unchecked: one line comparing what came back with
    what the project's own function gives, at the first call (it was a traceback from the
    backward pass's matrix product). Nothing is written."""
    from exercise_answers import edited
    edited(tmp_path, "softmax_cross_entropy", "    return float(loss), dlogits", "    return float(loss), dlogits.T")
    done = train_command(tmp_path, tmp_path, "--exercise", "softmax_cross_entropy", "--exercise-unchecked")
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.splitlines()[-1] == (
        f"error: your {tmp_path / 'softmax_cross_entropy.py'} (cross_entropy_with_grad) gave (a number, an array of "
        f"shape (10, 128)) where the project's own gives (a number, an array of shape (128, 10)), in its 1st call "
        f"while training: python check.py --exercise softmax_cross_entropy shows more")
    assert written(tmp_path) == []


def test_an_exercise_file_that_is_not_utf8_is_one_line_from_the_trainer(tmp_path, monkeypatch, capsys):
    from exercise_answers import filled
    text = filled("adam_step").replace("Hints:", "Hints (caf\u00e9):")
    (tmp_path / "adam_step.py").write_bytes(text.encode("latin-1"))
    monkeypatch.setattr(exercises, "FOLDER", tmp_path)
    with restoring(), pytest.raises(SystemExit) as stop:
        hook(["--exercise", "adam_step"])
    assert stop.value.code == 2
    line = text.splitlines().index("Hints (caf\u00e9):") + 1
    errors = capsys.readouterr().err.splitlines()
    assert len(errors) == 1 and errors[0].endswith(   # (after the program's name, pytest's here)
        f": error: argument --exercise: {tmp_path / 'adam_step.py'}, line {line}: not UTF-8 text (byte 0xe9); "
        f"save the file as UTF-8"), errors


def test_the_twins_and_the_harness_import_no_tool():
    """Imports run down the layers: the harness and the twins know no exercise and no checker
    (harness/flags.py imported exercises for --exercise's names, numpy_nn/build.py for the hook);
    numpy_nn/train.py's main, a command, brings the hook, and its --help still names them."""
    script = ("import sys; import harness.flags, harness.session, numpy_nn.build, numpy_nn.train, pytorch_nn.train; "
              "print(sorted(m for m in sys.modules if m.split('.')[0] in ('exercises', 'checker', 'torch')))")
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=ENV, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    imported = eval(done.stdout)
    assert not [m for m in imported if m.split(".")[0] in ("exercises", "checker")], imported
    shown = run_trainer_main("numpy", "--help")                  # (a process of its own above)
    assert shown.returncode == 0 and "--exercise {" + ",".join(EXERCISES) + "}" in shown.stdout, shown.stdout


def test_an_exercise_run_keeps_the_projects_default_run():
    """--exercise writes files of its own by default, so the default run compare.py and the
    demo read is not replaced by a learner's."""
    parser = trainer_parser()
    args = parser.parse_args(["--exercise", "conv_backward", "--model", "cnn"])
    assert args.metrics.name == "numpy_cnn_exercise_conv_backward_metrics.json"
    assert args.weights.name == "numpy_cnn_exercise_conv_backward_model.npz"
    assert parser.parse_args([]).metrics.name == "numpy_metrics.json"
