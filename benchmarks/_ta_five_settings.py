"""The torchattacks side of bench_end_to_end.py: a plain script doing the 5-setting class-wise evaluation
(clean, FGSM, PGD-20, T-PGD-20, CW-20) on every sample, as a user without classwise would write it.

    python benchmarks/_ta_five_settings.py --checkpoint CKPT --dataset D --indices IDX.npy --eps E \
        [--steps 20] [--T 0.5] [--batch-size 256] [--out RESULT.json] [--seed 0]

* model and images: loaded with classwise's own loaders (the checkpoint's sidecar names the
  architecture; the images are those of the index file, the driver writes the indices `classwise evaluate
  --limit N` selects), so both sides attack the same model on the same images; importing them costs
  no more than importing torch (measured), the decoding is the same for both sides.
* FGSM: torchattacks.FGSM. PGD-20: torchattacks.PGD, random start, step 2.5 * eps / steps (classwise's
  default step, core.default_step). T-PGD-20: torchattacks.PGD on the model with its logits divided by T
  (CE(softmax(z / T), y), as classwise's tpgd; docs/tpgd.md). CW-20: torchattacks has only the L2
  Carlini-Wagner attack, so this is a subclass of torchattacks.PGD whose loss is the CW margin
  max_{j != y} z_j - z_y capped at kappa = 50 (classwise's cw, linf), same step and random start.
* every attack runs all its steps on every sample (no early stop, clean mistakes attacked too) and the
  last iterate is classified; robust = the last iterate is classified correctly.

Writes {"clean": acc, "FGSM": acc, ..., "per_class": {setting: [acc per class]}, "n": N} to --out (JSON).
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
import torchattacks
from torch import nn

from classwise.data import load_dataset
from classwise.models import load_checkpoint

KAPPA = 50.0  # classwise's CW_KAPPA


class Temperature(nn.Module):
    """The model with its logits divided by T: PGD on it is PGD on CE(softmax(z / T), y)."""

    def __init__(self, model: nn.Module, T: float) -> None:
        super().__init__()
        self.model, self.T = model, T

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) / self.T


class CWLinfPGD(torchattacks.PGD):
    """torchattacks' PGD loop with the CW margin loss (capped at kappa) instead of cross-entropy."""

    def __init__(self, model: nn.Module, kappa: float = KAPPA, **kw: float) -> None:
        super().__init__(model, **kw)
        self.kappa = kappa

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        images = images.clone().detach().to(self.device)
        labels = labels.clone().detach().to(self.device)
        adv = images + torch.empty_like(images).uniform_(-self.eps, self.eps)
        adv = torch.clamp(adv, 0, 1).detach()
        for _ in range(self.steps):
            adv.requires_grad = True
            z = self.get_logits(adv)
            true = z.gather(1, labels[:, None]).squeeze(1)
            other = z.scatter(1, labels[:, None], float("-inf")).amax(dim=1)
            cost = (other - true).clamp(max=self.kappa).sum()
            grad = torch.autograd.grad(cost, adv)[0]
            adv = adv.detach() + self.alpha * grad.sign()
            adv = torch.clamp(images + torch.clamp(adv - images, -self.eps, self.eps), 0, 1).detach()
        return adv


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--indices", required=True)
    ap.add_argument("--eps", type=float, required=True)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--T", type=float, default=0.5)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out")
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    model, _ = load_checkpoint(a.checkpoint)
    model.eval()
    data = load_dataset(a.dataset, "test").subset(np.load(a.indices).tolist())
    x, y = data.tensors()
    alpha = 2.5 * a.eps / a.steps
    pgd = {"eps": a.eps, "alpha": alpha, "steps": a.steps}
    attacks = {"FGSM": torchattacks.FGSM(model, eps=a.eps), f"PGD-{a.steps}": torchattacks.PGD(model, **pgd),
               f"T-PGD-{a.steps}": torchattacks.PGD(Temperature(model, a.T), **pgd),
               f"CW-{a.steps}": CWLinfPGD(model, **pgd)}
    correct = {}
    with torch.no_grad():
        correct["clean"] = torch.cat([model(x[i:i + a.batch_size]).argmax(1) for i in range(0, len(y), a.batch_size)]) == y
    for name, atk in attacks.items():
        preds = []
        for i in range(0, len(y), a.batch_size):
            adv = atk(x[i:i + a.batch_size], y[i:i + a.batch_size])
            with torch.no_grad():
                preds.append(model(adv).argmax(1))
        correct[name] = torch.cat(preds) == y
    yn = y.numpy()
    k = int(yn.max()) + 1
    support = np.bincount(yn, minlength=k)
    out: dict = {"n": len(yn), **{s: float(c.float().mean()) for s, c in correct.items()}, "per_class": {}}
    for s, c in correct.items():
        out["per_class"][s] = (np.bincount(yn, weights=c.numpy().astype(float), minlength=k) / support).tolist()
    text = json.dumps(out)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)
    print(text)


if __name__ == "__main__":
    main()
