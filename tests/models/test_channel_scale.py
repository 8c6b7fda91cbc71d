"""Channel scaling (issue: poly_mgnet(channel_scale=sqrt(2)) raised, sqrt(8) built other widths than the authors')."""

import math

import pytest
import torch

import mgcnn
from mgcnn.layers.common import scale_widths
from mgcnn.papers import rows_for_model

SCALES = {  # the Poly-MgNet paper's scalings -> the authors' hand-rounded widths and our presets of them
    math.sqrt(2): ((90, 180, 360, 360), "w90"),
    math.sqrt(8): ((180, 360, 720, 720), "w180"),
    1 / math.sqrt(2): ((45, 90, 180, 180), "w45"),
    1 / math.sqrt(8): ((22, 44, 88, 88), "w22"),
}


@pytest.mark.parametrize("scale", list(SCALES), ids=["sqrt2", "sqrt8", "1/sqrt2", "1/sqrt8"])
def test_the_papers_scalings_build_with_the_authors_widths_and_counts(scale):
    widths, suffix = SCALES[scale]
    for family, preset in (("poly_mgnet", f"poly_mgnet_q2_{suffix}"), ("mgnet", f"mgnet_ab_{suffix}")):
        with torch.device("meta"):
            model = mgcnn.create_model(family, channel_scale=scale)
        assert model.widths == widths
        (row,) = [r for r in rows_for_model(preset) if r.table == "7"]  # the row `mgcnn params --table 7` prints
        assert mgcnn.count_parameters(model) == row.reported_exact
    with torch.device("meta"):
        resnet = mgcnn.create_model(f"resnet18_{suffix}")
    assert [s[0].conv1.out_channels for s in resnet.stages] == [*widths[:3], 2 * widths[3]]


def test_the_rounding_rule_keeps_every_transfer_valid_for_any_scale():
    for scale in (0.3, 0.5, 0.77, 1.25, 1.5, 2.0, 2.5, 3.0):
        widths = scale_widths((64, 128, 256, 256), scale)
        first = math.floor(64 * scale + 1e-9)
        assert widths == (first, 2 * first, 4 * first, 4 * first)
        with torch.device("meta"):
            mgcnn.create_model("poly_mgnet", channel_scale=scale)  # builds: the grouped transfers are valid
    assert scale_widths((16, 24), 2) == (32, 48)  # a ratio that is not an integer: each width on its own


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), "2", True, 0.001])
def test_bad_scales_are_one_clear_error(bad):
    with pytest.raises(ValueError, match="channel_scale"):
        mgcnn.create_model("poly_mgnet", channel_scale=bad)
