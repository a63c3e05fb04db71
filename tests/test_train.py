import math

import numpy as np
import pytest
import torch

from fmnist.config import TrainConfig
from fmnist.errors import ConfigError, TrainingError
from fmnist.loading import FashionMNISTDataset
from fmnist.model import build_model
from fmnist.train import EarlyStopping, Trainer, evaluate_model
from synthetic import make_images


def datasets(train_count=200, val_count=50):
    labels = np.resize(np.arange(10, dtype=np.uint8), train_count + val_count)
    images = make_images(labels)
    indices = np.arange(len(labels))
    train = FashionMNISTDataset(images, labels, indices[:train_count], mean=0.2, std=0.3)
    val = FashionMNISTDataset(images, labels, indices[train_count:], mean=0.2, std=0.3)
    return train, val


def make_trainer(**changes):
    config = TrainConfig(**{"epochs": 4, "batch_size": 32, "seed": 1, **changes})
    torch.manual_seed(config.seed)
    train, val = datasets()
    return Trainer(build_model(config.dropout), config, train, val)


def test_early_stopping_improves_then_stops():
    stopping = EarlyStopping(patience=2, min_delta=0.0)
    first = stopping.update(1, 1.0)
    assert first.improved and not first.stop
    assert first.reason == "val_loss improved from inf to 1.0000"
    assert not stopping.update(2, 1.1).stop
    decision = stopping.update(3, 1.2)
    assert decision.stop
    assert decision.reason == "val_loss 1.2000 has not improved on 1.0000 (epoch 1) by more than 0.0 for 2 epochs"
    assert stopping.best_epoch == 1


def test_early_stopping_min_delta():
    stopping = EarlyStopping(patience=5, min_delta=0.1)
    stopping.update(1, 1.0)
    decision = stopping.update(2, 0.95)
    assert not decision.improved
    assert stopping.best_loss == 1.0
    assert stopping.update(3, 0.85).improved


def test_early_stopping_state_round_trip():
    stopping = EarlyStopping(patience=3)
    stopping.update(1, 0.5)
    stopping.update(2, 0.6)
    restored = EarlyStopping(patience=3)
    restored.load_state_dict(stopping.state_dict())
    assert restored == stopping


def test_fit_restores_best_weights_when_patience_runs_out():
    trainer = make_trainer(epochs=30, patience=1, min_delta=10.0)
    result = trainer.fit()
    assert result.best_epoch == 1
    assert len(result.history) == 2
    assert result.stop_reason.startswith("early stopping: val_loss")
    for key, value in result.model.state_dict().items():
        assert torch.equal(value, trainer.best_state[key]), key


def test_fit_restores_best_weights_when_epochs_end():
    trainer = make_trainer(epochs=3)
    losses = iter([0.5, 0.2, 0.4])
    original = evaluate_model

    def fake_evaluate(model, dataset, *args, **kwargs):
        evaluation = original(model, dataset, *args, **kwargs)
        evaluation.loss = next(losses)
        return evaluation

    snapshots = {}

    def remember(trainer_):
        snapshots[trainer_.epoch] = {k: v.clone() for k, v in trainer_.model.state_dict().items()}

    trainer.on_epoch_end = remember
    import fmnist.train as train_module

    train_module.evaluate_model, saved = fake_evaluate, train_module.evaluate_model
    try:
        result = trainer.fit()
    finally:
        train_module.evaluate_model = saved
    assert result.best_epoch == 2
    assert result.stop_reason == "reached the maximum of 3 epochs"
    for key, value in result.model.state_dict().items():
        assert torch.equal(value, snapshots[2][key]), key


def test_same_seed_same_history():
    first = make_trainer().fit().history
    second = make_trainer().fit().history
    strip = lambda history: [(r.epoch, r.step, r.train_loss, r.val_loss, r.val_accuracy, r.lr) for r in history]
    assert strip(first) == strip(second)


def test_other_seed_other_history():
    first = make_trainer(seed=1).fit().history
    second = make_trainer(seed=2).fit().history
    assert first[0].train_loss != second[0].train_loss


def test_history_records_steps_and_lr():
    trainer = make_trainer(epochs=2, lr=1e-3, lr_end_factor=0.5)
    history = trainer.fit().history
    steps_per_epoch = math.ceil(200 / 32)
    assert [record.step for record in history] == [steps_per_epoch, 2 * steps_per_epoch]
    assert history[0].lr == pytest.approx(1e-3)
    assert history[1].lr == pytest.approx(1e-3 * 0.75)


def test_non_finite_loss_keeps_last_good_weights():
    trainer = make_trainer(epochs=5)
    real_loss = trainer.loss_fn
    snapshots = {}

    def loss_that_diverges(logits, labels):
        loss = real_loss(logits, labels)
        return loss * float("nan") if trainer.epoch == 3 else loss

    def remember(trainer_):
        snapshots[trainer_.epoch] = {k: v.clone() for k, v in trainer_.model.state_dict().items()}

    trainer.loss_fn = loss_that_diverges
    trainer.on_epoch_end = remember
    result = trainer.fit()
    assert isinstance(result.error, TrainingError)
    assert str(result.error).startswith("loss is not finite in epoch 3 (train_loss nan, val_loss")
    assert str(result.error).endswith("kept the weights of epoch 2; lower --lr and train again")
    assert len(result.history) == 3
    assert result.best_epoch == 2
    for key, value in result.model.state_dict().items():
        assert torch.isfinite(value).all(), key
        assert torch.equal(value, snapshots[2][key]), key


def test_batch_larger_than_train_split_rejected():
    with pytest.raises(ConfigError) as raised:
        make_trainer(batch_size=500)
    assert str(raised.value) == (
        "--batch-size 500 is larger than the train split (200 samples); use a batch size of at most 200"
    )


def record_first_epoch_batches(trainer):
    """Run one epoch and return the images and labels that reached the loss, batch by batch."""
    batches = []
    real_loss = trainer.loss_fn
    model = trainer.model
    real_forward = model.forward

    def forward(images):
        batches.append([images.clone()])
        return real_forward(images)

    def loss(logits, labels):
        batches[-1].append(labels.clone())
        return real_loss(logits, labels)

    model.forward = forward
    trainer.loss_fn = loss
    trainer.train_epoch()
    return batches


def test_augment_shift_keeps_labels_and_moves_images():
    plain = record_first_epoch_batches(make_trainer())
    shifted = record_first_epoch_batches(make_trainer(augment_shift=2))
    assert len(plain) == len(shifted)
    for (plain_images, plain_labels), (shifted_images, shifted_labels) in zip(plain, shifted):
        assert torch.equal(plain_labels, shifted_labels)
        assert shifted_images.shape == plain_images.shape
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(plain, shifted))


def test_augment_shift_same_seed_same_history():
    first = make_trainer(augment_shift=2).fit().history
    second = make_trainer(augment_shift=2).fit().history
    plain = make_trainer().fit().history
    strip = lambda history: [(r.train_loss, r.val_loss, r.val_accuracy) for r in history]
    assert strip(first) == strip(second)
    assert strip(first) != strip(plain)


def test_label_smoothing_reaches_train_loss_only():
    trainer = make_trainer(label_smoothing=0.1, epochs=1)
    assert trainer.loss_fn.label_smoothing == 0.1
    history = trainer.fit().history
    evaluation = evaluate_model(trainer.model, trainer.val_set)
    assert history[0].val_loss == pytest.approx(evaluation.loss)
    logits = trainer.model(trainer.val_set.tensors()[0])
    plain = torch.nn.functional.cross_entropy(logits, trainer.val_set.tensors()[1]).item()
    assert evaluation.loss == pytest.approx(plain, rel=1e-5)
