"""Shared fixtures: small trained models on the bundled digits, built once per test session."""

from __future__ import annotations

import pytest
import torch

# The in-process tests use tiny models, where intra-op threads cost more than they give (and
# oversubscribe badly when anything else runs): one thread. CLI subprocesses keep torch's default.
torch.set_num_threads(1)

DIGITS_EPS = 0.2


@pytest.fixture(scope="session")
def digits():
    from classwise.data import load_dataset

    return load_dataset("digits", "train"), load_dataset("digits", "test")


def _train(tmp_factory, eps: float, epochs: int, method: str):
    from classwise.models import load_checkpoint
    from classwise.training.config import resolve_config
    from classwise.training.fit import fit

    cfg, _ = resolve_config(recipe="digits", overrides={
        "eps": eps, "epochs": epochs, "steps": 5, "alpha": 2.5 * eps / 5 if eps else None, "method": method,
        "val_fraction": 0.0, "seed": 0})
    res = fit(cfg, tmp_factory.mktemp(f"{method}-{eps}"), device="cpu")
    model, _ = load_checkpoint(res.last)
    return model.eval()


@pytest.fixture(scope="session")
def at_model(tmp_path_factory):
    """small-cnn PGD-AT trained on digits at eps 0.2 (a few seconds on 2 cores)."""
    return _train(tmp_path_factory, DIGITS_EPS, epochs=15, method="pgd-at")


@pytest.fixture(scope="session")
def std_model(tmp_path_factory):
    """small-cnn trained without attacks on digits."""
    return _train(tmp_path_factory, 0.0, epochs=10, method="standard")
