"""Plot styles of model families in sweep reports: a family the style table does not know still plots."""

import pytest

from mgcnn.sweep.report import FAMILY_STYLES, family_styles, write_report


def _row(label: str, family: str, params: int, test: float, paper: float | None = None) -> dict:
    return {"label": label, "model": label, "dataset": "cifar10", "config_id": label, "seeds": 1, "epochs": "1 of 1",
            "params": params, "paper_weights_k": None if paper is None else params // 1000,
            "test_acc_mean": test, "test_acc_std": 0.0, "paper_test_acc": paper, "paper_test_std": None,
            "train_acc_mean": test, "paper_train_acc": None, "family": family, "budget": {"epochs": 1}}


def test_unknown_families_get_distinct_default_styles():
    styles = family_styles(["mgiad", "zeta_net", "alpha_net", "zeta_net"])
    assert styles["mgiad"] == FAMILY_STYLES["mgiad"]
    assert styles["alpha_net"] != styles["zeta_net"]  # two new families stay apart
    assert not {styles["alpha_net"], styles["zeta_net"]} & set(FAMILY_STYLES.values())
    many = family_styles([f"fam{i:02d}" for i in range(40)])  # more than the spare styles: "other"'s style
    assert many["fam39"] == FAMILY_STYLES["other"] and many["fam00"] != FAMILY_STYLES["other"]


def test_report_with_an_unknown_family_plots(tmp_path):
    pytest.importorskip("matplotlib")
    rows = [_row("resnet20", "resnet", 270_000, 91.0, paper=92.0), _row("new_a", "brand_new_family", 50_000, 88.0),
            _row("new_b", "brand_new_family", 90_000, 89.0, paper=90.0), _row("x", "other", 10_000, 80.0)]
    paths = write_report(rows, tmp_path / "report", title="unknown family")
    assert paths["plot"] is not None and paths["plot"].stat().st_size > 10_000
    assert "| new_a | cifar10 | 50,000 |" in paths["md"].read_text()
