"""RobustBench models (``--model robustbench:NAME``), built with the ``robustbench`` package's own
architectures and loaded from RobustBench's on-disk layout ``DIR/<dataset>/<threat_model>/<NAME>.pt``.

The weights are read here, with ``torch.load(weights_only=True)`` and RobustBench's own key rules
(:func:`zoo_state_dict`); RobustBench's download code runs only when ``download=True``. The models take
[0, 1] inputs (they normalize inside). Install with ``pip install 'classwise[zoo]'``; see docs/zoo.md.

Two import problems of robustbench 1.1.1 are handled in :func:`_import_robustbench`, only while the
package is imported: its ``eval`` module imports ``autoattack``, a module its own dependency
``pyautoattack`` names ``pyautoattack`` (aliased); its ``loaders`` module imports ``pkg_resources``
(gone from setuptools >= 81) for ``resource_filename`` only, called when RobustBench's ImageNet loader
runs, never by classwise (a stand-in module with that one function, on ``importlib.resources``).
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import importlib
import importlib.util
import logging
import sys
import types
import warnings
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from classwise.errors import ClasswiseError

log = logging.getLogger(__name__)
PREFIX = "robustbench:"
INSTALL_HINT = "pip install 'classwise[zoo]'"
THREAT_MODELS = ("Linf", "L2", "corruptions")
# classwise's dataset name -> RobustBench's (its folder name in the layout, BenchmarkDataset's value).
DATASETS = {"cifar10": "cifar10", "cifar100": "cifar100", "imagefolder": "imagenet"}
DEFAULT_MODEL_DIR = Path("models")  # RobustBench's own default, ./models
IMAGENET_PREPROCESSING = "Res256Crop224"  # what classwise's imagefolder loader does at 224 px
# RobustBench ImageNet models whose checkpoints already hold the normalization layer's "model." prefix
# (robustbench.utils.load_model's list).
_IMAGENET_NO_PREFIX = {
    "Singh2023Revisiting_ConvNeXt-T-ConvStem", "Singh2023Revisiting_ViT-B-ConvStem",
    "Singh2023Revisiting_ConvNeXt-S-ConvStem", "Singh2023Revisiting_ConvNeXt-B-ConvStem",
    "Singh2023Revisiting_ConvNeXt-L-ConvStem", "Peng2023Robust", "Chen2024Data_WRN_50_2",
    "Xu2024MIMIR_Swin-B", "Xu2024MIMIR_Swin-L",
}
_SWIN_FILTERED = {"Liu2023Comprehensive_Swin-B", "Liu2023Comprehensive_Swin-L", "Mo2022When_Swin-B",
                  "RodriguezMunoz2024Characterizing_Swin-B", "RodriguezMunoz2024Characterizing_Swin-L"}
# The messages robustbench's _safe_load_state_dict tolerates (then loads with strict=False) for its
# known failing models and every ImageNet model: buffers its checkpoints lack (normalization constants).
_TOLERATED = ('Missing key(s) in state_dict: "mu", "sigma".',
              'Unexpected key(s) in state_dict: "model_preact_hl1.1.weight"',
              'Missing key(s) in state_dict: "normalize.mean", "normalize.std"',
              'Unexpected key(s) in state_dict: "conv1.scores"',
              'Missing key(s) in state_dict: "mean", "std".')
_KNOWN_FAILING = {
    "Andriushchenko2020Understanding", "Augustin2020Adversarial", "Engstrom2019Robustness", "Pang2020Boosting",
    "Rice2020Overfitting", "Rony2019Decoupling", "Wong2020Fast", "Hendrycks2020AugMix_WRN",
    "Hendrycks2020AugMix_ResNeXt", "Kireev2021Effectiveness_Gauss50percent", "Kireev2021Effectiveness_AugMixNoJSD",
    "Kireev2021Effectiveness_RLAT", "Kireev2021Effectiveness_RLATAugMixNoJSD", "Kireev2021Effectiveness_RLATAugMix",
    "Chen2020Efficient", "Wu2020Adversarial", "Augustin2020Adversarial_34_10",
    "Augustin2020Adversarial_34_10_extra", "Diffenderfer2021Winning_LRR", "Diffenderfer2021Winning_LRR_CARD_Deck",
    "Diffenderfer2021Winning_Binary", "Diffenderfer2021Winning_Binary_CARD_Deck", "Huang2022Revisiting_WRN-A4",
    "Bai2024MixedNUTS",
}


def is_zoo_spec(text: str) -> bool:
    """Whether ``--model`` names a RobustBench model (``robustbench:NAME``)."""
    return isinstance(text, str) and text.startswith(PREFIX)


def zoo_name(spec: str) -> str:
    """``robustbench:Carmon2019Unlabeled`` -> ``Carmon2019Unlabeled`` (a one-line error when empty)."""
    if not is_zoo_spec(spec):
        raise ClasswiseError(f"{spec!r} is not a RobustBench model; write robustbench:NAME")
    name = spec[len(PREFIX):].strip()
    if not name:
        raise ClasswiseError("--model robustbench: needs a model name, e.g. robustbench:Carmon2019Unlabeled "
                             "(see https://robustbench.github.io)")
    return name


def zoo_dataset(dataset: str) -> str:
    """RobustBench's name of a classwise dataset (``imagefolder`` -> ``imagenet``), or a one-line error."""
    if dataset not in DATASETS:
        raise ClasswiseError(f"RobustBench has no models for dataset {dataset!r}; use one of: "
                             f"{', '.join(DATASETS)} (imagefolder: ImageNet's 1000 class folders, see docs/zoo.md)")
    return DATASETS[dataset]


def check_threat_model(threat_model: str) -> str:
    if threat_model not in THREAT_MODELS:
        raise ClasswiseError(f"unknown --threat-model {threat_model!r}; choose one of: {', '.join(THREAT_MODELS)}")
    return threat_model


@contextlib.contextmanager
def _import_shims() -> Iterator[None]:
    """While robustbench is imported: ``autoattack`` is ``pyautoattack`` and a ``pkg_resources`` with
    ``resource_filename`` exists, each only when the real module is missing; removed from
    ``sys.modules`` afterwards (robustbench keeps its references)."""
    added: list[str] = []
    if importlib.util.find_spec("autoattack") is None and importlib.util.find_spec("pyautoattack") is not None:
        pyaa = importlib.import_module("pyautoattack")
        state = importlib.import_module("pyautoattack.state")
        sys.modules["autoattack"], sys.modules["autoattack.state"] = pyaa, state
        added += ["autoattack", "autoattack.state"]
    if importlib.util.find_spec("pkg_resources") is None:
        sys.modules["pkg_resources"] = _pkg_resources_standin()
        added.append("pkg_resources")
    try:
        yield
    finally:
        for name in added:
            sys.modules.pop(name, None)


def _pkg_resources_standin() -> types.ModuleType:
    """The one function robustbench.loaders uses: ``resource_filename(package, path)``."""
    import importlib.resources

    mod = types.ModuleType("pkg_resources", "stand-in for robustbench.loaders (classwise.models.zoo)")

    def resource_filename(package: str, path: str) -> str:
        pkg = package if importlib.util.find_spec(package).submodule_search_locations else package.rpartition(".")[0]  # type: ignore[union-attr]
        return str(importlib.resources.files(pkg).joinpath(path))

    mod.resource_filename = resource_filename  # type: ignore[attr-defined]
    return mod


def _import_robustbench() -> Any:
    """``robustbench.model_zoo.models`` (its ``model_dicts``), or the one-line install hint."""
    if importlib.util.find_spec("robustbench") is None:
        raise ClasswiseError(f"--model robustbench:NAME needs the robustbench package: {INSTALL_HINT}")
    with _import_shims(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its imports' deprecation notes (timm, torch.jit), not ours to fix
        try:
            return importlib.import_module("robustbench.model_zoo.models")
        except ImportError as e:
            raise ClasswiseError(f"cannot import robustbench ({e}); {INSTALL_HINT} (see docs/zoo.md)") from None


def _entries(dataset: str, threat_model: str) -> dict[str, dict]:
    models = _import_robustbench()
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel

    by_tm = models.model_dicts[BenchmarkDataset(zoo_dataset(dataset))]
    tm = ThreatModel(check_threat_model(threat_model))
    if tm not in by_tm:
        have = ", ".join(t.value for t in by_tm)
        raise ClasswiseError(f"RobustBench has no {threat_model} models for {zoo_dataset(dataset)}; it has: {have}")
    return dict(by_tm[tm])


def _entry(name: str, dataset: str, threat_model: str) -> dict:
    entries = _entries(dataset, threat_model)
    if name not in entries:
        close = difflib.get_close_matches(name, list(entries), n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}?" if close else "see https://robustbench.github.io"
        raise ClasswiseError(f"RobustBench has no model {name!r} for {zoo_dataset(dataset)} {threat_model}; {hint}")
    entry = entries[name]
    gid = entry.get("gdrive_id")
    if isinstance(gid, list):
        raise ClasswiseError(f"RobustBench model {name!r} is an ensemble of {len(gid)} files; classwise loads "
                             "single-file models only")
    if not gid:
        raise ClasswiseError(f"RobustBench model {name!r} has no weight file in RobustBench's layout (its "
                             "weights come from torchvision or timm); classwise loads layout files only")
    return entry


def weight_path(name: str, *, dataset: str, threat_model: str, model_dir: Path | None = None) -> Path:
    """``DIR/<dataset>/<threat_model>/<NAME>.pt``, RobustBench's layout (DIR defaults to ./models)."""
    return Path(model_dir or DEFAULT_MODEL_DIR) / zoo_dataset(dataset) / check_threat_model(threat_model) / f"{name}.pt"


def check_zoo_model(spec: str, *, dataset: str, threat_model: str = "Linf", model_dir: Path | None = None,
                    download: bool = False) -> Path:
    """Before any heavy work: robustbench importable, NAME known for the dataset and threat model, its
    weight file present (or ``download``); returns the weight path. One-line errors otherwise."""
    name = zoo_name(spec)
    path = weight_path(name, dataset=dataset, threat_model=threat_model, model_dir=model_dir)
    _entry(name, dataset, threat_model)
    if not download and not path.is_file():
        raise ClasswiseError(f"RobustBench weights not found: {path}; put {name}.pt there (RobustBench's layout "
                             "DIR/<dataset>/<threat_model>/<name>.pt, DIR from --model-dir) or pass --download")
    return path


def zoo_state_dict(checkpoint: Any, name: str, dataset: str) -> dict:
    """The state dict robustbench.utils.load_model makes of a checkpoint file's contents: the
    ``state_dict`` entry if any (``last`` first for two entries), ``module.`` then ``model.`` removed,
    and for ImageNet a ``model.`` prefix added (the normalization wrapper) except for its listed models.

    Its removal rule is kept as it is: a key *containing* the substring loses its first len(substr)
    characters (the real files only have it as a prefix)."""
    if "Kireev2021Effectiveness" in name or name == "Andriushchenko2020Understanding":
        checkpoint = checkpoint["last"]
    sd = checkpoint["state_dict"] if isinstance(checkpoint, dict) and "state_dict" in checkpoint else checkpoint
    if not isinstance(sd, dict):
        raise ClasswiseError(f"RobustBench weights of {name!r} hold no state dict (got {type(sd).__name__})")
    sd = _strip(_strip(sd, "module."), "model.")
    if zoo_dataset(dataset) == "imagenet" and name not in _IMAGENET_NO_PREFIX:
        sd = OrderedDict(("model." + k, v) for k, v in sd.items())
    return sd


def _strip(sd: dict, substr: str) -> dict:
    return OrderedDict((k[len(substr):] if substr in k else k, v) for k, v in sd.items())


def _load_state(model: Any, name: str, sd: dict, dataset: str) -> None:
    """robustbench's _safe_load_state_dict: strict, unless its tolerated message for its listed models."""
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        lenient = name in _KNOWN_FAILING or zoo_dataset(dataset) == "imagenet"
        if not (lenient and any(m in str(e) for m in _TOLERATED)):
            first = " ".join(str(e).split())[:300]
            raise ClasswiseError(f"RobustBench weights do not fit {name!r}: {first}") from None
        model.load_state_dict(sd, strict=False)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _download(entry: dict, path: Path) -> None:
    from robustbench.utils import download_gdrive_new

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    download_gdrive_new(entry["gdrive_id"], tmp)
    tmp.replace(path)  # a broken download never stands as the weight file


def load_zoo_model(spec: str, *, dataset: str, threat_model: str = "Linf", model_dir: Path | None = None,
                   download: bool = False, device: Any = None) -> tuple[Any, dict]:
    """The RobustBench model in eval mode on ``device``, taking [0, 1] inputs, and its record
    (name, architecture, dataset, threat_model, path, sha256, preprocessing)."""
    import torch

    path = check_zoo_model(spec, dataset=dataset, threat_model=threat_model, model_dir=model_dir,
                           download=download)
    name = zoo_name(spec)
    entry = _entry(name, dataset, threat_model)
    if not path.is_file():
        _download(entry, path)
    prep = entry.get("preprocessing")
    if zoo_dataset(dataset) == "imagenet" and prep not in (None, IMAGENET_PREPROCESSING):
        log.warning("RobustBench evaluates %s with preprocessing %s; classwise's imagefolder resizes to 256 and "
                    "crops 224 (%s)", name, prep, IMAGENET_PREPROCESSING)
    model = entry["model"]()
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same one-line error
        raise ClasswiseError(f"cannot read RobustBench weights {path}: {' '.join(str(e).split())[:200]}") from None
    _load_state(model, name, zoo_state_dict(checkpoint, name, dataset), dataset)
    model = model.to(device or "cpu").eval()
    meta = {"name": name, "architecture": _architecture(model), "dataset": zoo_dataset(dataset),
            "threat_model": threat_model, "path": str(path), "sha256": sha256(path),
            "preprocessing": entry.get("preprocessing")}
    return model, meta


def _architecture(model: Any) -> str:
    """The class name; for ImageNet entries (``normalize_model``'s Sequential) the wrapped net's."""
    inner = getattr(model, "model", None)
    if type(model).__name__ == "Sequential" and inner is not None:
        return f"{type(inner).__name__} (normalized)"
    return type(model).__name__


def check_zoo_options(model: str | None, *, dataset: str | None, threat_model: str | None, model_dir: Path | None,
                      download: bool, others: dict[str, Any]) -> Path | None:
    """evaluate's options around ``--model robustbench:NAME``: None when --model names no RobustBench
    model (then --threat-model/--model-dir are refused); else the checked weight path. ``others``: the
    options that do not apply to a RobustBench model (flag -> value, None when not given)."""
    if model is None or not is_zoo_spec(model):
        given = [f for f, v in (("--threat-model", threat_model), ("--model-dir", model_dir)) if v is not None]
        if given:
            raise ClasswiseError(f"{' and '.join(given)} apply only to --model robustbench:NAME; drop "
                                 f"{'them' if len(given) > 1 else 'it'}")
        return None
    extra = [flag for flag, v in others.items() if v is not None]
    if extra:
        raise ClasswiseError(f"--model {model} builds the model and loads its weights from RobustBench's layout "
                             f"(normalization inside); drop {', '.join(extra)}")
    if not dataset:
        raise ClasswiseError(f"--model {model} needs --dataset ({', '.join(DATASETS)})")
    from classwise.data import dataset_info

    return check_zoo_model(model, dataset=str(dataset_info(dataset)["name"]), threat_model=threat_model or "Linf",
                           model_dir=model_dir, download=download)


def imagenet_wnids() -> list[str]:
    """ImageNet's 1000 class folder names (wnids) in the models' output order (robustbench's map)."""
    import json
    from importlib.resources import files

    _import_robustbench()
    mapping = json.loads(files("robustbench").joinpath("helper_files/imagenet_class_to_id_map.json").read_text())
    return sorted(mapping, key=lambda w: mapping[w])


def check_zoo_classes(class_names: list[str], dataset: str) -> None:
    """An ImageNet model's 1000 outputs are the classes of an imagefolder holding ImageNet's 1000 wnid
    folders (empty ones allowed), sorted as torchvision's ImageFolder sorts them."""
    if zoo_dataset(dataset) != "imagenet":
        return
    wnids = imagenet_wnids()
    if list(class_names) != wnids:
        missing = sorted(set(wnids) - set(class_names))
        foreign = sorted(set(class_names) - set(wnids))
        raise ClasswiseError(
            f"a RobustBench ImageNet model needs the imagefolder to hold ImageNet's 1000 class folders named by "
            f"wnid (n01440764 ...; empty folders are allowed); {len(missing)} missing"
            + (f" (e.g. {missing[0]})" if missing else "")
            + (f", {len(foreign)} not ImageNet wnids (e.g. {foreign[0]})" if foreign else ""))
