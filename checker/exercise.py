"""Grade a learner's exercise (exercises/): put their function in the project's place and
run the same checks, with a check of the function alone first where one helps. And the NumPy
trainer's --exercise, which runs those checks before it trains with the learner's function.

    check_exercise(name, x, y, say, check_network)     # python check.py --exercise NAME
    exercise_flags(parser); use_exercise(parser, args)  # python numpy_nn/train.py --exercise NAME

The learner's function always runs guarded (checker/guard.py): a time limit on every call, and
its sys.exit() or KeyboardInterrupt its own failure. torch (the answer key's) is imported only
when a check runs, so the trainer's --help needs none.
"""
import re
import sys

import exercises
from checker import guard
from harness.flags import MLP_HIDDEN


def _units():
    from checker import units
    return units


UNIT_CHECKS = {  # exercise -> the check of the function alone, given the learner's function
    "conv_backward": lambda say, function: _units().conv_backward(say, function),
    "maxpool_backward": lambda say, function: _units().maxpool_backward(say, function),
    "adam_step": lambda say, function: _units().adam(say),  # Adam.step is already the learner's
    "batchnorm_backward": lambda say, function: _units().batchnorm_backward(say, function),
}


def check_exercise(name, x, y, say, check_network, folder=None):
    """Check exercises/NAME.py (or the one in folder): True when everything holds."""
    exercise = exercises.EXERCISES[name]
    say(f"Checking your {exercise.file.name if folder else exercise.path}: {exercise.goal}")
    try:
        blanks = exercises.blanks(name, folder)
    except exercises.ExerciseError as error:       # not there, not UTF-8 text
        say(str(error))
        return False
    if blanks:
        lines = ", ".join(str(n) for n, _ in blanks)
        say(f"{len(blanks)} blank{'s' if len(blanks) > 1 else ''} still to fill (`{exercises.MARKER}`), "
            f"line{'s' if len(blanks) > 1 else ''} {lines}: the checks stop where your code first uses one.")
    say("")
    said = []
    ok = _checks(name, x, y, lambda line: (said.append(line), say(line)), check_network, folder)
    say("")
    if blanks:
        number, text = blanks[0]
        say(f"Fill in the blanks, from line {number} on: {text.strip()}")
    elif ok:
        say(f"Your {name} passes. Train with it: {exercise.train_command}")
    else:
        stopped = any(" stopped with " in line for line in said)
        say("Your code stopped with an error: fix the line named above first, then check again."
            if stopped else "Something is wrong: read the lines marked wrong above, from the top.")
    return ok and not blanks


def _checks(name, x, y, say, check_network, folder):
    try:
        function = guard.loading(name, folder)
    except exercises.ExerciseError as error:
        say(str(error))
        return False
    yours = guard.guarded(name, function)
    with exercises.installed(name, yours):
        unit = UNIT_CHECKS.get(name)
        if unit:
            if not unit(say, yours):
                say("\nYour function alone is not right yet: fix that first (the network's checks would only repeat it).")
                return False
            say("")
        return check_network(x, y, say)


# ----------------------------------------------------------------------------- the trainer's hook

def exercise_flags(parser):
    """The NumPy trainer's flags for a learner's function (run_trainer adds them)."""
    parser.add_argument("--exercise", choices=list(exercises.EXERCISES), default=None,
                        help="train with your version of a function from exercises/: the checks of "
                             "python check.py --exercise NAME run first, and a function that fails them "
                             "is refused; recorded")
    parser.add_argument("--exercise-unchecked", action="store_const", const=True, default=None,
                        help="with --exercise: train with your function without checking it first (its "
                             "numbers then mean nothing until the check passes); recorded")


def check_command(name, args):
    """The check.py command that checks exercise name on this run's kind of network: the
    model, and the MLP's activation and normalisation (its hidden sizes and seed are check.py's
    defaults; an exercise that needs --norm batch is checked with it anyway)."""
    flags = ""
    if args.model != (exercises.EXERCISES[name].model or "mlp"):
        flags += f" --model {args.model}"
    if args.model == "mlp" and args.activation != "relu":
        flags += f" --activation {args.activation}"
    if args.model == "mlp" and args.norm != "none" and "norm" not in exercises.EXERCISES[name].needs:
        flags += f" --norm {args.norm}"
    return f"python check.py --exercise {name}{flags}"


def first_problem(lines):
    """The first thing a check's lines mark as not right, in a few words: the first wrong
    gradient it names, labels changed in place, a call that stopped or returned the wrong
    thing, or the first row of a table whose status is not ok."""
    for line in lines:
        text = line.strip()
        if re.match(r"  y \s*\S+\s+changed\s", line):
            return "it changes y, the labels it is given, in place"
        if text.startswith("First wrong:"):
            return "f" + text.split(".")[0][1:]     # its name as printed: dW, not dw
        if any(words in line for words in (" stopped with ", " returned ", " should return ")):
            return text
    for line in lines:
        row = re.match(r"  (\S+) .*?\s(wrong|shape|type|missing|blank|not run|changed)(\s|$)", line)
        if row and row.group(1) != "->":
            return f"{row.group(1)} is {row.group(2)}"
    return "it does not pass"


def use_exercise(parser, args):
    """The NumPy trainer's check hook (harness/session.py run_trainer): with --exercise NAME,
    refuse (one line, exit 2) an exercise with blanks left, one that does not import, flags it
    cannot train with, or, unless --exercise-unchecked, one that fails check.py's checks; then
    install the learner's function, guarded, for this run. The CNN exercises replace a name in
    numpy_nn/cnn.py, the plain CNN, so they train with --layers plain."""
    name, flag = args.exercise, "argument --exercise"
    if name is None:
        if args.exercise_unchecked:
            parser.error("argument --exercise-unchecked: goes with --exercise NAME")
        return
    exercise = exercises.EXERCISES[name]
    try:
        left = exercises.blanks(name)
    except exercises.ExerciseError as e:
        parser.error(f"{flag}: {e}")
    if left:
        lines = ", ".join(str(number) for number, _ in left)
        parser.error(f"{flag}: {exercise.path} still has {len(left)} blank{'s' if len(left) > 1 else ''} "
                     f"(line{'s' if len(left) > 1 else ''} {lines}): fill them, then run "
                     f"python check.py --exercise {name}")
    needs = {**({"model": exercise.model} if exercise.model else {}), **exercise.needs}
    for option, value in needs.items():
        if getattr(args, option) != value:
            parser.error(f"{flag}: {name} trains with --{option} {value}, got --{option} {getattr(args, option)}")
    if exercise.model == "cnn":
        if getattr(parser, "layers_given", False) and args.layers == "fast":
            parser.error(f"{flag}: {name} replaces a layer of the plain CNN (numpy_nn/cnn.py); "
                         f"fast_layers.py does not use it: drop --layers fast")
        args.layers = "plain"
    try:
        function = guard.loading(name)
    except exercises.ExerciseError as e:
        parser.error(f"{flag}: {e}")
    if not args.exercise_unchecked:
        _check_first(parser, args, name)
    exercises.install(name, guard.guarded(name, function, train=True))
    print(f"exercise: {name}, your {exercise.path} in place of the project's {exercise.solution} "
          f"(this run's files: {args.metrics.name}, {args.weights.name})", flush=True)
    if args.exercise_unchecked:
        print(f"warning: --exercise-unchecked: your {exercise.path} was NOT checked; this run's numbers "
              f"mean nothing until `{check_command(name, args)}` passes", file=sys.stderr, flush=True)


def _check_first(parser, args, name):
    """check.py's checks of exercise name (check_command's), on this run's data, before
    training: silent when it passes, one line when it does not."""
    import numpy as np

    from checker.network import BATCH, check_all, maker
    from data_loader import DataError, load_mnist
    command = check_command(name, args)
    print(f"checking your {exercises.EXERCISES[name].path} first, as `{command}` does ...", flush=True)
    make = maker(args.model, MLP_HIDDEN, args.activation, 0, args.norm)   # check.py's network (check_command)
    lines = []
    try:
        with guard.ctrl_c_stops_the_check():
            x_train, y_train, _, _ = load_mnist(args.dataset, args.data_dir)
            x, y = x_train[:BATCH].astype(np.float64), y_train[:BATCH]
            ok = check_exercise(name, x, y, lines.append, lambda x, y, say: check_all(make, x, y, say))
    except DataError as e:
        sys.exit(f"error: {e}")
    except guard.Interrupted:
        print("interrupted while checking your exercise: nothing written", file=sys.stderr)
        sys.exit(130)
    except guard.Overran as e:
        sys.exit(f"error: {e}")
    if not ok:
        parser.error(f"argument --exercise: your {exercises.EXERCISES[name].path} does not pass its checks "
                     f"({first_problem(lines)}): `{command}` shows why (--exercise-unchecked trains with it anyway)")
