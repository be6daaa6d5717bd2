"""Shared fixtures: small trained models on the bundled digits, built once per test session."""

from __future__ import annotations

import os

import pytest
import torch

# Two cores here: keep torch from oversubscribing when pytest runs other work beside it.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

DIGITS_EPS = 0.2


@pytest.fixture(scope="session")
def digits():
    from classwise.data import load_dataset

    return load_dataset("digits", "train"), load_dataset("digits", "test")


def _train(digits, eps: float, epochs: int):
    from classwise.models import create_model, dataset_stats
    from classwise.training import adversarial_fit

    train, _ = digits
    mean, std = dataset_stats("digits", 1)
    torch.manual_seed(0)
    model = create_model("small-cnn", num_classes=10, in_channels=1, input_size=8, mean=mean, std=std)
    adversarial_fit(model, train, eps=eps, steps=5, epochs=epochs, batch_size=64, lr=0.01, eps_warmup=0.3,
                    optimizer="adam", device="cpu", seed=0)
    return model.eval()


@pytest.fixture(scope="session")
def at_model(digits):
    """small-cnn PGD-AT trained on digits at eps 0.2 (a few seconds on 2 cores)."""
    return _train(digits, DIGITS_EPS, epochs=15)


@pytest.fixture(scope="session")
def std_model(digits):
    """small-cnn trained without attacks on digits."""
    return _train(digits, 0.0, epochs=10)
