"""Preparing a model for mgcnn's C++ CPU kernels beyond the convolutions (which the conv planner picks per shape).

A CPU channels-last run that uses the kernels (the training engine and ``mgcnn bench``, unless the kernels are
switched off: ``MGCNN_CPU_KERNELS=0``, ``--no-cpu-kernels``, deterministic runs) calls :func:`use_cpu_kernels` once
on its model. It changes how layers compute, never what: parameters, buffers and state dicts stay those of the stock
modules.
"""

from __future__ import annotations

from torch import nn

from .batchnorm import fuse_batchnorm_relu
from .transfer import ChannelProlongation, ChannelRestriction


def use_cpu_kernels(model: nn.Module) -> dict[str, int]:
    """Fuse every BatchNorm + ReLU pair (:func:`mgcnn.layers.batchnorm.fuse_batchnorm_relu`) and switch MGiaD's
    in-channel transfers to the one-pass pair kernels (:mod:`mgcnn.layers.cpu_transfer`), in place; returns how many
    modules of each kind changed."""
    pairs = 0
    for module in model.modules():
        if isinstance(module, (ChannelRestriction, ChannelProlongation)):
            module.cpu_kernel = True
            pairs += 1
    return {"batchnorm_relu": fuse_batchnorm_relu(model), "pair_transfers": pairs}
