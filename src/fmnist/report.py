"""``report.html``: one self-contained page that shows what a run did and how well it works.

The page embeds its images as base64 ``data:`` URIs and its CSS inline, needs no
JavaScript, and forbids network requests with a Content-Security-Policy, so it
opens from disk anywhere. Every string read from a file is escaped with
``html.escape``. The page is built from the run directory alone: ``model.json``,
``metrics.json``, ``history.json`` and ``misclassified.npz``.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import math
from pathlib import Path
from typing import Any

from fmnist import artifacts, runs
from fmnist.datasets import FASHION_MNIST
from fmnist.errors import ConfigError
from fmnist.misclassified import MISCLASSIFIED_FILE, read_misclassified

logger = logging.getLogger(__name__)

REPORT_FILE = "report.html"
# Only inline styles and data: images may load; the page makes no requests.
CONTENT_SECURITY_POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0 auto; max-width: 1240px;
       padding: 16px 24px 48px; color: #1d2330; background: #fff; line-height: 1.4; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.25em; margin-top: 1.8em; border-bottom: 1px solid #d8dce4; padding-bottom: 0.2em; }
.subtitle { color: #5a6375; margin-top: 0; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; }
.card { border: 1px solid #d8dce4; border-radius: 6px; padding: 8px 14px; min-width: 130px; }
.card .label { color: #5a6375; font-size: 0.85em; }
.card .value { font-size: 1.35em; font-weight: 600; }
img.figure { max-width: 100%; height: auto; display: block; }
table { border-collapse: collapse; margin: 8px 0; font-size: 0.92em; }
th, td { border: 1px solid #d8dce4; padding: 3px 10px; text-align: left; vertical-align: top; }
th { background: #f2f4f8; }
td.number { text-align: right; font-variant-numeric: tabular-nums; }
tr.best td { background: #fff6d6; }
tr.total td { font-weight: 600; }
td:first-child code { white-space: nowrap; }
code, .mono { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 0.9em; word-break: break-all; }
.nowrap { white-space: nowrap; word-break: normal; }
.note { color: #5a6375; }
.warning { color: #9a3b00; }
.test-results { display: flex; flex-wrap: wrap; gap: 24px; align-items: flex-start; }
.test-results img.figure { max-width: 640px; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(180px, 1fr)); gap: 10px; }
.grid figure { margin: 0; border: 1px solid #d8dce4; border-radius: 6px; padding: 6px; text-align: center; font-size: 0.8em; }
.grid img { width: 112px; height: 112px; image-rendering: pixelated; background: #000; }
.grid figcaption .true { color: #1b6e2e; }
.grid figcaption .predicted { color: #a11d1d; }
"""


def _escape(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _png_data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _figure_img(figure, alt: str) -> str:
    from fmnist import plots

    return f'<img class="figure" src="{_png_data_uri(plots.figure_png(figure, dpi=100))}" alt="{_escape(alt)}">'


def _format_number(value: Any, spec: str) -> str:
    if not runs.is_number(value):
        return "-"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return format(value, spec)


def _table(headers: list[str], rows: list[list[str]], numeric: set[int] = frozenset(), row_classes: list[str] | None = None) -> str:
    """Return an HTML table; ``rows`` hold HTML that is already escaped."""
    head = "".join(f"<th>{_escape(title)}</th>" for title in headers)
    body = []
    for position, row in enumerate(rows):
        cells = "".join(
            f'<td class="number">{cell}</td>' if column in numeric else f"<td>{cell}</td>" for column, cell in enumerate(row)
        )
        css = row_classes[position] if row_classes and row_classes[position] else ""
        body.append(f'<tr class="{css}">{cells}</tr>' if css else f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _class_names(run: runs.RunFiles) -> list[str]:
    if run.metadata is not None:
        return list(run.metadata["class_names"])
    return list(FASHION_MNIST.class_names)


def _summary_section(run: runs.RunFiles, summary: dict[str, Any]) -> str:
    best_epoch = summary["best_epoch"]
    cards = [
        ("test accuracy", _format_number(summary["test_accuracy"], ".4f")),
        ("test macro-F1", _format_number(summary["test_macro_f1"], ".4f")),
        ("best epoch", f"{best_epoch if best_epoch else '-'} of {summary['epochs_run'] if summary['epochs_run'] is not None else '-'}"),
        ("best val loss", _format_number(summary["best_val_loss"], ".4f")),
        ("wall time", runs.format_seconds(summary["seconds"])),
    ]
    html_cards = "".join(
        f'<div class="card"><div class="label">{_escape(label)}</div><div class="value">{_escape(value)}</div></div>'
        for label, value in cards
    )
    lines = [f'<div class="cards">{html_cards}</div>']
    if summary["stop_reason"]:
        lines.append(f"<p>Stopped: {_escape(summary['stop_reason'])}.</p>")
    if summary["problem"]:
        lines.append(f'<p class="warning">{_escape(summary["problem"])}.</p>')
    return "<h2>Summary</h2>" + "".join(lines)


def _curves_section(run: runs.RunFiles, best_epoch: int | None) -> str:
    from fmnist import plots

    if not run.history:
        return '<h2>Learning curves</h2><p class="note">history.json not found: no epoch was completed.</p>'
    config = (run.metadata or {}).get("config")
    if not isinstance(config, dict):
        config = run.stored_config or {}
    label_smoothing = config.get("label_smoothing", 0.0)
    if not runs.is_number(label_smoothing):
        label_smoothing = 0.0
    figure = plots.learning_curves_figure(run.history, best_epoch, label_smoothing)
    rows, classes = [], []
    for record in run.history:
        rows.append([
            _escape(record.epoch),
            _escape(record.step),
            _format_number(record.train_loss, ".4f"),
            _format_number(record.val_loss, ".4f"),
            _format_number(record.val_accuracy, ".4f"),
            _format_number(record.val_macro_f1, ".4f"),
            _format_number(record.lr, ".3e"),
            _format_number(record.seconds, ".1f"),
        ])
        classes.append("best" if record.epoch == best_epoch else "")
    table = _table(
        ["epoch", "step", "train loss", "val loss", "val accuracy", "val macro-F1", "learning rate", "seconds"],
        rows, numeric=set(range(8)), row_classes=classes,
    )
    best_note = f"The dashed line marks the best epoch ({best_epoch}), whose weights were saved." if best_epoch else "No epoch improved the val loss."
    return (
        "<h2>Learning curves</h2>"
        + _figure_img(figure, "train and val loss, val accuracy and macro-F1, and learning rate per epoch")
        + f'<p class="note">{_escape(best_note)} The learning rate is the one at the start of each epoch.</p>'
        + f"<details><summary>History, one row per epoch</summary>{table}</details>"
    )


def _test_section(run: runs.RunFiles, class_names: list[str]) -> str:
    from fmnist import plots

    if run.metrics is None:
        return '<h2>Test results</h2><p class="note">metrics.json not found: the run saved no model to evaluate.</p>'
    metrics = run.metrics
    figure = plots.confusion_matrix_figure(metrics["confusion_matrix"], class_names)
    rows = [
        [_escape(row["class_name"]), _format_number(row["precision"], ".4f"), _format_number(row["recall"], ".4f"),
         _format_number(row["f1"], ".4f"), _escape(row["support"])]
        for row in metrics["per_class"]
    ]
    count = len(metrics["per_class"])
    rows.append([
        "macro average",
        _format_number(sum(row["precision"] for row in metrics["per_class"]) / count, ".4f"),
        _format_number(sum(row["recall"] for row in metrics["per_class"]) / count, ".4f"),
        _format_number(metrics["macro_f1"], ".4f"),
        _escape(sum(row["support"] for row in metrics["per_class"])),
    ])
    table = _table(["class", "precision", "recall", "F1", "support"], rows, numeric={1, 2, 3, 4},
                   row_classes=[""] * count + ["total"])
    loss = f", loss {_format_number(metrics['loss'], '.4f')}" if "loss" in metrics else ""
    return (
        "<h2>Test results</h2>"
        + f"<p>Accuracy {_format_number(metrics['accuracy'], '.4f')}, macro-F1 {_format_number(metrics['macro_f1'], '.4f')}{_escape(loss)}"
        + f" on {_escape(metrics.get('samples', '-'))} test images, with the weights of the best epoch.</p>"
        + f'<div class="test-results"><div>{_figure_img(figure, "confusion matrix of the test split")}'
        + '<p class="note">Rows: true class. Columns: predicted class.</p></div>'
        + f"<div>{table}</div></div>"
    )


def _format_probability(probability: float) -> str:
    # Three decimals, but never a rounded 0.000 or 1.000 that would read as certainty.
    if probability < 0.0005:
        return "<0.001"
    if probability >= 0.9995:
        return ">0.999"
    return f"{probability:.3f}"


def _image_data_uri(image) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image, mode="L").save(buffer, format="PNG")
    return _png_data_uri(buffer.getvalue())


def _misclassified_section(run: runs.RunFiles, class_names: list[str]) -> str:
    heading = "<h2>Misclassified test images</h2>"
    path = run.path / MISCLASSIFIED_FILE
    if run.metrics is None:
        return heading + '<p class="note">No test metrics: the run saved no model to evaluate.</p>'
    if not path.exists():
        return heading + (
            f'<p class="note">{_escape(MISCLASSIFIED_FILE)} not found. Rebuild this report with '
            f"<code>fmnist report {_escape(run.path)} --data-dir DIR</code> to evaluate the model on the test split "
            f"and show its mistakes.</p>"
        )
    arrays = read_misclassified(path, len(class_names))
    matrix = run.metrics["confusion_matrix"]
    mistakes = sum(sum(row) for row in matrix) - sum(matrix[i][i] for i in range(len(matrix)))
    shown = len(arrays["index"])
    if shown == 0:
        return heading + '<p class="note">The model classified every test image correctly.</p>'

    figures = []
    for position in range(shown):
        true_name = class_names[int(arrays["label"][position])]
        predicted_name = class_names[int(arrays["prediction"][position])]
        probability = float(arrays["probability"][position])
        label_probability = float(arrays["label_probability"][position])
        alt = f"test image {int(arrays['index'][position])}: {true_name} classified as {predicted_name}"
        figures.append(
            "<figure>"
            f'<img src="{_image_data_uri(arrays["images"][position])}" alt="{_escape(alt)}">'
            f'<figcaption><span class="predicted">{_escape(predicted_name)} {_escape(_format_probability(probability))}</span><br>'
            f'<span class="true">true: {_escape(true_name)} {_escape(_format_probability(label_probability))}</span><br>'
            f'<span class="note">#{int(arrays["index"][position])}</span></figcaption>'
            "</figure>"
        )
    return heading + (
        f"<p>The {shown} most confident of {mistakes} mistakes, most confident first. Each image shows the predicted "
        f"class and its probability (red), the true class and its probability (green), and the image's position in "
        f"the test split files.</p>"
        f'<div class="grid">{"".join(figures)}</div>'
    )


def _value_text(value: Any) -> str:
    # Values as model.json spells them (null, true, lists), but strings without quotes.
    return value if isinstance(value, str) else json.dumps(value)


def _config_section(run: runs.RunFiles) -> str:
    metadata = run.metadata
    if metadata is None:
        return f'<h2>Configuration</h2><p class="note">{_escape(artifacts.METADATA_FILE)} not found.</p>'
    config = metadata.get("config") if isinstance(metadata.get("config"), dict) else {}
    rows = [[f"<code>{_escape(key)}</code>", f'<span class="mono">{_escape(_value_text(value))}</span>'] for key, value in config.items()]
    architecture = metadata.get("architecture", {})
    normalisation = metadata.get("normalisation", {})
    rows.append(["<code>architecture</code>", f'<span class="mono">{_escape(_value_text(architecture))}</span>'])
    rows.append(["<code>normalisation</code>", f'<span class="mono">{_escape(_value_text(normalisation))}</span>'])
    return "<h2>Configuration</h2>" + _table(["setting", "value"], rows)


def _data_section(run: runs.RunFiles) -> str:
    metadata = run.metadata or {}
    files = metadata.get("data_files")
    if not isinstance(files, list) or not files:
        return '<h2>Data</h2><p class="note">model.json records no data files.</p>'
    rows = []
    for entry in files:
        entry = entry if isinstance(entry, dict) else {}
        official = entry.get("official")
        official_text = "-"
        if official is True:
            official_text = "yes"
        elif official is False:
            official_text = "no: its MD5 differs from the published digest"
        rows.append([
            f"<code>{_escape(entry.get('name', '-'))}</code>",
            _escape(official_text),
            f'<span class="mono nowrap">{_escape(entry.get("md5", "-"))}</span>',
            f'<span class="mono">{_escape(entry.get("path", "-"))}</span>',
        ])
    lines = ["<h2>Data</h2>", _table(["file", "official release", "MD5", "path"], rows)]
    if any(isinstance(entry, dict) and entry.get("official") is False for entry in files):
        lines.append(
            '<p class="warning">Some files are not the official release. Test metrics on them are comparable to, '
            "but not the same as, metrics on the official test split.</p>"
        )
    sizes = metadata.get("split_sizes")
    if isinstance(sizes, dict):
        lines.append("<p>Split sizes: " + ", ".join(f"{_escape(name)} {_escape(size)}" for name, size in sizes.items()) + ".</p>")
    return "".join(lines)


def _software_section(run: runs.RunFiles, summary: dict[str, Any]) -> str:
    metadata = run.metadata or {}
    rows = []
    software = metadata.get("software")
    if isinstance(software, dict):
        rows += [[_escape(name), f'<span class="mono">{_escape(version)}</span>'] for name, version in software.items()]
    rows.append(["run created", _escape(runs.format_date(summary["created"]))])
    rows.append(["wall time, from the start of 'fmnist train' to the saved model", _escape(runs.format_seconds(summary["seconds"]))])
    if run.history:
        epoch_seconds = sum(record.seconds for record in run.history if math.isfinite(record.seconds))
        rows.append(["training time, sum of the epochs", _escape(runs.format_seconds(epoch_seconds))])
    threads = (metadata.get("config") or {}).get("threads") if isinstance(metadata.get("config"), dict) else None
    if threads is not None:
        rows.append(["torch threads", _escape(threads)])
    return "<h2>Software and time</h2>" + _table(["item", "value"], rows)


def render_report(run_dir: Path) -> str:
    """Return the HTML of the report of ``run_dir``, raising CheckpointError if a file is damaged."""
    run = runs.read_run(run_dir)
    summary = runs.summarize_run(run)
    class_names = _class_names(run)
    best_epoch = summary["best_epoch"] or None

    sections = [
        _summary_section(run, summary),
        _curves_section(run, best_epoch),
        _test_section(run, class_names),
        _misclassified_section(run, class_names),
        _config_section(run),
        _data_section(run),
        _software_section(run, summary),
    ]
    title = f"fmnist run {run.path.name}"
    created = runs.format_date(summary["created"])
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CONTENT_SECURITY_POLICY}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        # An empty icon, so that the browser does not request favicon.ico.
        '<link rel="icon" href="data:,">'
        f"<title>{_escape(title)}</title><style>{STYLE}</style></head><body>"
        f"<h1>{_escape(title)}</h1>"
        f'<p class="subtitle">Run directory <code>{_escape(run.path.resolve())}</code>, created {_escape(created)}.</p>'
        + "\n".join(sections)
        + "</body></html>\n"
    )


def write_report(run_dir: Path, output: Path | None = None) -> Path:
    """Build the report of ``run_dir`` and write it to ``output`` (default ``run_dir/report.html``)."""
    run_dir = Path(run_dir)
    output = Path(output) if output is not None else run_dir / REPORT_FILE
    if output.parent != run_dir and not output.parent.is_dir():
        raise ConfigError(f"--output {output}: directory {output.parent} does not exist; create it or choose another file")
    page = render_report(run_dir)
    artifacts.atomic_write_text(output, page)
    logger.info("Wrote report %s", output)
    return output


def write_report_after_training(run_dir: Path) -> Path | None:
    """Write ``report.html`` at the end of 'fmnist train'; log a warning instead of raising on failure."""
    try:
        return write_report(run_dir)
    # The model is saved before the report, and a report can be rebuilt later, so a
    # report that fails must not turn a finished training run into a failed command.
    except Exception as error:  # noqa: BLE001
        logger.warning(
            "Could not write %s (%s: %s); the model is saved, rebuild the report with 'fmnist report %s'",
            Path(run_dir) / REPORT_FILE, type(error).__name__, error, run_dir,
        )
        return None
