"""Training: methods as loss functions (``methods``), one loop (``fit.fit``, its steps in ``trainer``),
class-wise defenses (``defenses``), recipes (``config``).

>>> from classwise.training.config import resolve_config
>>> from classwise.training.fit import fit
>>> cfg, _ = resolve_config(recipe="digits", overrides={"method": "trades"})
>>> result = fit(cfg, "runs/my-run")  # doctest: +SKIP
"""

from classwise.training import apart as _apart  # noqa: E402,F401,I001 - registers method "apart"
from classwise.training.config import TrainConfig, resolve_config
from classwise.training.methods import METHODS, MethodConfig, MethodOutput

__all__ = ["METHODS", "MethodConfig", "MethodOutput", "TrainConfig", "resolve_config"]
