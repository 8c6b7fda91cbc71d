"""mgcnn.papers.studies: the built-in studies of `mgcnn sweep` are the paper tables, their committed files the
generator's output."""

from mgcnn.papers.studies import STUDY_DIR, render, studies
from mgcnn.sweep import builtin_studies, expand, load_study


def test_builtin_studies_are_the_paper_tables():
    names = builtin_studies()
    assert {f"mgiad-table-{t}" for t in ("I", "II", "III", "IV", "V", "VI", "VII", "VIII", "IX")} <= set(names)
    for name, study in studies().items():  # committed files equal the generator's output
        assert (STUDY_DIR / f"{name}.yaml").read_text() == render(study), name
    iv = load_study("mgiad-table-IV")
    assert iv.base == {"recipe": "mgiad-fmnist", "dataset": "fashion-mnist"}
    assert [r["paper"]["weights_k"] for r in iv.rows] == [270, 101, 28, 37, 55]
    assert len(expand(iv)) == 5 * 3


def test_the_poly_mgnet_studies_and_figure_7_are_built_in_and_build():
    """Issue: Poly-MgNet's study had no built-in ablations; MGiaD's Figure 7 was not one command."""
    import torch

    from mgcnn.train.model import build_model

    names = set(builtin_studies())
    for key in ("degree", "init", "placement", "roots", "scaling"):
        assert {f"poly-mgnet-{key}", f"poly-mgnet-{key}-fmnist"} <= names
    assert "mgiad-figure-7" in names
    init = load_study("poly-mgnet-init-fmnist")
    labels = [r["label"] for r in init.rows]
    assert labels[:2] == ["xavier (released)", "uniform U(1,2) (released U,a,b)"] and len(labels) == 5
    for name in ("poly-mgnet-degree-fmnist", "poly-mgnet-init-fmnist", "poly-mgnet-scaling", "mgiad-figure-7",
                 "mgiad-figure-7-fmnist"):
        for spec in expand(load_study(name), seeds=[0]):
            with torch.device("meta"):
                build_model(spec.config, device="meta")
    fig7 = load_study("mgiad-figure-7")
    series = {r["series"] for r in fig7.rows}
    assert {"MGiaD g_s=4", "MGiaD g_s=8", "MGiaD g_s=16", "MGiaD g_s=32", "MGiaD g_s=64", "MgNet",
            "grouped MgNet^{A,B}", "MGIC", "ResNet"} == series
    g4 = [r["model"] for r in fig7.rows if r["series"] == "MGiaD g_s=4"]
    assert g4 == ["mgiad_c4_g4", "mgiad_c8_g4", "mgiad_c16_g4", "mgiad_c32_g4", "mgiad_c64_g4"]  # a line over c_K
    assert {spec.row["series"] for spec in expand(fig7, seeds=[0])} == series  # carried to the runs, not a field
    cpu = load_study("mgiad-figure-7-fmnist")  # the same models and series at a CPU budget, no CIFAR-10 points
    assert [(r["model"], r["series"]) for r in cpu.rows] == [(r["model"], r["series"]) for r in fig7.rows]
    assert not any("paper" in r for r in cpu.rows)
    assert {s.config.dataset for s in expand(cpu, seeds=[0])} == {"fashion-mnist"}
