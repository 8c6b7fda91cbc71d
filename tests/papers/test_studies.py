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
