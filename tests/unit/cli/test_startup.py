"""cli._startup's allocator settings: CLASSWISE_ALLOCATOR modes, the environment kept, what run.json records."""

from __future__ import annotations

import ctypes

import pytest

from classwise.cli import _startup
from classwise.errors import ClasswiseError


@pytest.fixture(autouse=True)
def _fresh_state(monkeypatch):
    """Each test starts as an in-process caller; mallopt is recorded, never called on this process."""
    monkeypatch.setattr(_startup, "_state", {"mode": None, "allocator": _startup._IN_PROCESS})
    for k in ("CLASSWISE_ALLOCATOR", "THP_MEM_ALLOC_ENABLE", "MALLOC_MMAP_THRESHOLD_", "GLIBC_TUNABLES"):
        monkeypatch.setenv(k, "")  # recorded, so that the teardown restores the variable as it was
        monkeypatch.delenv(k)
    calls: list[tuple[int, int]] = []

    class _Libc:
        def mallopt(self, param: int, value: int) -> int:
            calls.append((param, value))
            return 1

    monkeypatch.setattr(ctypes, "CDLL", lambda name: _Libc())
    return calls


def test_an_in_process_caller_keeps_its_allocator(_fresh_state):
    rec = _startup.tune_for_attacks()
    assert rec == {"allocator": _startup._IN_PROCESS} and _fresh_state == []


def test_tuned_fixes_the_mmap_threshold_once_and_sets_huge_pages(monkeypatch, _fresh_state):
    import os

    _startup.tune_allocator()
    assert os.environ["THP_MEM_ALLOC_ENABLE"] == "1"
    assert _fresh_state == []  # nothing before the attack loops: the start-up's imports stay as fast
    rec = _startup.tune_for_attacks()
    assert _fresh_state == [(-3, 1 << 20)]  # M_MMAP_THRESHOLD, 1 MiB
    assert rec == {"allocator": "tuned", "env": {"THP_MEM_ALLOC_ENABLE": "1"},
                   "malloc": "glibc mallopt M_MMAP_THRESHOLD=1048576 (fixed: no dynamic threshold)"}
    assert _startup.tune_for_attacks() == rec and len(_fresh_state) == 1  # a second attack loop: no new call


@pytest.mark.parametrize("var,value", [("MALLOC_MMAP_THRESHOLD_", "131072"),
                                       ("GLIBC_TUNABLES", "glibc.malloc.mmap_threshold=131072")])
def test_the_environment_settings_are_kept(monkeypatch, _fresh_state, var, value):
    monkeypatch.setenv(var, value)
    monkeypatch.setenv("THP_MEM_ALLOC_ENABLE", "0")
    _startup.tune_allocator()
    rec = _startup.tune_for_attacks()
    assert _fresh_state == [] and "left to the environment" in str(rec["malloc"])
    assert rec["env"] == {"THP_MEM_ALLOC_ENABLE": "0"}  # the user's value, recorded as used


def test_system_mode_changes_nothing(monkeypatch, _fresh_state):
    import os

    monkeypatch.setenv("CLASSWISE_ALLOCATOR", "System")
    _startup.tune_allocator()
    rec = _startup.tune_for_attacks()
    assert _fresh_state == [] and "THP_MEM_ALLOC_ENABLE" not in os.environ
    assert str(rec["allocator"]).startswith("system (CLASSWISE_ALLOCATOR=system)")


def test_no_mallopt_is_said_not_hidden(monkeypatch, _fresh_state):
    monkeypatch.setattr(ctypes, "CDLL", lambda name: object())  # a C library without mallopt (not glibc)
    _startup.tune_allocator()
    assert _startup.tune_for_attacks()["malloc"] == "not glibc (no mallopt): the C allocator left as it is"


def test_an_unknown_mode_is_a_one_line_error(monkeypatch):
    monkeypatch.setenv("CLASSWISE_ALLOCATOR", "jemalloc")
    with pytest.raises(ClasswiseError, match="'jemalloc' is not an allocator mode; set it to tuned") as e:
        _startup.tune_allocator()
    assert "\n" not in str(e.value)
