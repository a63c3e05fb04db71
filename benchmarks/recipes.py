"""Train one recipe on the real data and record its test accuracy: the sweep behind the presets.

With no option beyond those of ``fmnist train``, this script trains exactly as ``fmnist
train`` does in one CPU process. It uses the same stratified split and normalisation,
the same initial weights for the seed, and the same shuffle order and shift offsets,
drawn from one generator. It then gives the same test accuracy as ``fmnist train`` with
the same options and seed. It also evaluates the test split after every epoch (never used for
any choice), so that one run shows how test accuracy moves.

The other options try what fmnist does not ship, so that docs/benchmarks.md can record
what each did. They add an exponential moving average of the weights, decoupled weight
decay, mixup, Gaussian input noise, sharpness-aware minimisation (SAM), or distillation
from teachers: an ensemble of MLPs of the same architecture, or a small CNN.

Like ``fmnist train``, the run ends with the weights of the epoch with the lowest val
loss, and ``test_accuracy`` is theirs. Each run appends one JSON line to ``--output``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fmnist import augment, data
from fmnist.errors import FmnistError
from fmnist.loading import FashionMNISTDataset
from fmnist.model import build_model

# The CNN teacher draws its initial weights and its shuffle order from this offset of the seed.
CNN_TEACHER_SEED_OFFSET = 12345
# MLP teacher k (from 0) of seed s trains with seed s * 1000 + 1 + k.
MLP_TEACHER_SEED_STRIDE = 1000


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Train one recipe on the real data and record its test accuracy.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--data-dir", type=Path,
                        default=Path(os.environ.get("FMNIST_DATA_DIR") or "../shared/data/fashion-mnist"),
                        help="the Fashion-MNIST IDX files ($FMNIST_DATA_DIR when set)")
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/recipes.jsonl"),
                        help="JSON lines file that each run appends its result to")
    parser.add_argument("--tag", default="", help="a name for the recipe, stored with the result")

    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--val-fraction", type=float, default=0.1)

    # The options of fmnist train, with the values of --preset best before it trained with shifts.
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--lr-end-factor", type=float, default=0.01)
    parser.add_argument("--dropout", type=float, default=0.3)
    parser.add_argument("--weight-decay", type=float, default=5e-5)
    parser.add_argument("--label-smoothing", type=float, default=0.1)
    parser.add_argument("--augment-shift", type=int, default=0)

    # What fmnist does not ship.
    parser.add_argument("--decoupled-weight-decay", action="store_true",
                        help="decay the weights apart from the gradient (AdamW) instead of adding L2 to it")
    parser.add_argument("--ema-decay", type=float, default=0.0,
                        help="evaluate and keep an exponential moving average of the weights, updated every step")
    parser.add_argument("--mixup-alpha", type=float, default=0.0,
                        help="mix each batch with a shuffled copy of itself, by a factor drawn from Beta(alpha, alpha)")
    parser.add_argument("--noise-std", type=float, default=0.0,
                        help="add Gaussian noise of this standard deviation to the normalised training images")
    parser.add_argument("--sam-rho", type=float, default=0.0,
                        help="sharpness-aware minimisation: step with the gradient at the weights moved by rho")
    parser.add_argument("--teacher", choices=("none", "mlp-ensemble", "cnn"), default="none",
                        help="distil from teachers trained first on the same train split")
    parser.add_argument("--teacher-count", type=int, default=3, help="MLPs in the mlp-ensemble teacher")
    parser.add_argument("--teacher-epochs", type=int, default=30)
    parser.add_argument("--teacher-lr", type=float, default=2e-3, help="learning rate of the CNN teacher")
    parser.add_argument("--cnn-channels", type=int, default=16, help="channels of the CNN teacher's first convolution")
    parser.add_argument("--temperature", type=float, default=2.0, help="softmax temperature of the distillation term")
    parser.add_argument("--distill-weight", type=float, default=0.5,
                        help="weight of the distillation term; the label term gets 1 minus it")
    args = parser.parse_args(argv)

    for name in ("threads", "epochs", "batch_size", "teacher_count", "teacher_epochs", "cnn_channels"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if not args.temperature > 0:
        parser.error(f"--temperature must be positive, got {args.temperature}")
    if not 0 <= args.distill_weight <= 1:
        parser.error(f"--distill-weight must be between 0 and 1, got {args.distill_weight}")
    return args


@dataclass
class Splits:
    train_images: torch.Tensor
    train_labels: torch.Tensor
    val_images: torch.Tensor
    val_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    fill: float  # the normalised value of a black pixel, for shifted images


def load_splits(data_dir: Path, val_fraction: float, seed: int) -> Splits:
    """Load the real data with the split and normalisation that ``fmnist train`` uses for ``seed``."""
    train_split = data.load_split(data_dir, "train")
    test_split = data.load_split(data_dir, "test")
    train_indices, val_indices = data.stratified_split(train_split.labels, val_fraction, seed)
    mean, std = data.pixel_stats(train_split.images, train_indices)

    def tensors(split, indices=None):
        return FashionMNISTDataset(split.images, split.labels, indices, mean=mean, std=std).tensors()

    return Splits(
        *tensors(train_split, train_indices), *tensors(train_split, val_indices), *tensors(test_split),
        fill=float(-mean / std),
    )


def build_cnn_teacher(channels: int) -> nn.Sequential:
    """Return a small CNN over flattened 28x28 images: two 3x3 convolutions with pooling, then two linear layers."""
    return nn.Sequential(
        nn.Unflatten(1, (1, 28, 28)),
        nn.Conv2d(1, channels, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(channels, 2 * channels, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(2 * channels * 7 * 7, 128), nn.ReLU(), nn.Dropout(0.3), nn.Linear(128, 10),
    )


@torch.no_grad()
def logits_of(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    model.eval()
    return torch.cat([model(images[start : start + 4096]) for start in range(0, len(images), 4096)])


def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """Return the mean cross-entropy and the accuracy of ``model``."""
    logits = logits_of(model, images)
    return nn.functional.cross_entropy(logits, labels).item(), (logits.argmax(1) == labels).float().mean().item()


@dataclass
class Recipe:
    epochs: int
    lr: float
    weight_decay: float
    label_smoothing: float
    augment_shift: int = 0
    soft_targets: torch.Tensor | None = None  # teacher probabilities at the temperature, one row per train image


def sam_step(model, loss_fn, images, labels, rho: float) -> None:
    """Replace the gradients by those at the weights moved by ``rho`` along the normalised gradient."""
    params = [param for param in model.parameters() if param.grad is not None]
    with torch.no_grad():
        norm = torch.norm(torch.stack([param.grad.norm() for param in params]))
        moves = [rho * param.grad / (norm + 1e-12) for param in params]
        for param, move in zip(params, moves):
            param.add_(move)
    model.zero_grad(set_to_none=True)
    loss_fn(model(images), labels).backward()
    with torch.no_grad():
        for param, move in zip(params, moves):
            param.sub_(move)


def train(model: nn.Module, seed: int, recipe: Recipe, splits: Splits, args: argparse.Namespace):
    """Train ``model`` and restore the weights of its lowest val loss.

    Return the model, the best epoch, and the val loss and test accuracy of every epoch.

    The order of random draws matches ``fmnist.train.Trainer``: one permutation per epoch
    from a generator seeded with ``seed``, then per batch the shift offsets from it.
    """
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(
        model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay,
        decoupled_weight_decay=args.decoupled_weight_decay,
    )
    steps_per_epoch = math.ceil(len(splits.train_labels) / args.batch_size)
    scheduler = torch.optim.lr_scheduler.LinearLR(
        optimizer, 1.0, args.lr_end_factor, total_iters=recipe.epochs * steps_per_epoch
    )
    loss_fn = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
    averaged = None
    if args.ema_decay:
        averaged = torch.optim.swa_utils.AveragedModel(
            model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(args.ema_decay)
        )

    best_val_loss, best_epoch, best_state = math.inf, 0, None
    val_losses = []
    test_accuracies = []
    for epoch in range(1, recipe.epochs + 1):
        model.train()
        order = torch.randperm(len(splits.train_labels), generator=generator)
        for start in range(0, len(order), args.batch_size):
            batch = order[start : start + args.batch_size]
            images, labels = splits.train_images[batch], splits.train_labels[batch]
            if recipe.augment_shift:
                images = augment.random_shift(images, recipe.augment_shift, splits.fill, generator)
            if args.noise_std:
                images = images + args.noise_std * torch.randn(images.shape, generator=generator)
            if args.mixup_alpha:
                mix_rng = np.random.default_rng(seed * 100003 + epoch * 1000 + start)
                share = float(mix_rng.beta(args.mixup_alpha, args.mixup_alpha))
                partner = torch.randperm(len(labels), generator=generator)
                logits = model(share * images + (1 - share) * images[partner])
                loss = share * loss_fn(logits, labels) + (1 - share) * loss_fn(logits, labels[partner])
            else:
                logits = model(images)
                loss = loss_fn(logits, labels)
            if recipe.soft_targets is not None:
                log_probs = nn.functional.log_softmax(logits / args.temperature, dim=1)
                distill = nn.functional.kl_div(log_probs, recipe.soft_targets[batch], reduction="batchmean")
                loss = (1 - args.distill_weight) * loss + args.distill_weight * distill * args.temperature**2
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if args.sam_rho:
                sam_step(model, loss_fn, images, labels, args.sam_rho)
            optimizer.step()
            scheduler.step()
            if averaged is not None:
                averaged.update_parameters(model)

        evaluated = averaged.module if averaged is not None else model
        val_loss, _ = evaluate(evaluated, splits.val_images, splits.val_labels)
        _, test_accuracy = evaluate(evaluated, splits.test_images, splits.test_labels)
        val_losses.append(round(val_loss, 4))
        test_accuracies.append(round(100 * test_accuracy, 2))
        print(f"epoch {epoch} val_loss {val_loss:.4f} test_accuracy {test_accuracy:.4f}", file=sys.stderr, flush=True)
        if val_loss < best_val_loss:
            best_val_loss, best_epoch = val_loss, epoch
            best_state = {name: value.clone() for name, value in evaluated.state_dict().items()}

    if best_state is None:
        raise FmnistError("no epoch had a finite val loss; lower --lr and run again")
    evaluated.load_state_dict(best_state)
    evaluated.eval()
    return evaluated, best_epoch, val_losses, test_accuracies


def teacher_targets(args: argparse.Namespace, splits: Splits) -> tuple[torch.Tensor, list[float], float]:
    """Train the teachers; return their mean probabilities at the temperature on the train split and their test accuracies.

    The last value is the test accuracy of the teachers together: the arg max of their mean probabilities.
    """
    if args.teacher == "cnn":
        seeds = [args.seed + CNN_TEACHER_SEED_OFFSET]
    else:
        seeds = [args.seed * MLP_TEACHER_SEED_STRIDE + 1 + k for k in range(args.teacher_count)]
    probability_sum = 0
    test_probability_sum = 0
    accuracies = []
    for seed in seeds:
        torch.manual_seed(seed)
        if args.teacher == "cnn":
            recipe = Recipe(args.teacher_epochs, args.teacher_lr, weight_decay=0.0, label_smoothing=0.0)
            teacher = build_cnn_teacher(args.cnn_channels)
        else:
            recipe = Recipe(args.teacher_epochs, args.lr, args.weight_decay, args.label_smoothing)
            teacher = build_model(args.dropout)
        teacher, *_ = train(teacher, seed, recipe, splits, args)
        accuracies.append(round(100 * evaluate(teacher, splits.test_images, splits.test_labels)[1], 2))
        probability_sum = probability_sum + torch.softmax(logits_of(teacher, splits.train_images) / args.temperature, 1)
        test_probability_sum = test_probability_sum + torch.softmax(logits_of(teacher, splits.test_images), 1)
    together = (test_probability_sum.argmax(1) == splits.test_labels).float().mean().item()
    return probability_sum / len(seeds), accuracies, round(100 * together, 2)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        return run(args)
    except FmnistError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code


def run(args: argparse.Namespace) -> int:
    splits = load_splits(args.data_dir, args.val_fraction, args.seed)

    started = time.perf_counter()
    recipe = Recipe(args.epochs, args.lr, args.weight_decay, args.label_smoothing, args.augment_shift)
    teacher_accuracies = teachers_together = None
    if args.teacher != "none":
        recipe.soft_targets, teacher_accuracies, teachers_together = teacher_targets(args, splits)
    torch.manual_seed(args.seed)
    model, best_epoch, val_losses, test_accuracies = train(build_model(args.dropout), args.seed, recipe, splits, args)
    _, test_accuracy = evaluate(model, splits.test_images, splits.test_labels)

    result = {
        "tag": args.tag,
        "options": {name: str(value) if isinstance(value, Path) else value for name, value in vars(args).items()},
        "test_accuracy": round(100 * test_accuracy, 2),
        "best_epoch": best_epoch,
        "epochs": args.epochs,
        "teacher_test_accuracies": teacher_accuracies,
        "teachers_together_test_accuracy": teachers_together,
        "seconds": round(time.perf_counter() - started, 1),
        "val_loss_per_epoch": val_losses,
        "test_accuracy_per_epoch": test_accuracies,
    }
    print(json.dumps(result), flush=True)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    with args.output.open("a") as file:
        file.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
