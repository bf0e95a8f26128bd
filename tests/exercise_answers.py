"""The answer key of exercises/: for each exercise, the expression of each blank, in the
order the blanks appear, each the project's own computation (tests/test_exercises.py fills
a copy of the file with them; the files themselves are never committed filled)."""
import shutil

from exercises import EXERCISES, MARKER

ANSWERS = {
    "mlp_backward": [
        "h_prev.T @ dz",
        "dz.sum(axis=0)",
        "dz @ W.T",
        'dh * self.f_grad(cache[f"a{i - 1}"])',
    ],
    "softmax_cross_entropy": [
        "logits - logits.max(axis=1, keepdims=True)",
        "shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))",
        "-logp[np.arange(n), y].mean()",
        "np.exp(logp)",
        "1",
        "n",
    ],
    "conv_backward": [
        "cols.T @ dout",
        "dWm.T.reshape(W.shape)",
        "dout.sum(axis=0)",
        "dout @ Wm.T",
        "col2im(dcols, x_shape, kh, kw)",
    ],
    "maxpool_backward": [
        "np.arange(4) == first[..., None]",
        "mask * dout[..., None]",
        "np.zeros(x_shape, dout.dtype)",
        "dwindows.reshape(N, C, 2 * Ho, 2 * Wo)",
    ],
    "batchnorm_backward": [
        "dy.sum(axis=0)",
        "(dy * zhat).sum(axis=0)",
        "dy * gamma",
        "(dzhat - dzhat.mean(axis=0) - zhat * (dzhat * zhat).mean(axis=0)) / std",
    ],
    "adam_step": [
        "(1 - b1) * g",
        "(1 - b2) * g * g",
        "self.lr / (1 - b1 ** self.t)",
        "np.sqrt(v) / math.sqrt(1 - b2 ** self.t) + self.eps",
        "step_size * m / denom",
    ],
}


def filled(name, answers=None):
    """Exercise name's file with each blank holding its answer (the blank's comment kept)."""
    answers = ANSWERS[name] if answers is None else answers
    text = EXERCISES[name].file.read_text(encoding="utf-8")
    assert text.count(MARKER) == len(answers), (
        f"exercises/{name}.py has {text.count(MARKER)} blanks (`...  # TODO`) where the committed file has "
        f"{len(answers)}: these tests fill the blanks themselves, so they need the exercises as committed. "
        f"Yours hold your answers? `git stash` them before the tests and `git stash pop` after")
    for answer in answers:
        text = text.replace(MARKER, f"{answer}  #", 1)
    return text


def edited(folder, name, old, new):
    """Exercise name filled with its solution, then the text old (once in it) made new, in folder:
    a learner's slip planted in a working answer; returns folder."""
    text = filled(name)
    assert text.count(old) == 1, (name, old)
    (folder / f"{name}.py").write_text(text.replace(old, new), encoding="utf-8")
    return folder


def fill_into(folder, names=None):
    """Copies of the exercise files in folder, each filled with its solution; returns folder."""
    for name in names or EXERCISES:
        (folder / f"{name}.py").write_text(filled(name), encoding="utf-8")
    return folder


def blank_copy(folder, name):
    """An unfilled copy of exercise name's file in folder."""
    shutil.copy(EXERCISES[name].file, folder / f"{name}.py")
    return folder


__all__ = ["ANSWERS", "filled", "edited", "fill_into", "blank_copy"]
