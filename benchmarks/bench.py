"""Measure fmnist's speed against the notebook baseline and against the floor, on the real data.

One run measures, in this order and interleaved so that a busy machine slows every
candidate alike:

1. the notebook baseline (a per-sample ``Dataset`` plus ``DataLoader`` at batch size 64):
   images/s of one epoch of data loading, and seconds of one training epoch;
2. fmnist's data pipeline (``FashionMNISTDataset`` plus ``make_loader``) at the default
   batch size: images/s of one epoch;
3. fmnist's training epoch at the default settings (``Trainer.train_epoch``), seconds;
4. the floor: the same model, optimizer and batch size stepping over one contiguous,
   pre-normalised tensor indexed by a permutation, with no data pipeline, seconds;
5. the ratios 3/4 and 2/1, and time to accuracy: ``fmnist train`` at its defaults as a
   subprocess, from launch to saved model, for each seed, next to the notebook recipe;
6. inference: images/s of batched ``evaluate_model`` and of the numpy predictor on the
   test split, and the wall time of ``fmnist predict RUN_DIR one.png`` with start-up.

Each timed section runs ``--repeats`` times and the median counts. It prints a table and
writes the same figures as JSON (``--output``, default ``benchmarks/results/bench-<time>.json``).
``make bench`` runs it with ``--full-baseline``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

import fmnist
from fmnist import data, model_io, pipeline
from fmnist.config import TrainConfig
from fmnist.loading import FashionMNISTDataset, make_loader
from fmnist.model import build_model
from fmnist.predict import load_classifier
from fmnist.train import Trainer, evaluate_model

from notebook_baseline import BATCH_SIZE as NOTEBOOK_BATCH_SIZE
from notebook_baseline import LR as NOTEBOOK_LR
from notebook_baseline import NotebookDataset, train_one_epoch

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
SOURCE_DIR = Path(fmnist.__file__).resolve().parents[1]

# The targets that check_goals compares the measured figures with.
MAX_EPOCH_OVER_FLOOR = 1.15
MIN_PIPELINE_OVER_BASELINE = 20.0
MIN_TEST_ACCURACY = 0.90
MAX_TRAIN_SECONDS = 40.0
MIN_INFERENCE_IMAGES_PER_SECOND = 100_000
MAX_PREDICT_SECONDS = 1.5


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    default_data = os.environ.get("FMNIST_DATA_DIR") or str(REPO_DIR.parent / "shared" / "data" / "fashion-mnist")
    parser = argparse.ArgumentParser(description="Benchmark fmnist against the notebook baseline and the floor.")
    parser.add_argument("--data-dir", type=Path, default=Path(default_data),
                        help="directory holding the four IDX files (default: $FMNIST_DATA_DIR, else ../shared/data/fashion-mnist)")
    parser.add_argument("--output", type=Path, help="JSON file to write (default: benchmarks/results/bench-<time>.json)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each timed section; the median counts (default: 3)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds of the fmnist train runs (default: 0 1 2)")
    parser.add_argument("--train-args", default="", help="extra options for each fmnist train run, as one quoted string")
    parser.add_argument("--full-baseline", action="store_true",
                        help="train the notebook recipe to early stopping (about 100 s per seed); "
                        "without it the notebook recipe stops after 3 epochs")
    parser.add_argument("--baseline-seeds", type=int, nargs="+", default=[0], help="seeds of the notebook recipe runs (default: 0)")
    parser.add_argument("--predict-runs", type=int, default=5, help="runs of fmnist predict; the median counts (default: 5)")
    parser.add_argument("--threads", type=int, help="torch threads of the in-process measurements (default: every CPU available)")
    parser.add_argument("--runs-dir", type=Path, help="keep the run directories here (default: a temporary directory, removed)")
    return parser.parse_args(argv)


def progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def timed(function) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def child_env() -> dict[str, str]:
    """Return the environment for subprocesses, with this fmnist source first on the import path."""
    paths = [str(SOURCE_DIR), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(path for path in paths if path)}


def describe_machine() -> dict:
    model_name = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model_name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        memory_gib = None
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "machine": platform.machine(),
        "cpu": model_name,
        "cpus_available": cpus,
        "memory_gib": round(memory_gib, 1) if memory_gib else None,
        "system": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "fmnist": fmnist.__version__,
    }


# --- Training-side measurements -------------------------------------------------------


def _keep_batch(batch):
    return batch


def loader_images_per_second(loader: DataLoader) -> float:
    count = 0
    started = time.perf_counter()
    for _, labels in loader:
        count += len(labels)
    return count / (time.perf_counter() - started)


def floor_epoch_seconds(images: torch.Tensor, labels: torch.Tensor, config: TrainConfig, seed: int) -> float:
    """Return the seconds of one epoch of bare training steps: no loader, no scheduler, no bookkeeping."""
    torch.manual_seed(seed)
    model = build_model(config.dropout)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, betas=config.betas, weight_decay=config.weight_decay)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    generator = torch.Generator().manual_seed(seed)

    def epoch() -> None:
        order = torch.randperm(len(labels), generator=generator)
        for start in range(0, len(labels), config.batch_size):
            batch = order[start : start + config.batch_size]
            loss = loss_fn(model(images[batch]), labels[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    return timed(epoch)


def project_epoch_seconds(prepared: pipeline.PreparedData, config: TrainConfig, seed: int) -> float:
    torch.manual_seed(seed)
    trainer = Trainer(build_model(config.dropout), config, prepared.train_set, prepared.val_set)
    return timed(trainer.train_epoch)


def notebook_epoch_seconds(dataset: NotebookDataset, seed: int) -> float:
    torch.manual_seed(seed)
    model = build_model(0.2)
    optimizer = torch.optim.Adam(model.parameters(), lr=NOTEBOOK_LR)
    loader = DataLoader(dataset, batch_size=NOTEBOOK_BATCH_SIZE, shuffle=True)
    return timed(lambda: train_one_epoch(model, loader, optimizer))


def measure_training(prepared: pipeline.PreparedData, config: TrainConfig, repeats: int, threads: int) -> dict:
    """Measure sections 1 to 4, interleaved: each repeat measures every candidate once.

    With more than one thread, each repeat also times the training epoch on one thread,
    which shows whether the extra threads are used.
    """
    train_set = prepared.train_set
    notebook_set = NotebookDataset(train_set.images, train_set.labels, train_set.indices, prepared.mean, prepared.std)
    floor_images, floor_labels = train_set.tensors()
    floor_images = floor_images.contiguous()

    progress("warming up (page cache, torch kernels)")
    loader_images_per_second(make_loader(train_set, config.batch_size, shuffle=True))
    project_epoch_seconds(prepared, config, seed=0)

    samples: dict[str, list[float]] = {key: [] for key in (
        "notebook_loader_images_per_s", "pipeline_images_per_s", "batched_dataloader_images_per_s",
        "floor_epoch_s", "train_epoch_s", "notebook_epoch_s",
    )}
    for repeat in range(repeats):
        progress(f"training-side sections, repeat {repeat + 1} of {repeats}")
        generator = torch.Generator().manual_seed(repeat)
        samples["notebook_loader_images_per_s"].append(
            loader_images_per_second(DataLoader(notebook_set, batch_size=NOTEBOOK_BATCH_SIZE, shuffle=True, generator=generator))
        )
        samples["pipeline_images_per_s"].append(
            loader_images_per_second(make_loader(train_set, config.batch_size, shuffle=True, generator=generator))
        )
        # What make_loader returned before BatchLoader: a DataLoader whose sampler hands each
        # batch's indices to __getitems__ as a list of Python ints.
        samples["batched_dataloader_images_per_s"].append(loader_images_per_second(DataLoader(
            train_set, batch_size=config.batch_size, shuffle=True, generator=generator, collate_fn=_keep_batch,
        )))
        samples["floor_epoch_s"].append(floor_epoch_seconds(floor_images, floor_labels, config, seed=repeat))
        samples["train_epoch_s"].append(project_epoch_seconds(prepared, config, seed=repeat))
        samples["notebook_epoch_s"].append(notebook_epoch_seconds(notebook_set, seed=repeat))
        if threads > 1:
            torch.set_num_threads(1)
            samples.setdefault("train_epoch_1_thread_s", []).append(project_epoch_seconds(prepared, config, seed=repeat))
            torch.set_num_threads(threads)

    medians = {key: statistics.median(values) for key, values in samples.items()}
    return {
        "load_average_after": os.getloadavg()[0],
        "train_images": len(train_set),
        "batch_size": config.batch_size,
        "notebook_batch_size": NOTEBOOK_BATCH_SIZE,
        "samples": samples,
        "median": medians,
        "train_epoch_over_floor": medians["train_epoch_s"] / medians["floor_epoch_s"],
        "pipeline_over_notebook_loader": medians["pipeline_images_per_s"] / medians["notebook_loader_images_per_s"],
        "notebook_epoch_over_train_epoch": medians["notebook_epoch_s"] / medians["train_epoch_s"],
    }


# --- Time to accuracy -----------------------------------------------------------------


def run_timed(command: list[str], model_file: Path) -> tuple[dict, float, float]:
    """Run ``command``; return its JSON summary, seconds from launch to ``model_file``, seconds to exit."""
    launched = time.time()
    started = time.perf_counter()
    completed = subprocess.run(command, capture_output=True, text=True, env=child_env())
    to_exit = time.perf_counter() - started
    if completed.returncode != 0:
        raise SystemExit(f"bench: {shlex.join(command)} failed with exit code {completed.returncode}:\n{completed.stderr}")
    summary = json.loads(completed.stdout.strip().splitlines()[-1])
    return summary, model_file.stat().st_mtime - launched, to_exit


def train_fmnist(data_dir: Path, run_dir: Path, seed: int, extra: list[str]) -> dict:
    command = [
        sys.executable, "-m", "fmnist", "train", "--data-dir", str(data_dir), "--offline", "--output-dir", str(run_dir),
        "--seed", str(seed), "--json", "--quiet", *extra,
    ]
    load_average = os.getloadavg()[0]
    summary, to_model, to_exit = run_timed(command, run_dir / "model.safetensors")
    return {
        "seed": seed,
        "load_average_before": load_average,
        "command": shlex.join(["fmnist", *command[3:]]),
        "test_accuracy": summary["test_accuracy"],
        "best_epoch": summary["best_epoch"],
        "epochs_run": summary["epochs_run"],
        "seconds_to_saved_model": to_model,
        "seconds_to_exit": to_exit,
        "seconds_logged": summary["seconds"],
        "run_dir": str(run_dir),
    }


def train_notebook(data_dir: Path, run_dir: Path, seed: int, max_epochs: int | None) -> dict:
    command = [sys.executable, str(BENCH_DIR / "notebook_baseline.py"), "--data-dir", str(data_dir),
               "--output-dir", str(run_dir), "--seed", str(seed)]
    if max_epochs is not None:
        command += ["--max-epochs", str(max_epochs)]
    load_average = os.getloadavg()[0]
    summary, to_model, to_exit = run_timed(command, run_dir / "model.pt")
    return {
        "seed": seed,
        "load_average_before": load_average,
        "max_epochs": max_epochs,
        "test_accuracy": summary["test_accuracy"],
        "best_epoch": summary["best_epoch"],
        "epochs_run": summary["epochs_run"],
        "median_epoch_s": statistics.median(summary["epoch_seconds"]),
        "seconds_to_saved_model": to_model,
        "seconds_to_exit": to_exit,
    }


def summarize_runs(runs: list[dict]) -> dict:
    accuracies = [run["test_accuracy"] for run in runs]
    seconds = [run["seconds_to_saved_model"] for run in runs]
    return {
        "seeds": [run["seed"] for run in runs],
        "accuracy_mean": statistics.mean(accuracies),
        "accuracy_min": min(accuracies),
        "accuracy_max": max(accuracies),
        "seconds_mean": statistics.mean(seconds),
        "seconds_min": min(seconds),
        "seconds_max": max(seconds),
        "epochs_run_mean": statistics.mean(run["epochs_run"] for run in runs),
    }


def measure_time_to_accuracy(args: argparse.Namespace, runs_dir: Path) -> dict:
    """Time fmnist train for each seed and the notebook recipe, alternating between the two."""
    extra = shlex.split(args.train_args)
    max_epochs = None if args.full_baseline else 3
    fmnist_runs: list[dict] = []
    notebook_runs: list[dict] = []
    notebook_seeds = list(args.baseline_seeds)
    for seed in args.seeds:
        progress(f"fmnist train, seed {seed}")
        fmnist_runs.append(train_fmnist(args.data_dir, runs_dir / f"fmnist-seed{seed}", seed, extra))
        if notebook_seeds:
            notebook_seed = notebook_seeds.pop(0)
            progress(f"notebook recipe, seed {notebook_seed}" + ("" if max_epochs is None else f", {max_epochs} epochs"))
            notebook_runs.append(train_notebook(args.data_dir, runs_dir / f"notebook-seed{notebook_seed}", notebook_seed, max_epochs))
    for notebook_seed in notebook_seeds:
        progress(f"notebook recipe, seed {notebook_seed}")
        notebook_runs.append(train_notebook(args.data_dir, runs_dir / f"notebook-seed{notebook_seed}", notebook_seed, max_epochs))
    return {
        "fmnist_train_args": extra,
        "fmnist": {"runs": fmnist_runs, **summarize_runs(fmnist_runs)},
        "notebook": {
            "recipe": "per-sample Dataset, DataLoader batch 64, Adam 1e-3, LinearLR 1.0 -> 0.1 per epoch over 30 "
            "epochs, dropout 0.2, patience 5, stratified 10% val",
            "full": args.full_baseline,
            "runs": notebook_runs,
            **summarize_runs(notebook_runs),
        },
    }


# --- Inference ------------------------------------------------------------------------


def measure_inference(data_dir: Path, run_dir: Path, repeats: int, predict_runs: int, scratch: Path) -> dict:
    model, metadata = model_io.load_model(run_dir)
    test_split = data.load_split(data_dir, "test")
    normalisation = metadata["normalisation"]
    test_set = FashionMNISTDataset(test_split.images, test_split.labels, mean=normalisation["mean"], std=normalisation["std"])
    images = np.asarray(test_split.images)
    classifier = load_classifier(run_dir)

    progress("inference: evaluate_model and the numpy predictor")
    load_average = os.getloadavg()[0]
    evaluate_model(model, test_set)
    classifier.probabilities(images)
    evaluate_seconds = []
    numpy_seconds = []
    # Each pass takes a fraction of a second, so a few more passes cost little and steady the median.
    evaluate_1_thread_seconds = []
    threads = torch.get_num_threads()
    for _ in range(max(repeats, 7)):
        evaluate_seconds.append(timed(lambda: evaluate_model(model, test_set)))
        numpy_seconds.append(timed(lambda: classifier.probabilities(images)))
        if threads > 1:
            # On a machine whose cores are busy, threads that wait for each other can make
            # several threads slower than one; this figure shows whether that happened.
            torch.set_num_threads(1)
            evaluate_1_thread_seconds.append(timed(lambda: evaluate_model(model, test_set)))
            torch.set_num_threads(threads)

    progress("inference: fmnist predict one image")
    image_path = scratch / "one.png"
    from PIL import Image

    Image.fromarray(np.asarray(test_split.images[0])).save(image_path)
    command = [sys.executable, "-m", "fmnist", "predict", str(run_dir), str(image_path), "--json"]
    predict_seconds = []
    for _ in range(predict_runs):
        started = time.perf_counter()
        completed = subprocess.run(command, capture_output=True, text=True, env=child_env())
        predict_seconds.append(time.perf_counter() - started)
        if completed.returncode != 0:
            raise SystemExit(f"bench: {shlex.join(command)} failed:\n{completed.stderr}")
    check = subprocess.run(
        [sys.executable, "-c", "import sys; from fmnist.cli import main; main(sys.argv[1:]); "
         "print('torch' in sys.modules, file=sys.stderr)", "predict", str(run_dir), str(image_path), "--json"],
        capture_output=True, text=True, env=child_env(),
    )
    evaluate_median = statistics.median(evaluate_seconds)
    numpy_median = statistics.median(numpy_seconds)
    return {
        "load_average_before": load_average,
        "test_images": len(test_set),
        "evaluate_batch_size": 4096,
        "evaluate_seconds": evaluate_seconds,
        "evaluate_images_per_s": len(test_set) / evaluate_median,
        "evaluate_1_thread_seconds": evaluate_1_thread_seconds,
        "evaluate_1_thread_images_per_s": (
            len(test_set) / statistics.median(evaluate_1_thread_seconds) if evaluate_1_thread_seconds else None
        ),
        "numpy_seconds": numpy_seconds,
        "numpy_images_per_s": len(images) / numpy_median,
        "predict_command": shlex.join(["fmnist", "predict", "RUN_DIR", "one.png", "--json"]),
        "predict_seconds": predict_seconds,
        "predict_median_s": statistics.median(predict_seconds),
        "predict_imports_torch": check.stderr.strip().splitlines()[-1] == "True" if check.stderr.strip() else None,
        "python_startup_s": statistics.median(timed(lambda: subprocess.run([sys.executable, "-c", "pass"])) for _ in range(3)),
    }


# --- Report ---------------------------------------------------------------------------


def check_goals(training: dict, accuracy: dict, inference: dict) -> list[dict]:
    fmnist_runs = accuracy["fmnist"]

    def goal(name: str, value: float, target: str, met: bool) -> dict:
        return {"goal": name, "value": value, "target": target, "met": bool(met)}

    return [
        goal("training epoch / floor", training["train_epoch_over_floor"], f"<= {MAX_EPOCH_OVER_FLOOR}",
             training["train_epoch_over_floor"] <= MAX_EPOCH_OVER_FLOOR),
        goal("data pipeline / notebook loader", training["pipeline_over_notebook_loader"], f">= {MIN_PIPELINE_OVER_BASELINE}",
             training["pipeline_over_notebook_loader"] >= MIN_PIPELINE_OVER_BASELINE),
        goal("fmnist train: mean test accuracy", fmnist_runs["accuracy_mean"], f">= {MIN_TEST_ACCURACY}",
             fmnist_runs["accuracy_mean"] >= MIN_TEST_ACCURACY),
        goal("fmnist train: mean seconds to saved model", fmnist_runs["seconds_mean"], f"<= {MAX_TRAIN_SECONDS}",
             fmnist_runs["seconds_mean"] <= MAX_TRAIN_SECONDS),
        goal("evaluate_model images/s", inference["evaluate_images_per_s"], f">= {MIN_INFERENCE_IMAGES_PER_SECOND}",
             inference["evaluate_images_per_s"] >= MIN_INFERENCE_IMAGES_PER_SECOND),
        goal("fmnist predict one image, seconds", inference["predict_median_s"], f"< {MAX_PREDICT_SECONDS}",
             inference["predict_median_s"] < MAX_PREDICT_SECONDS),
    ]


def format_report(results: dict) -> str:
    training = results["training"]
    median = training["median"]
    accuracy = results["time_to_accuracy"]
    inference = results["inference"]

    rows = [
        ("1 notebook loader, per-sample, batch 64", f"{median['notebook_loader_images_per_s']:,.0f}", "images/s"),
        ("1 notebook training epoch, batch 64", f"{median['notebook_epoch_s']:.2f}", "s"),
        (f"2 fmnist data pipeline, batch {training['batch_size']}", f"{median['pipeline_images_per_s']:,.0f}", "images/s"),
        (f"2 DataLoader over the same dataset, batch {training['batch_size']}", f"{median['batched_dataloader_images_per_s']:,.0f}", "images/s"),
        (f"3 fmnist training epoch, batch {training['batch_size']}", f"{median['train_epoch_s']:.2f}", "s"),
        (f"4 floor epoch, batch {training['batch_size']}", f"{median['floor_epoch_s']:.2f}", "s"),
    ]
    if "train_epoch_1_thread_s" in median:
        rows.append((f"3 fmnist training epoch, batch {training['batch_size']}, 1 thread", f"{median['train_epoch_1_thread_s']:.2f}", "s"))
    rows += [
        ("5 ratio 3/4 (epoch over floor)", f"{training['train_epoch_over_floor']:.3f}", "x"),
        ("5 ratio 2/1 (pipeline over notebook loader)", f"{training['pipeline_over_notebook_loader']:.1f}", "x"),
    ]
    for label, runs in (("fmnist train", accuracy["fmnist"]), ("notebook recipe", accuracy["notebook"])):
        if not runs["runs"]:
            continue
        if label == "notebook recipe" and not accuracy["notebook"]["full"]:
            label += ", 3 epochs"
        seeds = " ".join(str(seed) for seed in runs["seeds"])
        rows.append((
            f"5 {label}, seeds {seeds}: test accuracy",
            f"{runs['accuracy_mean']:.2%} ({runs['accuracy_min']:.2%}-{runs['accuracy_max']:.2%})",
            "mean (min-max)",
        ))
        rows.append((
            f"5 {label}: launch to saved model",
            f"{runs['seconds_mean']:.1f} ({runs['seconds_min']:.1f}-{runs['seconds_max']:.1f})",
            "s, mean (min-max)",
        ))

    rows += [
        ("6 evaluate_model, test split, batch 4096", f"{inference['evaluate_images_per_s']:,.0f}", "images/s"),
    ]
    if inference["evaluate_1_thread_images_per_s"]:
        rows.append(("6 evaluate_model, 1 thread", f"{inference['evaluate_1_thread_images_per_s']:,.0f}", "images/s"))
    rows += [
        ("6 numpy predictor, test split", f"{inference['numpy_images_per_s']:,.0f}", "images/s"),
        ("6 fmnist predict one image, with start-up", f"{inference['predict_median_s']:.2f}", "s, median"),
    ]

    width = max(len(row[0]) for row in rows)
    lines = [f"{'measure':<{width}}  {'value':>22}  unit", "-" * (width + 40)]
    lines += [f"{name:<{width}}  {value:>22}  {unit}" for name, value, unit in rows]

    lines += ["", "goals:"]
    for goal in results["goals"]:
        lines.append(f"  [{'met' if goal['met'] else 'MISSED'}] {goal['goal']}: {goal['value']:.4g} (target {goal['target']})")

    machine = results["machine"]
    lines += ["", f"machine: {machine['machine']}, {machine['cpu']}, {machine['cpus_available']} CPUs, "
              f"{machine['memory_gib']} GiB, torch {machine['torch']}, {results['threads']} torch threads; "
              f"load average {results['load_average_start']:.2f} at start, {results['load_average_end']:.2f} at end"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = dt.datetime.now()
    output = args.output or BENCH_DIR / "results" / f"bench-{started:%Y%m%d-%H%M%S}.json"
    load_start = os.getloadavg()[0]
    threads = pipeline.set_threads(args.threads)
    data.require_data_files(args.data_dir)

    config = TrainConfig(data_dir=args.data_dir)
    prepared = pipeline.load_datasets(args.data_dir, config)
    training = measure_training(prepared, config, args.repeats, threads)

    runs_dir = args.runs_dir or Path(tempfile.mkdtemp(prefix="fmnist-bench-"))
    try:
        accuracy = measure_time_to_accuracy(args, runs_dir)
        inference = measure_inference(
            args.data_dir, Path(accuracy["fmnist"]["runs"][0]["run_dir"]), args.repeats, args.predict_runs, runs_dir
        )
    finally:
        if args.runs_dir is None:
            shutil.rmtree(runs_dir, ignore_errors=True)

    results = {
        "started": started.isoformat(timespec="seconds"),
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "machine": describe_machine(),
        "threads": threads,
        "repeats": args.repeats,
        "training": training,
        "time_to_accuracy": accuracy,
        "inference": inference,
        "load_average_start": load_start,
        "load_average_end": os.getloadavg()[0],
    }
    results["goals"] = check_goals(training, accuracy, inference)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2) + "\n")
    print(format_report(results))
    print(f"\nwrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
