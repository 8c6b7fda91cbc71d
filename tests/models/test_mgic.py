"""MGIC's channel hierarchy and stems, pinned to the rule of the authors' ``resnetMG.py`` and driver defaults."""

import pytest
import torch

import mgcnn


def chains(model) -> list[list[int]]:
    return [block.cycle.chain() for stage in model.stages for block in stage]


@pytest.mark.parametrize("kwargs,expected", [
    # the driver's defaults: widths 32-64-128-256, blocks 1-2-2-2, mgFcChannel 32: always halve once, stop below 32
    (dict(), [[32, 16], [64, 32, 16], [64, 32, 16], [128, 64, 32, 16], [128, 64, 32, 16],
              [256, 128, 64, 32, 16], [256, 128, 64, 32, 16]]),
    # a level equal to the threshold is halved again (strict "<")
    (dict(widths=(16, 32, 64), blocks=(1, 1, 1), group_size=8, coarse_channels=8), [[16, 8, 4], [32, 16, 8, 4],
                                                                                    [64, 32, 16, 8, 4]]),
    # a threshold above a stage width still halves that stage once
    (dict(coarse_channels=64, blocks=(1, 1, 1, 1)), [[32, 16], [64, 32], [128, 64, 32], [256, 128, 64, 32]]),
])
def test_channel_chains_follow_the_reference_rule(kwargs, expected):
    with torch.device("meta"):
        assert chains(mgcnn.create_model("mgic", **kwargs)) == expected


def test_official_driver_configuration_count_and_stem():
    with torch.device("meta"):
        official = mgcnn.create_model("mgic_official")
        ours = mgcnn.create_model("mgic")
    # Summed from the reference's layers: stem 4,768, connectors 4,928, V-cycles 24,320 + 2 x 63,616 +
    # 2 x 142,208 + 2 x 299,392, head 2,570.
    assert mgcnn.count_parameters(official) == 1_047_018
    # The default 3x3 stem differs only in the first conv: 3*49*32 vs 3*9*32 weights.
    assert mgcnn.count_parameters(official) - mgcnn.count_parameters(ours) == 3 * 32 * (49 - 9)
    assert official.stem[0].kernel_size == (7, 7) and official.stem[0].stride == (2, 2)
    assert isinstance(official.stem[3], torch.nn.MaxPool2d) and len(ours.stem) == 3
    m = mgcnn.create_model("mgic_official").eval()
    with torch.no_grad():  # 32x32 -> 8x8 after the stem, 1x1 after the last stage
        assert m.forward_features(torch.randn(1, 3, 32, 32)).shape == (1, 256, 1, 1)


def test_groups_per_level_and_dense_coarsest():
    model = mgcnn.create_model("mgic", blocks=(1, 1, 1, 1))
    cycle = model.stages[3][0].cycle  # 256 -> 128 -> 64 -> 32 -> 16
    groups = []
    while not cycle.is_coarsest:
        groups.append((cycle.R.groups, cycle.block.conv1.groups))
        cycle = cycle.coarse
    assert groups == [(8, 8), (4, 4), (2, 2), (1, 1)]  # 32 channels per group
    assert cycle.channels == 16 and cycle.block.conv1.groups == 1
