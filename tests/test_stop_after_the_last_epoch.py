"""A stop (Ctrl-C, SIGTERM, the page's Stop) that comes once the last epoch has trained: during
its evaluation, or while the files are written. Every epoch finished and the weights kept are
the last epoch's, so the record says "completed": nothing was cut. The process still exits
with the signal's code (130), as after any stop, once its files are safely written."""
import importlib
import json
import os
import signal

import pytest

from harness import experiment
from harness.metrics_file import file_sha256, load_metrics

SUFFIX = {"numpy": ".npz", "pytorch": ".pt"}


@pytest.fixture
def trainer_signals():
    """The trainer's command takes over SIGINT and SIGTERM and leaves them ignored after its
    save (harness/experiment.py Stopping.end): given back here, with a fresh Stopping."""
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    yield
    for signum, handler in handlers.items():
        signal.signal(signum, handler)
    experiment.stopping.__init__()


def train_with_a_stop(tmp_path, monkeypatch, framework, where):
    """Train 2 epochs of 200 images in this process, sending this process SIGINT where says:
    "evaluation" (while the last epoch's test set is evaluated) or "save" (just before the
    files are written). Returns the exit code and the metrics file."""
    trainer = importlib.import_module(f"{framework}_nn.train")
    metrics, weights = tmp_path / "m.json", tmp_path / f"w{SUFFIX[framework]}"
    calls = []
    if where == "evaluation":
        evaluate = trainer.evaluate

        def evaluating(model, x, y):
            calls.append(len(x))
            if len(calls) == 4:                   # epoch 2: the training set, then the test set
                os.kill(os.getpid(), signal.SIGINT)
            return evaluate(model, x, y)
        monkeypatch.setattr(trainer, "evaluate", evaluating)
    else:
        write_pair = experiment.write_pair

        def writing(files):
            os.kill(os.getpid(), signal.SIGINT)
            return write_pair(files)
        monkeypatch.setattr(experiment, "write_pair", writing)
    with pytest.raises(SystemExit) as stop:
        trainer.main(["--limit", "200", "--epochs", "2", "--no-progress",
                      "--metrics", str(metrics), "--weights", str(weights)])
    assert where == "save" or len(calls) == 4
    return stop.value.code, metrics, weights


@pytest.mark.parametrize("framework", ["numpy", "pytorch"])
@pytest.mark.parametrize("where", ["evaluation", "save"])
def test_a_stop_after_the_last_epoch_trained_records_a_completed_run(tmp_path, monkeypatch, capsys,
                                                                     trainer_signals, framework, where):
    code, metrics, weights = train_with_a_stop(tmp_path, monkeypatch, framework, where)
    assert code == 130                            # the stop was asked for: the shell's code for it
    record = load_metrics(metrics)
    assert record["status"] == "completed"
    assert [epoch["epoch"] for epoch in record["epochs"]] == [1, 2]
    assert record["weights_sha256"] == file_sha256(weights)
    out = capsys.readouterr().out
    assert "interrupted" not in out
    assert out.strip().splitlines()[-1] == f"metrics -> {metrics}, weights -> {weights}"
    assert json.loads(metrics.read_text())["final_test_acc"] == record["epochs"][-1]["test_acc"]
