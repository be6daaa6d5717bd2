"""evaluate's --mean/--std/--normalize and what config.toml records (in-process through run_cli)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover
    import tomli as tomllib  # type: ignore[no-redef]

MODEL_FILE = '''
import torch.nn as nn

def factory(num_classes, in_channels=1):
    return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * 64, num_classes))
'''
MEAN, STD = 0.5, 0.1


@pytest.fixture(scope="module")
def net_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("norm")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    with torch.no_grad():
        net[1].weight.normal_(0, 1)
        net[1].bias.normal_(0, 5)
    torch.save(net.state_dict(), d / "net.pt")
    (d / "net.py").write_text(MODEL_FILE)
    return net, d


def _acc(net, wrap: bool) -> float:
    from classwise.data import load_dataset
    from classwise.models import NormalizedModel

    x, y = load_dataset("digits", "test").tensors()
    m = NormalizedModel(net, [MEAN], [STD], 1) if wrap else net
    with torch.no_grad():
        return float((m(x).argmax(1) == y).float().mean())


def _evaluate(tmp: Path, d: Path, *extra: str) -> dict:
    from classwise.cli.main import run_cli

    out = tmp / "EV"
    code = run_cli(["evaluate", "--checkpoint", str(d / "net.pt"), "--dataset", "digits", "--model-file",
                    f"{d / 'net.py'}:factory", "--attack", "fgsm:eps=0.05", "--no-checks", "--out", str(out), *extra])
    assert code == 0
    import json

    metrics = json.loads((out / "metrics.json").read_text())
    return {"acc": metrics["clean"]["accuracy"], "cfg": tomllib.loads((out / "config.toml").read_text())}


def test_mean_std_wrap_a_model_file(net_files, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    net, d = net_files
    plain, wrapped = _acc(net, False), _acc(net, True)
    assert plain != wrapped  # the property below could fail
    r = _evaluate(tmp_path / "a", d, "--mean", "1/2", "--std", "0.1")
    assert r["acc"] == pytest.approx(wrapped)
    assert r["cfg"]["normalization"] == {"mean": [pytest.approx(MEAN)], "std": [pytest.approx(STD)], "source": "flags"}
    assert r["cfg"]["data_root"] == "bundled"
    (a,) = r["cfg"]["attacks"]
    assert a["name"] == "fgsm" and a["params"]["eps"] == 0.05 and a["params"]["random_start"] is False
    r = _evaluate(tmp_path / "b", d)
    assert r["acc"] == pytest.approx(plain) and r["cfg"]["normalization"] == "none"


def test_model_file_normalize_uses_the_dataset_stats(net_files, tmp_path, monkeypatch):
    from classwise.models import dataset_stats

    monkeypatch.chdir(tmp_path)
    _, d = net_files
    r = _evaluate(tmp_path, d, "--normalize")
    mean, std = dataset_stats("digits", 1)
    assert r["cfg"]["normalization"]["source"] == "dataset stats (digits)"
    assert r["cfg"]["normalization"]["mean"] == pytest.approx(mean)
    assert r["cfg"]["normalization"]["std"] == pytest.approx(std)


def test_resolved_pgd_parameters_are_recorded():
    from classwise.attacks import build_attack
    from classwise.cli._common import resolved_attack

    r = resolved_attack(build_attack("pgd:eps=0.1,steps=10"))
    p = r["params"]
    assert p["alpha"] == pytest.approx(0.025) and p["restarts"] == 1 and p["random_start"] is True
    assert p["loss"] == "ce" and p["T"] == 1.0 and p["norm"] == "linf" and p["steps"] == 10
    assert p["cycles"] is True  # the default cycle detection, as it runs (linf)
    assert "cycles" not in resolved_attack(build_attack("pgd:eps=0.5,norm=l2"))["params"]  # does not apply


def _evaluate_pgd(tmp: Path, d: Path, *extra: str) -> tuple[dict, dict]:
    """evaluate with enough attack work for the precision probe to run (450 digits x 40 steps)."""
    from classwise.cli.main import run_cli

    out = tmp / "EVP"
    code = run_cli(["evaluate", "--checkpoint", str(d / "net.pt"), "--dataset", "digits", "--model-file",
                    f"{d / 'net.py'}:factory", "--attack", "pgd:eps=0.05,steps=40", "--no-checks", "--quiet",
                    "--out", str(out), *extra])
    assert code == 0
    import json

    return json.loads((out / "metrics.json").read_text()), tomllib.loads((out / "config.toml").read_text())


def test_too_little_predicted_attack_time_is_fp32_contiguous_unprobed(net_files, tmp_path):
    metrics, cfg = _evaluate_pgd(tmp_path, net_files[1])  # this tiny net: well under MIN_PREDICTED_S
    rec = metrics["precision"]
    assert rec["value"] == "fp32" and rec["memory_format"] == "contiguous" and rec["probe"] is None
    assert rec["layout_probe"] is None and "predict" in rec["reason"] and "predict" in rec["memory_format_reason"]
    assert cfg["channels_last"] is False and cfg["channels_last_requested"] == "auto"


@pytest.mark.parametrize("asked", [None, "fp32", "bf16"])
def test_precision_resolved_value_and_reason_are_recorded(net_files, tmp_path, asked, monkeypatch):
    from classwise.evaluation import layout

    monkeypatch.setattr(layout, "MIN_PREDICTED_S", 0.0)  # this tiny net's attacks count as worth probing
    metrics, cfg = _evaluate_pgd(tmp_path, net_files[1], *(["--precision", asked] if asked else []))
    rec = metrics["precision"]
    assert rec["requested"] == (asked or "auto") == cfg["precision_requested"]
    assert rec["value"] == cfg["precision"] and rec["value"] in ("fp32", "bf16")
    assert rec["probe"] is not None and rec["probe"]["rows"] == 256  # 450 x 40 sample-steps: probed
    if asked:
        assert rec["value"] == asked
    else:
        probe = rec["probe"]
        faster = probe["bf16_s"] <= 0.9 * probe["fp32_s"] and probe["pred_agree"] >= 0.99 \
            and probe["ascent"] >= 0.98
        assert rec["value"] == ("bf16" if faster else "fp32"), rec["reason"]
    lp = rec["layout_probe"]  # the memory format was measured too, and chosen by the same rule
    assert lp is not None and rec["memory_format_requested"] == "auto" and cfg["channels_last_requested"] == "auto"
    cl = lp["channels_last_s"] <= 0.9 * lp["contiguous_s"] and lp["pred_agree"] >= 0.99 and lp["ascent"] >= 0.98
    assert rec["memory_format"] == ("channels_last" if cl else "contiguous") and cfg["channels_last"] is cl


@pytest.mark.parametrize("bf16_cost", [3.0, 1.0])
def test_explicit_bf16_measured_slower_prints_one_note(net_files, tmp_path, monkeypatch, capsys, bf16_cost):
    from classwise.evaluation import precision as P

    now = [0.0]
    real = P._pass

    def fake_pass(model, x, y):
        now[0] += bf16_cost if isinstance(model, P.Autocast) else 1.0
        return real(model, x, y)

    monkeypatch.setattr(P, "_clock", lambda device: (lambda: now[0], "fake"))
    monkeypatch.setattr(P, "_pass", fake_pass)
    metrics, cfg = _evaluate_pgd(tmp_path, net_files[1], "--precision", "bf16")
    notes = [ln for ln in capsys.readouterr().err.splitlines() if "measured slower" in ln]
    assert cfg["precision"] == "bf16" == metrics["precision"]["value"]  # the user's choice, measured or not
    assert len(notes) == (1 if bf16_cost > 1 else 0)
    if notes:
        assert notes[0].startswith("note: --precision bf16 measured slower than fp32")
