"""Regenerate the reference results that README.md, docs/ and ANALYSIS.md cite, in results/reference/.

    python perf/reference_results.py              # everything (batchnorm alone: 35 min on a shared 2-core Xeon)
    python perf/reference_results.py --only runs  # one part: runs, compare, experiments, cnn, mistakes,
                                                  # threads, benchmark, learning, compile, sweep, augment, batchnorm

A learner's own runs go to results/ (git-ignored) and never touch these files. Each part runs
the repo's own commands, exactly as a reader would type them, with --metrics, --weights and
--out-dir pointing here:

    runs         the two default runs (float32), and the same pair in float64
    compare      python compare.py on the default pair: table, curves, confusion matrices, ...
    experiments  seeds 1-4, plain SGD, overfitting (30 epochs; dropout; L2), --init torch
    cnn          --model cnn in both twins, seeds 0-2, compared with the MLP; cnn/summary.json
                 holds each run's time to 99.0% test accuracy, start-up included
    mistakes     the test images the CNN gets right and the MLP wrong, and the reverse
    threads      two trainers started at once, with and without the thread policy (threads.json)
    benchmark    python perf/benchmark.py, for the MLP and for the CNN
    compile      PyTorch on the CPU, eager against torch.compile (--mode compile)
    learning     five runs that show how gradients guide learning (ReLU + He, sigmoid, small
                 initialisation, too large a learning rate, and one so large it collapses), their pictures, the numbers the docs
                 cite (learning/summary.json), and what recording the diagnostics costs
                 (learning/overhead.json)
    augment      each model without and with --augment, both twins (the CNN at seeds 0-2): test
                 accuracy, accuracy on perturbed and drawn digits, epochs to 99%, cost per epoch
                 (augment/summary.md)
    sweep        python sweep.py's default grid (the MLP in NumPy, SGD and Adam, 6 rates x 3 batch
                 sizes) and its range test, in sweep/: records, pictures, table (the cells' weights
                 and outputs are not committed: .gitignore)
    batchnorm    Ioffe & Szegedy's MNIST experiment (2015, section 4.1, figure 1) in both twins,
                 without and with --norm batch, seeds 0-2, after a short search for its learning
                 rate; and the depth lesson, a 10-layer MLP, sigmoid and ReLU, without and with
                 --norm batch; their pictures and batchnorm/summary.md (35 min on a shared 2-core
                 Intel Xeon)

Timing is only as good as the machine is quiet. A run whose epochs (after the first, which
carries one-off start-up costs) differ by more than MAX_SPREAD from fastest to slowest did not
get the machine to itself; it is run again, up to ATTEMPTS times, and if none is steady the
script stops rather than commit a misleading timing panel.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the repo
sys.path.insert(0, str(ROOT))  # the repo's modules
from harness.metrics_file import median_epoch_seconds, steady_epoch_seconds  # noqa: E402

REFERENCE = ROOT / "results" / "reference"
EXPERIMENTS = REFERENCE / "experiments"
LEARNING = REFERENCE / "learning"
MAX_SPREAD = 1.3   # slowest / fastest epoch (after epoch 1) that a reference run may show
ATTEMPTS = 4
SUFFIX = {"numpy": ".npz", "pytorch": ".pt"}


def run(*command):
    """Run one of the repo's commands from the repo root; stop everything if it fails."""
    print("$", " ".join(str(part) for part in command), flush=True)
    done = subprocess.run([sys.executable, *map(str, command)], cwd=ROOT)
    if done.returncode != 0:
        sys.exit(f"error: {' '.join(map(str, command))} failed with exit status {done.returncode}")


def spread(metrics_path):
    """Slowest over fastest epoch time, leaving out epoch 1 (steady_epoch_seconds)."""
    steady = steady_epoch_seconds(json.loads(Path(metrics_path).read_text()))
    return max(steady) / min(steady)


def train(framework, name, *flags, folder=REFERENCE, keep_weights=True, steady=False):
    """One training run into folder/<name>_metrics.json, its weights beside it (or, with
    keep_weights=False, in the git-ignored results/tmp/). With steady=True its epoch times
    must agree within MAX_SPREAD: a noisy run is run again, up to ATTEMPTS times."""
    metrics = folder / f"{name}_metrics.json"
    weights = (folder if keep_weights else ROOT / "results" / "tmp") / f"{name}_model{SUFFIX[framework]}"
    for attempt in range(1, (ATTEMPTS if steady else 1) + 1):
        run(f"{framework}_nn/train.py", "--no-progress", *flags, "--metrics", metrics, "--weights", weights)
        s = spread(metrics)
        if not steady or s <= MAX_SPREAD:
            return metrics
        print(f"{name}: epoch times spread {s:.2f}x (more than {MAX_SPREAD}x): the machine was busy",
              flush=True)
    sys.exit(f"error: {name}: {ATTEMPTS} runs all had noisy epoch times; regenerate on a quieter machine")


def default_runs():
    for framework in ("numpy", "pytorch"):
        train(framework, framework, steady=True)
    twins64 = REFERENCE / "float64"
    for framework in ("numpy", "pytorch"):
        train(framework, framework, "--dtype", "float64", folder=twins64)


def comparisons():
    run("compare.py", "--out-dir", REFERENCE,
        "--runs", REFERENCE / "numpy_metrics.json", REFERENCE / "pytorch_metrics.json")
    run("compare.py", "--no-inside", "--out-dir", REFERENCE / "float64",
        "--runs", REFERENCE / "float64" / "numpy_metrics.json", REFERENCE / "float64" / "pytorch_metrics.json")


def experiments():
    """The runs ANALYSIS.md cites beyond the default pair; only their metrics are kept."""
    def experiment(framework, name, *flags):
        return train(framework, name, *flags, folder=EXPERIMENTS, keep_weights=False)

    seeds = []
    for seed in (1, 2, 3, 4):  # seed to seed: how much the result moves with nothing else
        seeds += [experiment("numpy", f"numpy_seed{seed}", "--seed", seed),
                  experiment("pytorch", f"pytorch_seed{seed}", "--seed", seed)]
    sgd = [experiment(fw, f"{fw}_sgd", "--optimizer", "sgd", "--lr", "0.1", "--schedule", "constant")
           for fw in ("numpy", "pytorch")]  # the classic recipe the brief's numbers suggest
    long = ["--epochs", "30", "--schedule", "constant", "--lr", "1e-3"]  # overfitting
    overfitting = [experiment("numpy", "numpy_long", *long),
                   experiment("numpy", "numpy_long_dropout", *long, "--dropout", "0.2"),
                   experiment("numpy", "numpy_long_l2", *long, "--weight-decay", "1e-4")]
    experiment("pytorch", "pytorch_init_torch", "--init", "torch")
    for folder, runs in (("seeds", [REFERENCE / "numpy_metrics.json", REFERENCE / "pytorch_metrics.json",
                                    *seeds]),
                         ("sgd", sgd), ("overfitting", overfitting)):
        run("compare.py", "--no-inside", "--out-dir", EXPERIMENTS / folder, "--runs", *runs)


def cnn():
    """The CNN's default runs in both twins, seeds 0-2 (cnn/summary.json gives each run and
    their medians), and the CNN against the MLP."""
    folder = REFERENCE / "cnn"
    for seed in (0, 1, 2):
        for framework in ("numpy", "pytorch"):
            train(framework, f"{framework}_seed{seed}", "--model", "cnn", "--seed", seed,
                  folder=folder, keep_weights=seed == 0, steady=seed == 0)
    run("compare.py", "--out-dir", folder, "--runs", folder / "numpy_seed0_metrics.json",
        folder / "pytorch_seed0_metrics.json", REFERENCE / "numpy_metrics.json")
    run("compare.py", "--no-inside", "--out-dir", folder / "seeds",
        "--runs", *sorted(folder.glob("*_seed*_metrics.json")))
    summary = cnn_summary(sorted(folder.glob("*_seed*_metrics.json")))
    (folder / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary["median"], indent=2))


AUGMENT = REFERENCE / "augment"


def augment_name(framework, model, augmented, seed):
    return f"{framework}_{model}{'_augment' if augmented else ''}_seed{seed}"


def augment_runs():
    """Each model without and with --augment, in both twins: the MLP at seed 0, the CNN at
    seeds 0-2 (a difference means something only beyond the seed-to-seed spread). All with their
    weights: compare.py's robustness measure reads them."""
    # one BLAS thread per run, as the committed runs had (summary.md says so): the seconds per
    # epoch then mean the same on a busy machine as on an idle one. The trainers inherit it;
    # the benchmark after them gets the machine's own default back
    saved = dict(os.environ)
    os.environ.update(dict.fromkeys(("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"), "1"))
    paths = []
    try:
        for model, seeds in (("mlp", (0,)), ("cnn", (0, 1, 2))):
            for seed in seeds:
                for augmented in (False, True):
                    for framework in ("numpy", "pytorch"):
                        paths.append(train(framework, augment_name(framework, model, augmented, seed),
                                           "--model", model, "--seed", seed,
                                           *(["--augment"] if augmented else []), folder=AUGMENT))
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return paths


def augment():
    """augment/: the runs above, compare.py on the CNN's seed-0 runs (curves, and the
    robustness columns), perf/benchmark.py at batch 128 (what augmenting a batch costs), and
    the table ANALYSIS.md cites (summary.md, summary.json)."""
    from report import augment_table
    paths = augment_runs()
    run("compare.py", "--out-dir", AUGMENT, "--runs",
        *[AUGMENT / f"{augment_name(fw, 'cnn', aug, 0)}_metrics.json" for aug in (False, True) for fw in ("numpy", "pytorch")])
    run("perf/benchmark.py", "--batch-sizes", "128", "--out-dir", AUGMENT)  # its --augment section
    summary = augment_table.summarize(paths, SUFFIX)
    augment_table.write(summary, AUGMENT, "python perf/reference_results.py --only augment")
    print((AUGMENT / "summary.md").read_text())


TARGET_ACC = 0.99  # the CNN's target test accuracy


def time_to_accuracy(record, target=TARGET_ACC):
    """Seconds from the process's start to the end of the first epoch whose test accuracy
    reached target (start-up, training and evaluation all counted); None if no epoch did, or
    if the record predates the epochs' process_seconds."""
    for epoch in record["epochs"]:
        if epoch["test_acc"] >= target:
            return epoch.get("process_seconds")
    return None


def cnn_summary(paths):
    """cnn/summary.json from the CNN runs' metrics files: per run its final test accuracy,
    its training seconds, and the time to TARGET_ACC; per framework their medians."""
    runs = {}
    for path in paths:
        record = json.loads(Path(path).read_text())
        runs[Path(path).name.removesuffix("_metrics.json")] = {
            "framework": record["framework"], "final_test_acc": record["final_test_acc"],
            "total_train_seconds": record["total_train_seconds"],
            f"seconds_to_{TARGET_ACC:.1%}_test_acc": time_to_accuracy(record)}
    median = {}
    for framework in sorted({run["framework"] for run in runs.values()}):
        mine = [run for run in runs.values() if run["framework"] == framework]
        median[framework] = {key: (statistics.median(values) if None not in values else None)
                             for key in mine[0] if key != "framework"
                             for values in [[run[key] for run in mine]]}
    return {"what": f"the CNN's default runs: final test accuracy, training seconds, and seconds from "
                    f"the process's start to the end of the first epoch at {TARGET_ACC:.1%} test accuracy "
                    f"(null: never reached, or a record from before that was kept)",
            "runs": runs, "median": median}


def mistakes():
    """Which test images the CNN gets right that the MLP gets wrong, and the reverse (the two
    NumPy reference runs, seed 0); writes cnn/mistakes_fixed.json."""
    from collections import Counter

    import numpy as np

    from data_loader import load_mnist
    from numpy_nn.cnn import CNN
    from numpy_nn.neural_network import NeuralNetwork
    _, _, x_test, y_test = load_mnist()
    mlp = NeuralNetwork.load(REFERENCE / "numpy_model.npz").predict(x_test)
    cnn_net = CNN.load(REFERENCE / "cnn" / "numpy_seed0_model.npz")
    cnn = np.concatenate([cnn_net.predict(x_test[i:i + 1000]) for i in range(0, len(x_test), 1000)])
    mlp_wrong, cnn_wrong = mlp != y_test, cnn != y_test
    fixed = mlp_wrong & ~cnn_wrong
    record = {"what": "test images by who gets them wrong: the NumPy MLP (results/reference/numpy_model.npz) "
                      "and the NumPy CNN (results/reference/cnn/numpy_seed0_model.npz)",
              "mlp_wrong": int(mlp_wrong.sum()), "cnn_wrong": int(cnn_wrong.sum()),
              "fixed_by_the_cnn": int(fixed.sum()), "new_mistakes_of_the_cnn": int((cnn_wrong & ~mlp_wrong).sum()),
              "wrong_in_both": int((mlp_wrong & cnn_wrong).sum()),
              "fixed_most_often (true digit, the MLP's guess, images)": [
                  [int(t), int(p), n] for (t, p), n in Counter(zip(y_test[fixed], mlp[fixed])).most_common(6)]}
    (REFERENCE / "cnn" / "mistakes_fixed.json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


def threads():
    """Two trainers started at the same moment, as from two terminals, neither knowing of the
    other (the case harness/threads.py's policy is for): each one's seconds and threads per epoch,
    under the policy and with a thread per core in each (the libraries' own default; the policy
    is switched off by setting that count in the environment, which always wins). Also each
    framework alone, and a NumPy run beside a busy loop (a job of another kind holding a core).
    Each case three rounds of `train.py --limit 20000 --epochs 3`; writes threads.json. It took
    16 min on the busy 2-core Xeon of docs/systems.md, mostly the thread-per-core cases."""
    from harness.metrics_file import cpu_model
    cores = str(os.cpu_count())
    every_core = dict.fromkeys(("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"), cores)
    cases = {  # name: (the trainers started at once, a busy loop beside them, a thread per core)
        "numpy alone": (["numpy"], False, False), "pytorch alone": (["pytorch"], False, False),
        "numpy + numpy": (["numpy", "numpy"], False, False),
        "numpy + pytorch": (["numpy", "pytorch"], False, False),
        "numpy beside a busy loop": (["numpy"], True, False),
        "numpy + numpy, a thread per core each": (["numpy", "numpy"], False, True),
        "numpy + pytorch, a thread per core each": (["numpy", "pytorch"], False, True),
        "numpy beside a busy loop, a thread per core": (["numpy"], True, True),
    }
    scratch = ROOT / "results" / "tmp" / "threads"
    scratch.mkdir(parents=True, exist_ok=True)
    clean = {k: v for k, v in os.environ.items() if k not in every_core and k != "GOTO_NUM_THREADS"}
    measured = {case: [] for case in cases}
    for round_ in range(3):
        for case, (frameworks, busy_loop, per_core) in cases.items():
            print(f"$ threads: {case}, round {round_ + 1}", flush=True)
            env = {**clean, **every_core} if per_core else clean
            load = os.getloadavg()[0]  # what else ran: this machine may be shared
            loop = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy_loop else None
            names = [f"{i}_{framework}" for i, framework in enumerate(frameworks)]
            runs = [subprocess.Popen([sys.executable, f"{framework}_nn/train.py", "--no-progress", "--limit", "20000",
                                      "--epochs", "3", "--metrics", scratch / f"{name}.json",
                                      "--weights", scratch / f"{name}{SUFFIX[framework]}"],
                                     cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
                    for framework, name in zip(frameworks, names)]
            codes = [trainer.wait() for trainer in runs]
            if loop:
                loop.kill()
                loop.wait()
            if any(codes):
                sys.exit(f"error: a trainer failed in the threads case {case!r}")
            epochs = [json.loads((scratch / f"{name}.json").read_text())["epochs"] for name in names]
            measured[case].append({"load_average_before": load, "trainers": [
                {"framework": framework, "seconds": [e["epoch_seconds"] for e in run_],
                 "threads": [e["threads"] for e in run_]} for framework, run_ in zip(frameworks, epochs)]})
    record = {"what": "seconds and BLAS threads of each training epoch of `train.py --limit 20000 --epochs 3` "
                      "(batch 128), for trainers started at the same moment, neither knowing of the other: "
                      "under the trainers' thread policy (harness/threads.py) and with a thread per core in "
                      "each; each case three rounds, with the machine's 1-minute load average as it began",
              "cpu": cpu_model(), "cores": os.cpu_count(),
              "cases": {case: {"frameworks": cases[case][0], "busy_loop_beside": cases[case][1],
                               "a_thread_per_core": cases[case][2], "rounds": rounds}
                        for case, rounds in measured.items()}}
    (REFERENCE / "threads.json").write_text(json.dumps(record, indent=2) + "\n")
    for case, rounds in measured.items():
        for i, round_ in enumerate(rounds):
            print(f"{case}, round {i + 1} (load {round_['load_average_before']:.1f}): " + "; ".join(
                f"{t['framework']} {' '.join(f'{s:.2f}' for s in t['seconds'])} s, threads {t['threads']}"
                for t in round_["trainers"]))


def benchmark():
    run("perf/benchmark.py", "--out-dir", REFERENCE)
    run("perf/benchmark.py", "--model", "cnn", "--out-dir", REFERENCE)


def compile_modes():
    """PyTorch on the CPU in its eager loop and under torch.compile (--mode compile), the MLP
    (the default run) and the CNN (3 epochs of 20,000 samples), taking turns, twice each;
    summary.json holds each run's first epoch (compilation included) and the median of the
    others."""
    folder = REFERENCE / "compile"
    cases = {"mlp": [], "cnn": ["--model", "cnn", "--epochs", "3", "--limit", "20000"]}
    summary = {}
    for round_ in (1, 2):
        for model, flags in cases.items():
            for mode in ("eager", "compile"):
                name = f"{model}_{mode}_{round_}"
                metrics = train("pytorch", name, *flags, "--device", "cpu", "--mode", mode, folder=folder,
                                keep_weights=False)
                record = json.loads(metrics.read_text())
                summary[name] = {"model": model, "mode": mode,
                                 "first_epoch_seconds": record["epochs"][0]["epoch_seconds"],
                                 "median_later_epoch_seconds": median_epoch_seconds(record)}
    record = {"what": "PyTorch on the CPU: seconds of the first training epoch (which pays for torch.compile's "
                      "compilation) and the median of the later ones, eager loop against --mode compile",
              "runs": summary}
    (folder / "summary.json").write_text(json.dumps(record, indent=2) + "\n")
    for name, result in summary.items():
        print(f"{name}: first epoch {result['first_epoch_seconds']:.2f} s, later "
              f"{result['median_later_epoch_seconds']:.3f} s")


# ----------------------------------------------------------------------------- learning

LESSONS = {  # name: the one flag that differs from the default run (NumPy MLP)
    "relu_he": [],                          # healthy
    "sigmoid": ["--activation", "sigmoid"],  # the vanishing gradient
    "small_init": ["--weight-init", "small"],  # signals that shrink layer by layer: a slow start
    "large_lr": ["--lr", "0.1"],            # 33x the default: huge updates, dead ReLUs
    "collapse": ["--lr", "10", "--optimizer", "sgd"],  # every ReLU dead: one digit for every image
}


def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def lesson_numbers(record):
    """What the docs cite from one run's record: its accuracy, the first recorded step layer
    by layer, epoch 1 and the end."""
    d, layers = record["diagnostics"], record["diagnostics"]["layers"]
    first, last = layers[0], layers[-1]
    steps_per_epoch = -(-record["data"]["train_samples"] // record["config"]["batch_size"])
    epoch1 = [i for i, step in enumerate(d["steps"]) if step <= steps_per_epoch]
    # None where the logits' gradient is 0 (the collapse: every ReLU dead) or not recorded
    ratio = [g1 / g3 if g1 is not None and g3 else None for g1, g3 in zip(d["grad_rms"][first], d["grad_rms"][last])]
    return {
        "test_acc_by_epoch": [e["test_acc"] for e in record["epochs"]],
        "loss_at_recorded_steps": dict(zip(map(str, d["steps"][:6]), d["loss"][:6])),
        "dead_fraction_at_recorded_steps": {name: dict(zip(map(str, d["steps"][:6]), v[:6]))
                                            for name, v in d["dead_fraction"].items()},
        "step_1": {figure: {name: d[figure][name][0] for name in d[figure]}
                   for figure in ("grad_rms", "update_ratio", "activation_std", "dead_fraction")},
        f"grad_rms_{first}_over_{last}": {"step_1": ratio[0], "median_epoch_1": _median([ratio[i] for i in epoch1]),
                                          "median_run": _median(ratio)},
        "update_ratio_median_epoch_1": {name: _median([v[i] for i in epoch1]) for name, v in d["update_ratio"].items()},
        "update_ratio_max": {name: max(x for x in v if x is not None) for name, v in d["update_ratio"].items()},
        "dead_fraction_end": {name: v[-1] for name, v in d["dead_fraction"].items()},
    }


def _twin_step(framework, args, x, y, steps_per_epoch):
    """One training step of the trainer of framework (its network, optimizer and train_step, as
    <framework>_nn/train.py runs them), recording the diagnostics when asked: step(idx, record)."""
    import numpy as np
    import torch

    from harness import threads
    from numpy_nn import diagnostics as numpy_diagnostics
    from numpy_nn import train as numpy_train
    from numpy_nn.build import build_network
    from numpy_nn.parallel import Halves
    from numpy_nn.utils import OPTIMIZERS
    from pytorch_nn import diagnostics as torch_diagnostics
    from pytorch_nn import train as torch_train
    from pytorch_nn.build import build_model, make_optimizer
    if framework == "numpy":
        net = build_network(args, x.shape[1])
        optimizer = OPTIMIZERS[args.optimizer](net.flat_params, args.lr)
        model = net
        if args.model == "cnn":               # the CNN's halves, as the trainer runs them
            model = Halves(net)
            model.use_cores(threads.openblas_threads())  # the share threads.share_cores just gave
        watch, rng = numpy_diagnostics.Watch(net, x, args, steps_per_epoch), np.random.default_rng(1)

        def train_step(idx):
            return numpy_train.train_step(model, optimizer, x[idx], y[idx], args, rng)
    else:
        args.init, args.device, args.mode = "numpy", "cpu", "eager"
        model = build_model(args, x.shape[1])
        optimizer = make_optimizer(model, args)
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)
        watch = torch_diagnostics.Watch(model, xt, args, steps_per_epoch)

        def train_step(idx):
            idx = torch.from_numpy(idx)
            return torch_train.train_step(model, optimizer, xt[idx], yt[idx]).item()  # the trainer reads every loss

    def step(idx, record):
        record = record and watch.due(1, 1)  # step 1 of the run: due, and the record notes a step
        if record:
            watch.before_step()
        loss = train_step(idx)
        if record:
            watch.after_step(loss)
    return step


OVERHEAD_BLOCKS = {"mlp": 60, "cnn": 15}  # blocks of 31 steps, each measured with and without a record


def overhead(blocks=OVERHEAD_BLOCKS):
    """What recording the diagnostics costs, measured in one process: blocks of 31 training steps
    (the default interval at batch 128 on 60,000 images: a block is what one record comes with),
    once with the block's record and once without, alternating which goes first, so both see
    the same machine; the median seconds of each, and their ratio. The default run's settings,
    the trainers' thread policy (harness/threads.py)."""
    import time

    import numpy as np

    from data_loader import batches, load_mnist
    from harness import experiment
    from harness import threads as thread_policy
    from numpy_nn.diagnostics import interval
    x, y, _, _ = load_mnist()
    result = {}
    for model, n_blocks in blocks.items():
        for framework in ("numpy", "pytorch"):
            args = experiment.build_parser(framework, "").parse_args(["--model", model])
            steps_per_epoch = -(-len(x) // args.batch_size)
            every = interval(args, steps_per_epoch)
            thread_policy.share_cores(framework)
            step = _twin_step(framework, args, x, y, steps_per_epoch)  # after: the CNN's halves share the cores
            order = iter(idx for _ in range(1000) for idx in batches(len(x), args.batch_size, np.random.default_rng(0)))
            seconds = {"with": [], "without": []}
            for block in range(n_blocks + 1):
                kinds = ("with", "without") if block % 2 == 0 else ("without", "with")
                for kind in kinds:
                    t0 = time.perf_counter()
                    for i in range(every):
                        step(next(order), record=kind == "with" and i == 0)
                    if block:                  # block 0 warms up: one-off costs
                        seconds[kind].append(time.perf_counter() - t0)
            with_, without = statistics.median(seconds["with"]), statistics.median(seconds["without"])
            case = f"{framework} {model}"
            result[case] = {"steps_per_block": every, "blocks": n_blocks, "median_with": with_,
                            "median_without": without, "ratio": with_ / without,
                            "seconds_with": seconds["with"], "seconds_without": seconds["without"]}
            print(f"overhead {case}: {with_ * 1e3:.1f} ms with, {without * 1e3:.1f} ms without a record "
                  f"per {every} steps: {with_ / without:.3f}x", flush=True)
    return result


def write_summary(runs):
    """learning/summary.json from the runs' metrics files {name: path}."""
    summary = {"what": "numbers from the runs' diagnostics (numpy_nn/diagnostics.py), NumPy MLP, default "
                       "settings but the flags given; 'median_epoch_1' over the steps recorded in epoch 1",
               "runs": {name: {"flags": LESSONS[name], "metrics": str(path.relative_to(ROOT)),
                               **lesson_numbers(json.loads(path.read_text()))} for name, path in runs.items()}}
    (LEARNING / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")


def learning():
    """The runs ANALYSIS.md's "How gradients guide learning" reads, compare.py's pictures of them
    (learning_<name>.png, and the four in one), and learning/summary.json and learning/overhead.json."""
    # the collapse's weights are kept: ANALYSIS.md reads its output bias
    runs = {name: train("numpy", name, *flags, folder=LEARNING, keep_weights=name == "collapse")
            for name, flags in LESSONS.items()}
    run("compare.py", "--no-inside", "--out-dir", LEARNING, "--runs", *runs.values())
    write_summary(runs)
    record = {"what": "median seconds of a block of training steps (the default run's, 31 steps: one "
                      "record's worth) with the diagnostics recorded once and without, alternating in one "
                      "process (reference_results.overhead)", "cases": overhead()}
    (LEARNING / "overhead.json").write_text(json.dumps(record, indent=2) + "\n")


def sweep():
    """sweep.py's default grid and range test, from scratch: the cells kept from an earlier
    regeneration are removed first, so that every cell runs with the code as it is now."""
    folder = REFERENCE / "sweep"
    for old in folder.glob("*_metrics.json"):
        old.unlink()
    started = time.perf_counter()
    run("sweep.py", "--no-progress", "--out-dir", folder)
    minutes = (time.perf_counter() - started) / 60
    run("sweep.py", "--lr-range", "1e-6", "10", "--out-dir", folder)
    record = {"what": "wall-clock minutes of `python sweep.py` (the default grid, 36 cells, 2 at a time) "
                      "as this script ran it", "grid_minutes": minutes, "cores": os.cpu_count()}
    (folder / "timing.json").write_text(json.dumps(record, indent=2) + "\n")


# ----------------------------------------------------------------------------- batch normalization

BATCHNORM = REFERENCE / "batchnorm"
# Ioffe & Szegedy (2015), section 4.1: 3 hidden layers of 100 sigmoid units, weights "small random
# Gaussian values" (the scale is not given: --weight-init small, N(0, 0.01^2)), mini-batches of 60,
# 50,000 steps (50 epochs of 60,000 images). Not given either, so chosen here: plain SGD at a
# constant rate, the rate from PAPER_RATES; the images as data_loader gives them, in [0, 1], where
# the paper's were binary.
PAPER = ["--hidden", "100", "100", "100", "--activation", "sigmoid", "--weight-init", "small",
         "--optimizer", "sgd", "--schedule", "constant", "--batch-size", "60",
         "--diagnostics-every", "200"]  # 250 records in 50,000 steps: the percentiles' curves, and a smaller file
PAPER_EPOCHS = 50
PAPER_SEEDS = (0, 1, 2)
PAPER_RATES = ("0.03", "0.1", "0.3", "1", "3", "10")  # the search: each for SEARCH_EPOCHS, without BN
SEARCH_EPOCHS = 5
# The depth lesson: 10 hidden layers of 100 units, plain SGD at 0.1 (the experiments' sgd run's
# rate), 10 epochs, He initialisation (the trainers' default), each activation without and with BN
DEPTH = ["--hidden", *["100"] * 10, "--optimizer", "sgd", "--lr", "0.1", "--schedule", "constant"]
DEPTH_RUNS = {f"depth_{activation}_{norm}": ["--activation", activation, "--norm", norm]
              for activation in ("sigmoid", "relu") for norm in ("none", "batch")}
ONE_THREAD = dict.fromkeys(("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"), "1")


def batchnorm_rate():
    """The learning rate of the paper's experiment: of PAPER_RATES, the one whose run without BN
    (NumPy, seed 0, SEARCH_EPOCHS epochs) ends with the lowest training loss. The baseline gets
    its best rate, and BN is run at the same; the test set plays no part in the choice."""
    folder = BATCHNORM / "search"
    losses = {}
    for lr in PAPER_RATES:
        path = train("numpy", f"lr_{lr}", *PAPER, "--epochs", SEARCH_EPOCHS, "--lr", lr, "--no-diagnostics",
                     folder=folder, keep_weights=False)
        losses[lr] = json.loads(path.read_text())["epochs"][-1]["train_loss"]
    return min(losses, key=losses.get), losses


def batchnorm():
    """batchnorm/: the paper's experiment and the depth lesson (the module docstring), with one
    BLAS thread per run, as the augment part; then the pictures and summary.md."""
    from report import batchnorm_table
    saved = dict(os.environ)
    os.environ.update(ONE_THREAD)
    try:
        lr, search = batchnorm_rate()
        print(f"batchnorm: the paper's experiment at --lr {lr} (search: {search})", flush=True)
        paper = {}
        for seed in PAPER_SEEDS:
            for norm in ("none", "batch"):
                for framework in ("numpy", "pytorch"):
                    name = f"{framework}_{norm}_seed{seed}"
                    paper[name] = train(framework, name, *PAPER, "--epochs", PAPER_EPOCHS, "--lr", lr,
                                        "--norm", norm, "--seed", seed, folder=BATCHNORM / "paper",
                                        keep_weights=(framework, seed) == ("numpy", 0))  # summary.md reads gamma, beta
        depth = {name: train("numpy", name, *DEPTH, *flags, folder=BATCHNORM / "depth", keep_weights=False)
                 for name, flags in DEPTH_RUNS.items()}
    finally:
        os.environ.clear()
        os.environ.update(saved)
    run("compare.py", "--no-inside", "--out-dir", BATCHNORM / "depth", "--runs", *depth.values())
    batchnorm_table.write(BATCHNORM, paper, depth, {"lr": lr, "search": search, "epochs": SEARCH_EPOCHS},
                           "python perf/reference_results.py --only batchnorm")
    print((BATCHNORM / "summary.md").read_text())


PARTS = {"runs": default_runs, "compare": comparisons, "experiments": experiments, "cnn": cnn,
         "mistakes": mistakes, "threads": threads, "benchmark": benchmark, "learning": learning,
         "compile": compile_modes, "sweep": sweep, "augment": augment, "batchnorm": batchnorm}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", choices=list(PARTS), nargs="+", default=list(PARTS),
                   help="regenerate these parts only (default: all, in this order)")
    args = p.parse_args(argv)
    for part in args.only:
        PARTS[part]()
    print(f"reference results regenerated in {REFERENCE.relative_to(ROOT)}/: {', '.join(args.only)}")


if __name__ == "__main__":
    main()
