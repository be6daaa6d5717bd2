"""Bring your own model: ``--model-file path/to/file.py:factory``.

The file is imported under a unique module name (its folder is on ``sys.path`` while it imports, so
it can import its neighbours). ``factory`` is a function, an ``nn.Module`` class, or a module-level
``nn.Module`` instance; it is called with only those of ``num_classes``, ``in_channels``,
``input_size`` (and any other keyword) that its signature accepts. The result must be an
``nn.Module`` taking whatever input the caller feeds it (classwise wraps it in a
:class:`~classwise.models.nets.NormalizedModel` when given mean/std).

Importing runs the file's code: only load files you trust. classwise calls this only for a spec the
user typed (``--model-file``), never for one a checkpoint's sidecar names.
"""

from __future__ import annotations

import importlib.util
import inspect
import itertools
import re
import sys
from pathlib import Path
from typing import Any

from torch import nn

from classwise.errors import ClasswiseError

_counter = itertools.count()
_USAGE = "write --model-file PATH.py:FACTORY, e.g. my_net.py:build_model"


def _short(e: BaseException, limit: int = 200) -> str:
    lines = str(e).strip().splitlines()
    msg = f"{type(e).__name__}: {lines[0]}" if lines else type(e).__name__
    return msg if len(msg) <= limit else msg[: limit - 3] + "..."


def _parse_spec(spec: str) -> tuple[Path, str]:
    spec = str(spec).strip()
    if ":" not in spec:
        raise ClasswiseError(f"model file spec {spec!r} has no ':FACTORY' part; {_USAGE}")
    file_part, attr = spec.rsplit(":", 1)
    attr = attr.strip()
    if not file_part or not attr or not re.fullmatch(r"[A-Za-z_][\w.]*", attr):
        raise ClasswiseError(f"model file spec {spec!r} is not PATH.py:FACTORY; {_USAGE}")
    return Path(file_part).expanduser(), attr


def _import_file(path: Path) -> Any:
    stem = re.sub(r"\W", "_", path.stem)
    name = f"classwise_user_model_{stem}_{next(_counter)}"
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise ClasswiseError(f"cannot import model file {path}: not a Python source file")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    folder = str(path.resolve().parent)
    sys.path.insert(0, folder)
    try:
        module_spec.loader.exec_module(module)
    except (Exception, SystemExit) as e:
        sys.modules.pop(name, None)
        raise ClasswiseError(f"error while importing model file {path}: {_short(e)}") from None
    finally:
        try:
            sys.path.remove(folder)
        except ValueError:
            pass
    return module


def _defined_callables(module: Any) -> list[str]:
    return sorted(
        n
        for n, v in vars(module).items()
        if not n.startswith("_")
        and (inspect.isfunction(v) or inspect.isclass(v))
        and getattr(v, "__module__", None) == module.__name__
    )


def _accepted_kwargs(fn: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return dict(kwargs)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return dict(kwargs)
    ok = {
        n
        for n, p in params.items()
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    }
    return {k: v for k, v in kwargs.items() if k in ok}


def load_model_file(spec: str, **kwargs: Any) -> nn.Module:
    """Import ``file.py`` of ``"file.py:factory"`` and return ``factory(**accepted kwargs)``."""
    path, attr = _parse_spec(spec)
    if not path.is_file():
        raise ClasswiseError(f"model file not found: {path}")
    module = _import_file(path)
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            names = _defined_callables(module)
            raise ClasswiseError(
                f"model file {path} defines no {attr!r}; "
                + (f"it defines: {', '.join(names)}" if names else "it defines no functions or classes")
            )
        obj = getattr(obj, part)
    if isinstance(obj, nn.Module):
        return obj
    if not callable(obj):
        raise ClasswiseError(
            f"{attr!r} in model file {path} is a {type(obj).__name__}, not a function or class"
        )
    try:
        result = obj(**_accepted_kwargs(obj, kwargs))
    except ClasswiseError:
        raise
    except Exception as e:
        raise ClasswiseError(f"calling {attr} from model file {path} failed: {_short(e)}") from None
    if not isinstance(result, nn.Module):
        raise ClasswiseError(
            f"{attr} from model file {path} returned a {type(result).__name__}; it must return a torch nn.Module"
        )
    return result
