"""The models of a leaderboard: what each MODEL argument names, checked cheaply, then loaded.

A MODEL argument is ``[NAME=]SPEC`` where SPEC is one of

* a classwise checkpoint: a ``.safetensors`` file with its JSON sidecar, or a run directory holding one
  (:func:`classwise.models.load_checkpoint`);
* ``path/to/file.py:factory``: a function (or class) of your own that returns a *trained* model
  (:func:`classwise.models.load_model_file`; the file's code runs, so only name files you trust);
* ``robustbench:NAME``: a RobustBench model zoo entry (:mod:`classwise.models.zoo`).

:func:`resolve_entries` checks every argument without loading a model (files exist, sidecars are
readable and agree on the dataset and class count, zoo entries are known); :func:`load_entry` builds one
model and :func:`check_classes` proves it has one output per class.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from classwise.errors import ClasswiseError

KINDS = ("checkpoint", "model-file", "robustbench")
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")
THREAT_MODELS = {"Linf": "linf", "L2": "l2"}  # RobustBench's threat model -> the attacks' norm


@dataclass
class Entry:
    """One model of the leaderboard, as resolved before anything is loaded."""

    name: str  # the display name (NAME= or derived from the spec)
    spec: str  # SPEC as typed (without NAME=)
    kind: str  # one of KINDS
    path: Path | None = None  # the checkpoint file, the model file, or the zoo's weights file
    sidecar: dict[str, Any] | None = None

    @property
    def slug(self) -> str:
        from classwise.report.fmt import slug

        return slug(self.name)

    def record(self) -> dict[str, Any]:
        """What leaderboard.json and each model's protocol record say about the model."""
        return {"name": self.name, "slug": self.slug, "spec": self.spec, "kind": self.kind,
                "path": str(self.path.resolve()) if self.path is not None else None}


@dataclass
class Resolved:
    """Every entry, the dataset they share and its class count."""

    entries: list[Entry]
    dataset: str
    num_classes: int
    first_sidecar: dict[str, Any] | None = field(default=None)


def zoo_module() -> Any:
    """:mod:`classwise.models.zoo`, or None when this installation has none."""
    import importlib

    try:
        return importlib.import_module("classwise.models.zoo")
    except ImportError:
        return None


def split_name(text: str) -> tuple[str | None, str]:
    """``"pgd=runs/a"`` -> ``("pgd", "runs/a")``; a text whose part before ``=`` is not a plain name (or
    that names an existing file) has no name."""
    name, sep, rest = str(text).partition("=")
    if sep and _NAME_RE.fullmatch(name) and not Path(text).exists():
        if not rest.strip():
            raise ClasswiseError(f"model {text!r}: nothing after '='; write NAME=SPEC, e.g. pgd-at=runs/a")
        return name, rest.strip()
    return None, str(text).strip()


def _is_model_file(spec: str) -> bool:
    file_part, sep, _ = spec.rpartition(":")
    return bool(sep) and file_part.endswith(".py")


def _default_name(kind: str, spec: str, path: Path | None) -> str:
    if kind == "robustbench":
        return spec.split(":", 1)[1] or spec
    if kind == "model-file":
        file_part, _, attr = spec.rpartition(":")
        return f"{Path(file_part).stem}-{attr}"
    assert path is not None
    p = Path(spec)
    if p.is_dir():
        return p.resolve().name
    if path.parent.name == "checkpoints":  # RUN/checkpoints/best.safetensors -> RUN
        return path.parent.parent.name
    return path.stem


def classify(text: str, zoo: Any) -> Entry:
    """The :class:`Entry` of one MODEL argument: its kind, and what a cheap check can prove."""
    from classwise.models.checkpoint import _resolve_checkpoint_path, check_loadable, read_sidecar
    from classwise.models.external import _parse_spec

    name, spec = split_name(text)
    if not spec:
        raise ClasswiseError("an empty MODEL argument; give a checkpoint, FILE.py:FACTORY or robustbench:NAME")
    if zoo is not None and zoo.is_zoo_spec(spec):
        kind, path, sidecar = "robustbench", None, None
    elif zoo is None and spec.lower().startswith("robustbench:"):
        raise ClasswiseError(f"model {spec!r}: this installation has no RobustBench model zoo "
                             "(classwise.models.zoo); give a classwise checkpoint or FILE.py:FACTORY")
    elif _is_model_file(spec):
        path, _ = _parse_spec(spec)
        if not path.is_file():
            raise ClasswiseError(f"model file not found: {path} (model {text!r})")
        kind, sidecar = "model-file", None
    else:
        path = _resolve_checkpoint_path(Path(spec))
        if path.is_dir():
            raise ClasswiseError(f"cannot read checkpoint {path}: it is a directory")
        sidecar = read_sidecar(path)
        check_loadable(path)  # a sidecar-less or model-file checkpoint: one line, before anything loads
        kind = "checkpoint"
    return Entry(name or _default_name(kind, spec, path), spec, kind, path, sidecar)


def _check_unique(entries: Sequence[Entry]) -> None:
    seen: dict[str, str] = {}
    for e in entries:
        for key in (e.name, e.slug):
            if key in seen:
                raise ClasswiseError(f"two models are named {key!r} ({seen[key]!r} and {e.spec!r}); "
                                     "name them with NAME=SPEC, e.g. pgd-at=runs/a")
        seen[e.name] = seen[e.slug] = e.spec


def _shared_dataset(entries: Sequence[Entry], dataset: str | None) -> str:
    """--dataset, else the one dataset the checkpoints' sidecars name; any disagreement is an error."""
    from classwise.data import dataset_info

    def dataset_name(n: str) -> str:
        return str(dataset_info(n)["name"])

    wanted = dataset_name(dataset) if dataset else None
    named = [(e, dataset_name(str((e.sidecar or {})["dataset"]))) for e in entries if (e.sidecar or {}).get("dataset")]
    for e, ds in named:
        first = wanted or named[0][1]
        if ds != first:
            against = "--dataset" if wanted else f"model {named[0][0].name!r}"
            raise ClasswiseError(f"model {e.name!r} was trained on {ds}, but {against} says {first}; a leaderboard "
                                 "compares models of one dataset: drop the odd model (or fix --dataset)")
    if wanted:
        return wanted
    if named:
        return named[0][1]
    raise ClasswiseError("no model says its dataset (model files and zoo entries do not); pass --dataset NAME "
                         "(see `classwise list datasets`)")


def _shared_classes(entries: Sequence[Entry], dataset: str) -> int:
    from classwise.data import dataset_info

    k = dataset_info(dataset)["num_classes"]
    for e in entries:
        kk = (e.sidecar or {}).get("num_classes")
        if kk is not None and k is not None and int(kk) != int(k):
            raise ClasswiseError(f"model {e.name!r} has {kk} classes but {dataset} has {k}; a leaderboard "
                                 "compares models of the same classes")
        k = k if k is not None else kk
    if k is None:
        raise ClasswiseError(f"{dataset} does not say its class count and no checkpoint does; "
                             "give a classwise checkpoint among the models")
    return int(k)


def resolve_entries(texts: Sequence[str], *, dataset: str | None) -> Resolved:
    """Every MODEL argument checked without loading a model; the dataset and class count they share."""
    if not texts:
        raise ClasswiseError("no MODEL given; e.g. `classwise leaderboard runs/a runs/b --eps 0.2`")
    zoo = zoo_module()
    entries = [classify(t, zoo) for t in texts]
    _check_unique(entries)
    ds = _shared_dataset(entries, dataset)
    k = _shared_classes(entries, ds)
    first = next((e.sidecar for e in entries if e.kind == "checkpoint"), None)
    return Resolved(entries, ds, k, first)


def check_zoo_entries(res: Resolved, *, threat_model: str, model_dir: Path | None, download: bool) -> None:
    """The zoo's cheap check of every ``robustbench:NAME`` (known, weights present or downloadable);
    ``--model-dir`` without such a model is an error."""
    zoo_entries = [e for e in res.entries if e.kind == "robustbench"]
    if not zoo_entries and model_dir is not None:
        raise ClasswiseError("--model-dir applies to robustbench:NAME models only; drop it")
    for e in zoo_entries:
        e.path = Path(zoo_module().check_zoo_model(e.spec, dataset=res.dataset, threat_model=threat_model,
                                                   model_dir=model_dir, download=download))


def load_entry(entry: Entry, data: Any, device: Any, *, threat_model: str, model_dir: Path | None,
               download: bool) -> tuple[Any, dict[str, Any]]:
    """The model of ``entry`` on ``device`` in eval mode, and what is known about it (its sidecar, ...)."""
    from classwise.models import load_checkpoint, load_model_file

    if entry.kind == "checkpoint":
        assert entry.path is not None
        return load_checkpoint(entry.path, device=device)
    if entry.kind == "model-file":
        net = load_model_file(entry.spec, num_classes=data.num_classes, in_channels=data.in_channels,
                              input_size=data.input_size)
        return net.to(device).eval(), {"model_file": entry.spec,
                                       "normalization": "none (a model file's model is taken as it is)"}
    zoo = zoo_module()
    net, meta = zoo.load_zoo_model(entry.spec, dataset=data.name, threat_model=threat_model, model_dir=model_dir,
                                   download=download, device=device)
    return net.eval(), dict(meta)


def check_classes(entry: Entry, net: Any, data: Any) -> None:
    """The model has one output per class of the data (one forward pass on one image)."""
    import torch

    dev = next(iter(net.parameters()), torch.empty(0)).device
    x, _ = next(data.batches(1, device=dev))
    with torch.no_grad():
        out = net(x)
    if out.ndim != 2 or int(out.shape[1]) != data.num_classes:
        raise ClasswiseError(f"model {entry.name!r} ({entry.spec}) gives outputs of shape {tuple(out.shape)}, "
                             f"but {data.name} has {data.num_classes} classes: one logit per class is needed")
