"""Grade a learner's exercise (exercises/): put their function in the project's place and
run the same checks, with a check of the function alone first where one helps."""
import exercises
from checker import units

UNIT_CHECKS = {  # exercise -> the check of the function alone, given the learner's function
    "conv_backward": lambda say, function: units.conv_backward(say, function),
    "maxpool_backward": lambda say, function: units.maxpool_backward(say, function),
    "adam_step": lambda say, function: units.adam(say),  # Adam.step is already the learner's
}


def check_exercise(name, x, y, say, check_network, folder=None):
    """Check exercises/NAME.py (or the one in folder): True when everything holds."""
    exercise = exercises.EXERCISES[name]
    blanks = exercises.blanks(name, folder)
    say(f"Checking your {exercise.file.name if folder else exercise.path}: {exercise.goal}")
    if blanks:
        lines = ", ".join(str(n) for n, _ in blanks)
        say(f"{len(blanks)} blank{'s' if len(blanks) > 1 else ''} still to fill (`{exercises.MARKER}`), "
            f"line{'s' if len(blanks) > 1 else ''} {lines}: the checks stop where your code first uses one.")
    say("")
    ok = _checks(name, x, y, say, check_network, folder)
    say("")
    if blanks:
        number, text = blanks[0]
        say(f"Fill in the blanks, from line {number} on: {text.strip()}")
    elif ok:
        say(f"Your {name} passes. Train with it: {exercise.train_command}")
    else:
        say("Something is wrong: read the lines marked wrong above, from the top.")
    return ok and not blanks


def _checks(name, x, y, say, check_network, folder):
    try:
        function = exercises.load(name, folder)
    except exercises.ExerciseError as error:
        say(str(error))
        return False
    with exercises.installed(name, function):
        unit = UNIT_CHECKS.get(name)
        if unit:
            if not unit(say, function):
                say("\nYour function alone is not right yet: fix that first (the network's checks would only repeat it).")
                return False
            say("")
        return check_network(x, y, say)
