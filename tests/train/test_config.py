"""Typed configs (mgcnn.train.config): numbers and booleans in YAML, every field range-checked by name, recipe <
config file < flags, atomic config.yaml writes, and YAML errors that name their line."""

import pytest
import yaml

from mgcnn import cli
from mgcnn.train import TrainConfig, train
from tests.helpers import one_error_line, printed_config, quiet, tiny


def test_numbers_written_like_1e_minus_3_are_numbers_everywhere(tmp_path, capsys):
    cfg = printed_config(capsys, "--set", "lr=1e-3", "--set", "weight_decay=5e-4")
    assert cfg["lr"] == 0.001 and cfg["weight_decay"] == 0.0005
    f = tmp_path / "c.yaml"
    f.write_text("lr: 1e-3\nweight_decay: 5e-4\nepochs: 7\n")
    cfg = printed_config(capsys, "--config", str(f))
    assert (cfg["lr"], cfg["weight_decay"], cfg["epochs"]) == (0.001, 0.0005, 7)
    from mgcnn.sweep import expand, load_study

    study = load_study({"name": "s", "base": {"lr": "1e-3", "weight_decay": "5e-4"}, "rows": [{"label": "a"}]})
    assert expand(study)[0].config.lr == 0.001


@pytest.mark.parametrize("setting,message", [
    ("nesterov='false'", "nesterov='false' is invalid; it must be true or false"),
    ("lr=.nan", "lr=nan is invalid; it must be a finite number"),
    ("lr=.inf", "lr=inf is invalid; it must be a finite number"),
    ("lr=0", "lr=0.0 is invalid; it must be > 0.0"),
    ("warmup_epochs=-1", "warmup_epochs=-1.0 is invalid; it must be >= 0.0"),
    ("crop_padding=-2", "crop_padding=-2 is invalid; it must be >= 0"),
    ("threads=0", "threads=0 is invalid; it must be >= 1 or null"),
    ("momentum=1.5", "momentum=1.5 is invalid; it must be >= 0.0 and < 1.0"),
    ("epochs=2.5", "epochs=2.5 is invalid; it must be an integer"),
    ("model_kwargs=[1]", "model_kwargs=[1] must be a mapping"),
    ("train_size=27", "train_size=27 is invalid; it must be between 8 and fashion-mnist's image size 32"),
    ("train_size=40", "train_size=40 is invalid"),
    ("eval_every=-1", "eval_every=-1 is invalid; it must be >= 0"),
    ("full_size_epochs=-1", "full_size_epochs=-1 is invalid; it must be >= 0"),
])
def test_every_field_is_typed_and_range_checked_with_its_name(setting, message, capsys):
    assert cli.main(["train", "--set", setting, "--print-config"]) == 2
    assert message in one_error_line(capsys)


def test_config_file_layers_over_the_recipe_and_flags_over_both(tmp_path, capsys):
    f = tmp_path / "c.yaml"
    f.write_text("epochs: 3\nlabel_smoothing: 0.2\n")
    cfg = printed_config(capsys, "--recipe", "mgiad", "--config", str(f), "--epochs", "9")
    assert cfg["lr"] == 0.05 and cfg["schedule"] == "cosine"  # from the recipe, not dropped
    assert cfg["label_smoothing"] == 0.2 and cfg["epochs"] == 9  # file over recipe, flag over file


def test_config_yaml_is_written_atomically_and_an_empty_one_is_never_all_defaults(data_root, tmp_path, capsys,
                                                                                   monkeypatch):
    run = tmp_path / "run"
    train(tiny(data_root, run, epochs=2), stop_after=1, **quiet)
    (run / "config.yaml").write_text("")  # as a kill during a non-atomic write would leave it
    assert cli.main(["train", "--config", str(run / "config.yaml"), "--print-config"]) == 2
    assert "is empty" in one_error_line(capsys)
    assert cli.main(["train", "--resume", str(run)]) == 0  # the config comes from the checkpoint ...
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["model"] == "mgiad" and saved["dataset"] == "cifar10"  # ... not the defaults
    from mgcnn.train import config

    writes = []
    monkeypatch.setattr(config, "atomic_write_text", lambda p, t: writes.append(p))
    config.save_yaml(TrainConfig(), tmp_path / "x.yaml")
    assert writes == [tmp_path / "x.yaml"]


def test_yaml_syntax_errors_and_duplicate_keys_name_the_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: 3\nlr: [0.1\n")
    assert cli.main(["train", "--config", str(bad), "--print-config"]) == 2
    assert "invalid YAML at line 3" in one_error_line(capsys)
    dup = tmp_path / "dup.yaml"
    dup.write_text("epochs: 3\nlr: 0.1\nepochs: 5\n")
    assert cli.main(["train", "--config", str(dup), "--print-config"]) == 2
    assert "duplicate key 'epochs' (first at line 1)" in one_error_line(capsys)
    study = tmp_path / "study.yaml"
    study.write_text("name: s\nrows:\n  - {label: a}\nrows: []\n")
    assert cli.main(["sweep", str(study)]) == 2
    assert "duplicate key 'rows'" in one_error_line(capsys)


def test_a_config_path_that_is_a_directory_or_empty_says_what_it_is(tmp_path, capsys):
    """Issue item 20: --config DIR and --config /dev/null said "does not exist"."""
    from tests.helpers import one_error_line

    assert cli.main(["train", "--config", str(tmp_path), "--print-config"]) == 2
    assert "is a directory, not a YAML file" in one_error_line(capsys)
    assert cli.main(["train", "--config", "/dev/null", "--print-config"]) == 2
    assert "/dev/null is empty" in one_error_line(capsys)


def test_resume_cannot_write_to_another_folder(tmp_path, capsys, data_root):
    """Issue item 20: `--resume A --out B` blamed "--resume B"."""
    from mgcnn.train import train
    from tests.helpers import one_error_line, quiet, tiny

    train(tiny(data_root, tmp_path / "a", epochs=2), stop_after=1, **quiet)
    assert cli.main(["train", "--resume", str(tmp_path / "a"), "--out", str(tmp_path / "b")]) == 2
    line = one_error_line(capsys)
    assert f"--resume {tmp_path / 'a'} continues the run in" in line and "drop --out" in line
    assert not (tmp_path / "b").exists()


def test_a_config_that_is_not_a_train_config_is_a_clear_error_or_read_as_fields():
    from mgcnn.train.config import as_train_config

    cfg = TrainConfig(epochs=3)
    assert as_train_config(cfg) is cfg
    assert as_train_config({"epochs": 3, "model_kwargs.group_size": 4}) == TrainConfig(
        epochs=3, model_kwargs={"group_size": 4}).validate()
    for bad in (None, "runs/x", 3, ["epochs", 3]):
        with pytest.raises(TypeError, match=r"takes a TrainConfig \(or a mapping of its fields\)"):
            as_train_config(bad)
    with pytest.raises(ValueError, match="unknown config field"):
        as_train_config({"epoch": 3})


def test_yaml_booleans_for_a_string_field_and_the_first_refused_resume_field(capsys, data_root, tmp_path):
    """Found by probing: `--set amp=off` (YAML reads off as false) said only "must be a string"; a resume that changed
    a fixed field and epochs reported the epochs problem with the rejected value."""
    from tests.helpers import one_error_line

    assert cli.main(["train", "--set", "amp=off", "--print-config"]) == 2
    assert "quote it" in one_error_line(capsys)
    run = tmp_path / "run"
    train(tiny(data_root, run, epochs=2, schedule="step", train_size=24), stop_after=1, **quiet)
    assert cli.main(["train", "--resume", str(run), "--epochs", "3", "--set", "full_size_epochs=2"]) == 2
    assert "cannot change full_size_epochs (1 -> 2)" in one_error_line(capsys)
