"""Per-level features for every family (timm's semantics): feature_info, forward_intermediates, features_only."""

import pytest
import torch

import mgcnn
from mgcnn.models import FeatureExtractor

FAMILIES = {  # a small member of each family, and the reductions of its levels
    "resnet": ("resnet20", [1, 2, 4]),
    "resnet18_pool": ("resnet18_pool", [2, 4, 8, 16]),
    "mgnet": ("mgnet_ab_l3", [1, 2, 4]),
    "mgnet_hexu": ("mgnet_hexu_c64", [1, 2, 4, 8]),
    "mgiad": ("mgiad_l3_c16_g8", [1, 2, 4]),
    "poly_mgnet": ("poly_mgnet_q2_w22", [1, 2, 4, 8]),
    "mgic": ("mgic", [1, 2, 4, 8]),
    "mgic_official": ("mgic_official", [4, 8, 16, 32]),
}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_level_has_its_feature_map_and_the_last_is_forward_features(family):
    name, reductions = FAMILIES[family]
    torch.manual_seed(0)
    model = mgcnn.create_model(name).eval()
    info = model.feature_info
    assert [f["reduction"] for f in info] == reductions
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        final, maps = model.forward_intermediates(x)
        assert torch.equal(final, model.forward_features(x))
        assert torch.equal(maps[-1], final)
    for f, m in zip(info, maps, strict=True):
        assert m.shape == (2, f["num_chs"], 64 // f["reduction"], 64 // f["reduction"])
        assert model.get_submodule(f["module"]) is not None  # names a real module
    with torch.no_grad():
        only = model.forward_intermediates(x, indices=[0, -1], intermediates_only=True)
        early_final, early = model.forward_intermediates(x, indices=1, stop_early=True)
        first = model.forward_intermediates(x, indices=[0], stop_early=True)
    assert len(only) == 2 and torch.equal(only[0], maps[0]) and torch.equal(only[1], maps[-1])
    assert len(early) == 1 and torch.equal(early[0], maps[-1]) and torch.equal(early_final, final)
    assert torch.equal(first[0], maps[0]) and torch.equal(first[1][0], maps[0])  # stopped after level 0


@pytest.mark.parametrize("family", list(FAMILIES))
def test_features_only_returns_one_map_per_level_without_a_head(family):
    name, reductions = FAMILIES[family]
    torch.manual_seed(0)
    extractor = mgcnn.create_model(name, features_only=True, out_indices=(1, 2)).eval()
    assert isinstance(extractor, FeatureExtractor)
    assert extractor.reduction() == reductions[1:3]
    assert not any("fc." in n for n, _ in extractor.named_parameters())  # the classifier is dropped
    torch.manual_seed(0)
    full = mgcnn.create_model(name).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        maps = extractor(x)
        _, all_maps = full.forward_intermediates(x)
    assert [m.shape[1] for m in maps] == extractor.channels()
    assert all(torch.equal(a, b) for a, b in zip(maps, all_maps[1:3]))


def test_bad_indices_are_one_clear_error():
    model = mgcnn.create_model("resnet20")
    x = torch.randn(1, 3, 32, 32)
    for bad, message in ((5, "between 1 and the 3"), ([3], "does not exist"), ([], "names no"), ("x", "list of ints")):
        with pytest.raises(ValueError, match=message):
            model.forward_intermediates(x, indices=bad)
    with pytest.raises(ValueError, match="output_fmt"):
        model.forward_intermediates(x, output_fmt="NHWC")


def test_feature_options_are_checked():
    """Found by probing: out_indices without features_only was ignored; float indices gave a raw TypeError."""
    with pytest.raises(ValueError, match="pass features_only=True"):
        mgcnn.create_model("resnet20", out_indices=[1])
    with pytest.raises(ValueError, match="features_only='no' must be True or False"):
        mgcnn.create_model("resnet20", features_only="no")
    with pytest.raises(ValueError, match="list of ints"):
        mgcnn.create_model("resnet20", features_only=True, out_indices=[1.0])
