"""Nothing lost: run directory locks, writability, stale temporaries, run.json status, write errors.

In-process (``classwise.cli.main.main`` with a patched argv) except for the lock holder, which must be
another process. The full and read-only file system cases mount a tmpfs: root only (skipped otherwise).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from classwise import runlock
from classwise.errors import ClasswiseError
from classwise.io import TEMP_RE, WriteError, atomic_write, atomic_write_json
from classwise.runs import RunDir, incomplete_warning, run_status


def run_main(args: list[str], capsys) -> tuple[int, str, str]:
    """``classwise ARGS`` in this process: (exit status, stdout, stderr)."""
    from classwise.cli.main import main

    old_argv, old_term = sys.argv, signal.getsignal(signal.SIGTERM)
    sys.argv = ["classwise", *map(str, args)]
    capsys.readouterr()
    code = 0
    try:
        main()
    except SystemExit as e:
        code = int(e.code or 0)
    finally:
        sys.argv = old_argv
        signal.signal(signal.SIGTERM, old_term)
        runlock.release_all()
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code: int, err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, err
    assert "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    return lines[0]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    """An untrained small-cnn for digits with its sidecar: enough to evaluate in a second."""
    from classwise.models import create_model, save_checkpoint

    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("ckpt")
    net = create_model("small-cnn", num_classes=10, in_channels=1, input_size=8)
    save_checkpoint(d / "m.safetensors", net, {"dataset": "digits", "threat_model": {"norm": "linf", "eps": 0.1}})
    return d / "m.safetensors"


def evaluate_args(ckpt: Path, out: Path) -> list[str]:
    return ["evaluate", "--checkpoint", ckpt, "--attack", "fgsm:eps=0.1", "--limit", "20", "--no-checks",
            "--device", "cpu", "--out", out]


@contextlib.contextmanager
def holder(run_dir: Path):
    """Another process holding the lock of ``run_dir``."""
    code = ("import sys, time; from classwise.runlock import acquire; acquire(sys.argv[1]); "
            "print('held', flush=True); time.sleep(120)")
    p = subprocess.Popen([sys.executable, "-c", code, str(run_dir)], stdout=subprocess.PIPE, text=True,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        assert p.stdout.readline().strip() == "held"
        yield p
    finally:
        if p.poll() is None:
            p.kill()
        p.wait()


@contextlib.contextmanager
def tmpfs(path: Path, size: str = "512k"):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(folder: Path) -> None:
    """Write until the file system is full."""
    with open(folder / "filler", "wb", buffering=0) as f:
        with contextlib.suppress(OSError):
            while True:
                f.write(b"\0" * 4096)


# --- life cycle -----------------------------------------------------------------------------------


def test_rundir_creates_nothing_until_open_then_running_then_complete(tmp_path):
    run = RunDir(tmp_path / "a" / "b")
    assert not (tmp_path / "a").exists()
    run.open()
    assert (run.path / ".lock").is_file() and run_status(run.path) == "running"
    lock = json.loads((run.path / ".lock").read_text())
    assert lock["pid"] == os.getpid() and lock["host"] == socket.gethostname()
    assert "not marked complete" in incomplete_warning(run.path)
    run.write_run_info(seed=3, device="cpu")
    assert run_status(run.path) == "running"  # only finish() says complete
    run.finish()
    info = json.loads((run.path / "run.json").read_text())
    assert info["status"] == "complete" and info["seed"] == 3 and "finished" in info
    assert not (run.path / ".lock").exists() and incomplete_warning(run.path) is None


def test_sweep_removes_only_our_temporaries(tmp_path):
    run_dir = tmp_path / "run"
    ours = [run_dir / "checkpoints" / ".state-e0005.pt.k2j4h_g6.tmp", run_dir / "plots" / ".clean.png.abcd1234.tmp",
            run_dir / ".run.json.zz9zz9zz.tmp"]
    others = [run_dir / "keep.tmp", run_dir / ".notours.tmp", run_dir / ".x.png.ABCD1234.tmp",
              run_dir / "plots" / "clean.png", run_dir / "sub" / ".y.png.aaaaaaaa.tmp"]  # sub: locked on its own
    (run_dir / "sub" / ".lock").parent.mkdir(parents=True)
    (run_dir / "sub" / ".lock").write_text("{}")
    for p in ours + others:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    assert all(TEMP_RE.match(p.name) for p in ours)
    RunDir(run_dir).open()
    try:
        assert not any(p.exists() for p in ours)
        assert all(p.exists() for p in others)
    finally:
        runlock.release_all()


def test_atomic_write_error_is_one_line_and_keeps_the_old_file(tmp_path):
    path = atomic_write_json(tmp_path / "metrics.json", {"a": 1})

    def no_space(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(b"partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(WriteError) as ei:
        atomic_write(path, no_space)
    assert str(ei.value) == f"cannot write {path}: {os.strerror(errno.ENOSPC)} (errno {errno.ENOSPC})"
    assert isinstance(ei.value, ClasswiseError) and "\n" not in str(ei.value)
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temporary left


# --- concurrent writers ---------------------------------------------------------------------------


@pytest.mark.slow  # another process holds the lock
def test_second_writer_gets_one_line_error_then_a_dead_holder_is_taken_over(tmp_path, ckpt, capsys):
    out = tmp_path / "run"
    out.mkdir()
    with holder(out) as p:
        code, _, err = run_main(evaluate_args(ckpt, out), capsys)
        line = one_line_error(code, err)
        assert f"pid {p.pid} on {socket.gethostname()} since " in line and "choose another --out" in line
        assert not (out / "outcomes.npz").exists() and not (out / "run.json").exists()
        p.kill()  # kill -9: the lock file stays, its flock goes
        p.wait()
    assert json.loads((out / ".lock").read_text())["pid"] == p.pid
    code, _, err = run_main(evaluate_args(ckpt, out), capsys)
    assert code == 0, err
    warnings = [ln for ln in err.splitlines() if "stale lock" in ln]
    assert len(warnings) == 1 and f"pid {p.pid}" in warnings[0], err
    assert run_status(out) == "complete" and not (out / ".lock").exists()


def test_a_lock_from_another_host_is_not_taken_over(tmp_path):
    (tmp_path / ".lock").write_text(json.dumps({"pid": 1, "host": "elsewhere", "since": "2026-01-01T00:00:00"}))
    with pytest.raises(runlock.RunLocked, match=r"locked by pid 1 on elsewhere .*delete .*\.lock"):
        RunDir(tmp_path).open()


@pytest.mark.slow  # another process holds the lock
def test_report_and_compare_warn_on_an_incomplete_run_and_respect_the_lock(tmp_path, ckpt, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    for r in (a, b):
        assert run_main(evaluate_args(ckpt, r), capsys)[0] == 0
    info = json.loads((b / "run.json").read_text())
    (b / "run.json").write_text(json.dumps({**info, "status": "running"}))
    code, _, err = run_main(["report", b], capsys)
    assert code == 0 and (b / "report.html").is_file()
    assert [ln for ln in err.splitlines() if ln.strip()] == [incomplete_warning(b)]
    code, _, err = run_main(["compare", a, b], capsys)
    assert code == 0 and [ln for ln in err.splitlines() if ln.strip()] == [incomplete_warning(b)]
    code, _, err = run_main(["report", a], capsys)
    assert code == 0 and err.strip() == ""  # a complete run: no warning
    with holder(a):
        line = one_line_error(*run_main(["report", a], capsys)[::2])
        assert "is being written by pid" in line


# --- unwritable, full, read-only ------------------------------------------------------------------


def test_full_disk_is_one_line_before_any_work(tmp_path, ckpt, capsys):
    with tmpfs(tmp_path / "mnt") as mnt:
        fill(mnt)
        t0 = time.perf_counter()
        code, _, err = run_main(evaluate_args(ckpt, mnt / "run"), capsys)
        line = one_line_error(code, err)
        assert f"errno {errno.ENOSPC}" in line and str(mnt / "run") in line
        assert not (mnt / "run" / ".lock").exists()
        assert time.perf_counter() - t0 < 30


def test_full_disk_mid_write_keeps_what_was_written(tmp_path):
    with tmpfs(tmp_path / "mnt") as mnt:
        run = RunDir(mnt / "run").open()
        first = run.write_metrics({"accuracy": 0.5})
        fill(mnt)
        with pytest.raises(WriteError, match=rf"cannot write .*metrics.json: .* \(errno {errno.ENOSPC}\)"):
            run.write_metrics({"accuracy": 0.6, "pad": "x" * 100_000})
        assert json.loads(first.read_text()) == {"accuracy": 0.5}
        assert not [p for p in (mnt / "run").rglob("*") if TEMP_RE.match(p.name)]
        runlock.release_all()


def test_read_only_out_is_one_line_and_creates_nothing(tmp_path, ckpt, capsys):
    with tmpfs(tmp_path / "mnt") as mnt:
        (mnt / "existing").mkdir()
        r = subprocess.run(["mount", "-o", "remount,ro", str(mnt)], capture_output=True)
        if r.returncode != 0:
            pytest.skip(f"cannot remount read-only: {r.stderr.decode().strip()}")
        for out in (mnt / "new" / "run", mnt / "existing"):
            line = one_line_error(*run_main(evaluate_args(ckpt, out), capsys)[::2])
            assert "not writable" in line and "choose another --out" in line
        with pytest.raises(ClasswiseError, match="not writable"):
            RunDir(mnt / "x")  # refused before anything is created
        assert sorted(p.name for p in mnt.iterdir()) == ["existing"]
