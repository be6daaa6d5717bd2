"""The bad-input matrix: every wrong input a user might type, for every command, fails the same way.

Each case asserts: exit status 2, exactly one stderr line, starting ``error:``, no traceback, and no run
directory left behind (neither the ``--out`` path nor a default ``runs/`` folder in the working
directory). Cases run in-process through :func:`classwise.cli.main.run_cli` (what ``main()`` runs, so
they see exactly what a user sees); a few run as subprocesses (slow) to check the real console.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import run_cli

EV = ["evaluate", "--checkpoint", "{good}"]
EVA = [*EV, "--attack", "fgsm:eps=0.1"]
BARE = ["evaluate", "--checkpoint", "{bare}", "--dataset", "digits", "--attack", "fgsm:eps=0.1"]
TP = ["tpgd", "--checkpoint", "{good}", "--T", "0.5"]
DF = ["defend", "--checkpoint", "{good}"]
DFT = [*DF, "--phase", "train", "--defense", "fixed", "--weight", "1"]

# (id, argv with {placeholders}, substrings the error line must hold)
CASES = [
    # evaluate: options
    ("ev-split", [*EVA, "--split", "val"], ["--split", "val", "train, test"]),
    ("ev-precision", [*EVA, "--precision", "fp8"], ["precision", "fp8", "bf16"]),
    ("ev-batch-zero", [*EVA, "--batch-size", "0"], ["--batch-size", "auto"]),
    ("ev-batch-text", [*EVA, "--batch-size", "many"], ["--batch-size", "many"]),
    ("ev-device", [*EVA, "--device", "tpu"], ["device", "tpu"]),
    ("ev-device-index", [*EVA, "--device", "cuda:99"], ["cuda"]),
    ("ev-limit-zero", [*EVA, "--limit", "0"], ["--limit", "--help"]),
    ("ev-limit-text", [*EVA, "--limit", "abc"], ["--limit"]),
    ("ev-limit-negative", [*EVA, "--limit", "-5"], ["--limit"]),
    ("ev-unknown-option", [*EVA, "--bogus"], ["--bogus"]),
    ("ev-checks-mode", [*EVA, "--checks", "some"], ["--checks", "some", "auto, full, off"]),
    ("ev-checks-and-no-checks", [*EVA, "--checks", "full", "--no-checks"], ["--no-checks", "--checks full"]),
    ("ev-missing-checkpoint-option", ["evaluate", "--attack", "fgsm:eps=0.1"], ["--checkpoint"]),
    ("ev-seed-text", [*EVA, "--seed", "x"], ["--seed"]),
    # evaluate: attacks
    ("ev-attack-unknown", [*EV, "--attack", "nope:eps=0.1"], ["unknown attack", "nope", "pgd"]),
    ("ev-attack-param", [*EV, "--attack", "pgd:eps=0.1,foo=3"], ["foo", "steps"]),
    ("ev-attack-eps-text", [*EV, "--attack", "pgd:eps=big"], ["eps", "big"]),
    ("ev-attack-eps-negative", [*EV, "--attack", "pgd:eps=-0.1"], ["eps", "-0.1"]),
    ("ev-attack-steps-negative", [*EV, "--attack", "pgd:eps=0.1,steps=-3"], ["steps", "-3"]),
    ("ev-attack-steps-fraction", [*EV, "--attack", "pgd:eps=0.1,steps=2.5"], ["steps", "whole"]),
    ("ev-attack-not-key-value", [*EV, "--attack", "pgd:eps"], ["key=value"]),
    ("ev-attack-unparsable", [*EV, "--attack", ":::"], ["cannot parse"]),
    ("ev-attack-bool", [*EV, "--attack", "pgd:eps=0.1,random_start=maybe"], ["random_start", "true or false"]),
    ("ev-attack-norm", [*EV, "--attack", "pgd:eps=0.1,norm=l3"], ["norm", "l3"]),
    ("ev-attack-T-zero", [*EV, "--attack", "tpgd:eps=0.1,T=0"], ["T", "> 0"]),
    ("ev-attack-no-eps", ["evaluate", "--checkpoint", "{noeps}", "--attack", "pgd"], ["needs eps"]),
    ("ev-no-attack-no-eps", ["evaluate", "--checkpoint", "{noeps}"], ["no attack given", "--eps"]),
    ("ev-eps-text", ["evaluate", "--checkpoint", "{noeps}", "--eps", "lots"], ["eps", "lots"]),
    ("ev-attack-dup-label", [*EV, "-a", "pgd:eps=0.1", "-a", "pgd:eps=0.1,steps=20"], ["share the name", "label="]),
    ("ev-attack-label-empty", [*EV, "--attack", "pgd:eps=0.1,label="], ["label=", "empty"]),
    ("ev-cw-linf-l2", [*EV, "--attack", "cw-linf:eps=0.1,norm=l2"], ["linf only", "cw:norm=l2"]),
    ("ev-eps-grid-spec-eps", [*EV, "--eps", "0.1,0.2", "--attack", "pgd:eps=0.1"], ["sets eps", "--eps"]),
    ("ev-eps-grid-twice", [*EV, "--eps", "0.1,0.2,0.1"], ["0.1 twice"]),
    ("ev-eps-grid-empty", [*EV, "--eps", "0.1,,0.2"], ["empty entry"]),
    ("ev-eps-grid-range", [*EV, "--eps", "0.1,2"], ["linf eps must lie in"]),
    ("ev-eps-grid-dup-label", [*EV, "--eps", "0.1,0.2", "-a", "pgd", "-a", "pgd:steps=20"], ["share the name"]),
    ("ev-min-norm-unknown", [*EV, "--min-norm", "pgd"], ["--min-norm", "fab"]),
    ("ev-min-norm-param", [*EV, "--min-norm", "fab:eps=0.1"], ["--min-norm fab", "'eps'", "steps"]),
    ("ev-ta-unknown", [*EV, "--attack", "ta:name=NoSuchAttack,eps=0.1"], ["torchattacks"]),
    ("ev-ta-missing", [*EV, "--attack", "ta:name=FAB,eps=0.1"], ["needs torchattacks", "pip install"]),
    # evaluate: dataset, checkpoint, model
    ("ev-dataset", [*EVA, "--dataset", "nope"], ["unknown dataset", "nope", "digits"]),
    ("ev-checkpoint-missing", ["evaluate", "--checkpoint", "{tmp}/no.safetensors", "--attack", "fgsm:eps=0.1"],
     ["not found", "no.safetensors"]),
    ("ev-checkpoint-empty-dir", ["evaluate", "--checkpoint", "{tmp}/emptydir", "--attack", "fgsm:eps=0.1"],
     ["no checkpoint in directory"]),
    ("ev-checkpoint-corrupt", ["evaluate", "--checkpoint", "{corrupt}", "--dataset", "digits", "--model",
                               "small-cnn", "--attack", "fgsm:eps=0.1"], ["cannot read checkpoint"]),
    ("ev-checkpoint-classes", ["evaluate", "--checkpoint", "{five}", "--attack", "fgsm:eps=0.1"],
     ["5 outputs", "10 classes"]),
    ("ev-model-unknown", [*BARE, "--model", "nope"], ["unknown model", "nope", "small-cnn"]),
    ("ev-model-and-file", [*BARE, "--model", "small-cnn", "--model-file", "{netpy}:factory"], ["not both"]),
    ("ev-model-file-no-colon", [*BARE, "--model-file", "{netpy}"], ["FACTORY"]),
    ("ev-model-file-missing", [*BARE, "--model-file", "{tmp}/nofile.py:factory"], ["model file", "nofile.py"]),
    ("ev-no-dataset", ["evaluate", "--checkpoint", "{bare}", "--model", "small-cnn", "--attack", "fgsm:eps=0.1"],
     ["--dataset"]),
    # evaluate: normalization
    ("ev-mean-without-std", [*BARE, "--model", "small-cnn", "--mean", "0.5"], ["--mean", "--std", "together"]),
    ("ev-std-without-mean", [*BARE, "--model", "small-cnn", "--std", "0.5"], ["together"]),
    ("ev-mean-channels", [*BARE, "--model", "small-cnn", "--mean", "0.5,0.5", "--std", "1"], ["2 values", "1 channel"]),
    ("ev-std-zero", [*BARE, "--model", "small-cnn", "--mean", "0.5", "--std", "0"], ["--std", "> 0"]),
    ("ev-mean-text", [*BARE, "--model", "small-cnn", "--mean", "grey", "--std", "1"], ["--mean", "grey"]),
    ("ev-mean-empty-item", [*BARE, "--model", "small-cnn", "--mean", "0.5,", "--std", "1"], ["--mean"]),
    ("ev-mean-with-sidecar", [*EVA, "--mean", "0.5", "--std", "0.5"], ["--mean/--std", "sidecar"]),
    ("ev-normalize-with-sidecar", [*EVA, "--no-normalize"], ["--no-normalize", "sidecar"]),
    ("ev-no-normalize-and-mean", [*BARE, "--model", "small-cnn", "--no-normalize", "--mean", "0.5", "--std", "1"],
     ["contradicts"]),
    # evaluate: data root
    ("ev-data-root-empty", ["evaluate", "--checkpoint", "{bare}", "--dataset", "mnist", "--model", "small-cnn",
                            "--data-root", "{tmp}/emptydir", "--attack", "fgsm:eps=0.1"],
     ["mnist test split not found", "emptydir", "t10k-images-idx3-ubyte"]),
    ("ev-data-root-missing", ["evaluate", "--checkpoint", "{bare}", "--dataset", "cifar10", "--model", "small-cnn",
                              "--data-root", "{tmp}/no/such", "--attack", "fgsm:eps=0.1"],
     ["cifar10 test split not found", "no/such", "test_batch"]),
    # evaluate: image folders, image size, subsets and indices
    ("ev-image-size-not-folder", [*EVA, "--image-size", "32"], ["--image-size", "only to --dataset imagefolder", "digits"]),
    ("ev-image-size-zero", [*EVA, "--image-size", "0"], ["--image-size"]),
    ("ev-folder-mixed-sizes", ["evaluate", "--checkpoint", "{bare}", "--dataset", "imagefolder", "--model", "small-cnn",
                               "--data-root", "{mixed}", "--attack", "fgsm:eps=0.1"],
     ["differ in size", "8x8", "9x9", "--image-size N"]),
    ("ev-folder-sidecar-size", ["evaluate", "--checkpoint", "{rgb32}", "--dataset", "imagefolder", "--data-root",
                                "{folder16}", "--attack", "fgsm:eps=0.1"], ["3x32x32", "3x16x16", "--image-size 32"]),
    ("ev-folder-model-fails", ["evaluate", "--checkpoint", "{linear3}", "--dataset", "imagefolder", "--model-file",
                               "{netpy}:factory", "--data-root", "{folder16}", "--attack", "fgsm:eps=0.1"],
     ["the model fails on one 3x16x16 image of imagefolder", "--image-size"]),
    ("ev-subset-unknown", [*EVA, "--limit", "5", "--subset", "random"], ["--subset", "random", "first, stratified"]),
    ("ev-subset-without-limit", [*EVA, "--subset", "first"], ["--subset first", "--limit N"]),
    ("ev-indices-with-limit", [*EVA, "--indices", "{idx_ok}", "--limit", "5"], ["--indices", "--limit"]),
    ("ev-indices-with-subset", [*EVA, "--indices", "{idx_ok}", "--subset", "first"], ["--indices", "--subset"]),
    ("ev-indices-missing", [*EVA, "--indices", "{tmp}/nope.txt"], ["indices file", "nope.txt", "not found"]),
    ("ev-indices-range", [*EVA, "--indices", "{idx_range}"], ["out of range 0..449", "450"]),
    ("ev-indices-duplicate", [*EVA, "--indices", "{idx_dup}"], ["duplicate indices: 3"]),
    ("ev-indices-not-integer", [*EVA, "--indices", "{idx_float}"], ["not integers", "2.5"]),
    ("ev-indices-npy-float", [*EVA, "--indices", "{idx_npy_float}"], ["float64", "1-D array of integers"]),
    ("ev-indices-npy-pickle", [*EVA, "--indices", "{idx_npy_pickle}"], ["not a plain .npy array"]),
    # tpgd
    ("tp-T-text", ["tpgd", "--checkpoint", "{good}", "--T", "abc"], ["abc"]),
    ("tp-rule", [*TP, "--rule", "nope"], ["nope"]),
    ("tp-eps-zero", [*TP, "--eps", "0"], ["--eps", "> 0"]),
    ("tp-eps-text", [*TP, "--eps", "x"], ["--eps"]),
    ("tp-alpha", [*TP, "--alpha", "-1"], ["--alpha"]),
    ("tp-norm", [*TP, "--norm", "l3"], ["norm", "l3"]),
    ("tp-split", [*TP, "--split", "val"], ["--split"]),
    ("tp-steps-zero", [*TP, "--steps", "0"], ["--steps"]),
    ("tp-n-boot", [*TP, "--n-boot", "5"], ["--n-boot"]),
    ("tp-device", [*TP, "--device", "tpu"], ["tpu"]),
    ("tp-no-eps", ["tpgd", "--checkpoint", "{noeps}"], ["eps"]),
    ("tp-dataset", [*TP, "--dataset", "nope"], ["unknown dataset"]),
    ("tp-image-size-not-folder", [*TP, "--image-size", "16"], ["--image-size", "only to --dataset imagefolder"]),
    # defend
    ("df-objective", [*DF, "--objective", "nope"], ["--objective"]),
    ("df-max-drop", [*DF, "--max-drop", "200"], ["--max-drop"]),
    ("df-rule", [*DF, "--rule", "nope"], ["--rule"]),
    ("df-tau-range", [*DF, "--rule", "threshold", "--tau", "2"], ["--tau"]),
    ("df-bias-with-threshold", [*DF, "--rule", "threshold", "--bias", "1"], ["--bias"]),
    ("df-bias-text", [*DF, "--bias", "a,b"], ["--bias"]),
    ("df-class-high", [*DF, "--class", "10"], ["--class 10", "0..9"]),
    ("df-class-negative", [*DF, "--class", "-1"], ["--class -1"]),
    ("df-train-no-defense", [*DF, "--phase", "train"], ["--defense"]),
    ("df-train-unknown-defense", [*DF, "--phase", "train", "--defense", "nope", "--weight", "1"], ["nope"]),
    ("df-train-set-no-equals", [*DFT, "--set", "epochs"], ["--set", "KEY=VALUE"]),
    ("df-train-set-unknown-key", [*DFT, "--set", "nosuchkey=3"], ["nosuchkey"]),
    ("df-phase", [*DF, "--phase", "nope"], ["--phase"]),
    ("df-set-in-inference", [*DF, "--set", "epochs=1"], ["--phase train"]),
    ("df-seeds-inference", [*DF, "--seeds", "0,1"], ["--seeds", "--phase train"]),
    ("df-seeds-with-seed", [*DFT, "--seeds", "0,1", "--seed", "0"], ["--seed", "--seeds", "not both"]),
    ("df-seeds-duplicate", [*DFT, "--seeds", "1,1"], ["--seeds", "seed 1 twice"]),
    ("df-seeds-empty", [*DFT, "--seeds", ""], ["--seeds", "0,1,2"]),
    ("df-seeds-set-seed", [*DFT, "--seeds", "0,1", "--set", "seed=3"], ["--set seed", "--seeds"]),
    ("df-attack", [*DF, "--attack", "nope"], ["unknown attack"]),
    ("df-val-fraction", [*DF, "--val-fraction", "1.5"], ["--val-fraction"]),
    # train
    ("tr-recipe", ["train", "--recipe", "nope"], ["nope"]),
    ("tr-set-no-equals", ["train", "--set", "beta"], ["--set", "KEY=VALUE"]),
    ("tr-set-unknown-key", ["train", "--set", "nosuchkey=1"], ["nosuchkey"]),
    ("tr-eps-range", ["train", "--eps", "1.5"], ["eps"]),
    ("tr-dataset", ["train", "--dataset", "nope"], ["nope"]),
    ("tr-model", ["train", "--model", "nope"], ["nope"]),
    ("tr-method", ["train", "--method", "nope"], ["nope"]),
    ("tr-resume-nothing", ["train", "--resume"], ["nothing to resume", "does not exist"]),
    ("tr-device", ["train", "--device", "tpu"], ["tpu"]),
    ("tr-data-root", ["train", "--dataset", "mnist", "--data-root", "{tmp}/emptydir"], ["mnist", "not found"]),
    ("tr-lr-text", ["train", "--lr", "fast"], ["fast"]),
    ("tr-epochs-text", ["train", "--epochs", "x"], ["--epochs"]),
    ("tr-eval-every-zero", ["train", "--eval-every", "0"], ["--eval-every", ">= 1"]),
    ("tr-eval-limit-alone", ["train", "--eval-limit", "50"], ["--eval-limit", "--eval-every"]),
    ("tr-eval-limit-classes", ["train", "--eval-every", "2", "--eval-limit", "5"], ["--eval-limit", "10 classes"]),
    ("tr-seeds-empty", ["train", "--seeds", ""], ["--seeds", "0,1,2"]),
    ("tr-seeds-duplicate", ["train", "--seeds", "0,1,0"], ["--seeds", "seed 0 twice"]),
    ("tr-seeds-text", ["train", "--seeds", "0,a"], ["--seeds", "integer"]),
    ("tr-seeds-negative", ["train", "--seeds", "0,-1"], ["--seeds", ">= 0"]),
    ("tr-seeds-with-seed", ["train", "--seeds", "0,1", "--seed", "3"], ["--seed", "--seeds", "not both"]),
    ("tr-seeds-resume", ["train", "--seeds", "0,1", "--resume", "--out", "{tmp}"], ["--resume", "seed-N"]),
    ("tr-intensity-zero", ["train", "--intensity-every", "0"], ["--intensity-every", ">= 1"]),
    ("tr-intensity-batch-alone", ["train", "--intensity-batch", "16"], ["--intensity-batch", "--intensity-every"]),
    ("tr-intensity-method", ["train", "--method", "trades", "--intensity-every", "5"], ["intensity", "trades"]),
    # intensity
    ("int-missing", ["intensity", "{tmp}/nothere"], ["nothere", "classwise train"]),
    ("int-no-log", ["intensity", "{tmp}/emptydir"], ["intensity.jsonl", "--intensity-every"]),
    ("int-against", ["intensity", "{tmp}/emptydir", "--against", "random"], ["--against", "standard, clean"]),
    ("int-from-epoch", ["intensity", "{tmp}/emptydir", "--against", "clean", "--from-epoch", "0"],
     ["--from-epoch", ">= 1"]),
    # study
    ("st-scale", ["study", "--scale", "huge"], ["--scale", "huge", "smoke"]),
    ("st-checkpoint-form", ["study", "--checkpoint", "pgd-at"], ["DEFENSE=PATH"]),
    ("st-checkpoint-defense", ["study", "--checkpoint", "nope={good}"], ["unknown defense"]),
    ("st-checkpoint-missing", ["study", "--checkpoint", "pgd-at={tmp}/no.safetensors"], ["not found"]),
    ("st-checkpoint-no-method", ["study", "--checkpoint", "pgd-at={good}"], ["pgd-at=", "does not say", "--force"]),
    ("st-checkpoint-dataset", ["study", "--dataset", "mnist", "--checkpoint", "pgd-at={good}", "--force"],
     ["--dataset mnist", "digits"]),
    ("st-dataset", ["study", "--dataset", "nope"], ["unknown dataset"]),
    ("st-seeds-with-seed", ["study", "--seeds", "0,1", "--seed", "1"], ["--seed", "--seeds", "not both"]),
    ("st-seeds-duplicate", ["study", "--seeds", "2,2"], ["--seeds", "seed 2 twice"]),
    ("st-seeds-checkpoint", ["study", "--seeds", "0,1", "--checkpoint", "pgd-at={good}"], ["--checkpoint", "--seeds"]),
    ("st-data-root", ["study", "--dataset", "mnist", "--data-root", "{tmp}/emptydir"], ["not found"]),
    ("st-device", ["study", "--device", "tpu"], ["tpu"]),
    # demo, report, compare, list, remove-class, top level
    ("demo-epochs", ["demo", "--epochs", "0"], ["--epochs"]),
    ("demo-eps", ["demo", "--eps", "lots"], ["lots"]),
    ("demo-device", ["demo", "--device", "tpu"], ["tpu"]),
    ("report-missing", ["report", "{tmp}/nothere"], ["nothere"]),
    ("report-not-a-run", ["report", "{tmp}/emptydir"], ["emptydir"]),
    ("compare-one", ["compare", "{tmp}/emptydir"], ["at least two"]),
    ("compare-not-runs", ["compare", "{tmp}/emptydir", "{tmp}/emptydir"], ["outcomes"]),
    ("export-missing", ["export", "{tmp}/nothere"], ["nothere", "no run directory"]),
    ("export-not-a-run", ["export", "{tmp}/emptydir"], ["emptydir", "no outcomes.npz"]),
    ("export-format", ["export", "{tmp}/emptydir", "--format", "docx"], ["docx", "csv, markdown, latex"]),
    ("export-out-dir", ["export", "{tmp}/emptydir", "--out", "{tmp}/emptydir"], ["is a directory"]),
    ("ev-model-file-no-checkpoint-no-dataset", ["evaluate", "--model-file", "{netpy}:factory",
                                                "--attack", "fgsm:eps=0.1"], ["--checkpoint", "--dataset"]),
    ("list-unknown", ["list", "nope"], ["nope"]),
    ("remove-class-missing-run", ["remove-class", "--run", "{tmp}/nothere", "--source", "0", "--target", "1"],
     ["nothere"]),
    ("remove-class-seeds-duplicate", ["remove-class", "--run", "{tmp}/nothere", "--source", "0", "--target", "1",
                                      "--seeds", "0,0"], ["--seeds", "seed 0 twice"]),
    ("remove-class-seeds-missing-run", ["remove-class", "--run", "{tmp}/nothere", "--source", "0", "--target", "1",
                                        "--seeds", "0,1"], ["nothere"]),
    ("unknown-command", ["nope"], ["nope"]),
    # leaderboard
    ("lb-no-model", ["leaderboard", "--eps", "0.1"], ["MODEL"]),
    ("lb-missing", ["leaderboard", "{good}", "{tmp}/nothere"], ["nothere"]),
    ("lb-classes", ["leaderboard", "{good}", "{five}"], ["5 classes", "10"]),
    ("lb-dataset", ["leaderboard", "{good}", "--dataset", "mnist"], ["--dataset says mnist"]),
    ("lb-file-no-dataset", ["leaderboard", "{netpy}:factory", "--eps", "0.1"], ["--dataset"]),
    ("lb-file-no-eps", ["leaderboard", "{netpy}:factory", "--dataset", "digits"], ["--eps"]),
    ("lb-chunk", ["leaderboard", "{good}", "--batch-size", "64", "--chunk", "100"], ["--chunk 100", "multiple"]),
    ("lb-same-name", ["leaderboard", "{good}", "{good}"], ["named", "NAME=SPEC"]),
    ("lb-n-ex", ["leaderboard", "{good}", "--n-ex", "100000"], ["--n-ex", "450"]),
    ("lb-threat-model", ["leaderboard", "{good}", "--threat-model", "L3"], ["--threat-model", "L3"]),
    ("lb-model-dir", ["leaderboard", "{good}", "--model-dir", "{tmp}/emptydir"], ["--model-dir"]),
    ("lb-bare", ["leaderboard", "{bare}", "--dataset", "digits", "--eps", "0.1"], ["bare.pt"]),
]

RUN_DIR_COMMANDS = {"evaluate", "tpgd", "defend", "train", "study", "demo", "leaderboard"}

MODEL_FILE = '''
import torch.nn as nn

def factory(num_classes, in_channels=1):
    return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * 64, num_classes))
'''


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    from classwise.models import create_model, dataset_stats, save_checkpoint

    d = tmp_path_factory.mktemp("bad-inputs")
    torch.manual_seed(0)
    mean, std = dataset_stats("digits", 1)
    m = create_model("small-cnn", num_classes=10, in_channels=1, input_size=8, mean=mean, std=std)
    out = {"good": save_checkpoint(d / "good.safetensors", m, {"dataset": "digits",
                                                               "threat_model": {"eps": 0.1, "norm": "linf"}}),
           "noeps": save_checkpoint(d / "noeps.safetensors", m, {"dataset": "digits"})}
    torch.save(m.net.state_dict(), d / "bare.pt")
    out["bare"] = d / "bare.pt"
    m5 = create_model("small-cnn", num_classes=5, in_channels=1, input_size=8)
    out["five"] = save_checkpoint(d / "five.safetensors", m5, {"dataset": "digits"})
    (d / "corrupt.safetensors").write_bytes(b"\x07" * 4096)
    out["corrupt"] = d / "corrupt.safetensors"
    (d / "net.py").write_text(MODEL_FILE)
    out["netpy"] = d / "net.py"
    out |= _folder_files(d)
    return out


def _folder_files(d: Path) -> dict[str, Path]:
    """Image folders (16x16, and mixed 8x8/9x9), 3-channel checkpoints that do not fit them, indices files."""
    import numpy as np
    from PIL import Image

    from classwise.models import create_model, save_checkpoint

    for root, sizes in (("folder16", [16] * 10), ("mixed", [8, 9])):
        for c, s in enumerate(sizes):
            (d / root / "test" / f"c{c}").mkdir(parents=True)
            Image.new("RGB", (s, s), (20 * c, 0, 0)).save(d / root / "test" / f"c{c}" / "0.png")
    out = {"folder16": d / "folder16", "mixed": d / "mixed"}
    m = create_model("small-cnn", num_classes=10, in_channels=3, input_size=32)
    out["rgb32"] = save_checkpoint(d / "rgb32.safetensors", m, {"dataset": "cifar10"})
    torch.save(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 64, 10)).state_dict(), d / "linear3.pt")
    out["linear3"] = d / "linear3.pt"
    for name, text in (("idx_ok", "1 2"), ("idx_range", "0\n450\n"), ("idx_dup", "3,1,3"), ("idx_float", "1, 2.5")):
        (d / f"{name}.txt").write_text(text)
        out[name] = d / f"{name}.txt"
    np.save(d / "idx_npy_float.npy", np.array([1.0, 2.0]))
    np.save(d / "idx_npy_pickle.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    out |= {"idx_npy_float": d / "idx_npy_float.npy", "idx_npy_pickle": d / "idx_npy_pickle.npy"}
    return out


def _argv(args: list[str], files: dict[str, Path], tmp: Path) -> list[str]:
    subst = {k: str(v) for k, v in files.items()} | {"tmp": str(tmp)}
    argv = [a.format(**subst) for a in args]
    if argv[0] in RUN_DIR_COMMANDS:
        argv += ["--out", str(tmp / "OUT")]
    return argv


def run_in_process(argv: list[str], capsys) -> tuple[int, str]:
    from classwise.cli.main import run_cli

    capsys.readouterr()
    code = run_cli(argv)
    return code, capsys.readouterr().err


def assert_one_line_error(code: int, err: str) -> str:
    assert code == 2, f"exit {code}\nstderr:\n{err}"
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one stderr line, got {len(lines)}:\n{err}"
    assert lines[0].startswith("error:") and len(lines[0]) > 20, err
    return lines[0]


def test_at_least_50_distinct_cases():
    assert len({c[0] for c in CASES}) == len(CASES) >= 50
    assert {c[1][0] for c in CASES} >= RUN_DIR_COMMANDS | {"report", "compare", "list", "remove-class"}


@pytest.mark.parametrize("name,args,expected", CASES, ids=[c[0] for c in CASES])
def test_bad_input(name, args, expected, files, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CLASSWISE_DATA", str(tmp_path / "no-data"))
    (tmp_path / "emptydir").mkdir()
    if name == "ev-ta-missing":  # torchattacks not installed
        monkeypatch.setitem(sys.modules, "torchattacks", None)
    elif name == "ev-device-index" and not torch.cuda.is_available():
        pass  # "no CUDA device" then; with CUDA: the index is out of range
    code, err = run_in_process(_argv(args, files, tmp_path), capsys)
    line = assert_one_line_error(code, err)
    for s in expected:
        assert s.format(tmp=tmp_path) in line, (s, line)
    assert not (tmp_path / "OUT").exists(), "a run directory was left behind"
    assert not (tmp_path / "runs").exists(), "a default run directory was left behind"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["emptydir"]


@pytest.mark.parametrize("args", [["demo", "--quiet"], ["train", "--epochs", "1"], [*EVA, "--quiet"], TP,
                                  ["study"], ["remove-class", "--run", "x", "--source", "0", "--target", "1"],
                                  [*DF, "--rule", "threshold"]])
def test_bad_progress_mode_is_one_line_before_any_work(args, files, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CLASSWISE_PROGRESS", "yes")
    line = assert_one_line_error(*run_in_process(_argv([*args, "--out", "OUT"] if args[0] != "remove-class" else args,
                                                       files, tmp_path), capsys))
    assert "CLASSWISE_PROGRESS='yes'" in line and "auto, bar, log or off" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_error_stays_one_line_on_a_narrow_console(files, tmp_path, monkeypatch, capsys):
    from classwise.cli import main as cli_main

    monkeypatch.setattr(cli_main.err_console, "_width", 30)
    monkeypatch.chdir(tmp_path)
    code, err = run_in_process(["evaluate", "--checkpoint", str(files["good"]), "--attack",
                                "pgd:eps=0.1,foo=3,bar=4,baz=5,and_a_very_long_parameter_name=6"], capsys)
    line = assert_one_line_error(code, err)
    assert len(line) > 60 and "and_a_very_long_parameter_name" in line


def test_help_and_version_still_work(capsys):
    from classwise.cli.main import run_cli

    assert run_cli(["--help"]) == 0 and "evaluate" in capsys.readouterr().out
    assert run_cli(["evaluate", "--help"]) == 0 and "--mean" in capsys.readouterr().out
    assert run_cli(["--version"]) == 0 and "classwise" in capsys.readouterr().out


# --- a few as real subprocesses: the console a user sees ----------------------------------------------


def _cli(args: list[str], cwd: Path, columns: str) -> subprocess.CompletedProcess:
    return run_cli(args, cwd, timeout=120, columns=int(columns), data_dir=cwd / "no-data")


@pytest.mark.slow
@pytest.mark.parametrize("args", [["evaluate", "--checkpoint", "x", "--limit", "0"],
                                  ["evaluate", "--checkpoint", "x", "--no-such-option"],
                                  ["evaluate", "--attack", "pgd:eps=0.1"],
                                  ["train", "--set", "nosuchkey_with_a_long_name=1", "--out", "OUT"]])
def test_subprocess_one_line_at_40_columns(args, tmp_path):
    proc = _cli(args, tmp_path, "40")
    assert_one_line_error(proc.returncode, proc.stderr)
    assert not (tmp_path / "OUT").exists() and not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_data_root_holding_nothing_does_not_fall_back_to_the_system_copy(tmp_path, files):
    system = Path("/usr/share/datasets/fashion-mnist")
    if not (system / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip("no system Fashion-MNIST to fall back to")
    (tmp_path / "empty").mkdir()
    proc = _cli(["evaluate", "--checkpoint", str(files["bare"]), "--dataset", "fashion-mnist", "--model",
                 "small-cnn", "--data-root", "empty", "--attack", "fgsm:eps=0.1", "--out", "OUT"], tmp_path, "200")
    line = assert_one_line_error(proc.returncode, proc.stderr)
    assert "empty" in line and str(system) not in line and not (tmp_path / "OUT").exists()
