"""Plain helpers shared by test modules: ``from tests.helpers import run_cli, ok, one_line_error``.

Test modules never import each other; what two of them share lives here (functions) or in
``tests/conftest.py`` (fixtures). ``pythonpath = ["."]`` in pyproject.toml puts the repository root on
``sys.path``, so ``tests.helpers`` imports under pytest from any folder of the repository.

``run_cli`` is the one way a test runs the real command line: ``python -m classwise ARGS`` in a fresh
interpreter, in ``cwd``, with a clean environment (see ``cli_env``) and a timeout. It runs the same
``classwise`` the test process imported (its ``src`` goes first on ``PYTHONPATH``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

# variables a developer's shell may set that change what the CLI prints or reads
_DROPPED = ("COLUMNS", "LINES", "CLASSWISE_PROGRESS", "CLASSWISE_DATA", "FORCE_COLOR", "NO_COLOR")


def _classwise_root() -> Path:
    """The folder holding the ``classwise`` package the tests import (``src`` of this checkout, normally)."""
    import classwise

    return Path(classwise.__file__).resolve().parents[1]


def cli_env(cwd: Path, *, columns: int | None = 200, data_dir: Path | None = None,
            **extra: str) -> dict[str, str]:
    """The environment of a CLI subprocess.

    ``CLASSWISE_DATA`` is an empty folder (``cwd/_empty_data`` unless ``data_dir``; created), so nothing
    outside the test's folders is read; progress bars off; matplotlib's cache under ``cwd``; one intra-op
    thread (tiny models, shared cores); unbuffered output; ``COLUMNS`` fixed (rich wraps at 80 columns
    when stdout is not a terminal; ``None`` leaves it unset). ``extra`` adds or overrides variables.
    """
    env = {k: v for k, v in os.environ.items() if k not in _DROPPED}
    data = Path(data_dir) if data_dir is not None else Path(cwd) / "_empty_data"
    data.mkdir(parents=True, exist_ok=True)
    path = [str(_classwise_root()), *([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])]
    env.update(CLASSWISE_DATA=str(data), CLASSWISE_PROGRESS="0", MPLCONFIGDIR=str(data.parent / ".mplconfig"),
               PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(path))
    if columns is not None:
        env["COLUMNS"] = str(columns)
    env.update(extra)
    return env


def cli_command(args: Iterable[Any]) -> list[str]:
    return [sys.executable, "-m", "classwise", *map(str, args)]


def run_cli(args: Iterable[Any], cwd: Path, *, timeout: float = 300, check: bool = False,
            columns: int | None = 200, data_dir: Path | None = None,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m classwise ARGS`` in ``cwd`` and capture its output (text).

    ``check=True`` fails the test (with the output's tails) when the exit status is not 0; ``env`` adds to
    or overrides :func:`cli_env`.
    """
    proc = subprocess.run(cli_command(args), cwd=cwd, env=cli_env(cwd, columns=columns, data_dir=data_dir,
                                                                  **(env or {})),
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}")
    return proc


def start_cli(args: Iterable[Any], cwd: Path, *, stdout: Any = subprocess.DEVNULL, stderr: Any = subprocess.PIPE,
              columns: int | None = 200, data_dir: Path | None = None,
              env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start ``python -m classwise ARGS`` in ``cwd`` without waiting (to kill it); environment as run_cli."""
    return subprocess.Popen(cli_command(args), cwd=cwd, env=cli_env(cwd, columns=columns, data_dir=data_dir,
                                                                    **(env or {})),
                            stdout=stdout, stderr=stderr, text=True)


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    """Assert the CLI succeeded (status 0, no traceback on stderr)."""
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    """Assert the CLI failed as a user error: status 2, one ``error: ...`` line on stderr, no traceback."""
    err = proc.stderr
    assert proc.returncode == 2, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{err}"
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected exactly one non-empty stderr line, got {len(lines)}:\n{err}"
    assert lines[0].startswith("error:"), err
    assert len(lines[0]) > len("error: ") + 10, err
    return lines[0]


def tiny_cfg(**kw: Any):
    """A training config for digits, small-cnn: a few seconds per run (``kw`` overrides any field)."""
    from classwise.training.config import TrainConfig, apply_overrides

    base = dict(dataset="digits", model="small-cnn", method="pgd-at", eps=0.1, steps=2, epochs=3, batch_size=128,
                optimizer="adam", lr=0.005, schedule="onecycle", val_fraction=0.1, val_limit=60, val_steps=3,
                train_limit=400, seed=0)
    base.update(kw)
    return apply_overrides(TrainConfig(), base, where="test").validate()


def stop_at_epoch(epoch: int):
    """Training callbacks that interrupt a run (KeyboardInterrupt) right after ``epoch``'s record, i.e. after
    its checkpoint is written: for the interrupted + resumed == uninterrupted tests."""
    from classwise.training.fit import FitCallbacks

    def on_epoch(record: dict) -> None:
        if record["epoch"] == epoch:
            raise KeyboardInterrupt

    return FitCallbacks(on_epoch=on_epoch)


def fit_full_and_resumed(cfg: Any, tmp_path: Path, *, stop: int = 2) -> tuple[Any, Any]:
    """``cfg`` trained uninterrupted (``tmp_path/a``) and interrupted after epoch ``stop`` then resumed
    (``tmp_path/b``): the two FitResults of the interrupted + resumed == uninterrupted tests."""
    import pytest

    from classwise.training.fit import fit
    from classwise.training.trainer import TrainingInterrupted

    full = fit(cfg, tmp_path / "a", device="cpu")
    with pytest.raises(TrainingInterrupted):
        fit(cfg, tmp_path / "b", device="cpu", callbacks=stop_at_epoch(stop))
    return full, fit(cfg, tmp_path / "b", resume=True, device="cpu")


def import_factory(folder: Path, module: str, num_classes: int = 10) -> Any:
    """``folder/module.py``'s ``factory(num_classes)``, imported the way ``--model-file`` is (the folder on
    sys.path), with sys.path and sys.modules left as they were."""
    import importlib

    sys.path.insert(0, str(folder))
    try:
        return importlib.import_module(module).factory(num_classes)
    finally:
        sys.path.remove(str(folder))
        sys.modules.pop(module, None)


def examples(full: int) -> int:
    """A property test's Hypothesis example count: ``full`` under the "full" profile (``make test``), scaled
    by the loaded profile's ``max_examples`` / 100 otherwise (profile "fast", ``make test-fast``: a tenth).

    The profiles are registered and chosen in tests/conftest.py (``HYPOTHESIS_PROFILE`` overrides).
    """
    from hypothesis import settings

    return max(1, full * settings().max_examples // 100)


# RobustBench entries the zoo tests build (small ones), with the key layout each real file has:
# (name, classwise dataset, threat model); see tests/unit/models/test_zoo.py.
ZOO_ENTRIES = [("Hendrycks2020AugMix_WRN", "cifar10", "corruptions"),  # WideResNet-40-2
               ("Wong2020Fast", "cifar10", "Linf"),                     # PreActResNet-18
               ("Salman2020Do_R50", "imagefolder", "Linf")]             # torchvision ResNet-50 (ImageNet)


def linear_digits_model(test: Any, steps: int) -> Any:
    """A linear classifier on the 8x8 digits, fitted full-batch with Adam (lr 0.05) for ``steps`` steps
    on ``test`` (seeded: the same model every time): a cheap model the attacks can break and miss."""
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    x, y = test.tensors()
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    return net.eval()


def write_zoo_weights(model_dir: Path, name: str, dataset: str, threat_model: str, seed: int = 0) -> Path:
    """Random weights of a RobustBench entry saved in its layout DIR/<dataset>/<threat_model>/<NAME>.pt,
    nested and prefixed as the real files are: CIFAR ``{"state_dict": {"module.<key>"}}`` without the
    ``mu``/``sigma`` buffers; ImageNet the bare net's keys with ``module.`` (no normalizer buffers)."""
    import torch

    from classwise.models import zoo

    torch.manual_seed(seed)
    sd = zoo._entry(name, dataset, threat_model)["model"]().state_dict()
    if zoo.zoo_dataset(dataset) == "imagenet":
        blob: Any = {"module." + k[len("model."):]: v for k, v in sd.items() if k.startswith("model.")}
    else:
        blob = {"state_dict": {"module." + k: v for k, v in sd.items() if k not in ("mu", "sigma")}}
    path = zoo.weight_path(name, dataset=dataset, threat_model=threat_model, model_dir=model_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(blob, path)
    return path


def write_cifar10_batches(folder: Path, per_batch: int = 4, seed: int = 0) -> None:
    """A tiny CIFAR-10 in its python-batches format (data_batch_1..5, test_batch, batches.meta)."""
    import pickle

    import numpy as np

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for f in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"labels": [int(i % 10) for i in range(per_batch)],
                 b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)}
        (folder / f).write_bytes(pickle.dumps(batch))
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [n.encode() for n in names]}))
