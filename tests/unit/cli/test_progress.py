"""cli._progress: CLASSWISE_PROGRESS modes, the per-epoch training bar, the log lines of pipes, --quiet."""

from __future__ import annotations

import io
import re

import pytest
from rich.console import Console

from classwise.cli import _print, _progress
from classwise.errors import ClasswiseError


@pytest.fixture(autouse=True)
def _loud():
    _print.set_quiet(False)
    yield
    _print.set_quiet(False)


@pytest.mark.parametrize("value,mode", [("bar", "bar"), ("1", "bar"), ("log", "log"), ("LOG", "log"), ("off", "off"),
                                        ("0", "off"), ("auto", "log"), ("", "log")])
def test_modes_and_their_aliases(monkeypatch, value, mode):
    monkeypatch.setenv("CLASSWISE_PROGRESS", value)  # under pytest stderr is no terminal: auto means log
    assert _progress.progress_mode() == mode


def test_bad_mode_is_a_one_line_error_and_quiet_wins(monkeypatch):
    monkeypatch.setenv("CLASSWISE_PROGRESS", "yes")
    with pytest.raises(ClasswiseError, match="auto, bar, log or off"):
        _progress.configure_output(False)
    monkeypatch.setenv("CLASSWISE_PROGRESS", "bar")
    _progress.configure_output(True)
    assert _progress.progress_mode() == "off"


def _record(epoch: int) -> dict:
    return {"epoch": epoch, "train_loss": 1.0 / epoch, "train_acc": 0.5, "val_clean_acc": 0.8,
            "val_robust_acc": 0.4, "val_robust_per_class": [0.3, None, 0.6], "seconds": 1.25}


def _drive(cb, epochs: int = 3, n: int = 100, batch: int = 25) -> None:
    """What the Trainer calls: on_start, then per epoch its batches and the epoch record."""
    cb.on_start(1, epochs, n)
    for e in range(1, epochs + 1):
        for b in range(n // batch):
            cb.on_batch(e, batch, 2.0 - 0.1 * b, 10 + b)
        cb.on_epoch(_record(e))


def test_log_mode_prints_one_flushed_plain_line_per_epoch(monkeypatch, capsys):
    monkeypatch.setenv("CLASSWISE_PROGRESS", "log")
    seen = []
    with _progress.progress() as prog:
        _drive(_progress.training_callbacks(prog, on_epoch=seen.append))
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert [r["epoch"] for r in seen] == [1, 2, 3]
    assert len(lines) == 3 and "\x1b" not in err
    assert lines[1] == ("epoch 2/3: loss 0.500  train acc 0.500  val clean 0.800  robust 0.400  "
                        "worst class 0 (0.30)  [1.2s]")


def test_bar_mode_shows_the_epoch_and_the_running_loss_and_accuracy(monkeypatch):
    buf = io.StringIO()
    monkeypatch.setattr(_progress, "err_console", Console(file=buf, force_terminal=True, width=160))
    monkeypatch.setenv("CLASSWISE_PROGRESS", "bar")
    with _progress.progress() as prog:
        cb = _progress.training_callbacks(prog)
        cb.on_start(1, 8, 100)
        cb.on_batch(3, 50, 2.0, 20)
        cb.on_batch(3, 50, 1.0, 30)
        [task] = prog.bars.tasks
        assert task.description == "training: epoch 3/8" and task.completed == 100 and task.total == 100
        assert task.fields["stats"] == "loss 1.500  acc 0.500"  # sample-weighted means over the epoch so far
        cb.on_batch(4, 10, 0.5, 10)
        assert [t.description for t in prog.bars.tasks] == ["training: epoch 4/8"]
    assert "epoch 4/8" in buf.getvalue()


def test_evaluation_logs_each_tenth_once(monkeypatch, capsys):
    monkeypatch.setenv("CLASSWISE_PROGRESS", "log")
    with _progress.progress() as prog:
        tick = _progress.stage_ticker(prog, 100, stages=3)
        for _ in range(10):  # batches of 10: the clean pass and two attacks per batch
            for stage in ("clean", "FGSM", "PGD-20"):
                tick(stage, 10)
    lines = capsys.readouterr().err.splitlines()
    assert [int(re.match(r"evaluation +(\d+)%", s).group(1)) for s in lines] == list(range(10, 101, 10))
    assert lines[-1].startswith("evaluation 100%: 100/100 images x 3 settings, ")


def test_off_and_quiet_print_nothing_but_info_still_prints_unless_quiet(monkeypatch, capsys):
    monkeypatch.setenv("CLASSWISE_PROGRESS", "off")
    with _progress.progress() as prog:
        _drive(_progress.training_callbacks(prog, lines=True))
        tick = _progress.stage_ticker(prog, 10, stages=1)
        tick("clean", 10)
    with _progress.stage("checks", "x"):
        pass
    _print.info("header")
    assert capsys.readouterr().err == ""
    _print.set_quiet(True)
    _print.info("header")
    monkeypatch.setenv("CLASSWISE_PROGRESS", "log")
    with _progress.stage("checks", "on 200 images"):
        pass
    assert capsys.readouterr().out.count("header") == 0


def test_stage_prints_a_start_and_an_end_line_with_time(monkeypatch, capsys):
    monkeypatch.setenv("CLASSWISE_PROGRESS", "log")
    with _progress.stage("checks", "on 200 images"):
        pass
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "checks: on 200 images ..."
    assert re.fullmatch(r"checks: done in \d+\.\ds", lines[1]) and len(lines) == 2


def test_stage_lines_of_a_study_are_info_kept_with_progress_off_and_dropped_by_quiet(monkeypatch, capsys):
    monkeypatch.setenv("CLASSWISE_PROGRESS", "off")
    with _progress.progress() as prog:
        prog.console.print("  training pgd-at", markup=False)
    assert capsys.readouterr().err == "  training pgd-at\n"
    _print.set_quiet(True)
    with _progress.progress() as prog:
        prog.console.print("  training pgd-at", markup=False)
    assert capsys.readouterr().err == ""
