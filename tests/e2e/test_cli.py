"""End-to-end tests of the ``classwise`` command line: the real CLI run as a subprocess.

Every command runs as ``python -m classwise ...`` with ``cwd`` in a temporary folder and
``CLASSWISE_DATA`` pointed at an empty folder, so nothing outside the test's own files is read or
written (the bundled digits need no data root). Checkpoints are built once per module: an untrained
small-cnn (cheap; enough for the error paths) and a 3-epoch demo run (for the evaluate paths).
"""

from __future__ import annotations

import json
import math
import platform
import shutil
import time
from pathlib import Path

import pytest
import torch

import classwise
from tests.helpers import import_factory, ok, one_line_error, run_cli

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover
    import tomli as tomllib  # type: ignore[no-redef]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
DIGITS = [str(i) for i in range(10)]
DIGITS_TEST_SIZE = 450
DEMO_ATTACKS = ["FGSM", "PGD-20", "T-PGD-20(T=0.5)", "CW-20", "worst-case"]

pytestmark = pytest.mark.slow  # every test runs the real CLI in a fresh interpreter


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------


cli = run_cli  # cli(ARGS, cwd): `python -m classwise ARGS` in cwd, empty CLASSWISE_DATA (tests/helpers.py)


def read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _nan_to_none(o):
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {k: _nan_to_none(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_nan_to_none(v) for v in o]
    return o


def supports(metrics: dict) -> list[int]:
    return [row["support"] for row in metrics["clean"]["per_class"]]


def assert_png(path: Path) -> None:
    assert path.is_file(), path
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    assert len(data) > 5_000, f"{path} is suspiciously small ({len(data)} bytes)"


# --------------------------------------------------------------------------------------------------
# module fixtures: checkpoints built once
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """``classwise demo --out RUN --epochs 3``: (run dir, completed process, wall seconds)."""
    cwd = tmp_path_factory.mktemp("demo3")
    t0 = time.perf_counter()
    proc = cli(["demo", "--out", "RUN", "--epochs", "3"], cwd)
    return cwd / "RUN", proc, time.perf_counter() - t0


@pytest.fixture
def run_ckpt(demo_run, tmp_path) -> Path:
    """The demo's checkpoints/ copied to ``tmp_path/RUN/checkpoints`` (relative paths work from cwd)."""
    run, proc, _ = demo_run
    ok(proc)
    shutil.copytree(run / "checkpoints", tmp_path / "RUN" / "checkpoints")
    return Path("RUN") / "checkpoints" / "best.safetensors"


MODEL_FILE = '''\
import torch
from torch import nn


class SomeNet(nn.Module):
    def __init__(self, num_classes):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2))
        self.head = nn.Linear(32, num_classes)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


def factory(num_classes):
    return SomeNet(num_classes)
'''


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> dict[str, Path]:
    """Small checkpoints built in-process (absolute paths)."""
    from classwise.models import create_model, dataset_stats, save_checkpoint

    d = tmp_path_factory.mktemp("ckpts")
    torch.manual_seed(0)
    mean, std = dataset_stats("digits", 1)
    out: dict[str, Path] = {}

    # untrained small-cnn with a sidecar saying digits: enough for the error paths
    m10 = create_model("small-cnn", num_classes=10, in_channels=1, input_size=8, mean=mean, std=std)
    out["good"] = save_checkpoint(d / "good.safetensors", m10, {"dataset": "digits", "class_names": DIGITS})

    # bare small-cnn state dict (keys without the "net." prefix) that always predicts class 7
    bare = create_model("small-cnn", num_classes=10, in_channels=1, input_size=8).net
    sd = bare.state_dict()
    fc_w = [k for k in sd if k.endswith("weight") and sd[k].shape[0] == 10 and sd[k].dim() == 2]
    assert len(fc_w) == 1, list(sd)
    head = fc_w[0][: -len("weight")]
    sd[head + "weight"] = torch.zeros_like(sd[head + "weight"])
    sd[head + "bias"] = torch.zeros_like(sd[head + "bias"])
    sd[head + "bias"][7] = 10.0
    torch.save(sd, d / "small_cnn_seven.pt")
    out["bare_seven"] = d / "small_cnn_seven.pt"

    # 5-class small-cnn: does not fit the 10-class digits
    m5 = create_model("small-cnn", num_classes=5, in_channels=1, input_size=8, mean=mean, std=std)
    out["five_st"] = save_checkpoint(d / "five.safetensors", m5, {"dataset": "digits",
                                                                  "class_names": DIGITS[:5]})
    torch.save(m5.state_dict(), d / "five.pt")
    out["five_pt"] = d / "five.pt"

    # corrupt files
    rng = torch.Generator().manual_seed(1)
    noise = torch.randint(0, 256, (4096,), generator=rng, dtype=torch.uint8).numpy().tobytes()
    (d / "corrupt.safetensors").write_bytes(noise)
    (d / "corrupt.pt").write_bytes(noise)
    # corrupt weights beside a valid sidecar (so the sidecar alone cannot carry the run)
    (d / "corrupt_sc.safetensors").write_bytes(noise)
    shutil.copy(d / "good.json", d / "corrupt_sc.json")
    out["corrupt_st"] = d / "corrupt.safetensors"
    out["corrupt_pt"] = d / "corrupt.pt"
    out["corrupt_with_sidecar"] = d / "corrupt_sc.safetensors"
    (d / "user_net.py").write_text(MODEL_FILE, encoding="utf-8")
    out["user_net"] = d / "user_net.py"
    return out


# --------------------------------------------------------------------------------------------------
# 1. demo
# --------------------------------------------------------------------------------------------------


def test_demo_writes_complete_run_dir(demo_run):
    from classwise.evaluation import Outcomes

    run, proc, _ = demo_run
    ok(proc)

    # metrics.json
    m = read_json(run / "metrics.json")
    assert m["schema_version"] == 1
    assert m["dataset"] == "digits" and m["split"] == "test"
    assert m["class_names"] == DIGITS
    assert m["num_samples"] == DIGITS_TEST_SIZE and m["num_classes"] == 10
    assert list(m["attacks"]) == DEMO_ATTACKS
    assert sum(supports(m)) == DIGITS_TEST_SIZE
    clean = m["clean"]["accuracy"]
    for name, a in m["attacks"].items():
        rows = a["per_class"]
        assert [r["class"] for r in rows] == list(range(10)), name
        assert [r["name"] for r in rows] == DIGITS, name
        for r in rows:
            assert {"class", "name", "support", "clean_acc", "robust_acc"} <= r.keys(), (name, r)
            assert 0.0 <= r["robust_acc"] <= r["clean_acc"] <= 1.0, (name, r)
        assert sum(r["support"] for r in rows) == DIGITS_TEST_SIZE, name
        assert 0.0 <= a["robust_accuracy"] <= clean, name
    worst = m["attacks"]["worst-case"]["robust_accuracy"]
    assert worst <= min(m["attacks"][a]["robust_accuracy"] for a in DEMO_ATTACKS[:-1]) + 1e-12
    eps = {a: m["attacks"][a]["spec"]["params"]["eps"] for a in DEMO_ATTACKS[:-1]}
    assert set(eps.values()) == {0.2}, eps

    # outcomes.npz reproduces metrics.json exactly
    outcomes = Outcomes.load(run / "outcomes.npz")
    assert len(outcomes) == DIGITS_TEST_SIZE
    assert outcomes.attacks == DEMO_ATTACKS[:-1]
    assert json.dumps(_nan_to_none(outcomes.summary()), sort_keys=True) == json.dumps(m, sort_keys=True)

    # config.toml and run.json
    cfg = tomllib.loads((run / "config.toml").read_text(encoding="utf-8"))
    assert cfg["command"] == "demo" and cfg["train"]["dataset"] == "digits"
    assert cfg["train"]["model"] == "small-cnn" and cfg["train"]["method"] == "pgd-at"
    assert cfg["train"]["epochs"] == 3 and cfg["train"]["eps"] == 0.2
    assert [a["label"] for a in cfg["evaluate"]["attacks"]] == DEMO_ATTACKS[:-1]
    assert cfg["train"]["seed"] == 0
    info = read_json(run / "run.json")
    assert info["seed"] == 0
    assert info["classwise_version"] == classwise.__version__
    assert info["command"][:2] == ["classwise", "demo"]
    history = [json.loads(x) for x in (run / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert all(len(h["val_robust_per_class"]) == 10 for h in history)

    # plots
    assert_png(run / "plots" / "class_accuracy.png")
    assert_png(run / "plots" / "confusion.png")

    # checkpoint + sidecar
    weights = run / "checkpoints" / "best.safetensors"
    assert weights.is_file() and weights.stat().st_size > 10_000
    side = read_json(run / "checkpoints" / "best.json")
    assert side["architecture"] == "small-cnn" and side["dataset"] == "digits"
    assert side["num_classes"] == 10 and side["in_channels"] == 1 and side["input_size"] == 8
    assert side["class_names"] == DIGITS
    assert side["threat_model"]["eps"] == 0.2

    # the per-class table and the worst class on stdout
    out = proc.stdout
    assert "Per-class accuracy" in out
    assert "worst class" in out
    d = m["attacks"]["worst-case"]["disparity"]
    row = next(ln for ln in out.splitlines() if ln.lstrip("│┃ ").startswith("worst-case")
               and "(" in ln)
    assert f"{d['worst_class']} ({100 * d['worst_acc']:.1f})" in row, row
    assert f"{100 * worst:.1f}" in row, row


@pytest.mark.slow
def test_demo_default_shows_class_gap(tmp_path):
    t0 = time.perf_counter()
    proc = ok(cli(["demo", "--out", "RUN2"], tmp_path, timeout=400))
    wall = time.perf_counter() - t0
    assert wall < 180, f"default demo took {wall:.0f}s"
    m = read_json(tmp_path / "RUN2" / "metrics.json")
    clean = m["clean"]["accuracy"]
    worst = m["attacks"]["worst-case"]["robust_accuracy"]
    gap = m["attacks"]["PGD-20"]["disparity"]["gap"]
    assert clean > 0.9, clean
    assert 0.3 < worst < clean, (worst, clean)
    assert gap > 0.2, gap
    assert len((tmp_path / "RUN2" / "history.jsonl").read_text().splitlines()) == 30
    assert "Per-class accuracy" in proc.stdout


# --------------------------------------------------------------------------------------------------
# 2. evaluate
# --------------------------------------------------------------------------------------------------


def test_evaluate_from_sidecar_needs_no_other_flags(tmp_path, run_ckpt):
    proc = ok(cli(["evaluate", "--checkpoint", run_ckpt, "--attack", "pgd:eps=0.2,steps=5", "--plots", "--out", "EV"],
                  tmp_path))
    ev = tmp_path / "EV"
    m = read_json(ev / "metrics.json")
    assert m["dataset"] == "digits" and m["num_samples"] == DIGITS_TEST_SIZE
    assert m["class_names"] == DIGITS
    assert list(m["attacks"]) == ["PGD-5"]  # one attack: no worst-case entry
    spec = m["attacks"]["PGD-5"]["spec"]
    assert spec["name"] == "pgd" and spec["params"] == {"eps": 0.2, "steps": 5}
    for f in ("outcomes.npz", "config.toml", "run.json"):
        assert (ev / f).is_file(), f
    assert_png(ev / "plots" / "class_accuracy.png")
    cfg = tomllib.loads((ev / "config.toml").read_text(encoding="utf-8"))
    assert cfg["command"] == "evaluate" and cfg["model"] == "small-cnn" and cfg["dataset"] == "digits"
    alloc = read_json(ev / "run.json")["allocator"]  # the console command's allocator (cli._startup)
    assert alloc["allocator"] == "tuned" and alloc["env"] == {"THP_MEM_ALLOC_ENABLE": "1"}
    if platform.libc_ver()[0] == "glibc":
        assert alloc["malloc"] == "glibc mallopt M_MMAP_THRESHOLD=1048576 (fixed: no dynamic threshold)"
    assert "Per-class accuracy" in proc.stdout
    # a demo-trained model beats chance clean and loses accuracy under attack
    assert m["clean"]["accuracy"] > 0.3
    assert m["attacks"]["PGD-5"]["robust_accuracy"] < m["clean"]["accuracy"]


def test_evaluate_limit_is_stratified_and_seeded_runs_reproduce(tmp_path, run_ckpt):
    args = ["evaluate", "--checkpoint", run_ckpt, "--attack", "pgd:eps=0.2,steps=5", "--limit", "100",
            "--seed", "3"]
    ok(cli([*args, "--out", "A"], tmp_path))
    ok(cli([*args, "--out", "B"], tmp_path))
    a, b = read_json(tmp_path / "A" / "metrics.json"), read_json(tmp_path / "B" / "metrics.json")
    assert a["num_samples"] == 100
    assert supports(a) == [10] * 10
    assert json.dumps(a["attacks"], sort_keys=True) == json.dumps(b["attacks"], sort_keys=True)
    assert a["clean"] == b["clean"]
    cfg = tomllib.loads((tmp_path / "A" / "config.toml").read_text(encoding="utf-8"))
    assert cfg["limit"] == 100 and cfg["seed"] == 3


def test_evaluate_eps_without_attack_runs_fgsm_and_pgd20(tmp_path, run_ckpt):
    ok(cli(["evaluate", "--checkpoint", run_ckpt, "--eps", "0.2", "--limit", "50", "--out", "EV"], tmp_path))
    m = read_json(tmp_path / "EV" / "metrics.json")
    assert m["num_samples"] == 50
    assert list(m["attacks"]) == ["FGSM", "PGD-20", "worst-case"]
    assert m["attacks"]["FGSM"]["spec"]["params"] == {"eps": 0.2}
    assert m["attacks"]["PGD-20"]["spec"]["params"] == {"eps": 0.2, "steps": 20}


def test_evaluate_fraction_syntax(tmp_path, run_ckpt):
    ok(cli(["evaluate", "--checkpoint", run_ckpt, "--attack", "pgd:eps=8/255,steps=3,alpha=2/255",
            "--limit", "50", "--out", "EV"], tmp_path))
    m = read_json(tmp_path / "EV" / "metrics.json")
    assert list(m["attacks"]) == ["PGD-3"]
    p = m["attacks"]["PGD-3"]["spec"]["params"]
    assert p["steps"] == 3
    assert p["eps"] == pytest.approx(8 / 255) and p["alpha"] == pytest.approx(2 / 255)


def test_evaluate_checkpoint_directory(tmp_path, run_ckpt):
    ok(cli(["evaluate", "--checkpoint", run_ckpt.parent, "--attack", "fgsm:eps=0.1", "--limit", "50",
            "--out", "EV"], tmp_path))
    m = read_json(tmp_path / "EV" / "metrics.json")
    assert m["dataset"] == "digits" and m["num_samples"] == 50
    assert list(m["attacks"]) == ["FGSM"]


# --------------------------------------------------------------------------------------------------
# 3. your own model / bare state dicts
# --------------------------------------------------------------------------------------------------


def test_evaluate_model_file(tmp_path):
    (tmp_path / "file.py").write_text(MODEL_FILE, encoding="utf-8")
    # weights built in-test: zero head weights and a bias that always votes class 3, so the
    # evaluation can only come out this way if these weights were really loaded
    net = import_factory(tmp_path, "file")
    sd = net.state_dict()
    sd["head.weight"].zero_()
    sd["head.bias"].zero_()
    sd["head.bias"][3] = 5.0
    torch.save(sd, tmp_path / "w.pt")

    proc = ok(cli(["evaluate", "--dataset", "digits", "--model-file", "file.py:factory", "--checkpoint", "w.pt",
                   "--attack", "fgsm:eps=0.1", "--limit", "50", "--out", "EV"], tmp_path))
    m = read_json(tmp_path / "EV" / "metrics.json")
    assert m["num_samples"] == 50 and supports(m) == [5] * 10
    acc = [r["clean_acc"] for r in m["clean"]["per_class"]]
    assert acc == [1.0 if c == 3 else 0.0 for c in range(10)], acc
    assert m["clean"]["accuracy"] == pytest.approx(0.1)
    cfg = tomllib.loads((tmp_path / "EV" / "config.toml").read_text(encoding="utf-8"))
    assert cfg["model_file"] == "file.py:factory"
    assert "Per-class accuracy" in proc.stdout


def test_evaluate_named_model_with_bare_state_dict(tmp_path, ckpts):
    ok(cli(["evaluate", "--model", "small-cnn", "--dataset", "digits", "--checkpoint", ckpts["bare_seven"],
            "--attack", "fgsm:eps=0.1", "--limit", "50", "--out", "EV"], tmp_path))
    m = read_json(tmp_path / "EV" / "metrics.json")
    acc = [r["clean_acc"] for r in m["clean"]["per_class"]]
    assert acc == [1.0 if c == 7 else 0.0 for c in range(10)], acc
    cfg = tomllib.loads((tmp_path / "EV" / "config.toml").read_text(encoding="utf-8"))
    assert cfg["model"] == "small-cnn"


# --------------------------------------------------------------------------------------------------
# 4. list / --version
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("what, names", [
    ("datasets", ["digits", "mnist", "fashion-mnist", "cifar10", "cifar100", "svhn", "stl10", "imagefolder"]),
    ("models", ["small-cnn", "preact-resnet18", "wrn-34-10", "resnet18"]),
    ("attacks", ["fgsm", "pgd", "tpgd", "cw", "cw-linf"]),
])
def test_list(tmp_path, what, names):
    proc = ok(cli(["list", what], tmp_path))
    first_cells = {ln.strip("│┃ ").split(" ")[0] for ln in proc.stdout.splitlines() if ln.startswith("│")}
    for n in names:
        assert n in first_cells, (n, proc.stdout)
    if what == "attacks":
        assert "steps=20" in proc.stdout and "T=0.5" in proc.stdout
        assert "alias of cw" in proc.stdout and "NOT Carlini-Wagner" in proc.stdout


def test_version(tmp_path):
    proc = ok(cli(["--version"], tmp_path))
    assert proc.stdout.strip() == f"classwise {classwise.__version__}"


# --------------------------------------------------------------------------------------------------
# 5. bad inputs: status 2, one "error: ..." line, no traceback
# --------------------------------------------------------------------------------------------------

# (id, argv with {good}/{five_st}/... placeholders, substrings the message must hold)
ERROR_CASES = [
    ("unknown-dataset", ["--checkpoint", "{good}", "--dataset", "nope", "--attack", "fgsm:eps=0.1"],
     ["unknown dataset", "nope", "digits", "fashion-mnist", "cifar10"]),
    ("unknown-model", ["--checkpoint", "{bare_seven}", "--dataset", "digits", "--model", "nope",
                       "--attack", "fgsm:eps=0.1"],
     ["unknown model", "nope", "small-cnn"]),
    ("unknown-attack", ["--checkpoint", "{good}", "--attack", "nope:eps=0.1"],
     ["unknown attack", "nope", "fgsm", "pgd"]),
    ("unknown-attack-param", ["--checkpoint", "{good}", "--attack", "pgd:eps=0.1,foo=3"],
     ["foo", "pgd", "steps"]),
    ("missing-data-root", ["--dataset", "mnist", "--data-root", "{tmp}/no/such/dir", "--model", "small-cnn",
                           "--checkpoint", "{bare_seven}", "--attack", "fgsm:eps=0.1"],
     ["mnist", "{tmp}/no/such/dir"]),
    ("negative-eps", ["--checkpoint", "{good}", "--attack", "pgd:eps=-0.1"],
     ["eps", "-0.1"]),
    ("mismatched-checkpoint-named-model", ["--checkpoint", "{five_pt}", "--dataset", "digits",
                                           "--model", "small-cnn", "--attack", "fgsm:eps=0.1"],
     ["shape mismatch", "(5, ", "(10, ", "weight"]),
    ("mismatched-checkpoint-sidecar", ["--checkpoint", "{five_st}", "--attack", "fgsm:eps=0.1"],
     ["5 outputs", "10 classes"]),
    ("corrupt-safetensors", ["--checkpoint", "{corrupt_st}", "--dataset", "digits", "--model", "small-cnn",
                             "--attack", "fgsm:eps=0.1"],
     ["cannot read checkpoint", "corrupt.safetensors"]),
    ("corrupt-safetensors-with-sidecar", ["--checkpoint", "{corrupt_with_sidecar}", "--attack", "fgsm:eps=0.1"],
     ["cannot read checkpoint", "corrupt_sc.safetensors"]),
    ("corrupt-pt", ["--checkpoint", "{corrupt_pt}", "--dataset", "digits", "--model", "small-cnn",
                    "--attack", "fgsm:eps=0.1"],
     ["cannot read checkpoint", "corrupt.pt"]),
    ("missing-checkpoint", ["--checkpoint", "{tmp}/nothere.safetensors", "--attack", "fgsm:eps=0.1"],
     ["not found", "nothere.safetensors"]),
    ("model-file-missing", ["--checkpoint", "{bare_seven}", "--dataset", "digits",
                                    "--model-file", "{tmp}/nofile.py:factory", "--attack", "fgsm:eps=0.1"],
     ["model file", "nofile.py"]),
    ("model-file-unknown-factory", ["--checkpoint", "{bare_seven}", "--dataset", "digits",
                                    "--model-file", "{user_net}:nope", "--attack", "fgsm:eps=0.1"],
     ["defines no 'nope'", "factory", "SomeNet"]),
]


NO_CUDA = not torch.cuda.is_available()
if NO_CUDA:
    ERROR_CASES += [
        ("evaluate-device-cuda", ["--checkpoint", "{good}", "--attack", "fgsm:eps=0.1", "--device", "cuda"],
         ["--device cuda", "no CUDA device", "cpu"]),
        ("demo-device-cuda", ["demo", "--epochs", "1", "--device", "cuda"],
         ["--device cuda", "no CUDA device", "cpu"]),
    ]


@pytest.fixture(scope="module")
def error_runs(tmp_path_factory, ckpts):
    """Every bad-input case run once, a few at a time (each is mostly interpreter start-up and imports)."""
    from concurrent.futures import ThreadPoolExecutor

    def one(case):
        name, args, expected = case
        cwd = tmp_path_factory.mktemp(name)
        subst = {k: str(v) for k, v in ckpts.items()} | {"tmp": str(cwd)}
        argv = [a.format(**subst) for a in args]
        if argv[0] != "demo":
            argv = ["evaluate", *argv]
        # default 80-column console: a long message must still come out as one line
        proc = cli([*argv, "--out", "EV"], cwd, columns=None)
        return name, (proc, cwd, [e.format(**subst) for e in expected])

    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(pool.map(one, ERROR_CASES))


@pytest.mark.parametrize("case", [c[0] for c in ERROR_CASES])
def test_bad_input_is_one_line_error(error_runs, case):
    proc, cwd, expected = error_runs[case]
    line = one_line_error(proc)
    for s in expected:
        assert s in line, (s, line)
    assert not (cwd / "EV" / "metrics.json").exists()


def test_out_is_an_existing_file(tmp_path, ckpts):
    (tmp_path / "taken").write_text("not a directory")
    line = one_line_error(cli(["evaluate", "--checkpoint", ckpts["good"], "--attack", "fgsm:eps=0.1",
                               "--limit", "20", "--out", "taken"], tmp_path, columns=None))
    assert "taken" in line and "not a directory" in line
    assert (tmp_path / "taken").read_text() == "not a directory"


# --------------------------------------------------------------------------------------------------
# compare: runs on the same samples in another order are aligned; other samples are refused
# --------------------------------------------------------------------------------------------------


def _compare_run(path: Path, order, *, seed: int = 0) -> Path:
    """A finished evaluation run of 60 digits-like samples (index 0..59), stored in ``order``."""
    import numpy as np

    from classwise.outcomes import Outcomes
    from classwise.report.artifacts import write_evaluation
    from classwise.runs import RunDir

    rng = np.random.default_rng(seed)
    labels = np.arange(60) % 10
    clean = np.where(rng.random(60) < 0.9, labels, (labels + 1) % 10)
    adv = np.where(rng.random(60) < 0.5, clean, (clean + 3) % 10)
    order = np.asarray(order)
    o = Outcomes(labels[order], clean[order], {"PGD-20": adv[order]}, DIGITS, np.arange(60)[order],
                 dataset="digits", split="test")
    run = RunDir(path).open()
    write_evaluation(run, o)
    run.write_config({"command": "evaluate", "dataset": "digits"})
    run.write_run_info(seed=0, device="cpu")
    run.finish()
    return path


def test_compare_aligns_shuffled_runs_and_refuses_other_samples(tmp_path):
    import numpy as np

    base = _compare_run(tmp_path / "base", np.arange(60))
    same = _compare_run(tmp_path / "same", np.arange(60), seed=1)
    shuffled = _compare_run(tmp_path / "shuffled", np.random.default_rng(7).permutation(60), seed=1)
    a = ok(cli(["compare", base, same, "--out", "a.html"], tmp_path))
    b = ok(cli(["compare", base, shuffled, "--out", "b.html"], tmp_path))
    # the per-class table of the shuffled copy equals the one of the same run in index order
    def table(proc) -> str:
        return proc.stdout.split("McNemar test", 1)[1].split("report:")[0]

    assert table(a) == table(b)
    assert (tmp_path / "b.html").is_file()
    fewer = _compare_run(tmp_path / "fewer", np.arange(50), seed=1)
    line = one_line_error(cli(["compare", base, fewer], tmp_path, columns=None))
    assert "other samples" in line and "50 samples" in line
