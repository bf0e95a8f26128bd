"""How long a run will take, said once, early: a learner should know within seconds whether a
run is going to take a minute or an hour.

    pace: 25 ms a step (steps 2-101): the 5 epochs take about 1.5 min, evaluations included

Pace times the first steps of epoch 1, leaving out step 1 (its products run for the first
time, and a PyTorch run sets itself up), until PACE_SECONDS have passed or PACE_STEPS steps
are done, whichever comes first; then the whole run is that pace times its steps, plus an
evaluation after each epoch. Evaluating is a forward pass over the training and the test
set, and a forward pass is about a third of a training step's work per image (the backward
pass costs about twice the forward, in products of the same sizes).

How it compares with whole runs (2-core Intel Xeon, shared): docs/results.md, "How long things
take".
"""
PACE_SECONDS = 3.0     # time the steps after step 1 for this long ...
PACE_STEPS = 100       # ... or this many steps, whichever comes first
FORWARD_SHARE = 1 / 3  # an image evaluated costs this share of an image trained on


def about(seconds):
    """A duration as a learner reads it: "8 s", "45 s", "2.5 min", "13 min", "1.4 h"."""
    if seconds < 10:
        return f"{max(1, round(seconds))} s"
    if seconds < 57.5:
        return f"{5 * round(seconds / 5)} s"
    minutes = seconds / 60
    if minutes < 9.75:
        return f"{max(1, round(2 * minutes) / 2):g} min"
    if minutes < 59.5:
        return f"{round(minutes)} min"
    return f"{seconds / 3600:.1f} h"


class Pace:
    """The estimate of one run. steps_per_epoch, epochs, batch_size: the run's; evaluated: the
    images evaluated after each epoch (the training and the test set)."""

    def __init__(self, steps_per_epoch, epochs, batch_size, evaluated):
        self.steps_per_epoch, self.epochs = steps_per_epoch, epochs
        self.batch_size, self.evaluated = batch_size, evaluated
        self.first = None          # the time step 1 ended
        self.seconds = None        # the estimate of the whole run, once made
        self.about = None          # the estimate as a learner reads it ("2.5 min")
        self.line = None           # and the line that says it
        self.over = False          # nothing more to time: the estimate made, or no use for one

    def step_done(self, step, now):
        """After step `step` of the run, at time `now` (seconds, on a clock that only moves
        forward): the estimate's line when it is made, else None."""
        if self.over:
            return None
        if step == 1:
            self.first = now
            self.over = self.steps_per_epoch == 1      # no second step in epoch 1 to time
            return None
        timed, elapsed = step - 1, now - self.first
        last = step == self.steps_per_epoch             # epoch 1's last step: an estimate now or never
        if elapsed < PACE_SECONDS and timed < PACE_STEPS and not last:
            return None
        self.over = True
        if last and self.epochs == 1:                   # the run is all but over: nothing to foretell
            return None
        per_step = elapsed / timed
        evaluation = FORWARD_SHARE * per_step / self.batch_size * self.evaluated
        self.seconds = self.epochs * (self.steps_per_epoch * per_step + evaluation)
        self.about = about(self.seconds)
        run = "the epoch takes" if self.epochs == 1 else f"the {self.epochs} epochs take"
        self.line = (f"pace: {_per_step(per_step)} a step (steps 2-{step}): {run} about "
                     f"{self.about}, evaluations included")
        return self.line


def _per_step(seconds):
    """1.5 ms, 25 ms, 340 ms, 1.2 s"""
    ms = 1000 * seconds
    return f"{ms:.1f} ms" if ms < 10 else f"{ms:.0f} ms" if ms < 999.5 else f"{seconds:.1f} s"
