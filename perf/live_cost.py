"""What watching a run live costs: the same run, trained by its plain command and from the
demo's page (demo/live.py's feed, the server reading it, a client polling GET /api/train
twice a second as the page does), in alternation; the throughput each record gives (training
samples per second of training steps, evaluation aside), median over the pairs.

    python perf/live_cost.py --pairs 7 --out results/reference/live_cost.json

Prints one line per run and the medians; with --out, writes them as JSON there too (the file
docs/demo.md cites). Nothing else is written outside a temporary folder.
"""
import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from harness.metrics_file import cpu_model  # noqa: E402


def start_demo(folder, log):
    """`python demo.py` on a free port, its runs in folder; returns (process, url) once it serves."""
    process = subprocess.Popen([sys.executable, str(REPO / "demo.py"), "--port", "0", "--results-dir",
                                str(folder / "none"), "--train-dir", str(folder / "runs")],
                               cwd=REPO, stdout=subprocess.PIPE, stderr=log, text=True)
    for line in process.stdout:
        if line.startswith("serving "):
            return process, line.split()[1]
    raise SystemExit(f"live_cost.py: demo.py stopped before serving (exit status {process.wait()}); "
                     f"its log: {log.name}")


def throughput(record):
    epochs = record["epochs"]
    return sum(record["data"]["train_samples"] for _ in epochs) / sum(e["epoch_seconds"] for e in epochs)


def plain(framework, flags, folder):
    metrics = folder / f"plain_{framework}.json"
    subprocess.run([sys.executable, str(REPO / f"{framework}_nn" / "train.py"), *flags, "--no-progress",
                    "--metrics", str(metrics), "--weights", str(folder / f"plain_{framework}.w")],
                   check=True, capture_output=True, cwd=REPO)
    return json.loads(metrics.read_text())


def watched(url, framework, flags):
    """The same run from the page: its flags as the JSON numbers the page sends."""
    body = {"framework": framework, **{f[2:]: int(v) for f, v in zip(flags[::2], flags[1::2])}}
    request = urllib.request.Request(url + "api/train", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})  # the server takes JSON only
    run_id = json.load(urllib.request.urlopen(request))["ids"][0]
    while True:                                   # the page: a poll every 0.5 s
        runs = json.load(urllib.request.urlopen(url + "api/train"))["runs"]
        run = next(run for run in runs if run["id"] == run_id)
        if run["status"] not in ("starting", "running"):
            return json.loads((REPO / run["metrics"]).read_text())
        time.sleep(0.5)


def main():
    p = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()),
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--pairs", type=int, default=5, help="plain and watched runs, in alternation, per framework")
    p.add_argument("--limit", type=int, default=30000, help="training images per run (the trainers' --limit)")
    p.add_argument("--epochs", type=int, default=2, help="epochs per run")
    p.add_argument("--frameworks", nargs="+", default=["numpy", "pytorch"], help="which trainers")
    p.add_argument("--out", type=Path, default=None, help="also write the results here, as JSON")
    args = p.parse_args()
    results = {"command": "python perf/live_cost.py " + " ".join(sys.argv[1:]), "limit": args.limit,
               "epochs": args.epochs, "pairs": args.pairs, "cpu": cpu_model(), "cpu_count": os.cpu_count(),
               "load_average_before": os.getloadavg()}
    flags = ["--limit", str(args.limit), "--epochs", str(args.epochs)]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        log = open(folder / "server.txt", "w")
        process, url = start_demo(folder, log)
        try:
            for framework in args.frameworks:
                ratios = []
                for pair in range(args.pairs):
                    order = ["plain", "watched"] if pair % 2 == 0 else ["watched", "plain"]
                    speed = {}
                    for how in order:
                        record = plain(framework, flags, folder) if how == "plain" else watched(url, framework, flags)
                        speed[how] = throughput(record)
                        print(f"{framework} pair {pair + 1} {how:8s} {speed[how]:9.0f} samples/s", flush=True)
                    ratios.append(speed["watched"] / speed["plain"])
                results[framework] = {"watched_over_plain": ratios, "median": statistics.median(ratios)}
                print(f"{framework}: watched/plain throughput, median of {args.pairs} pairs: "
                      f"{statistics.median(ratios):.3f} (each: {', '.join(f'{r:.3f}' for r in ratios)})", flush=True)
        finally:
            process.send_signal(signal.SIGINT)          # the server's Ctrl-C: it stops its runs too
            process.communicate(timeout=60)
    results["load_average_after"] = os.getloadavg()
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
