"""Weight counts under the papers' convention (mgcnn.models.counting): rounding to thousands, and He & Xu's
closed-form count."""

import pytest
import torch

import mgcnn
from mgcnn.models.counting import round_thousands


def test_round_thousands_is_half_up():
    assert round_thousands(2_750_666) == 2751
    assert round_thousands(147_658) == 148
    assert round_thousands(586_499) == 586 and round_thousands(586_500) == 587


@pytest.mark.parametrize("c", [8, 64, 100, 256])
def test_hexu_mgnet_count_formula(c):
    """He & Xu's MgNet, 4 levels x 2 steps, shared B^l: 126 c^2 + 83 c + 10 (3 input channels, 10 classes);
    a new B per step (--wise-B in their code) adds 4 * 9 c^2."""
    with torch.device("meta"):
        shared = mgcnn.create_model("mgnet_hexu", channels=c)
        wise = mgcnn.create_model("mgnet_hexu", channels=c, share="A")
    assert mgcnn.count_parameters(shared) == 126 * c * c + 83 * c + 10
    assert mgcnn.count_parameters(wise) - mgcnn.count_parameters(shared) == 36 * c * c
