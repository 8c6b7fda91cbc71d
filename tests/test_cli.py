"""What a newcomer meets first on the command line: help, listings, clear errors for names that do not exist."""

import argparse

import pytest

from mgcnn import cli


def _train_parser() -> argparse.ArgumentParser:
    sub = next(a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["train"]


def test_train_help_explains_every_option_in_groups(capsys):
    parser = _train_parser()
    for action in parser._actions:
        assert action.help, f"{action.option_strings} has no help text"
    groups = [g.title for g in parser._action_groups if g._group_actions]
    assert {"model", "data", "optimisation", "run directory", "speed and devices"} <= set(groups)
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for text in ("--epochs EPOCHS (default: 8)", "(default: 0.1, schedule onecycle)", "mixed precision (default: off)",
                 "torch.compile the model (default: False)", "(default: mgiad_l3_c16_g8)", "(default: fashion-mnist)"):
        assert text in out, text


def test_models_listing_has_a_header_and_states_its_input_configuration(capsys):
    assert cli.main(["models", "mgiad_l3_c16_g8"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("weights for 3 input channels, 10 classes (CIFAR-10)")
    assert lines[1].split() == ["name", "family", "weights", "no", "head", "description"]
    assert "37,882" in lines[2]
    assert cli.main(["models", "mgiad_l3_c16_g8", "--dataset", "fashion-mnist"]) == 0
    out = capsys.readouterr().out
    assert "fashion-mnist: 1 input channel(s), 10 classes" in out
    assert "37,594" in out and "36,944" in out  # what `mgcnn train` prints, and the paper's no-head count


def test_models_without_a_match_names_what_exists(capsys):
    assert cli.main(["models", "nonexistent*"]) == 2
    err = capsys.readouterr().err
    assert "no registered model matches 'nonexistent*'" in err and "mgiad" in err and "poly_mgnet" in err
