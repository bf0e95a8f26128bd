"""The page's training flags, typed as the trainers' own parser types them, for demo/training.py.

A request to start a run sends JSON: {"framework": "both", "lr": 0.003, "hidden": [128, 64], ...}.
Each value becomes words of a trainer's command line only once it has the type the trainer's
parser gives its flag (trainer_argv): no string but a choice's reaches the command line, so no
value can be read as another flag. Then the trainer's own parser checks the whole command line
here, in the server, before anything starts (check_flags): a bad value is a 400 with the flag's
own message, named as the request named it.
"""
import argparse
import json

from harness.flags import build_parser

# The trainers' flags the page may set; the server chooses where the files go (--metrics,
# --weights: under --train-dir) and what data (MNIST, whose cache is read, never written here)
FLAGS = ("model", "lr", "optimizer", "schedule", "batch-size", "activation", "weight-init",
         "hidden", "dropout", "weight-decay", "epochs", "limit", "dtype", "seed", "layers",
         "diagnostics-every", "augment")
# Each of FLAGS as the trainers' parser defines it (the same in both): its type, nargs, choices
ACTIONS = {option[2:]: action for action in build_parser("numpy", "")._actions
           for option in action.option_strings if option[2:] in FLAGS}


class Refused(Exception):
    """A request the trainings refuse: an HTTP status and a one-line reason."""

    def __init__(self, status, reason):
        super().__init__(reason)
        self.status = status


def _flag_parser(framework, keys=()):
    """The trainer's own parser, whose errors are a Refused (400) instead of an exit, each
    naming the flag as the request's key spells it (keys: "batch_size", or "batch-size")."""
    parser = build_parser(framework, "")

    def refuse(message):
        raise Refused(400, _as_sent(message, keys))
    parser.error = refuse
    return parser


def _as_sent(message, keys):
    """argparse's 'argument --batch-size: must be positive' as 'batch_size: must be positive'
    where the request said batch_size: the learner sent a JSON key, not a command line."""
    for key in keys:
        prefix = f"argument --{key.replace('_', '-')}: "
        if message.startswith(prefix):
            return f"{key}: {message[len(prefix):]}"
    return message


def _text(value):
    return repr(value) if isinstance(value, float) else str(value)


def _words(key, value):
    """One flag's JSON value as the words of its trainer's command line, typed as the trainer's
    parser types it (ACTIONS): a switch takes true or false, a choice one of its strings, a
    number a JSON number that the flag's own type takes, a list of numbers (--hidden) a list
    of them. Anything else is refused here: no string but a choice's reaches the command
    line, so no word of it can start with "-" and be read as another flag (or --help)."""
    action, flag = ACTIONS[key.replace("_", "-")], "--" + key.replace("_", "-")
    if action.nargs == 0:                      # a switch: --augment
        if not isinstance(value, bool):        # (argparse would say "ignored explicit argument")
            raise Refused(400, f"{key}: give true or false, not {json.dumps(value)}")
        return [flag] if value else []
    if action.choices is not None:
        if not (isinstance(value, str) and value in action.choices):
            raise Refused(400, f"{key}: give one of {', '.join(map(json.dumps, action.choices))}, "
                               f"not {json.dumps(value)}")
        return [f"{flag}={value}"]
    if action.nargs == "+":                    # --hidden 128 64
        if not (isinstance(value, list) and value):
            raise Refused(400, f"{key}: give a list of numbers, e.g. [128, 64], not {json.dumps(value)}")
        values = value
    else:
        values = [value]
    for v in values:
        if type(v) not in (int, float):        # not a string, and not true: bool is an int to Python
            raise Refused(400, f"{key}: give a number, not {json.dumps(v)}")
        try:
            action.type(_text(v))              # the trainer's own check: "must be positive, got -1"
        except argparse.ArgumentTypeError as e:
            raise Refused(400, f"{key}: {e}") from None
    if action.nargs == "+":                    # words of their own: none may look like a flag
        words = [_text(v) for v in values]     # (--hidden's sizes are positive: none does)
        if any(word.startswith("-") for word in words):
            raise Refused(400, f"{key}: give numbers that are not negative, not {json.dumps(value)}")
        return [flag, *words]
    return [f"{flag}={_text(value)}"]          # one word: a value "-1" is not read as a flag


def trainer_argv(flags):
    """The page's flags, {"lr": 0.003, "hidden": [128, 64], "augment": true, ...}, as a trainer's
    command line. Keys as on the command line, with - or _, each flag once; a value of null
    leaves the flag out (its default); any other value must have the flag's type (_words)."""
    argv, seen = [], {}
    for key, value in flags.items():
        name = key.replace("_", "-")
        if name not in FLAGS:
            raise Refused(400, f"{key} is not one the page sets; it sets framework, {', '.join(FLAGS)}")
        if name in seen:
            raise Refused(400, f"{seen[name]} and {key} are the same flag: give it once")
        seen[name] = key
        if value is not None or ACTIONS[name].nargs == 0:   # a switch is true or false, never null
            argv += _words(key, value)
    return argv


def check_flags(frameworks, argv, keys=()):
    """Parse argv as each trainer would, so a bad value is refused now with the flag's own
    message, named by its key in keys (the request's); returns the parsed flags."""
    for framework in frameworks:
        args = _flag_parser(framework, keys).parse_args(argv)
    return args


def learning_rate(value):
    """A rate change's {"lr": value}, typed and checked as the trainers' --lr is."""
    return _flag_parser("numpy", ["lr"]).parse_args(_words("lr", value)).lr
