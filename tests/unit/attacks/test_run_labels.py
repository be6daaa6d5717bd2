"""Attack labels of a run: the budget when the attacks differ in it, label=, duplicates, the cw-linf alias."""

from __future__ import annotations

import pytest

from classwise.analysis.labels import budget_text, eps_text
from classwise.attacks import ATTACKS, attack_info, bind_run, build_attack
from classwise.errors import ClasswiseError


def _labels(*specs: str) -> list[str]:
    return [a.label for a in bind_run(specs)]


def test_labels_carry_eps_and_norm_when_the_run_differs_in_them():
    assert _labels("pgd:eps=8/255", "pgd:eps=0.5,norm=l2") == ["PGD-20 linf 8/255", "PGD-20 l2 0.5"]
    assert _labels("pgd:eps=8/255", "fgsm:eps=4/255") == ["PGD-20 linf 8/255", "FGSM linf 4/255"]
    # the label goes into the record too: specs round-trip it
    a = bind_run(["pgd:eps=0.3", "pgd:eps=0.1"])[1]
    assert a.spec.to_dict()["label"] == "PGD-20 linf 0.1" and a.kwargs["eps"] == pytest.approx(0.1)


def test_labels_unchanged_when_the_run_shares_one_budget():
    assert _labels("pgd:eps=8/255", "fgsm:eps=8/255", "cw:eps=8/255,steps=10") == ["PGD-20", "FGSM", "CW-10"]
    assert _labels("pgd:eps=0.5,norm=l2") == ["PGD-20"]
    # what evaluate used to be handed (bound one by one) is what it gets now
    assert [a.label for a in bind_run([build_attack("tpgd:eps=0.3,T=2")])] == ["T-PGD-20(T=2.0)"]


def test_label_in_a_spec_names_the_column_and_stays_as_given():
    assert _labels("pgd:eps=0.3,label=strong", "pgd:eps=0.1") == ["strong", "PGD-20 linf 0.1"]
    a = build_attack("pgd:eps=0.3,label=strong")
    assert "label" not in a.kwargs and "label" not in a.spec.params and a.spec.to_dict()["label"] == "strong"
    with pytest.raises(ClasswiseError, match="label= is empty"):
        build_attack("pgd:eps=0.3,label=")


def test_two_attacks_with_one_label_are_refused():
    with pytest.raises(ClasswiseError, match="share the name 'PGD-20'.*label="):
        bind_run(["pgd:eps=0.3", "pgd:eps=0.3,steps=20"])
    with pytest.raises(ClasswiseError, match="share the name 'x'"):
        bind_run(["pgd:eps=0.3,label=x", "fgsm:eps=0.1,label=x"])
    assert _labels("pgd:eps=0.3", "pgd:eps=0.3,label=again") == ["PGD-20", "again"]


@pytest.mark.parametrize("eps,text", [(8 / 255, "8/255"), (1 / 255, "1/255"), (0.3, "0.3"), (0.5, "0.5"),
                                      (1.0, "1"), (0.0, "0"), (0.031, "0.031"), (0.0123456, "0.01235")])
def test_eps_text(eps, text):
    assert eps_text(eps) == text
    assert budget_text("l2", eps) == f"l2 {text}"


def test_cw_linf_is_an_alias_of_cw_and_linf_only():
    assert ATTACKS.get("cw-linf") is ATTACKS.get("cw") and attack_info("cw-linf") == attack_info("cw")
    assert "NOT Carlini-Wagner's L2" in ATTACKS.help("cw") and "alias of cw" in ATTACKS.help("cw-linf")
    assert build_attack("cw-linf:eps=0.1").label == "CW-20"
    with pytest.raises(ClasswiseError, match="linf only.*cw:norm=l2"):
        build_attack("cw-linf:eps=0.1,norm=l2")
    assert build_attack("cw:eps=0.5,norm=l2").norm.value == "l2"
