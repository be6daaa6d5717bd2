"""Shared fixtures: small trained models on the bundled digits, built once per test session."""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import settings

# The in-process tests use tiny models, where intra-op threads cost more than they give (and
# oversubscribe badly when anything else runs): one thread. CLI subprocesses get one too (tests.helpers).
torch.set_num_threads(1)

DIGITS_EPS = 0.2

# Hypothesis profiles. "full" keeps Hypothesis's 100 examples per unannotated test, and every property test
# its own count (tests.helpers.examples); "fast" runs a tenth. `make test-fast` (-m "not slow") loads "fast",
# everything else "full"; HYPOTHESIS_PROFILE=full|fast overrides.
settings.register_profile("full", max_examples=100)
settings.register_profile("fast", max_examples=10)


def pytest_configure(config):
    fast = "not slow" in (config.option.markexpr or "")
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("fast" if fast else "full"))


@pytest.fixture(scope="session", autouse=True)
def _decoded_cache(tmp_path_factory):
    """No test reads or writes the user's decoded-dataset cache (classwise.data.cache): one per session
    (CLI subprocesses inherit it)."""
    old = os.environ.get("CLASSWISE_CACHE")
    os.environ["CLASSWISE_CACHE"] = str(tmp_path_factory.mktemp("decoded-cache"))
    yield
    if old is None:
        os.environ.pop("CLASSWISE_CACHE", None)
    else:
        os.environ["CLASSWISE_CACHE"] = old


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


SHARED_MODELS = ("at_model", "std_model")


@pytest.fixture(autouse=True)
def _shared_models_unchanged(request):
    """The session-wide models are shared: a test (or its fixtures) that leaves one in train mode or with
    other weights or buffers fails at teardown, and the model is put back so no later test sees it."""
    models = [request.getfixturevalue(n) for n in SHARED_MODELS if n in request.fixturenames]
    saved = [(m, {k: v.clone() for k, v in m.state_dict().items()}) for m in models]
    yield
    problems = []
    for m, state in saved:
        changed = [k for k, v in m.state_dict().items() if not torch.equal(v, state[k])]
        if m.training or changed:
            problems.append(f"left in train mode: {m.training}; changed: {changed[:3]}")
            m.eval()
            m.load_state_dict(state)
    assert not problems, f"the test changed a shared model of tests/conftest.py: {problems}"
