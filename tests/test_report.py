"""report.html: a self-contained page built from the files of a run directory."""

import base64
import io
import json
import logging
import re

import numpy as np
import pytest
from PIL import Image

from fmnist import report
from fmnist.errors import CheckpointError, ConfigError
from fmnist.misclassified import MISCLASSIFIED_FILE
from synthetic_runs import make_run_dir

DATA_URI = re.compile(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"')


def _decode_images(page: str) -> list[Image.Image]:
    return [Image.open(io.BytesIO(base64.b64decode(data))) for data in DATA_URI.findall(page)]


@pytest.fixture
def run_dir(tmp_path):
    return make_run_dir(tmp_path / "run-a")


def test_page_is_self_contained(run_dir):
    page = report.render_report(run_dir)
    assert page.startswith("<!DOCTYPE html>\n<html lang=\"en\">")
    assert f'content="{report.CONTENT_SECURITY_POLICY}"' in page
    assert "<script" not in page.lower()
    # Every src and href is a data: URI: no file, no http(s) and no relative link.
    assert re.findall(r'(?:src|href)="([a-z]+):', page) == ["data"] * (1 + 2 + 36)
    assert "http://" not in page
    assert "https://" not in page


def test_page_images_decode(run_dir):
    images = _decode_images(report.render_report(run_dir))
    assert len(images) == 2 + 36
    curves, confusion = images[0], images[1]
    assert curves.width > 1000
    assert confusion.width > 400
    assert {image.size for image in images[2:]} == {(28, 28)}
    assert {image.mode for image in images[2:]} == {"L"}


def test_page_summary_and_tables(run_dir):
    page = report.render_report(run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert "<title>fmnist run run-a</title>" in page
    assert f'<div class="value">{metrics["accuracy"]:.4f}</div>' in page
    assert '<div class="label">best epoch</div><div class="value">3 of 4</div>' in page
    assert '<div class="label">wall time</div><div class="value">1m 15s</div>' in page
    assert "<p>Stopped: reached the maximum of 4 epochs.</p>" in page
    # The best epoch's row of the history table is highlighted.
    assert '<tr class="best"><td class="number">3</td>' in page
    shirt = metrics["per_class"][6]
    assert (
        f'<td>Shirt</td><td class="number">{shirt["precision"]:.4f}</td><td class="number">{shirt["recall"]:.4f}</td>'
        f'<td class="number">{shirt["f1"]:.4f}</td><td class="number">{shirt["support"]}</td>'
    ) in page
    assert f'<tr class="total"><td>macro average</td>' in page
    assert f'<td class="number">{metrics["macro_f1"]:.4f}</td><td class="number">200</td></tr>' in page


def test_page_misclassified_grid(run_dir):
    page = report.render_report(run_dir)
    assert "<p>The 36 most confident of 40 mistakes, most confident first." in page
    assert page.count("<figure>") == 36
    captions = re.findall(r'<span class="predicted">([^<]*)</span><br><span class="true">true: ([^<]*)</span>', page)
    assert len(captions) == 36
    assert captions[0][0].endswith(" 0.990")
    assert captions[0][1].endswith(" 0.001")


@pytest.mark.parametrize(
    ("probability", "text"),
    [(0.0, "&lt;0.001"), (0.0004, "&lt;0.001"), (0.0005, "0.001"), (0.5, "0.500"), (0.9994, "0.999"), (0.9996, "&gt;0.999"), (1.0, "&gt;0.999")],
)
def test_page_probability_format(tmp_path, probability, text):
    run_dir = make_run_dir(tmp_path / "run", mistakes=1)
    path = run_dir / MISCLASSIFIED_FILE
    with np.load(path) as archive:
        arrays = dict(archive)
    arrays["probability"][0] = probability
    np.savez(path, **arrays)
    page = report.render_report(run_dir)
    assert re.findall(r'<span class="predicted">[^<]* ([^ <]*)</span>', page) == [text]


def test_page_configuration_data_software(run_dir):
    page = report.render_report(run_dir)
    assert "<td><code>batch_size</code></td><td><span class=\"mono\">128</span></td>" in page
    assert "<td><code>betas</code></td><td><span class=\"mono\">[0.9, 0.999]</span></td>" in page
    assert "<td><code>offline</code></td><td><span class=\"mono\">true</span></td>" in page
    assert "<td><code>train-labels-idx1-ubyte.gz</code></td><td>yes</td>" in page
    assert "<td><code>train-images-idx3-ubyte.gz</code></td><td>no: its MD5 differs from the published digest</td>" in page
    assert "Some files are not the official release." in page
    assert "<p>Split sizes: train 900, val 100, test 200.</p>" in page
    assert '<td>torch</td><td><span class="mono">2.13.0+cpu</span></td>' in page
    assert "<td>wall time, from the start of 'fmnist train' to the saved model</td><td>1m 15s</td>" in page
    assert "<td>training time, sum of the epochs</td><td>6.0s</td>" in page


def test_page_escapes_strings_from_files(tmp_path):
    hostile = '<img src="http://example.invalid/x.png">&"'
    class_names = [f"{hostile}{index}" for index in range(10)]
    run_dir = make_run_dir(tmp_path / "<i>run&", class_names=class_names, config={"data_dir": hostile})
    page = report.render_report(run_dir)
    assert hostile not in page
    assert "http://example.invalid" in page  # present only as escaped text
    assert '&lt;img src=&quot;http://example.invalid/x.png&quot;&gt;&amp;&quot;0' in page
    assert "<title>fmnist run &lt;i&gt;run&amp;</title>" in page
    assert len(re.findall(r"<img ", page)) == 2 + 36


def test_page_without_misclassified_file(tmp_path):
    run_dir = make_run_dir(tmp_path / "run", misclassified=False)
    page = report.render_report(run_dir)
    assert (
        f'<p class="note">misclassified.npz not found. Rebuild this report with <code>fmnist report {run_dir} '
        f"--data-dir DIR</code> to evaluate the model on the test split and show its mistakes.</p>"
    ) in page
    assert "<figure>" not in page


def test_page_without_mistakes(tmp_path):
    run_dir = make_run_dir(tmp_path / "run", mistakes=0)
    page = report.render_report(run_dir)
    assert '<p class="note">The model classified every test image correctly.</p>' in page


def test_page_of_run_without_model(tmp_path):
    run_dir = make_run_dir(tmp_path / "run")
    for name in ("model.json", "metrics.json", MISCLASSIFIED_FILE):
        (run_dir / name).unlink()
    page = report.render_report(run_dir)
    assert (
        '<p class="warning">no model.json: training has not finished, or it stopped before saving a model.</p>'
    ) in page
    assert '<p class="note">metrics.json not found: the run saved no model to evaluate.</p>' in page
    assert '<p class="note">model.json not found.</p>' in page
    assert len(_decode_images(page)) == 1


def test_page_of_diverged_history(tmp_path):
    run_dir = make_run_dir(tmp_path / "run")
    history = json.loads((run_dir / "history.json").read_text())
    history[-1]["train_loss"] = None
    history[-1]["val_loss"] = None
    (run_dir / "history.json").write_text(json.dumps(history))
    page = report.render_report(run_dir)
    assert '<td class="number">nan</td><td class="number">nan</td>' in page


def test_damaged_metrics_raise(run_dir):
    (run_dir / "metrics.json").write_text('{"accuracy": "high"}')
    with pytest.raises(CheckpointError) as raised:
        report.render_report(run_dir)
    assert str(raised.value) == (
        f"{run_dir / 'metrics.json'}: accuracy is 'high', expected a number; "
        f"the file is damaged, train again or restore it from a backup"
    )


def test_write_report_default_path(run_dir, caplog):
    caplog.set_level(logging.INFO, logger="fmnist")
    path = report.write_report(run_dir)
    assert path == run_dir / "report.html"
    assert path.read_text(encoding="utf-8") == report.render_report(run_dir)
    assert caplog.messages == [f"Wrote report {path}"]


def test_write_report_output_option(run_dir, tmp_path):
    output = tmp_path / "elsewhere.html"
    assert report.write_report(run_dir, output) == output
    assert output.exists()
    assert not (run_dir / "report.html").exists()


def test_write_report_missing_output_directory(run_dir, tmp_path):
    output = tmp_path / "no" / "report.html"
    with pytest.raises(ConfigError) as raised:
        report.write_report(run_dir, output)
    assert str(raised.value) == (
        f"--output {output}: directory {tmp_path / 'no'} does not exist; create it or choose another file"
    )


def test_report_after_training_logs_failure(run_dir, caplog):
    (run_dir / "history.json").write_text("[")
    caplog.set_level(logging.WARNING, logger="fmnist")
    assert report.write_report_after_training(run_dir) is None
    assert not (run_dir / "report.html").exists()
    assert len(caplog.messages) == 1
    assert caplog.messages[0].startswith(
        f"Could not write {run_dir / 'report.html'} (CheckpointError: {run_dir / 'history.json'}: training history "
        f"cannot be read ("
    )
    assert caplog.messages[0].endswith(f"the model is saved, rebuild the report with 'fmnist report {run_dir}'")


def test_report_after_training_writes_page(run_dir):
    assert report.write_report_after_training(run_dir) == run_dir / "report.html"
    assert (run_dir / "report.html").read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
