"""Studies (mgcnn.sweep.study): rows, grids, seeds and recipes expanded into runs, the config hash that names a run,
and one clear line for a bad study."""

from pathlib import Path

import pytest
import yaml

from mgcnn import cli
from mgcnn.sweep import config_hash, expand, load_study
from mgcnn.train import TrainConfig
from tests.helpers import one_error_line


def test_expansion_rows_grid_seeds_and_recipe():
    st = load_study({"name": "s", "base": {"recipe": "mgiad", "dataset": "cifar10"},
                     "rows": [{"model": "mgiad_c64_g4"}, {"model": "mgiad_c64_g8", "label": "g8",
                                                         "paper": {"test_acc": 94.58}}],
                     "grid": {"lr": [0.05, 0.1], "model_kwargs.post_smoothing": [1, 2]}, "seeds": 2})
    runs = expand(st)
    assert len(runs) == 2 * 4 * 2
    assert {r.config.lr for r in runs} == {0.05, 0.1} and {r.config.seed for r in runs} == {0, 1}
    assert all(r.config.epochs == 400 and r.config.schedule == "cosine" for r in runs)  # the recipe
    assert {r.config.model_kwargs["post_smoothing"] for r in runs} == {1, 2}
    assert runs[-1].label == "g8" and runs[-1].paper == {"test_acc": 94.58}
    assert len({r.run_id for r in runs}) == len(runs)
    assert len(expand(st, seeds=[7], overrides={"epochs": 2})) == 8
    assert all(r.config.epochs == 2 for r in expand(st, overrides={"epochs": 2}))
    with pytest.raises(ValueError, match="unknown key"):
        load_study({"name": "x", "rowz": []})
    with pytest.raises(ValueError, match="neither a file nor a built-in study"):
        load_study("no-such-study")


def test_config_hash_same_config_same_id_any_change_new_id():
    a = TrainConfig(model="mgiad", model_kwargs={"group_size": 4})
    same = TrainConfig(model="mgiad", model_kwargs={"group_size": 4}, out="/else", data_dir="/data", threads=1)
    assert config_hash(a) == config_hash(same)  # where and how fast a run happens is not part of its identity
    for change in ({"lr": 0.051}, {"seed": 1}, {"model_kwargs": {"group_size": 8}}, {"epochs": 6},
                   {"dataset": "cifar10"}):
        assert config_hash(TrainConfig(**{**a.to_dict(), **change})) != config_hash(a), change


def test_committed_runs_keep_their_ids_and_recorded_configs_their_meaning():
    """The default recipe changed (the speedrun); the committed study's runs must map to the same ids, and a stored
    config without the fields added since must read as what the run did, not as today's defaults."""
    root = Path(__file__).resolve().parents[2] / "results" / "fmnist-table4-cpu"
    ids = {r.run_id for r in expand(load_study("fmnist-table4-cpu"))}
    assert ids == {p.name for p in (root / "runs").iterdir()}
    for run in (root / "runs").iterdir():
        recorded = yaml.safe_load((run / "config.yaml").read_text())
        assert "train_size" not in recorded  # written before the field existed
        cfg = TrainConfig.from_record(recorded)
        assert (cfg.train_size, cfg.tta_flip, cfg.eval_every) == (None, False, 1)
        assert config_hash(cfg) == run.name


@pytest.mark.parametrize("study,message", [
    ({"name": "s", "base": {"recipe": "fast"}}, "recipe='fast' is not known"),
    ({"name": "s", "seeds": "two"}, "seeds='two' is invalid; use a count"),
    ({"name": "s", "rows": {"label": "a"}}, "rows must be a list of mappings"),
    ({"name": "s", "grid": {"lr": 0.1}}, "grid must map fields to non-empty lists"),
])
def test_bad_studies_are_one_clear_line(study, message, tmp_path, capsys):
    f = tmp_path / "s.yaml"
    f.write_text(yaml.safe_dump(study))
    assert cli.main(["sweep", str(f), "--out", str(tmp_path / "sw")]) == 2
    assert message in one_error_line(capsys)


def test_a_rows_seed_is_the_seed_it_trains_and_seed_elsewhere_is_refused(tmp_path, capsys):
    st = load_study({"name": "s", "seeds": 2, "rows": [{"model": "mgiad_l3_c16_g8", "seed": 5},
                                                       {"model": "mgiad_l3_c16_g4"}]})
    assert [(r.config.model, r.config.seed) for r in expand(st)] == [
        ("mgiad_l3_c16_g8", 5), ("mgiad_l3_c16_g4", 0), ("mgiad_l3_c16_g4", 1)]
    # --seeds (expand's seeds) replaces the study's seeds, not a row's own seed
    assert [r.config.seed for r in expand(st, seeds=[7])] == [5, 7]
    for study, message in [
        ({"name": "s", "grid": {"seed": [0, 1]}}, "grid over seed: list the seeds in seeds: [0, 1]"),
        ({"name": "s", "base": {"seed": 3}}, "base sets seed=3: use seeds: [3]"),
        ({"name": "s", "rows": [{"seed": -1}]}, "seed=-1 is invalid"),
    ]:
        f = tmp_path / "s.yaml"
        f.write_text(yaml.safe_dump(study))
        assert cli.main(["sweep", str(f), "--out", str(tmp_path / "sw")]) == 2
        assert message in one_error_line(capsys)
    f.write_text(yaml.safe_dump({"name": "s"}))
    assert cli.main(["sweep", str(f), "--out", str(tmp_path / "sw"), "--set", "seed=4"]) == 2
    assert "--set seed=4 would give every run the same seed; use --seeds" in one_error_line(capsys)
    assert not (tmp_path / "sw").exists()
