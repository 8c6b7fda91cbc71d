import pytest
import torch

import mgcnn
from mgcnn.models import _registry
from mgcnn.models._registry import register_model, register_preset
from mgcnn.papers import rows_for_model

FAMILIES = {"resnet", "mgnet", "mgic", "mgiad", "poly_mgnet"}


def test_list_models_covers_every_family_and_pattern():
    names = mgcnn.list_models()
    assert names == sorted(names)
    assert {"resnet18", "resnet20", "mgnet", "mgic", "mgiad", "poly_mgnet"} <= set(names)
    assert {mgcnn.model_info(n).family for n in names} == FAMILIES
    assert mgcnn.list_models("mgiad_l3*") == ["mgiad_l3_c16_g16", "mgiad_l3_c16_g4", "mgiad_l3_c16_g8"]
    assert all(mgcnn.model_info(n).family == "poly_mgnet" for n in mgcnn.list_models(family="poly_mgnet"))


def test_duplicate_registration_raises():
    with pytest.raises(ValueError, match="already registered"):
        register_model("resnet", name="resnet18")(lambda **kw: None)
    with pytest.raises(ValueError, match="already registered"):
        register_preset("mgiad_c64_g8", "mgiad")


def test_unknown_model_lists_close_matches():
    with pytest.raises(mgcnn.UnknownModelError, match="mgiad_c64_g8") as exc:
        mgcnn.create_model("mgiad_c64_g9")
    assert isinstance(exc.value, ValueError)
    with pytest.raises(ValueError, match="unknown model 'zzz'"):
        mgcnn.create_model("zzz")


def test_preset_kwargs_are_overridable_and_none_is_ignored():
    m = mgcnn.create_model("mgiad_l3_c16_g8", num_classes=5, in_channels=1, group_size=None)
    assert m.fc.out_features == 5 and m.stem[0].in_channels == 1
    assert m.levels[2].smoother.A.groups == 64 // 8  # the preset's g_s survived the None override
    m = mgcnn.create_model("mgiad_l3_c16_g8", group_size=4)
    assert m.levels[2].smoother.A.groups == 64 // 4


def test_builders_take_keyword_only_arguments():
    info = mgcnn.model_info("mgnet")
    with pytest.raises(TypeError):
        info.builder(10, 3)


def test_presets_carry_paper_rows():
    rows = rows_for_model("mgiad_l3_c16_g8")
    assert [(r.table, r.reported_k, r.test_acc) for r in rows] == [("IV", 37, 93.35)]
    assert {r.table for r in rows_for_model("resnet18")} == {"I", "II", "III", "V", "VI", "VII", "IX"}


def test_every_paper_row_names_a_registered_model():
    from mgcnn.papers import ALL_ROWS

    for row in ALL_ROWS:
        assert row.model in _registry._REGISTRY, row


def test_every_registered_name_is_written_literally_in_its_family_file():
    """`grep NAME src/` finds every model: builders by their def, presets in their family's literal table."""
    import inspect
    import sys

    for name in mgcnn.list_models():
        source = inspect.getsource(sys.modules[mgcnn.model_info(name).builder.__module__])
        assert f'Preset("{name}", ' in source or f"def {name}(" in source, name


def test_models_do_not_import_papers():
    """mgcnn.models is pure architecture: importing it (and mgcnn) leaves mgcnn.papers unimported."""
    import subprocess
    import sys

    code = "import sys, mgcnn, mgcnn.models; assert not [m for m in sys.modules if m.startswith('mgcnn.papers')]"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_count_parameters_dedups_shared_and_excludes_head():
    m = mgcnn.create_model("resnet20")
    assert mgcnn.count_parameters(m) == 269_722
    assert mgcnn.count_parameters(m, include_head=False) == 269_722 - 650
    shared = torch.nn.Linear(3, 3)
    seq = torch.nn.Sequential(shared, shared)
    assert mgcnn.count_parameters(seq) == 12
    with pytest.raises(ValueError, match="get_classifier"):
        mgcnn.count_parameters(seq, include_head=False)


def test_model_table_lists_counts_of_matching_models():
    from mgcnn.models import ModelRow, model_table

    rows = model_table("mgiad_l3*")
    assert [r.name for r in rows] == mgcnn.list_models("mgiad_l3*")
    assert all(isinstance(r, ModelRow) for r in rows)
    row = rows[mgcnn.list_models("mgiad_l3*").index("mgiad_l3_c16_g8")]
    assert (row.family, row.weights, row.weights_no_head) == ("mgiad", 37_882, 37_882 - 650)
    assert row.description == mgcnn.model_info("mgiad_l3_c16_g8").description
    # the counts are those of the real model; the table builds it on the meta device
    assert row.weights == mgcnn.count_parameters(mgcnn.create_model("mgiad_l3_c16_g8"))
    (fm,) = model_table("mgiad_l3_c16_g8", in_channels=1)  # FashionMNIST: 1 channel, 10 classes
    assert (fm.weights, fm.weights_no_head) == (37_594, 36_944)
    (c100,) = model_table("resnet20", num_classes=100)
    assert c100.weights == 269_722 + 90 * 65 and c100.weights_no_head == 269_722 - 650
    with pytest.raises(ValueError, match=r"no registered model matches 'zzz\*'; families: mgiad, mgic, mgnet, "
                                         r"poly_mgnet, resnet\."):
        model_table("zzz*")
