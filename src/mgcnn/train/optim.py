"""Optimisers of a run: SGD (the papers') and Muon for the 3x3 convolutions (the speedrun recipe's, docs/speedrun.md),
and the learning-rate schedule (:func:`lr_factor`).

Muon (Jordan et al., 2024, "Muon: an optimizer for hidden layers") is SGD with momentum whose update of each
weight matrix is replaced by the nearest semi-orthogonal matrix, ``U V^T`` for the momentum ``U S V^T``: every
direction of the update gets the same step, however small its singular value. The orthogonalisation is computed
without an SVD by a quintic Newton-Schulz iteration on ``X = M / ||M||_F``:

    X <- a X + (b X X^T + c (X X^T)^2) X,        (a, b, c) = (3.4445, -4.7750, 2.0315), 5 times

whose coefficients drive all singular values in (0, 1] towards 1 quickly (to roughly 0.7-1.2, which is enough).

A convolution weight ``(c_out, c_in / g, k, k)`` with ``g`` groups holds ``g`` independent linear maps; each is the
matrix ``(c_out / g, c_in / g * k * k)`` and is orthogonalised on its own (batched). The update is scaled by
``sqrt(max(1, rows / cols))`` so that tall matrices get steps as large as wide ones. Parameters that are not
such matrices (norm layers, biases, the classifier, depthwise and pair-mixing transfers, the stem) stay on SGD.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor, nn

from .config import OPTIMIZERS, TrainConfig

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def orthogonalize(m: Tensor, steps: int = 5, eps: float = 1e-7) -> Tensor:
    """Approximately ``U V^T`` for each matrix ``m[i] = U S V^T`` of a batch ``(B, rows, cols)`` (Newton-Schulz)."""
    a, b, c = NS_COEFFICIENTS
    tall = m.size(-2) > m.size(-1)
    x = m.mT if tall else m  # (B, r, s) with r <= s: X X^T is the small Gram matrix
    x = x / (torch.linalg.matrix_norm(x, keepdim=True) + eps)  # all singular values now <= 1
    for _ in range(steps):
        gram = x @ x.mT  # (B, r, r)
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.mT if tall else x


class Muon(torch.optim.Optimizer):
    """Muon for grouped convolution weights, SGD for the rest, in one optimiser.

    Every group has a (Nesterov) momentum ``m`` of its gradient, exactly as ``torch.optim.SGD`` (dampening 0, the
    first step's buffer is the gradient). Groups with ``muon=True`` list convolution weights with ``conv_groups``
    groups and step ``p <- (1 - lr wd) p - lr sqrt(max(1, rows/cols)) orth(m)`` per group (decoupled weight decay,
    as AdamW's); the others step as SGD, ``p <- p - lr m`` with ``wd p`` added to the gradient.
    """

    def __init__(self, params: Iterable, lr: float, momentum: float = 0.9, nesterov: bool = True,
                 weight_decay: float = 0.0, ns_steps: int = 5):
        super().__init__(params, dict(lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay,
                                      ns_steps=ns_steps, muon=False, conv_groups=1))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, mom, wd, g_conv = group["lr"], group["momentum"], group["weight_decay"], group["conv_groups"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad if group["muon"] or not wd else p.grad.add(p, alpha=wd)
                state = self.state[p]
                if "momentum_buffer" not in state:
                    buf = state["momentum_buffer"] = grad.detach().clone()
                else:
                    buf = state["momentum_buffer"].mul_(mom).add_(grad)
                update = grad.add(buf, alpha=mom) if group["nesterov"] else buf
                if not group["muon"]:
                    p.add_(update, alpha=-lr)
                    continue
                rows, cols = p.size(0) // g_conv, p[0].numel()
                o = orthogonalize(update.reshape(g_conv, rows, cols), group["ns_steps"])  # (g, rows, cols)
                if wd:
                    p.mul_(1 - lr * wd)
                p.add_(o.reshape(p.shape), alpha=-lr * max(1.0, rows / cols) ** 0.5)
        return loss


def muon_parameters(model: nn.Module) -> dict[int, list[nn.Parameter]]:
    """The weights Muon takes, by number of groups: those of 3x3 (or larger) convolutions whose per-group matrix
    has at least 2 rows and 2 input channels (so not the stem on a grey image, not depthwise transfers)."""
    out: dict[int, list[nn.Parameter]] = {}
    for m in model.modules():
        if isinstance(m, nn.Conv2d) and m.weight.requires_grad and m.weight.shape[-1] * m.weight.shape[-2] > 1:
            c_out, c_in_g = m.weight.shape[0] // m.groups, m.weight.shape[1]
            if c_out >= 2 and c_in_g >= 2:
                out.setdefault(m.groups, []).append(m.weight)
    return out


def build_optimizer(model: nn.Module, *, name: str, lr: float, muon_lr: float, momentum: float, nesterov: bool,
                    weight_decay: float) -> torch.optim.Optimizer:
    """``torch.optim.SGD`` over all trainable weights (``name="sgd"``), or :class:`Muon` with the weights of
    :func:`muon_parameters` at ``muon_lr`` and the others as SGD at ``lr``. Every group records its ``base_lr``,
    which the schedule multiplies."""
    if name == "sgd":  # all parameters, frozen ones too: the state layout of every earlier checkpoint
        opt: torch.optim.Optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, nesterov=nesterov,
                                                     weight_decay=weight_decay)
    elif name == "muon":
        by_groups = muon_parameters(model)
        taken = {id(p) for ps in by_groups.values() for p in ps}
        groups = [dict(params=ps, lr=muon_lr, muon=True, conv_groups=g) for g, ps in sorted(by_groups.items())]
        groups.append(dict(params=[p for p in model.parameters() if id(p) not in taken], lr=lr))
        opt = Muon(groups, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)
    else:
        raise ValueError(f"optimizer={name!r} is not supported; use one of {OPTIMIZERS}")
    for group in opt.param_groups:
        group["base_lr"] = group["lr"]
    return opt


def lr_factor(cfg: TrainConfig, progress: float) -> float:
    """Multiplier of ``cfg.lr`` at ``progress`` epochs (fractional) into training."""
    warm, total = cfg.warmup_epochs, cfg.epochs
    if warm > 0 and progress < warm:
        return max(progress / warm, 1e-3)
    if cfg.schedule == "constant":
        return 1.0
    if cfg.schedule == "step":
        return cfg.gamma ** math.floor(progress / cfg.step_size)
    t = min(max((progress - warm) / max(total - warm, 1e-12), 0.0), 1.0)
    if cfg.schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * t))
    return max(1.0 - t, 0.0)  # onecycle: linear decay to zero after the warm-up
