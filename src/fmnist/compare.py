"""Compare runs: learning curves on shared axes in one PNG, and the metrics side by side (``fmnist compare``)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fmnist import runs
from fmnist.artifacts import check_not_run_file
from fmnist.errors import CheckpointError, ConfigError
from fmnist.history import HISTORY_JSON

DEFAULT_OUTPUT = Path("compare.png")
# Settings shown for every run; any other setting is shown only where the runs differ.
KEY_SETTINGS = (
    ("batch size", "batch_size"),
    ("lr", "lr"),
    ("dropout", "dropout"),
    ("weight decay", "weight_decay"),
    ("seed", "seed"),
    ("max epochs", "epochs"),
)
# Settings that record where a run was written or how fast it ran, not what it learned.
IGNORED_SETTINGS = ("output_dir", "offline", "threads")


def run_labels(paths: Sequence[Path]) -> list[str]:
    """Return a short, unique label per run: the directory name, else the path as given, else a numbered path."""
    names = [Path(path).name for path in paths]
    counts = Counter(names)
    labels = [name if counts[name] == 1 else str(path) for name, path in zip(names, paths)]
    seen: Counter[str] = Counter()
    unique = []
    for label in labels:
        seen[label] += 1
        unique.append(label if seen[label] == 1 else f"{label} ({seen[label]})")
    return unique


def compare_runs(run_dirs: Sequence[Path], output: Path = DEFAULT_OUTPUT) -> dict[str, Any]:
    """Plot the learning curves of ``run_dirs`` into ``output`` and return their summaries.

    Raises CheckpointError when a run cannot be read or has no history to plot.
    """
    from fmnist import plots

    output = Path(output)
    if not output.parent.is_dir():
        raise ConfigError(f"--output {output}: directory {output.parent} does not exist; create it or choose another file")
    check_not_run_file(output)
    loaded = [runs.read_run(Path(run_dir)) for run_dir in run_dirs]
    for run in loaded:
        if not run.history:
            raise CheckpointError(
                f"{run.path}: {HISTORY_JSON} not found; only runs that finished at least one epoch can be compared"
            )

    labels = run_labels([run.path for run in loaded])
    summaries = [{"label": label, **runs.summarize_run(run)} for label, run in zip(labels, loaded)]
    plots.plot_comparison(
        [(label, run.history, summary["best_epoch"] or None) for label, run, summary in zip(labels, loaded, summaries)],
        output,
    )
    return {"runs": summaries, "plot": str(output)}


def _setting_text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def _differing_settings(summaries: list[dict[str, Any]]) -> list[str]:
    # A run without model.json has no configuration; it differs from nothing.
    configs = [summary["config"] for summary in summaries if summary["config"]]
    shown = {key for _, key in KEY_SETTINGS} | set(IGNORED_SETTINGS)
    names: list[str] = []
    for config in configs:
        names += [name for name in config if name not in shown and name not in names]
    return [name for name in names if len({_setting_text(config.get(name)) for config in configs}) > 1]


def format_comparison(result: dict[str, Any]) -> str:
    """Render :func:`compare_runs`'s result as a text table with one column per run."""
    summaries = result["runs"]

    def number(value: Any, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    table: list[tuple[str, list[str]]] = [("date", [runs.format_date(summary["created"]) for summary in summaries])]
    for title, key in KEY_SETTINGS:
        table.append((title, [_setting_text(summary["config"].get(key)) for summary in summaries]))
    for name in _differing_settings(summaries):
        table.append((name, [_setting_text(summary["config"].get(name)) for summary in summaries]))
    table += [
        ("epochs run", [number(summary["epochs_run"], "") for summary in summaries]),
        ("best epoch", [number(summary["best_epoch"], "") for summary in summaries]),
        ("best val loss", [number(summary["best_val_loss"], ".4f") for summary in summaries]),
        ("test accuracy", [number(summary["test_accuracy"], ".4f") for summary in summaries]),
        ("test macro-F1", [number(summary["test_macro_f1"], ".4f") for summary in summaries]),
        ("wall time", [runs.format_seconds(summary["seconds"]) for summary in summaries]),
    ]

    labels = [summary["label"] for summary in summaries]
    title_width = max(len(title) for title, _ in table)
    widths = [max(len(label), *(len(values[column]) for _, values in table)) for column, label in enumerate(labels)]
    lines = [" " * title_width + "".join(f"  {label:>{width}}" for label, width in zip(labels, widths))]
    for title, values in table:
        lines.append(f"{title:<{title_width}}" + "".join(f"  {value:>{width}}" for value, width in zip(values, widths)))
    notes = [f"{summary['label']}: {summary['problem']}" for summary in summaries if summary["problem"]]
    if notes:
        lines += ["", *notes]
    lines += ["", f"Learning curves: {result['plot']}"]
    return "\n".join(lines)
