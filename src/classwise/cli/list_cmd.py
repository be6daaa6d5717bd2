"""``classwise list WHAT``: the registered datasets, models, attacks, training methods or recipes."""

from __future__ import annotations

import inspect
from enum import Enum
from typing import Annotated, Any

import typer

from classwise.cli._print import console

_EMPTY = inspect.Parameter.empty


class ListWhat(str, Enum):
    datasets = "datasets"
    models = "models"
    attacks = "attacks"
    methods = "methods"
    recipes = "recipes"


def list_cmd(what: Annotated[ListWhat, typer.Argument(help="What to list.")]) -> None:
    """List the registered datasets, models, attacks, training methods or recipes."""
    if what is ListWhat.recipes:
        _list_recipes()
    else:
        _list_registry(what)


def _list_recipes() -> None:
    from rich.table import Table

    from classwise.training.config import read_recipe, recipe_names, recipes_dir

    t = Table(show_header=True, header_style="bold")
    for col in ("recipe", "dataset", "model", "method", "eps", "epochs"):
        t.add_column(col, no_wrap=col in ("recipe", "dataset", "model"))
    for name in recipe_names():
        r = read_recipe(recipes_dir() / f"{name}.toml")
        t.add_row(name, *(str(r.get(k, "")) for k in ("dataset", "model", "method", "eps", "epochs")))
    console.print(t)
    console.print(f"recipes are in {recipes_dir()}")


def _registry(what: ListWhat) -> Any:
    if what is ListWhat.datasets:
        from classwise.data import DATASETS

        return DATASETS
    if what is ListWhat.models:
        from classwise.models import MODELS

        return MODELS
    if what is ListWhat.methods:
        from classwise.training.methods import METHODS

        return METHODS
    from classwise.attacks import ATTACKS

    return ATTACKS


def _list_registry(what: ListWhat) -> None:
    from rich.table import Table

    reg = _registry(what)
    t = Table(show_header=True, header_style="bold")
    t.add_column(what.value[:-1], no_wrap=True)
    t.add_column("description")
    if what is ListWhat.attacks:
        t.add_column("parameters (defaults)")
    for name in reg.names():
        row = [name, reg.help(name)]
        if what is ListWhat.attacks:
            row.append(_attack_params(name))
        t.add_row(*row)
    console.print(t)


def _attack_params(name: str) -> str:
    from classwise.attacks import attack_params

    return ", ".join(k if d is _EMPTY else f"{k}={_fmt_default(d)}" for k, d in attack_params(name).items())


def _fmt_default(d: object) -> str:
    return d.value if isinstance(d, Enum) else str(d)
