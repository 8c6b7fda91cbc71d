"""What a newcomer meets first on the command line: help, listings, clear errors for names that do not exist."""

import argparse
import json

import pytest
import yaml

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


# -- a closed stdout pipe (issue: `mgcnn train ... | head -1` stopped training with exit 0) -------------------------
def _closed_pipe_run(args: list[str], env_extra: dict | None = None):
    """Run ``mgcnn ARGS`` with stdout into a pipe that is closed after the first line (as ``| head -1`` does)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    proc = subprocess.Popen([sys.executable, "-m", "mgcnn", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=env)
    first = proc.stdout.readline()
    proc.stdout.close()  # the reader goes away
    err = proc.stderr.read().decode()
    return first.decode(), proc.wait(timeout=300), err


def test_a_closed_stdout_pipe_never_turns_a_run_into_a_silent_exit_0(data_root, tmp_path):
    from tests.helpers import TINY_ARGS

    run = tmp_path / "run"
    first, rc, err = _closed_pipe_run(["train", *TINY_ARGS, "--data-dir", str(data_root), "--epochs", "3",
                                       "--out", str(run), "--set", "train_size=null", "--set", "tta_flip=false",
                                       "--set", "verify_data=false"])  # the fixture's checksums are in-process
    assert first and rc == 0 and "Traceback" not in err, err
    assert (run / "result.json").is_file()  # the run finished: every epoch, its result, with progress only on stderr
    assert [json.loads(x)["epoch"] for x in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]


def test_a_sweep_into_a_closed_pipe_runs_every_run(data_root, tmp_path):
    study = tmp_path / "s.yaml"
    study.write_text(yaml.safe_dump({"name": "s", "seeds": 2, "base": {
        "dataset": "cifar10", "model": "mgiad", "model_kwargs": {"widths": [8, 16], "coarse_channels": 4,
                                                                 "group_size": 2},
        "batch_size": 16, "epochs": 1, "threads": 1, "train_size": None, "tta_flip": False,
        "verify_data": False, "data_dir": str(data_root)}}))
    first, rc, err = _closed_pipe_run(["sweep", str(study), "--out", str(tmp_path / "sw")])
    assert rc == 0 and "Traceback" not in err, err
    assert len(list((tmp_path / "sw").rglob("result.json"))) == 2


def test_probed_edges_of_eval_spectrum_bench_and_out_folders(data_root, tmp_path, capsys):
    """Found by probing: eval and spectrum refused a run directory; an --out that is a file gave errno's "File
    exists" (after a whole evaluation); bench --csv DIR failed only after measuring."""
    from mgcnn.train import train
    from tests.helpers import one_error_line, quiet, tiny

    run = tmp_path / "run"
    train(tiny(data_root, run, epochs=1), **quiet)
    assert cli.main(["eval", str(run)]) == 0  # the run directory stands for its checkpoint
    assert "test accuracy" in capsys.readouterr().out
    afile = tmp_path / "afile"
    afile.write_text("x")
    for args in (["eval", str(run), "--per-class", "--out", str(afile)],
                 ["spectrum", "--checkpoint", str(run), "--out", str(afile)],
                 ["report", str(run), "--out", str(afile)],
                 ["bench", "--models", "resnet20", "--csv", str(tmp_path)]):
        assert cli.main(args) == 2, args
        line = one_error_line(capsys)
        assert "is a file, not a folder" in line or "is a folder; name a file" in line, line
