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
"""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

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


def model_from_meta(meta: Mapping[str, Any], *, where: str | os.PathLike = "") -> NormalizedModel:
    """Rebuild an untrained model from a sidecar: via ``architecture`` or a ``model_file`` spec."""
    try:
        num_classes = int(meta["num_classes"])
    except (KeyError, TypeError, ValueError):
        raise ClasswiseError(f"checkpoint sidecar {where} lacks a valid num_classes") from None
    in_channels = int(meta.get("in_channels", 3))
    input_size = meta.get("input_size", 32)
    mean, std = meta.get("mean"), meta.get("std")
    if meta.get("architecture"):
        options = meta.get("arch_options") or {}
        return create_model(
            str(meta["architecture"]),
            num_classes=num_classes,
            in_channels=in_channels,
            input_size=input_size,
            mean=mean,
            std=std,
            **options,
        )
    if meta.get("model_file"):
        from classwise.models.external import load_model_file

        spec = str(meta["model_file"])
        file_part = spec.rsplit(":", 1)[0]
        if where and not Path(file_part).is_file() and (Path(where).parent / file_part).is_file():
            spec = str(Path(where).parent / spec)
        net = load_model_file(spec, num_classes=num_classes, in_channels=in_channels, input_size=input_size)
        config = {
            "num_classes": num_classes,
            "in_channels": in_channels,
            "input_size": input_size,
            "model_file": str(meta["model_file"]),
        }
        return NormalizedModel(net, mean, std, in_channels, config)
    raise ClasswiseError(
        f"checkpoint sidecar {where} names no architecture; pass --model (and dataset) or --model-file"
    )


def load_checkpoint(
    path: str | os.PathLike, *, device: str | torch.device = "cpu", model: nn.Module | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """Load a checkpoint (file, or a run directory) into ``model`` or a model rebuilt from its sidecar.

    Returns ``(model in eval mode on device, sidecar meta or {})``.
    """
    path = _resolve_checkpoint_path(Path(path))
    meta = read_sidecar(path)
    if model is None:
        if meta is None:
            raise ClasswiseError(
                f"checkpoint {path} has no sidecar {sidecar_path(path).name} describing the model; "
                "pass --model (and dataset) or --model-file"
            )
        model = model_from_meta(meta, where=sidecar_path(path))
    state = read_state_dict(path)
    load_weights(model, state)
    model.to(resolve_device(device)).eval()
    return model, dict(meta or {})
