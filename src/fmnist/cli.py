"""The ``fmnist`` command line: argument parsing, logging set-up and exit codes.

Exit codes: 0 success, 2 invalid usage or invalid input, 1 any other failure,
130 interrupted by Ctrl-C. Expected errors print one line without a traceback;
``--debug`` shows the traceback too.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from fmnist import __version__
from fmnist.config import MAX_AUGMENT_SHIFT, PRECISIONS, PRESET_FIELDS, PRESETS, TrainConfig
from fmnist.errors import ConfigError, FmnistError

logger = logging.getLogger("fmnist")

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def path_argument(value: str) -> Path:
    """Parse a path option; an empty string (often an unset shell variable) is rejected, not read as '.'."""
    if not value:
        raise argparse.ArgumentTypeError("an empty path is not allowed; give a file or directory")
    return Path(value)


def _add_data_options(parser: argparse.ArgumentParser, offline: bool = True) -> None:
    parser.add_argument(
        "--data-dir",
        type=path_argument,
        metavar="DIR",
        help="directory holding the four IDX files, or Kaggle's fashion-mnist_train.csv and fashion-mnist_test.csv "
        "(default: $FMNIST_DATA_DIR, else $XDG_CACHE_HOME/fmnist or ~/.cache/fmnist)",
    )
    if offline:
        parser.add_argument("--offline", action="store_true", help="never download; fail if a data file is missing")


def _add_common_options(parser: argparse.ArgumentParser) -> None:
    verbosity = parser.add_mutually_exclusive_group()
    verbosity.add_argument("-q", "--quiet", action="store_true", help="show only warnings and errors, and no progress bars")
    verbosity.add_argument("-v", "--verbose", action="store_true", help="show debug messages too")
    parser.add_argument("--debug", action="store_true", help="show the traceback of errors")


def build_parser() -> argparse.ArgumentParser:
    defaults = TrainConfig()
    parser = argparse.ArgumentParser(
        prog="fmnist",
        description="Train, evaluate and serve an MLP classifier for Fashion-MNIST.",
    )
    parser.add_argument("--version", action="version", version=f"fmnist {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    download = commands.add_parser("download", help="fetch and verify the dataset files")
    _add_data_options(download, offline=False)
    download.add_argument("--verify", action="store_true", help="re-check every file in the data directory and exit")
    download.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS", help="socket timeout in seconds (default: 30)")
    download.add_argument("--retries", type=int, default=2, metavar="N", help="retries per mirror after a timeout or a cut connection (default: 2)")
    _add_common_options(download)

    train = commands.add_parser("train", help="train a model and write a run directory")
    _add_data_options(train)
    train.add_argument("--output-dir", type=path_argument, metavar="DIR", help="run directory to create; it must be new or empty (default: runs/<timestamp>)")
    train.add_argument("--config", type=path_argument, metavar="FILE", help="read settings from a TOML file whose keys are the option names (batch_size or batch-size); options given here override it; RUN_DIR/config.toml repeats a run (default: none)")
    train.add_argument("--resume", type=path_argument, metavar="RUN_DIR", help="continue the interrupted run in RUN_DIR after its last completed epoch, with the configuration stored in RUN_DIR/config.json")
    train.add_argument("--seed", type=int, default=defaults.seed, help=f"seed of the split, initialisation and shuffling (default: {defaults.seed})")
    train.add_argument("--val-fraction", type=float, default=defaults.val_fraction, help=f"fraction of the training set held out as val, stratified (default: {defaults.val_fraction})")
    train.add_argument("--epochs", type=int, default=defaults.epochs, help=f"maximum number of epochs (default: {defaults.epochs})")
    train.add_argument("--batch-size", type=int, default=defaults.batch_size, help=f"images per optimizer step (default: {defaults.batch_size})")
    train.add_argument("--lr", type=float, default=defaults.lr, help=f"peak Adam learning rate (default: {defaults.lr})")
    train.add_argument("--betas", type=float, nargs=2, default=list(defaults.betas), metavar=("BETA1", "BETA2"), help=f"Adam betas (default: {defaults.betas[0]} {defaults.betas[1]})")
    train.add_argument("--weight-decay", type=float, default=defaults.weight_decay, help=f"Adam weight decay (L2 penalty) (default: {defaults.weight_decay})")
    train.add_argument("--dropout", type=float, default=defaults.dropout, help=f"dropout probability after each hidden layer (default: {defaults.dropout})")
    train.add_argument("--lr-start-factor", type=float, default=defaults.lr_start_factor, help=f"LinearLR factor of --lr at the first step, in (0, 1] (default: {defaults.lr_start_factor})")
    train.add_argument("--lr-end-factor", type=float, default=defaults.lr_end_factor, help=f"LinearLR factor of --lr after the last step of --epochs, in (0, 1] (default: {defaults.lr_end_factor})")
    train.add_argument("--patience", type=int, default=defaults.patience, help=f"epochs without val-loss improvement before stopping (default: {defaults.patience})")
    train.add_argument("--min-delta", type=float, default=defaults.min_delta, help=f"smallest val-loss decrease that counts as improvement (default: {defaults.min_delta})")
    train.add_argument("--label-smoothing", type=float, default=defaults.label_smoothing, help=f"cross-entropy label smoothing of the train loss, in [0, 1) (default: {defaults.label_smoothing})")
    train.add_argument("--augment-shift", type=int, default=defaults.augment_shift, metavar="PIXELS", help=f"move each training image by a random offset of up to PIXELS pixels per axis, 0 to {MAX_AUGMENT_SHIFT}; 0 turns it off (default: {defaults.augment_shift})")
    train.add_argument("--preset", choices=sorted(PRESETS), help=f"start from a named recipe instead of the defaults above; options given explicitly override it. {_describe_presets()}")
    train.add_argument("--threads", type=int, metavar="N", help="CPU threads for torch (default: every CPU available to the process)")
    train.add_argument("--device", metavar="DEVICE", help="auto, cpu, cuda, cuda:N or mps; auto picks CUDA, then MPS, then the CPU (default: auto)")
    train.add_argument("--precision", choices=PRECISIONS, help="bf16 runs the forward pass and the loss under torch.autocast with bfloat16 (default: fp32)")
    train.add_argument("--tensorboard", action="store_true", help="write train and val loss, val accuracy, val macro-F1 and the learning rate of every epoch to RUN_DIR/tensorboard; needs pip install 'fmnist[tensorboard]' (default: off)")
    train.add_argument("--json", action="store_true", help="print a JSON summary on stdout at the end")
    # Recipe options left off the command line stay None, so that TrainConfig.from_preset
    # can fill them from --preset and then from the defaults shown in the help.
    train.set_defaults(**dict.fromkeys(PRESET_FIELDS, None))
    # The seed and the val fraction stay None too, so that --resume can tell the settings
    # given on the command line from the defaults.
    train.set_defaults(seed=None, val_fraction=None)
    _add_common_options(train)

    evaluate = commands.add_parser("evaluate", help="report test metrics of a trained model")
    evaluate.add_argument("model", type=path_argument, metavar="MODEL", help="run directory written by 'fmnist train'")
    _add_data_options(evaluate)
    evaluate.add_argument("--plot", type=path_argument, metavar="FILE", help="confusion matrix PNG to write (default: MODEL/confusion_matrix.png)")
    evaluate.add_argument("--json", action="store_true", help="print the metrics as one JSON object on stdout")
    _add_common_options(evaluate)

    predict = commands.add_parser("predict", help="classify image files (PNG, JPEG, ...)")
    predict.add_argument("model", type=path_argument, metavar="MODEL", help="run directory written by 'fmnist train'")
    predict.add_argument("images", type=path_argument, nargs="+", metavar="IMAGE", help="image files to classify")
    predict.add_argument("--top-k", type=int, default=3, metavar="K", help="number of most probable classes to show, 1-10 (default: 3)")
    predict.add_argument(
        "--invert",
        choices=("auto", "always", "never"),
        default="auto",
        help="invert to light-on-black: auto inverts images with a light border (default: auto)",
    )
    predict.add_argument("--json", action="store_true", help="print a JSON list, one object per file, on stdout")
    _add_common_options(predict)

    report = commands.add_parser("report", help="build report.html, the self-contained HTML page of a run")
    report.add_argument("run_dir", type=path_argument, metavar="RUN_DIR", help="run directory written by 'fmnist train'")
    report.add_argument("--output", type=path_argument, metavar="FILE", help="HTML file to write (default: RUN_DIR/report.html)")
    report.add_argument(
        "--data-dir",
        type=path_argument,
        metavar="DIR",
        help="when RUN_DIR has no misclassified.npz, evaluate the model on this data directory's test split to find "
        "its mistakes (default: none; the report then shows no misclassified images)",
    )
    report.add_argument("--offline", action="store_true", help="with --data-dir: never download; fail if a data file is missing")
    _add_common_options(report)

    runs = commands.add_parser("runs", help="list the run directories under a directory as a table")
    runs.add_argument("root", type=path_argument, nargs="?", default=Path("runs"), metavar="DIR", help="directory that contains the run directories (default: runs)")
    runs.add_argument("--json", action="store_true", help="print a JSON list, one object per run, on stdout")
    _add_common_options(runs)

    compare = commands.add_parser("compare", help="plot the learning curves of runs on shared axes and print their metrics side by side")
    compare.add_argument("run_dirs", type=path_argument, nargs="+", metavar="RUN_DIR", help="run directories written by 'fmnist train'")
    compare.add_argument("--output", type=path_argument, default=Path("compare.png"), metavar="FILE", help="PNG file for the learning curves (default: compare.png in the current directory)")
    compare.add_argument("--json", action="store_true", help="print the runs' summaries and the PNG path as one JSON object on stdout")
    _add_common_options(compare)

    _add_export_command(commands)
    _add_completion_command(commands)
    # Each command's --help starts with the summary that 'fmnist --help' lists.
    for choice in commands._choices_actions:
        commands.choices[choice.dest].description = choice.help
    return parser


def _add_export_command(commands) -> None:
    from fmnist.export import DEFAULT_FILE_NAMES, FORMATS

    export = commands.add_parser("export", help="write a trained model as ONNX or TorchScript for deployment")
    export.add_argument("model", type=path_argument, metavar="MODEL", help="run directory written by 'fmnist train'")
    export.add_argument(
        "--format",
        choices=FORMATS,
        required=True,
        help="onnx: for ONNX Runtime and other ONNX runtimes, needs pip install 'fmnist[onnx]'; "
        "torchscript: for torch.jit.load in Python or C++ (required)",
    )
    export.add_argument(
        "--output",
        type=path_argument,
        metavar="FILE",
        help=f"file to write (default: MODEL/{DEFAULT_FILE_NAMES['onnx']} or MODEL/{DEFAULT_FILE_NAMES['torchscript']})",
    )
    _add_common_options(export)


def _add_completion_command(commands) -> None:
    from fmnist.completion import SHELLS

    completion = commands.add_parser(
        "completion", help="print a shell completion script; load it with: source <(fmnist completion bash)"
    )
    completion.add_argument("shell", choices=SHELLS, help="the shell to complete in")
    _add_common_options(completion)


def _describe_presets() -> str:
    recipes = []
    for name, values in sorted(PRESETS.items()):
        settings = ", ".join(f"--{field.replace('_', '-')} {value}" for field, value in values.items())
        recipes.append(f"{name}: {settings}")
    return "; ".join(recipes)


class _EscapingFormatter(logging.Formatter):
    """A formatter that writes surrogate escapes as backslash escapes.

    A stream with strict errors, such as stderr under some test runners, cannot write the
    surrogate escapes of file names that are not valid UTF-8.
    """

    def format(self, record: logging.LogRecord) -> str:
        from fmnist.artifacts import escape_surrogates

        return escape_surrogates(super().format(record))


def configure_logging(quiet: bool, verbose: bool) -> None:
    """Send the library's log records to stderr at the level the options ask for."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_EscapingFormatter("%(message)s"))
    if quiet or os.environ.get("RANK", "0") != "0":
        # Under torchrun only rank 0 reports progress; the other processes show warnings and errors.
        handler.setLevel(logging.WARNING)
    elif verbose:
        handler.setLevel(logging.DEBUG)
    else:
        handler.setLevel(logging.INFO)
    logger.handlers[:] = [handler]
    # The logger passes INFO on, so that the run directory's train.log is complete
    # even with --quiet; the terminal handler filters by the options.
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    logger.propagate = False


def show_progress(args: argparse.Namespace) -> bool:
    """Progress bars only on an interactive terminal, and not with --quiet."""
    return not args.quiet and sys.stderr.isatty()


def run_download(args: argparse.Namespace) -> int:
    from fmnist import download, pipeline

    data_dir = download.resolve_data_dir(args.data_dir)
    if args.verify:
        checks = download.verify_data_dir(data_dir, validate=pipeline._validate_with_cache)
        failed = False
        for check in checks:
            print(f"{check.status:17} {check.name}  {check.detail}")
            failed = failed or check.status in ("invalid", "missing")
        return EXIT_USAGE if failed else EXIT_OK
    paths = download.download_dataset(
        data_dir,
        timeout=args.timeout,
        retries=args.retries,
        show_progress=show_progress(args),
        validate=pipeline._validate_with_cache,
    )
    for path in paths:
        logger.info("%s", path)
    return EXIT_OK


def run_train(args: argparse.Namespace) -> int:
    from fmnist import config_file, pipeline

    if args.resume is not None:
        if args.config is not None:
            raise ConfigError("--config cannot be combined with --resume, which reads the configuration stored in the run directory; drop --config")
        return run_resume(args)
    config = TrainConfig.from_preset(
        args.preset,
        data_dir=args.data_dir,
        output_dir=args.output_dir,
        offline=args.offline,
        seed=args.seed,
        val_fraction=args.val_fraction,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        betas=tuple(args.betas) if args.betas is not None else None,
        weight_decay=args.weight_decay,
        dropout=args.dropout,
        lr_start_factor=args.lr_start_factor,
        lr_end_factor=args.lr_end_factor,
        patience=args.patience,
        min_delta=args.min_delta,
        label_smoothing=args.label_smoothing,
        augment_shift=args.augment_shift,
        threads=args.threads,
        device=args.device,
        precision=args.precision,
    )
    if args.config is not None:
        config = config_file.config_from_file(args.config, args.preset, given_train_settings(args))
    summary = pipeline.train(config, progress=show_progress(args), tensorboard=args.tensorboard)
    if args.json and summary is not None:
        print(json.dumps(summary))
    return EXIT_OK


def run_resume(args: argparse.Namespace) -> int:
    from fmnist import pipeline

    summary = pipeline.resume(
        args.resume, given_train_settings(args), progress=show_progress(args), tensorboard=args.tensorboard
    )
    if args.json:
        print(json.dumps(summary))
    return EXIT_OK


def given_train_settings(args: argparse.Namespace) -> dict[str, Any]:
    """Return the TrainConfig settings given on the command line of 'train', by field name.

    Options left off the command line are None in ``args`` (see build_parser), except
    --offline, which is False.
    """
    given = {}
    for field in dataclasses.fields(TrainConfig):
        value = getattr(args, field.name, None)
        if value is None or (field.name == "offline" and not value):
            continue
        given[field.name] = tuple(value) if field.name == "betas" else value
    return given


def run_evaluate(args: argparse.Namespace) -> int:
    from fmnist import pipeline

    result = pipeline.evaluate(
        args.model, data_dir=args.data_dir, offline=args.offline, plot_path=args.plot, show_progress=show_progress(args)
    )
    if args.json:
        print(json.dumps(result))
        return EXIT_OK
    print(format_evaluation(result))
    return EXIT_OK


def format_evaluation(result: dict) -> str:
    """Render evaluation metrics as a text report: summary, per-class table, confusion matrix."""
    lines = [
        f"Test split: {result['samples']} images",
        f"accuracy  {result['accuracy']:.4f}",
        f"macro-F1  {result['macro_f1']:.4f}",
        f"loss      {result['loss']:.4f}",
        "",
        f"{'class':<13}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>9}",
    ]
    for row in result["per_class"]:
        lines.append(
            f"{row['class_name']:<13}{row['precision']:>10.4f}{row['recall']:>10.4f}{row['f1']:>10.4f}{row['support']:>9}"
        )
    lines += ["", "Confusion matrix (rows: true class, columns: predicted class):"]
    lines.append(" " * 13 + "".join(f"{index:>6}" for index in range(len(result["per_class"]))))
    for row, counts in zip(result["per_class"], result["confusion_matrix"]):
        lines.append(f"{row['class']} {row['class_name']:<11}" + "".join(f"{count:>6}" for count in counts))
    lines += ["", f"Confusion matrix plot: {result['confusion_matrix_png']}"]
    return "\n".join(lines)


def run_predict(args: argparse.Namespace) -> int:
    from fmnist.predict import predict_files

    results = predict_files(args.model, args.images, invert=args.invert, top_k=args.top_k)
    if args.json:
        print(json.dumps(results))
    else:
        for result in results:
            if "error" in result:
                print(f"{result['file']}: error: {result['error']}")
                continue
            ranked = ", ".join(f"{entry['class_name']} {entry['probability']:.3f}" for entry in result["top_k"])
            print(f"{result['file']}: {result['class_name']} ({result['probability']:.3f}); top {args.top_k}: {ranked}")
    failures = sum("error" in result for result in results)
    if failures:
        logger.error("error: %d of %d images could not be classified", failures, len(results))
        return EXIT_USAGE
    return EXIT_OK


def run_report(args: argparse.Namespace) -> int:
    from fmnist import misclassified, report

    saved = args.run_dir / misclassified.MISCLASSIFIED_FILE
    if args.data_dir is not None and saved.exists():
        logger.info("Keeping %s; delete it to evaluate the model on --data-dir again", saved)
    elif args.data_dir is not None:
        misclassified.compute_misclassified(args.run_dir, args.data_dir, offline=args.offline, show_progress=show_progress(args))
    report.write_report(args.run_dir, args.output)
    return EXIT_OK


def run_runs(args: argparse.Namespace) -> int:
    from fmnist.runs import format_runs_table, list_runs

    rows = list_runs(args.root)
    if args.json:
        print(json.dumps(rows))
    elif rows:
        print(format_runs_table(rows))
    else:
        print(f"No run directories in {args.root}")
    return EXIT_OK


def run_compare(args: argparse.Namespace) -> int:
    from fmnist.compare import compare_runs, format_comparison

    result = compare_runs(args.run_dirs, args.output)
    print(json.dumps(result) if args.json else format_comparison(result))
    return EXIT_OK


def run_export(args: argparse.Namespace) -> int:
    from fmnist.export import export_model

    print(export_model(args.model, args.format, args.output))
    return EXIT_OK


def run_completion(args: argparse.Namespace) -> int:
    from fmnist.completion import bash_script

    print(bash_script(build_parser()), end="")
    return EXIT_OK


COMMANDS = {
    "download": run_download,
    "train": run_train,
    "evaluate": run_evaluate,
    "predict": run_predict,
    "report": run_report,
    "runs": run_runs,
    "compare": run_compare,
    "export": run_export,
    "completion": run_completion,
}


# OSErrors caused by the paths a user gives: exit code 2. Others (a full disk) exit with 1.
PATH_ERRORS = (FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError, PermissionError)


def report_os_error(error: OSError, debug: bool) -> int:
    """Log an operating-system error on a file as one line and return its exit code."""
    where = error.filename if error.filename is not None else "a file"
    reason = error.strerror or str(error)
    if isinstance(error, PATH_ERRORS):
        advice = "check that the path exists, is the right kind (file or directory) and that you may write to it"
        code = EXIT_USAGE
    else:
        advice = "check the disk and the file system, then try again"
        code = EXIT_FAILURE
    if debug:
        logger.exception("error: %s: %s; %s", where, reason, advice)
    else:
        logger.error("error: %s: %s; %s", where, reason, advice)
    return code


def main(argv: list[str] | None = None) -> int:
    """Run the command line and return its exit code."""
    args = build_parser().parse_args(argv)
    configure_logging(args.quiet, args.verbose)
    try:
        return COMMANDS[args.command](args)
    except FmnistError as error:
        if args.debug:
            logger.exception("error: %s", error)
        else:
            logger.error("error: %s", error)
        return error.exit_code
    except KeyboardInterrupt:
        logger.error("error: interrupted")
        return EXIT_INTERRUPTED
    except OSError as error:
        return report_os_error(error, args.debug)
    except Exception as error:  # noqa: BLE001 - the last line of defence of the command line
        if args.debug:
            logger.exception("error: unexpected %s: %s", type(error).__name__, error)
        else:
            logger.error("error: unexpected %s: %s; rerun with --debug for the traceback", type(error).__name__, error)
        return EXIT_FAILURE
