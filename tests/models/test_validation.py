"""Bad configurations fail at construction with a ValueError naming the parameter and what is allowed."""

import pytest

import mgcnn


@pytest.mark.parametrize("name,kwargs,pattern", [
    ("mgnet", dict(group_size=48), r"group_size=48 does not divide the 64 channels.*\[1, 2, 4, 8, 16, 32, 64\]"),
    ("mgiad", dict(group_size=3), r"group_size=3 does not divide"),
    ("mgiad", dict(coarse_channels=4, group_size=16), r"group_size=16 does not divide the 8 channels"),
    ("poly_mgnet", dict(group_size=5), r"group_size=5 does not divide"),
    ("mgic", dict(group_size=12), r"group_size=12 does not divide"),
    ("mgiad", dict(coarse_channels=128), r"coarse_channels=128 is larger than a level width of 64.*<= 64"),
    ("mgiad_l3_c16_g8", dict(coarse_channels=32), r"coarse_channels=32 is larger than a level width of 16"),
    ("poly_mgnet", dict(degree=3), r"degree=3 is not supported; use one of \[2, 4, 6, 8\]"),
    ("poly_mgnet", dict(blocks=["cubic"]), r"blocks=\['cubic'\] is invalid"),
    ("poly_mgnet", dict(residual="weird"), r"residual='weird' is not supported"),
    ("poly_mgnet", dict(placement="inside-out"), r"placement='inside-out' is not supported"),
    ("poly_mgnet", dict(complex_root="imaginary", degree=6), r"complex_root='imaginary' is not supported"),
    ("poly_mgnet", dict(init="lfa"), r"init='lfa' is not supported"),
    ("poly_mgnet", dict(roots=[0.5]), r"one root per block \(2\)"),
    ("poly_mgnet", dict(degree=2, roots=[0.5, 0.2 + 0.1j]), r"linear block has one real root"),
    ("mgnet", dict(smoothing_steps=0), r"smoothing_steps\[0\]=0 is invalid; it must be a positive integer"),
    ("mgnet", dict(smoothing_steps=-1), r"positive integer"),
    ("mgnet", dict(smoothing_steps=[2, 2]), r"one entry per level \(4\)"),
    ("mgiad", dict(pre_smoothing=-1), r"pre_smoothing=-1 is invalid"),
    ("mgiad", dict(pre_smoothing=0, post_smoothing=0), r"at least one smoothing step"),
    ("mgiad", dict(widths=(6, 12), coarse_channels=1, group_size=1), r"width 3 is odd but must be halved"),
    ("mgiad", dict(widths=(12, 30)), r"widths\[1\]=30 must be a multiple of widths\[0\]=12"),
    ("mgiad", dict(channel_scale=0), r"channel_scale=0 is invalid"),
    ("mgic", dict(widths=(10, 20), blocks=(1, 1), group_size=2, coarse_channels=4),
     r"MGIC halves 5 channels.*must be even"),
    ("mgnet", dict(share="B"), r"share='B' is not supported"),
    ("mgnet", dict(levels=5), r"levels=5 is not supported"),
    ("mgnet", dict(num_classes=0), r"num_classes=0 is invalid"),
    ("resnet20", dict(in_channels=0), r"in_channels=0 is invalid"),
    ("mgnet", dict(norm_layer="layernorm"), r"norm_layer='layernorm' is not supported"),
    ("mgiad", dict(prolongation="cubic"), r"prolongation='cubic' is not supported"),
    ("mgnet_hexu", dict(smoothing_steps=2), r"smoothing_steps=2 is invalid for mgnet_hexu; pass one entry per level"),
    ("mgnet_hexu", dict(smoothing_steps=(2, 0)), r"smoothing_steps\[1\]=0 is invalid"),
    ("mgnet_hexu", dict(channels=0), r"channels=0 is invalid"),
    ("mgnet_hexu", dict(share="B"), r"share='B' is not supported"),
    ("resnet18", dict(stem="vit"), r"stem='vit' is not supported; use one of \('cifar', 'cifar_pool', 'imagenet'\)"),
    ("mgic", dict(stem="vit"), r"stem='vit' is not supported"),
    ("poly_mgnet_q6", dict(placement="outside-twice"), r"placement='outside-twice' is not supported"),
])
def test_bad_configuration_raises_value_error(name, kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        mgcnn.create_model(name, **kwargs)


def test_unknown_keyword_is_a_type_error_naming_it():
    with pytest.raises(TypeError, match="group_sizes"):
        mgcnn.create_model("mgiad", group_sizes=4)


@pytest.mark.parametrize("kwargs,pattern", [
    (dict(roots=[0, 0.5]), r"roots\[0\]=0 .*non-zero"),  # a linear block's coefficient is 1/z
    (dict(degree=4, roots=[0.5, 0]), r"roots\[1\]=0 .*non-zero"),
    (dict(degree=6, roots=[0.5, 0.5, 0]), r"roots\[2\]=0 .*non-zero"),  # a/(a^2 + b^2) with a = b = 0
    (dict(roots=[[0.5, 0.5], [0.5, 0]]), r"roots\[1\]\[1\]=0 .*non-zero"),
    (dict(roots=[0.5, 0.2 + 0.1j]), r"roots\[1\]=\(0\.2\+0\.1j\).*linear block has one real root"),
    (dict(degree=4, roots=[1 + 1j, 0.5]), r"roots\[0\]=\(1\+1j\).*double block"),
    (dict(degree=6, complex_root="real", roots=[0.5, 0.5, 1 + 1j]), r"roots\[2\]=\(1\+1j\).*complex_root='real'"),
    (dict(roots=[float("nan"), 0.5]), r"roots\[0\]=nan .*finite"),
    (dict(roots=[float("inf"), 0.5]), r"roots\[0\]=inf .*finite"),
    (dict(roots=[None, 0.5]), r"roots\[0\]=None is not a number"),
    (dict(roots=[True, 0.5]), r"roots\[0\]=True is not a number"),
    (dict(roots=[0.5, "half"]), r"roots\[1\]='half' is not a number"),
    (dict(roots=5), r"roots=5 .*one root per block \(2\)"),
    (dict(roots="ab"), r"roots='ab' .*one root per block \(2\)"),
    (dict(roots={"a": 1}), r"roots=\{'a': 1\} .*one root per block \(2\)"),
    (dict(roots=[[0.5, 0.5], 0.5]), r"roots=\[\[0\.5, 0\.5\], 0\.5\] .*one root per block \(2\)"),
])
def test_bad_roots_name_roots_the_block_and_what_it_takes(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        mgcnn.create_model("poly_mgnet", widths=[8, 16], **kwargs)


def test_roots_may_be_written_as_strings_and_numbers_of_any_kind():
    import numpy as np

    model = mgcnn.create_model("poly_mgnet", widths=[8, 16], degree=6, roots=[np.float64(0.5), 2, "1+2j"])
    assert complex(model.levels[0].smoother.roots()[-2]) == 1 + 2j
