"""The papers' #weights, row by row (docs/architectures.md 6f, 7g; docs/weight-counts.md)."""

import pytest
import torch

import mgcnn
from mgcnn import cli, papers
from mgcnn.models.counting import round_thousands
from mgcnn.papers import tables

# Exact counts derived independently (closed-form counter, docs/architectures.md), CIFAR-10 unless noted.
SPEC_EXACT = {
    ("resnet18", "cifar10"): 11_173_962,
    ("resnet18", "cifar100"): 11_220_132,
    ("resnet20", "cifar10"): 269_722,
    ("mgnet_a_l3", "cifar10"): 198_010,
    ("mgnet_ab_l3", "cifar10"): 101_242,
    ("mgnet_a", "cifar10"): 4_114_634,
    ("mgnet_ab", "cifar10"): 2_750_666,
    ("mgnet_ab", "cifar100"): 2_773_796,
    ("mgnet_ab", "fashion-mnist"): 2_746_944,
    ("mgnet_ab_l3", "fashion-mnist"): 100_304,
    ("mgnet_ab_g64", "cifar10"): 830_922,
    ("mgnet_ab_g32", "cifar10"): 425_418,
    ("mgnet_ab_g16", "cifar10"): 222_666,
    ("mgnet_ab_g8", "cifar10"): 121_290,
    ("mgiad_c4_g4", "cifar10"): 138_154,
    ("mgiad_c8_g4", "cifar10"): 139_018,
    ("mgiad_c16_g4", "cifar10"): 147_658,
    ("mgiad_c32_g4", "cifar10"): 192_586,
    ("mgiad_c64_g4", "cifar10"): 393_034,
    ("mgiad_c8_g8", "cifar10"): 235_786,
    ("mgiad_c16_g8", "cifar10"): 239_818,
    ("mgiad_c32_g8", "cifar10"): 275_530,
    ("mgiad_c64_g8", "cifar10"): 457_546,
    ("mgiad_c16_g16", "cifar10"): 424_138,
    ("mgiad_c32_g16", "cifar10"): 441_418,
    ("mgiad_c64_g16", "cifar10"): 586_570,
    ("mgiad_c32_g32", "cifar10"): 773_194,
    ("mgiad_c64_g32", "cifar10"): 844_618,
    ("mgiad_c64_g64", "cifar10"): 1_360_714,
    ("mgiad_c64_g4_x2", "cifar10"): 532_618,
    ("mgiad_c64_g8_x2", "cifar10"): 698_506,
    ("mgiad_c64_g4_x3", "cifar10"): 1_020_106,
    ("mgiad_c64_g8_x3", "cifar10"): 1_268_938,
    ("mgiad_c64_g4_x3_post2", "cifar10"): 1_035_466,
    ("mgiad_c64_g4_x3_post3", "cifar10"): 1_050_826,
    ("mgiad_c64_g8_x3_post2", "cifar10"): 1_284_298,
    ("mgiad_c64_g8_x3_post3", "cifar10"): 1_299_658,
    ("mgiad_c64_g8", "cifar100"): 480_676,
    ("mgiad_c64_g64", "cifar100"): 1_383_844,
    ("mgiad_c64_g8_x2", "cifar100"): 744_676,
    ("mgiad_c64_g64_x2", "cifar100"): 3_067_108,
    ("mgiad_c64_g8_x3", "cifar100"): 1_338_148,
    ("mgiad_c64_g64_x3", "cifar100"): 4_821_796,
    ("mgiad_c64_g8_post3", "cifar100"): 489_892,
    ("mgiad_c64_g64_post3", "cifar100"): 1_393_060,
    ("mgiad_c64_g8_x3_post3", "cifar100"): 1_368_868,
    ("mgiad_c64_g64_x3_post3", "cifar100"): 4_852_516,
    ("mgiad_c64_g4", "fashion-mnist"): 389_312,
    ("mgiad_c64_g8", "fashion-mnist"): 453_824,
    ("mgiad_c64_g64", "fashion-mnist"): 1_356_992,
    ("mgiad_c32_g4", "fashion-mnist"): 188_864,
    ("mgiad_c32_g16", "fashion-mnist"): 437_696,
    ("mgiad_c16_g16", "fashion-mnist"): 420_416,
    ("mgiad_c16_g4", "fashion-mnist"): 143_936,
    ("mgiad_l3_c16_g4", "fashion-mnist"): 27_728,
    ("mgiad_l3_c16_g8", "fashion-mnist"): 36_944,
    ("mgiad_l3_c16_g16", "fashion-mnist"): 55_376,
}


@pytest.fixture(scope="module")
def checks():
    return papers.check_rows()


def test_round_thousands_is_half_up():
    assert round_thousands(2_750_666) == 2751
    assert round_thousands(147_658) == 148
    assert round_thousands(586_499) == 586 and round_thousands(586_500) == 587


def test_every_row_matches_or_is_a_documented_paper_error(checks):
    bad = [(c.row.table, c.row.label, c.row.reported_k, c.ours) for c in checks if c.status == "MISMATCH"]
    assert bad == []
    # The documented errors really are mismatches (a fixed typo would otherwise hide behind its note) ...
    errors = [c for c in checks if c.row.known_error]
    assert errors and all(not c.matches for c in errors)
    assert len(errors) == 8
    # ... and every table of the MGiaD paper is present.
    assert {c.row.table for c in checks if c.row.source == "MGiaD"} == {"I", "II", "III", "IV", "V", "VI", "VII",
                                                                        "VIII", "IX"}


def test_exact_counts_equal_the_spec(checks):
    ours = {(c.row.model, c.row.dataset): c.ours for c in checks}
    for key, expected in SPEC_EXACT.items():
        got = ours.get(key)
        if got is None:  # a spec count for a (model, dataset) pair not in a table row
            got = papers.count_for_row(papers.PaperRow("t", "t", "t", key[0], key[1], 0))[0]
        assert got == expected, key


def test_spec_rows_match_exactly_except_learnable_imaginary_parts(checks):
    for c in checks:
        if c.row.reported_exact is None:
            continue
        extra = 4 if c.row.model in ("poly_mgnet_q6", "poly_mgnet_q8") else 0  # one learnable b per level
        assert c.ours == c.row.reported_exact + extra, c.row.model


def test_fashion_mnist_rows_report_both_conventions(checks):
    c = next(c for c in checks if c.row.model == "mgiad_l3_c16_g8")
    assert (c.ours, c.ours_other) == (36_944, 37_594)  # without / with the 650-weight head


def test_cli_params_check_passes_and_prints_every_row(capsys):
    assert cli.main(["params", "--check"]) == 0
    out = capsys.readouterr().out
    assert "0 mismatches" in out
    assert sum(line.endswith("paper error") for line in out.splitlines()) == 8
    assert sum(line.endswith("match") for line in out.splitlines()) == len(papers.ALL_ROWS) - 8
    assert "mgiad_l3_c16_g8" in out and "poly_mgnet_q6" in out


def test_cli_params_check_fails_on_a_real_mismatch(monkeypatch, capsys):
    wrong = papers.PaperRow("MGiaD", "II", "fake", "mgiad_c4_g4", "cifar10", 137)
    monkeypatch.setattr(tables, "ALL_ROWS", [*tables.ALL_ROWS, wrong])
    assert cli.main(["params", "--check"]) == 1
    assert "MISMATCH" in capsys.readouterr().err
    assert cli.main(["params"]) == 0  # without --check the table is only printed


@pytest.mark.parametrize("c", [8, 64, 100, 256])
def test_hexu_mgnet_count_formula(c):
    """He & Xu's MgNet, 4 levels x 2 steps, shared B^l: 126 c^2 + 83 c + 10 (3 input channels, 10 classes);
    a new B per step (--wise-B in their code) adds 4 * 9 c^2."""
    with torch.device("meta"):
        shared = mgcnn.create_model("mgnet_hexu", channels=c)
        wise = mgcnn.create_model("mgnet_hexu", channels=c, share="A")
    assert mgcnn.count_parameters(shared) == 126 * c * c + 83 * c + 10
    assert mgcnn.count_parameters(wise) - mgcnn.count_parameters(shared) == 36 * c * c
