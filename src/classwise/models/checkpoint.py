"""Checkpoint I/O: safetensors weights plus a JSON sidecar that says how to rebuild the model.

``save_checkpoint("run/best.safetensors", model, meta)`` writes

* ``run/best.safetensors``: the model's state dict (weights only; normalization mean/std are
  non-persistent buffers and are *not* in it), and
* ``run/best.json``: the sidecar: ``format_version``, ``architecture``, ``num_classes``,
  ``in_channels``, ``input_size``, ``mean``, ``std`` (from ``model.config`` when the model came from
  :func:`create_model`) plus whatever ``meta`` holds (dataset, class_names, epoch, metrics, ...).

Both are written atomically. The weights are renamed into place before the sidecar, so a complete
sidecar always sits beside complete weights (possibly an older sidecar for a moment on overwrite).

:func:`read_state_dict` also reads torch state dicts (``.pt``/``.pth``), always with
``weights_only=True``: a pickle holding arbitrary Python objects is refused, never executed.

Reading a checkpoint never runs code. A sidecar is data: :func:`validate_sidecar` checks every field
it knows before anything uses one, and a sidecar that names a ``model_file`` is never imported; the
caller gets an error saying which ``--model-file`` to type (code runs only from a file the user
named). :func:`classifier_weight_norms` reads the classifier's weights from the tensors alone.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import shlex
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from classwise.core import resolve_device
from classwise.errors import ClasswiseError
from classwise.io import atomic_write, atomic_write_json
from classwise.models.nets import NormalizedModel, create_model, unwrap_model

FORMAT_VERSION = 1

# Keys under which training scripts commonly nest the weights, tried in this order.
_NEST_KEYS = ("state_dict", "model_state_dict", "model", "net", "state_dict_ema")
# Files looked for, in this order, when a checkpoint path is a directory.
_DIR_CANDIDATES = ("best.safetensors", "last.safetensors", "model.safetensors")
_EXPECTED = "expected a safetensors file or a torch state dict"


# ----------------------------------------------------------------------------------------------
# saving
# ----------------------------------------------------------------------------------------------


def _model_config(model: nn.Module) -> dict[str, Any]:
    base = unwrap_model(model)
    return dict(getattr(base, "config", None) or {}) if isinstance(base, NormalizedModel) else {}


def _storage_key(t: torch.Tensor) -> tuple[str, int]:
    return (str(t.device), t.untyped_storage().data_ptr())


def _savable_tensors(state: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Contiguous CPU tensors; tied or partial-view tensors are cloned (safetensors refuses shared storage)."""
    out: dict[str, torch.Tensor] = {}
    seen: set[tuple[str, int]] = set()
    for k, v in state.items():
        if not isinstance(v, torch.Tensor):
            raise ClasswiseError(
                f"cannot save state dict entry {k!r}: it is a {type(v).__name__}, not a tensor"
            )
        t = v.detach()
        key = _storage_key(t) if t.untyped_storage().nbytes() else None
        whole = (
            t.is_contiguous()
            and t.storage_offset() == 0
            and (t.numel() * t.element_size() == t.untyped_storage().nbytes())
        )
        t = t.to("cpu")
        if key is not None and (key in seen or not whole):
            t = t.clone(memory_format=torch.contiguous_format)
        elif not t.is_contiguous():
            t = t.contiguous()
        if key is not None:
            seen.add(key)
        out[k] = t
    return out


def save_checkpoint(path: str | os.PathLike, model: nn.Module, meta: Mapping[str, Any] | None = None) -> Path:
    """Write ``path`` (``.safetensors``; the suffix is added when missing) and its JSON sidecar.

    The sidecar holds ``meta`` plus the model's own config (architecture, sizes, mean/std), which
    wins over same-named meta entries, and ``format_version``. Returns the weights path.
    """
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix == "":
        path = path.with_name(path.name + ".safetensors")
    elif path.suffix != ".safetensors":
        raise ClasswiseError(f"checkpoint path {path} must end in .safetensors")
    tensors = _savable_tensors(unwrap_model(model).state_dict())
    sidecar = {**dict(meta or {}), **_model_config(model), "format_version": FORMAT_VERSION}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={"format": "pt"}))
    atomic_write_json(sidecar_path(path), sidecar)
    return path


# ----------------------------------------------------------------------------------------------
# reading
# ----------------------------------------------------------------------------------------------


def sidecar_path(path: str | os.PathLike) -> Path:
    return Path(path).with_suffix(".json")


def _short(e: BaseException, limit: int = 160) -> str:
    text = str(e).strip().splitlines()
    msg = text[0] if text else type(e).__name__
    msg = f"{type(e).__name__}: {msg}" if type(e).__name__ not in msg else msg
    return msg if len(msg) <= limit else msg[: limit - 3] + "..."


def _looks_like_safetensors(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError:
        return False
    if len(head) < 9:
        return False
    n = int.from_bytes(head[:8], "little")
    return 0 < n < 100_000_000 and head[8:9] == b"{"


def _is_tensor_dict(obj: Any) -> bool:
    return (
        isinstance(obj, Mapping)
        and len(obj) > 0
        and all(isinstance(k, str) for k in obj)
        and all(isinstance(v, torch.Tensor) for v in obj.values())
    )


def _unnest(obj: Any) -> Any:
    for _ in range(4):
        if _is_tensor_dict(obj) or not isinstance(obj, Mapping):
            return obj
        for k in _NEST_KEYS:
            if k in obj and isinstance(obj[k], Mapping):
                obj = obj[k]
                break
        else:
            return obj
    return obj


def strip_prefixes(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop leading ``module.`` (DataParallel/DDP) and every ``_orig_mod.`` (torch.compile)."""
    out: dict[str, torch.Tensor] = {}
    for k, v in state.items():
        parts = [p for p in k.split(".") if p != "_orig_mod"]
        while len(parts) > 1 and parts[0] == "module":
            parts = parts[1:]
        out[".".join(parts)] = v
    return out


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file or a torch state dict (unwrapping common nesting and prefixes)."""
    path = Path(path)
    if not path.exists():
        raise ClasswiseError(f"checkpoint not found: {path}")
    if path.is_dir():
        raise ClasswiseError(f"cannot read checkpoint {path}: it is a directory; {_EXPECTED}")
    if path.suffix == ".safetensors" or _looks_like_safetensors(path):
        from safetensors.torch import load_file

        try:
            obj: Any = load_file(str(path), device="cpu")
        except Exception as e:  # safetensors raises its own error types for corrupt files
            raise ClasswiseError(f"cannot read checkpoint {path}: {_short(e)}; {_EXPECTED}") from None
    else:
        try:
            with warnings.catch_warnings():  # torch warns about the pickle protocol before refusing a payload
                warnings.filterwarnings("ignore", message=r"(?s).*pickle protocol", category=UserWarning)
                obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            if "weights only" in str(e).lower() or "weights_only" in str(e).lower():
                reason = (
                    "it holds Python objects that safe (weights_only) loading refuses, e.g. a "
                    "pickled model; save model.state_dict() instead"
                )
            else:
                reason = _short(e)
            raise ClasswiseError(f"cannot read checkpoint {path}: {reason}; {_EXPECTED}") from None
        except Exception as e:
            raise ClasswiseError(f"cannot read checkpoint {path}: {_short(e)}; {_EXPECTED}") from None
    obj = _unnest(obj)
    if not _is_tensor_dict(obj):
        if isinstance(obj, Mapping):
            keys = ", ".join(map(str, list(obj)[:6])) + (", ..." if len(obj) > 6 else "")
            reason = f"no dict of tensors found (top-level keys: {keys or 'none'})"
        else:
            reason = f"it holds a {type(obj).__name__}, not a dict of tensors"
        raise ClasswiseError(f"cannot read checkpoint {path}: {reason}; {_EXPECTED}")
    return strip_prefixes(obj)


def read_sidecar(path: str | os.PathLike) -> dict[str, Any] | None:
    """The JSON sidecar beside ``path`` (``x.safetensors`` -> ``x.json``), or None when there is none."""
    side = sidecar_path(path)
    if not side.is_file():
        return None
    try:
        meta = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ClasswiseError(f"cannot read checkpoint sidecar {side}: {_short(e)}") from None
    if not isinstance(meta, dict):
        raise ClasswiseError(f"checkpoint sidecar {side} must hold a JSON object, got {type(meta).__name__}")
    version = meta.get("format_version", FORMAT_VERSION)
    if isinstance(version, int) and version > FORMAT_VERSION:
        raise ClasswiseError(
            f"checkpoint sidecar {side} has format_version {version}, newer than this classwise "
            f"understands ({FORMAT_VERSION}); upgrade classwise"
        )
    return validate_sidecar(meta, where=side)


# ----------------------------------------------------------------------------------------------
# sidecar validation
# ----------------------------------------------------------------------------------------------


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _pos_int(v: Any) -> bool:
    return _is_int(v) and v >= 1


def _numbers(v: Any, *, positive: bool = False) -> bool:
    items = v if isinstance(v, list) else [v]
    return bool(items) and all(_is_number(x) and (x > 0 or not positive) for x in items)


def _text(v: Any) -> bool:
    return isinstance(v, str) and bool(v.strip())


# field -> (check, what it must be). A field set to null counts as absent; unknown fields are kept.
_SIDECAR_FIELDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "format_version": (lambda v: _is_int(v) and v >= 0, "a non-negative integer"),
    "architecture": (_text, "a model name (see `classwise list models`)"),
    "arch_options": (lambda v: isinstance(v, dict), 'an object of model options, e.g. {"depth": 10}'),
    "model_file": (_text, "a string PATH.py:FACTORY"),
    "num_classes": (_pos_int, "a positive integer"),
    "in_channels": (_pos_int, "a positive integer"),
    "input_size": (
        lambda v: _pos_int(v) or (isinstance(v, list) and 1 <= len(v) <= 2 and all(map(_pos_int, v))),
        "a positive integer or a [height, width] list of them",
    ),
    "mean": (_numbers, "a finite number or a list of them, one per input channel"),
    "std": (lambda v: _numbers(v, positive=True), "a positive number or a list of them, one per input channel"),
    "dataset": (_text, "a dataset name (see `classwise list datasets`)"),
    "class_names": (lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v), "a list of strings"),
    "method": (lambda v: isinstance(v, str), "a string"),
    "epoch": (lambda v: _is_int(v) and v >= 0, "a non-negative integer"),
    "partial_epoch": (lambda v: _is_int(v) and v >= 0, "a non-negative integer"),
    "threat_model": (lambda v: isinstance(v, dict), 'an object, e.g. {"norm": "linf", "eps": 0.03}'),
    "threat_model.eps": (lambda v: _is_number(v) or _text(v), "a number or a string such as 8/255"),
    "threat_model.norm": (_text, "linf or l2"),
    "recipe": (lambda v: isinstance(v, dict), "an object (the training recipe)"),
    "metrics": (lambda v: isinstance(v, dict), "an object"),
    "defense": (lambda v: isinstance(v, dict), "an object"),
}


def _brief(v: Any, limit: int = 60) -> str:
    try:
        text = json.dumps(v, allow_nan=True)
    except (TypeError, ValueError):
        text = repr(v)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def validate_sidecar(meta: Mapping[str, Any], *, where: str | os.PathLike = "") -> dict[str, Any]:
    """Check the type of every field classwise reads from a sidecar; returns ``meta`` as a dict.

    A wrong one (``"in_channels": "x"``, ``"arch_options": [1, 2]``, ``"num_classes": -3``, ...) is a
    one-line :class:`ClasswiseError` naming the field, the file and the expected type, raised before
    anything uses the sidecar. ``mean``/``std`` lists must have one value, or one per ``in_channels``.
    """
    meta = dict(meta)
    side = f" {where}" if str(where) else ""

    def bad(name: str, value: Any, expected: str) -> ClasswiseError:
        return ClasswiseError(
            f"checkpoint sidecar{side}: field {name!r} must be {expected}, got {_brief(value)}; fix or remove that field"
        )

    for name, (check, expected) in _SIDECAR_FIELDS.items():
        head, _, sub = name.partition(".")
        holder = meta.get(head) if sub else meta
        value = holder.get(sub if sub else head) if isinstance(holder, dict) else None
        if value is not None and not check(value):
            raise bad(name, value, expected)
    channels = meta.get("in_channels")
    for name in ("mean", "std"):
        value = meta.get(name)
        if isinstance(value, list) and channels is not None and len(value) not in (1, channels):
            raise bad(name, value, f"1 or {channels} (in_channels) values")
    return meta


# ----------------------------------------------------------------------------------------------
# loading into a model
# ----------------------------------------------------------------------------------------------


def _fmt_keys(keys: list[str], n: int = 4) -> str:
    shown = ", ".join(keys[:n])
    return shown + (f", ... ({len(keys) - n} more)" if len(keys) > n else "")


def _shape(t: torch.Tensor) -> str:
    return "(" + ", ".join(map(str, t.shape)) + ")"


def _candidates(state: dict[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
    cands = [state, {"net." + k: v for k, v in state.items()}]
    if state and all(k.startswith("net.") for k in state):
        cands.append({k[4:]: v for k, v in state.items()})
    return cands


def load_weights(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], *, strict: bool = True
) -> nn.Module:
    """Load ``state_dict`` into ``model`` (wrapped or bare), adding/removing a ``net.`` prefix if needed.

    Any remaining mismatch (missing or unexpected keys with ``strict``, wrong shapes always) is a
    one-line :class:`ClasswiseError`. Returns ``model``.
    """
    target = unwrap_model(model)
    expected = target.state_dict()
    ignore = tuple(
        prefix for m in target.modules() for prefix in getattr(type(m), "checkpoint_ignore_prefixes", ())
    )
    state = strip_prefixes(dict(state_dict))

    def score(c: dict[str, torch.Tensor]) -> int:
        return sum(k in expected for k in c)

    best = max(_candidates(state), key=score)  # first wins on ties
    if ignore:
        inner = "net." if isinstance(target, NormalizedModel) else ""
        best = {
            k: v
            for k, v in best.items()
            if not any(k.startswith(inner + p) or k.startswith(p) for p in ignore)
        }
    missing = [k for k in expected if k not in best]
    unexpected = [k for k in best if k not in expected]
    mismatched = [
        f"{k}: model expects {_shape(expected[k])}, checkpoint has {_shape(best[k])}"
        for k in expected
        if k in best and tuple(best[k].shape) != tuple(expected[k].shape)
    ]
    problems = []
    if mismatched:
        problems.append(
            f"{len(mismatched)} shape mismatch(es): "
            + "; ".join(mismatched[:3])
            + (f"; ... ({len(mismatched) - 3} more)" if len(mismatched) > 3 else "")
        )
    if strict and missing:
        problems.append(f"{len(missing)} missing key(s): {_fmt_keys(missing)}")
    if strict and unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s): {_fmt_keys(unexpected)}")
    if problems:
        arch = (
            getattr(target, "config", {}).get("architecture")
            or type(target.net if isinstance(target, NormalizedModel) else target).__name__
        )
        raise ClasswiseError(
            f"checkpoint does not fit model {arch}: "
            + "; ".join(problems)
            + "; check that --model and the number of classes match the checkpoint"
        )
    target.load_state_dict(best, strict=strict)
    return model


def _resolve_checkpoint_path(path: Path) -> Path:
    if path.is_dir():
        looked = []
        for folder in (path, path / "checkpoints"):
            for name in _DIR_CANDIDATES:
                cand = folder / name
                looked.append(str(cand.relative_to(path)))
                if cand.is_file():
                    return cand
        raise ClasswiseError(f"no checkpoint in directory {path}: looked for {', '.join(looked)}")
    if not path.exists():
        raise ClasswiseError(f"checkpoint not found: {path}")
    return path


def _model_file_error(spec: str, where: str | os.PathLike, *, model_file_option: bool) -> ClasswiseError:
    file_part, sep, attr = spec.rpartition(":")
    if not sep:
        file_part, attr = spec, "FACTORY"
    target = Path(file_part).expanduser()
    if not target.is_absolute() and str(where):
        target = Path(where).parent / target
    flag = "--model-file " + shlex.quote(f"{target}:{attr}")
    head = (f"checkpoint sidecar {where} names the model file {spec!r}; classwise never runs code "
            "that a checkpoint names")
    if model_file_option:
        return ClasswiseError(f"{head}: if you trust that file, pass {flag}")
    return ClasswiseError(f"{head}, and this command builds only built-in architectures (`classwise list models`); "
                          f"if you trust that file, `classwise evaluate --checkpoint CHECKPOINT {flag}` runs it")


def check_buildable(
    meta: Mapping[str, Any], *, where: str | os.PathLike = "", model_file_option: bool = False
) -> None:
    """Raise the :class:`ClasswiseError` :func:`model_from_meta` would raise for ``meta``, building nothing.

    ``model_file_option``: the caller takes a ``--model-file`` flag (the error then says to pass it).
    """
    num_classes = meta.get("num_classes")
    if not _pos_int(num_classes):
        raise ClasswiseError(f"checkpoint sidecar {where} lacks a valid num_classes")
    if meta.get("architecture"):
        return
    if meta.get("model_file"):
        raise _model_file_error(str(meta["model_file"]), where, model_file_option=model_file_option)
    raise ClasswiseError(
        f"checkpoint sidecar {where} names no architecture; pass --model (and dataset) or --model-file"
    )


def model_from_meta(
    meta: Mapping[str, Any], *, where: str | os.PathLike = "", model_file_option: bool = False
) -> NormalizedModel:
    """Rebuild an untrained built-in model from a sidecar's ``architecture`` (and sizes, mean/std).

    Never imports anything: a sidecar naming a ``model_file`` instead is a :class:`ClasswiseError`
    that says which ``--model-file`` to pass (see :func:`check_buildable`).
    """
    meta = validate_sidecar(meta, where=where)
    check_buildable(meta, where=where, model_file_option=model_file_option)
    return create_model(
        str(meta["architecture"]),
        num_classes=meta["num_classes"],
        in_channels=meta.get("in_channels") or 3,
        input_size=meta.get("input_size") or 32,
        mean=meta.get("mean"),
        std=meta.get("std"),
        **(meta.get("arch_options") or {}),
    )


def check_loadable(path: str | os.PathLike, *, model_file_option: bool = False) -> None:
    """Fail now, reading only the sidecar, where ``load_checkpoint(path)`` without a model would fail on it."""
    path = _resolve_checkpoint_path(Path(path))
    meta = read_sidecar(path)
    if meta is None:
        raise _no_sidecar(path)
    check_buildable(meta, where=sidecar_path(path), model_file_option=model_file_option)


def _no_sidecar(path: Path) -> ClasswiseError:
    return ClasswiseError(
        f"checkpoint {path} has no sidecar {sidecar_path(path).name} describing the model; "
        "pass --model (and dataset) or --model-file"
    )


def load_checkpoint(
    path: str | os.PathLike,
    *,
    device: str | torch.device = "cpu",
    model: nn.Module | None = None,
    model_file_option: bool = False,
) -> tuple[nn.Module, dict[str, Any]]:
    """Load a checkpoint (file, or a run directory) into ``model`` or a built-in model rebuilt from its sidecar.

    Runs no code from the checkpoint: a sidecar that names a ``model_file`` is an error unless
    ``model`` is given (built by the caller from a ``--model-file`` the user typed);
    ``model_file_option`` says the caller has that flag, for the message.
    Returns ``(model in eval mode on device, sidecar meta or {})``.
    """
    path = _resolve_checkpoint_path(Path(path))
    meta = read_sidecar(path)
    if model is None:
        if meta is None:
            raise _no_sidecar(path)
        model = model_from_meta(meta, where=sidecar_path(path), model_file_option=model_file_option)
    state = read_state_dict(path)
    load_weights(model, state)
    model.to(resolve_device(device)).eval()
    return model, dict(meta or {})


# ----------------------------------------------------------------------------------------------
# classifier weights without a model
# ----------------------------------------------------------------------------------------------


def classifier_weight_norms(path: str | os.PathLike, num_classes: int | None = None) -> np.ndarray:
    """Per-class L2 norm of the classifier's weight rows, shape (K,), read from the tensors alone.

    No model is built and no code runs (the tensors come from :func:`read_state_dict`). ``path`` is a
    checkpoint file or run directory; ``num_classes`` defaults to the sidecar's. The classifier weight
    is found by this rule: among the 2-D tensors named ``*weight`` whose first dimension is K, drop each
    whose K outputs feed another 2-D weight (another one has K input columns, so it is a hidden layer);
    exactly one must remain, else a :class:`ClasswiseError` names the candidates. This is the last
    ``nn.Linear`` of every built-in architecture (safetensors files keep no layer order to go by).
    """
    path = _resolve_checkpoint_path(Path(path))
    if num_classes is None:
        num_classes = (read_sidecar(path) or {}).get("num_classes")
        if num_classes is None:
            raise ClasswiseError(f"checkpoint {path} has no sidecar giving num_classes, needed to find its classifier")
    from classwise.analysis.weightnorm import classifier_weight_key

    state = read_state_dict(path)
    key = classifier_weight_key(state, int(num_classes), where=f"checkpoint {path}")
    return state[key].detach().float().norm(dim=1).numpy()
