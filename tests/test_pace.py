"""harness/pace.py: the one line, early in epoch 1, that says how long the whole run will take.
On a made-up clock, the estimate is the arithmetic its docstring states; both trainers print
it once, before epoch 1's line."""
import re

import pytest

from conftest import run_trainer_main
from harness.pace import FORWARD_SHARE, PACE_SECONDS, PACE_STEPS, Pace, about

DEFAULT = {"steps_per_epoch": 469, "epochs": 10, "batch_size": 128, "evaluated": 70_000}   # the default run's


def lines(pace, times):
    """Feed the pace the time at the end of steps 1, 2, ...; [(step, line)] for each line it said."""
    said = [(step, pace.step_done(step, now)) for step, now in enumerate(times, start=1)]
    return [(step, line) for step, line in said if line is not None]


def steps_of(seconds, n, first=0.0, start=100.0):
    """The clock at the end of n steps: step 1 took `first` (one-off costs), every other `seconds`."""
    return [start + first + i * seconds for i in range(n)]


def test_slow_steps_are_timed_for_three_seconds():
    """Steps of 31.25 ms: after step 1, PACE_SECONDS (3 s) of them, steps 2-97, give the pace; the
    run is 10 x (469 steps x 31.25 ms + 70,000 images evaluated at a third of a step's 31.25/128
    ms per image) = 10 x (14.656 + 5.697) s = 203.5 s, shown as about 3.5 min."""
    assert (PACE_SECONDS, FORWARD_SHARE) == (3.0, 1 / 3)
    pace = Pace(**DEFAULT)
    assert lines(pace, steps_of(0.03125, 200, first=3.0)) == [
        (97, "pace: 31 ms a step (steps 2-97): the 10 epochs take about 3.5 min, evaluations included")]
    assert pace.seconds == pytest.approx(10 * (469 * 0.03125 + 0.03125 / 128 / 3 * 70_000))
    assert pace.seconds == pytest.approx(203.53, abs=0.01)


def test_fast_steps_are_timed_for_a_hundred_steps():
    """Steps of 1.5 ms reach PACE_STEPS (100) long before 3 s: steps 2-101; 10 x (469 x 1.5 ms +
    70,000 x 1.5/128/3 ms) = 9.78 s, about 10 s."""
    assert PACE_STEPS == 100
    pace = Pace(**DEFAULT)
    assert lines(pace, steps_of(0.0015, 300)) == [
        (101, "pace: 1.5 ms a step (steps 2-101): the 10 epochs take about 10 s, evaluations included")]
    assert pace.seconds == pytest.approx(10 * (469 * 0.0015 + 0.0015 / 128 / 3 * 70_000))


def test_step_one_is_left_out():
    """A first step of 30 s (torch setting itself up, say) does not count: the pace is the later
    steps' 0.34 s, as the plain CNN's steps on 2 cores, timed over steps 2-10 (3.06 s); 5 epochs
    of 469 steps and evaluations: 5 x (159.46 + 61.98) s = 1107 s, about 18 min."""
    pace = Pace(**{**DEFAULT, "epochs": 5})
    [(step, line)] = lines(pace, steps_of(0.34, 20, first=30.0))
    assert step == 10 and line == "pace: 340 ms a step (steps 2-10): the 5 epochs take about 18 min, evaluations included"


def test_an_epoch_shorter_than_the_timing_is_timed_to_its_end():
    """Five steps an epoch: the estimate comes at epoch 1's last step, from steps 2-5; a run of
    one such epoch is all but over there, and gets no line."""
    assert lines(Pace(5, 3, 128, 1000), steps_of(0.01, 15)) == [
        (5, "pace: 10 ms a step (steps 2-5): the 3 epochs take about 1 s, evaluations included")]
    assert lines(Pace(5, 1, 128, 1000), steps_of(0.01, 5)) == []
    assert lines(Pace(1, 4, 128, 1000), steps_of(0.01, 4)) == []          # no second step in epoch 1


@pytest.mark.parametrize("seconds, shown", [(0.3, "1 s"), (8.4, "8 s"), (9.6, "10 s"), (44, "45 s"), (57, "55 s"),
                                            (58, "1 min"), (100, "1.5 min"), (589, "10 min"), (800, "13 min"),
                                            (3600, "1.0 h"), (5000, "1.4 h")])
def test_durations_read_as_a_learner_reads_them(seconds, shown):
    assert about(seconds) == shown


PACE_LINE = r"pace: [\d.]+ m?s a step \(steps 2-\d+\): the 3 epochs take about [\d.]+ (s|min|h), evaluations included"


@pytest.mark.parametrize("framework", ["numpy", "pytorch"])
def test_both_trainers_print_the_pace_once_before_epoch_one(framework, tmp_path):
    """The line is the harness's, so both twins print it: once, after the data is loaded and
    before epoch 1's line (20 steps an epoch: it comes by step 20 at the latest). (Each trainer's
    main(argv) in this process, conftest.run_trainer_main.)"""
    done = run_trainer_main(framework, "--limit", "2560", "--epochs", "3", "--no-progress", "--no-diagnostics",
                            "--metrics", tmp_path / "m.json",
                            "--weights", tmp_path / ("w.npz" if framework == "numpy" else "w.pt"))
    assert done.returncode == 0, done.stderr
    out = done.stdout.splitlines()
    paces = [i for i, line in enumerate(out) if line.startswith("pace: ")]
    assert len(paces) == 1 and re.fullmatch(PACE_LINE, out[paces[0]]), out
    assert out[paces[0] + 1].startswith("epoch  1 |"), out
    assert int(re.search(r"steps 2-(\d+)", out[paces[0]]).group(1)) <= 20
