"""Run-state integrity: typed configs, resume that never records what did not happen, damaged files caught, locked
run directories, and one clear line for every bad input. Each test failed before its fix."""

import errno
import json
import os
import pickle
import stat

import pytest
import torch
import yaml

from mgcnn import cli
from mgcnn.fileio import DirectoryLock, atomic_write_text
from mgcnn.train import CheckpointError, RunDirectoryError, TrainConfig, TrainingDivergedError, load_checkpoint, train
from mgcnn.train.engine import RunLockedError, available_cpus
from tests.helpers import TINY, TINY_ARGS, one_error_line, printed_config, quiet, tiny, write_cifar


# -- 1. numbers and booleans in YAML ---------------------------------------------------------------------------------
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


# -- 2. precedence --------------------------------------------------------------------------------------------------
def test_config_file_layers_over_the_recipe_and_flags_over_both(tmp_path, capsys):
    f = tmp_path / "c.yaml"
    f.write_text("epochs: 3\nlabel_smoothing: 0.2\n")
    cfg = printed_config(capsys, "--recipe", "mgiad", "--config", str(f), "--epochs", "9")
    assert cfg["lr"] == 0.05 and cfg["schedule"] == "cosine"  # from the recipe, not dropped
    assert cfg["label_smoothing"] == 0.2 and cfg["epochs"] == 9  # file over recipe, flag over file


# -- 3, 4, 7. resume: the checkpoint is the truth ------------------------------------------------------------------
def test_resume_refuses_changes_that_would_not_happen_and_allows_the_others(data_root, tmp_path, capsys):
    run = tmp_path / "run"
    train(tiny(data_root, run, epochs=1, schedule="step"), **quiet)
    before = (run / "config.yaml").read_bytes(), (run / "checkpoint.pt").read_bytes()
    assert cli.main(["train", "--resume", str(run), "--set", "momentum=0.5"]) == 2
    line = one_error_line(capsys)
    assert "--resume cannot change momentum (0.9 -> 0.5)" in line and "epochs" in line
    assert ((run / "config.yaml").read_bytes(), (run / "checkpoint.pt").read_bytes()) == before  # nothing recorded
    cosine = tmp_path / "cosine"
    train(tiny(data_root, cosine, epochs=1), **quiet)
    assert cli.main(["train", "--resume", str(cosine), "--epochs", "2"]) == 2  # its lr depends on the total
    assert "cannot change epochs (1 -> 2) of a cosine schedule" in one_error_line(capsys)
    assert cli.main(["train", "--resume", str(run), "--epochs", "2"]) == 0  # more epochs of a step schedule
    ckpt = load_checkpoint(run / "checkpoint.pt")
    assert ckpt["epoch"] == 2 and ckpt["config"]["epochs"] == 2 and ckpt["optimizer"]["param_groups"][0]["momentum"] \
        == 0.9


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


def test_resume_restores_the_metrics_line_lost_after_the_checkpoint(data_root, tmp_path):
    run = tmp_path / "run"
    train(tiny(data_root, run, epochs=2), **quiet)
    # a kill after the final checkpoint's rename, before the metrics and result writes
    (run / "result.json").unlink()
    lines = (run / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text(lines[0] + "\n")
    train(tiny(data_root, run, epochs=2), resume=True, **quiet)  # nothing left to train: only the records
    assert [json.loads(x)["epoch"] for x in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    assert (run / "result.json").is_file()


# -- 5, 6. what a checkpoint may hold --------------------------------------------------------------------------------
def test_a_non_finite_model_is_never_saved(data_root, tmp_path, monkeypatch):
    from mgcnn.train import engine

    run = tmp_path / "run"
    train(tiny(data_root, run, epochs=3), stop_after=1, **quiet)
    good = (run / "checkpoint.pt").read_bytes()
    real = engine.evaluate

    def evaluate(model, *args, **kwargs):  # BN statistics gone bad while the loss stayed finite
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_var.fill_(float("nan"))
                break
        return real(model, *args, **kwargs)

    monkeypatch.setattr(engine, "evaluate", evaluate)
    with pytest.raises(TrainingDivergedError, match="non-finite values in .*running_var.*after epoch 1\\) is kept"):
        train(tiny(data_root, run, epochs=3), resume=True, **quiet)
    assert (run / "checkpoint.pt").read_bytes() == good
    monkeypatch.setattr(engine, "evaluate", lambda *a, **k: engine.EvalResult(float("nan"), 10.0, 50.0,
                                                                               torch.zeros(10, 10), 32))
    with pytest.raises(TrainingDivergedError, match="test loss nan"):
        train(tiny(data_root, run, epochs=3), resume=True, **quiet)
    assert (run / "checkpoint.pt").read_bytes() == good


def test_a_flipped_byte_inside_a_tensor_is_caught(data_root, tmp_path, capsys):
    run = tmp_path / "run"
    train(tiny(data_root, run, epochs=1), **quiet)
    raw = bytearray((run / "checkpoint.pt").read_bytes())
    weight = bytes(load_checkpoint(run / "checkpoint.pt")["model"]["stem.0.weight"].untyped_storage())
    at = bytes(raw).find(weight)
    assert at > 0
    raw[at + 5] ^= 0x01
    (run / "checkpoint.pt").write_bytes(raw)
    torch.load(run / "checkpoint.pt", weights_only=True)  # torch itself does not notice
    with pytest.raises(CheckpointError, match="content checksum does not match"):
        load_checkpoint(run / "checkpoint.pt")
    assert cli.main(["eval", str(run / "checkpoint.pt")]) == 2
    assert "content checksum does not match" in one_error_line(capsys)


def test_checkpoints_missing_keys_or_not_fitting_the_model_are_one_clear_line(data_root, tmp_path, capsys):
    from mgcnn.train.checkpoint import save_checkpoint

    run = tmp_path / "run"
    train(tiny(data_root, run, epochs=1), **quiet)
    state = load_checkpoint(run / "checkpoint.pt")
    partial = tmp_path / "partial"
    partial.mkdir()
    save_checkpoint(partial / "checkpoint.pt", {k: v for k, v in state.items() if k not in ("optimizer", "epoch")})
    assert cli.main(["train", "--resume", str(partial)]) == 2
    assert "lacks ['epoch', 'optimizer']" in one_error_line(capsys)
    misfit = tmp_path / "misfit"
    misfit.mkdir()
    state["model"] = {k: v[:1] if v.dim() else v for k, v in state["model"].items()}
    save_checkpoint(misfit / "checkpoint.pt", state)
    assert cli.main(["train", "--resume", str(misfit)]) == 2
    assert "the saved weights do not fit mgiad" in one_error_line(capsys)
    assert cli.main(["spectrum", "--checkpoint", str(misfit / "checkpoint.pt"), "--out", str(tmp_path / "s")]) == 2
    assert "the saved weights do not fit mgiad" in one_error_line(capsys)
    assert cli.main(["eval", str(misfit / "checkpoint.pt"), "--data-dir", str(data_root)]) == 2
    line = one_error_line(capsys)  # names the cause, not only torch's header line
    assert "the saved weights do not fit mgiad" in line and "size mismatch for" in line


def test_a_model_that_computes_in_its_constructor_still_trains(data_root, tmp_path):
    """The model check before any side effect builds on the meta device; a constructor that needs real weights
    (Poly-MgNet's spectrum-based roots) is checked on the CPU instead, and trains as before."""
    res = train(tiny(data_root, tmp_path / "run", epochs=1, model="poly_mgnet",
                     model_kwargs={"widths": [8, 16], "degree": 2, "init": "spectrum", "spectrum_grid": 8}), **quiet)
    assert res is not None and res.epochs == 1


# -- 8. one trainer per run directory ------------------------------------------------------------------------------
def test_a_locked_run_directory_is_not_touched(data_root, tmp_path):
    run = tmp_path / "run"
    train(tiny(data_root, run, epochs=1), **quiet)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.name != ".lock" and p.is_file()}
    holder = DirectoryLock(run)
    assert holder.acquire()
    try:
        with pytest.raises(RunLockedError, match=f"is being trained by pid {os.getpid()}"):
            train(tiny(data_root, run, epochs=2), resume=True, **quiet)
        with pytest.raises(RunLockedError):
            train(tiny(data_root, run, epochs=1), overwrite=True, **quiet)
    finally:
        holder.release()
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.name != ".lock" and p.is_file()} == before


def test_sweep_skips_runs_locked_by_another_process(data_root, tmp_path):
    from mgcnn.sweep import load_study, run_sweep

    study = load_study({"name": "s", "base": {**TINY, "epochs": 1, "data_dir": str(data_root)},
                        "rows": [{"label": "a"}, {"label": "b", "model_kwargs.group_size": 4}]})
    from mgcnn.sweep import expand

    first = expand(study)[0]
    holder = DirectoryLock(tmp_path / "sw" / "runs" / first.run_id)
    assert holder.acquire()
    try:
        out = run_sweep(study, tmp_path / "sw", log=lambda s: None)
    finally:
        holder.release()
    assert [o.status for o in out] == ["running elsewhere", "finished"]
    assert not (tmp_path / "sw" / "runs" / first.run_id / "checkpoint.pt").exists()


# -- 10. duplicated rows ---------------------------------------------------------------------------------------------
def test_duplicated_rows_are_refused_and_finished_runs_never_get_an_error_file(data_root, tmp_path, capsys):
    study = tmp_path / "s.yaml"
    study.write_text(yaml.safe_dump({"name": "s", "base": {**TINY, "epochs": 1, "data_dir": str(data_root)},
                                     "rows": [{"label": "a"}, {"label": "a again"}]}))
    assert cli.main(["sweep", str(study), "--out", str(tmp_path / "sw")]) == 2
    assert "rows 'a' and 'a again' (seed 0) resolve to the same configuration" in one_error_line(capsys)
    assert not (tmp_path / "sw").exists()


# -- 12. threads -------------------------------------------------------------------------------------------------------
def test_threads_follow_the_cpus_this_process_may_use(monkeypatch):
    from mgcnn.sweep.runner import jobs_threads

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    assert available_cpus() == 1
    assert jobs_threads(2, cpus=2) == 1 and jobs_threads(2, cpus=8) == 4 and jobs_threads(3, cpus=2) == 1


# -- 13. one clear line for every bad input --------------------------------------------------------------------------
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


def test_unknown_model_kwargs_list_the_allowed_ones_before_anything_is_touched(data_root, tmp_path, capsys):
    run = tmp_path / "run"
    train(tiny(data_root, run, epochs=1), **quiet)
    before = sorted(p.name for p in run.iterdir())
    assert cli.main(["train", *TINY_ARGS, "--data-dir", str(data_root), "--out", str(run), "--overwrite",
                     "--model-arg", "group_sizes=4"]) == 2
    line = one_error_line(capsys)
    assert "model_kwargs ['group_sizes'] are not arguments of 'mgiad'; allowed: " in line and "group_size" in line
    assert cli.main(["train", "--out", str(run), "--overwrite", "--model", "no_such_model"]) == 2
    assert "unknown model 'no_such_model'" in one_error_line(capsys)
    assert sorted(p.name for p in run.iterdir()) == before  # --overwrite deleted nothing


def test_a_model_that_cannot_be_built_fails_before_the_run_directory_is_touched(data_root, tmp_path, capsys):
    """The model is built on the meta device before anything else: a bad argument *value* (valid name) or a bad
    model name leaves an existing run byte for byte as it was, and creates no directory."""
    run = tmp_path / "run"
    train(tiny(data_root, run, epochs=1), **quiet)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    assert cli.main(["train", *TINY_ARGS, "--data-dir", str(data_root), "--out", str(run), "--overwrite",
                     "--model-arg", "group_size=3"]) == 2
    assert "group_size=3 does not divide" in one_error_line(capsys)
    assert cli.main(["train", *TINY_ARGS, "--data-dir", str(data_root), "--out", str(run), "--overwrite",
                     "--model", "no_such_model"]) == 2
    assert "unknown model 'no_such_model'" in one_error_line(capsys)
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    fresh = tmp_path / "fresh"
    assert cli.main(["train", *TINY_ARGS, "--data-dir", str(data_root), "--out", str(fresh),
                     "--model-arg", "group_size=3"]) == 2
    one_error_line(capsys)
    assert not fresh.exists()


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


def test_out_that_is_a_file_no_space_and_permission_denied(data_root, tmp_path, capsys, monkeypatch):
    f = tmp_path / "file"
    f.write_text("x")
    assert cli.main(["train", *TINY_ARGS, "--data-dir", str(data_root), "--out", str(f), "--epochs", "1"]) == 2
    assert "is a file, not a directory" in one_error_line(capsys)

    from mgcnn.train import engine

    def full(path, text):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(engine, "atomic_write_text", full)
    assert cli.main(["train", *TINY_ARGS, "--data-dir", str(data_root), "--out", str(tmp_path / "r"),
                     "--epochs", "1"]) == 2
    line = one_error_line(capsys)
    assert line.startswith("mgcnn train: error: No space left on device") and "free some space" in line
    monkeypatch.undo()

    from pathlib import Path

    from mgcnn.data import io

    real = Path.read_bytes

    def denied(self):
        if self.name.startswith("t10k"):
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real(self)

    fm = tmp_path / "fm" / "fashion-mnist"
    fm.mkdir(parents=True)
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (fm / name).write_bytes(b"\0" * 16)
    monkeypatch.setattr(Path, "read_bytes", denied)
    with pytest.raises(Exception, match="permission denied; make it readable") as info:
        io.load_fashion_mnist(tmp_path / "fm", train=False)
    assert "corrupted" not in str(info.value)


def test_cifar_member_holding_floats_is_refused(tmp_path, monkeypatch):
    from mgcnn.data import DatasetCorruptError, load_dataset
    from tests.helpers import cifar_batch

    blobs = write_cifar(tmp_path / "d", archive=False, monkeypatch=monkeypatch)
    d = pickle.loads(blobs["test_batch"])
    d[b"data"] = (d[b"data"] / 255.0).astype("float32")  # 0..1 floats: cast to uint8 they become all-zero images
    (tmp_path / "d" / "cifar10" / "cifar-10-batches-py" / "test_batch").write_bytes(pickle.dumps(d, protocol=2))
    with pytest.raises(DatasetCorruptError, match="'data' holds float32 values, not the 0-255 bytes"):
        load_dataset("cifar10", tmp_path / "d", verify=False)
    assert cifar_batch  # the helper the fixture files come from


# -- 14. files others can read ---------------------------------------------------------------------------------------
def test_run_files_get_the_users_umask_and_stale_parts_are_removed(data_root, tmp_path):
    old = os.umask(0o022)
    try:
        run = tmp_path / "run"
        train(tiny(data_root, run, epochs=2), stop_after=1, **quiet)
        for name in ("checkpoint.pt", "metrics.jsonl", "config.yaml", "env.json"):
            assert stat.S_IMODE((run / name).stat().st_mode) == 0o644, name
        stale = run / ".checkpoint.pt.abc123.part"
        stale.write_bytes(b"half a checkpoint")
        train(tiny(data_root, run, epochs=2), resume=True, **quiet)
        assert not stale.exists()
        atomic_write_text(tmp_path / "x.txt", "x")
        assert stat.S_IMODE((tmp_path / "x.txt").stat().st_mode) == 0o644
    finally:
        os.umask(old)


# -- 15. eval needs only the test split, from any directory ----------------------------------------------------------
def test_eval_reads_only_the_test_split_and_works_from_another_directory(data_root, tmp_path, monkeypatch):
    from mgcnn.train import evaluate_checkpoint

    monkeypatch.chdir(data_root.parent)
    run = tmp_path / "run"
    train(tiny(data_root, run, epochs=1, data_dir=os.path.relpath(data_root)), **quiet)
    stored = load_checkpoint(run / "checkpoint.pt")["config"]["data_dir"]
    assert os.path.isabs(stored) and stored == str(data_root.resolve())
    # an extracted CIFAR folder without its training batches: eval still works
    folder = tmp_path / "test-only" / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    blobs = write_cifar(tmp_path / "full", archive=False, monkeypatch=monkeypatch)
    (folder / "test_batch").write_bytes(blobs["test_batch"])
    monkeypatch.chdir(tmp_path / "full")
    res = evaluate_checkpoint(run / "checkpoint.pt", data_dir=str(tmp_path / "test-only"))
    assert res["n"] == 32
    res = evaluate_checkpoint(run / "checkpoint.pt")  # the stored (resolved) data_dir, from another directory
    assert res["n"] == 32


def test_run_directory_error_is_still_raised_for_existing_runs(data_root, tmp_path):
    train(tiny(data_root, tmp_path / "run", epochs=1), **quiet)
    with pytest.raises(RunDirectoryError, match="already holds a finished run"):
        train(tiny(data_root, tmp_path / "run", epochs=1), **quiet)


def test_a_sweep_whose_data_is_missing_stops_before_the_first_run(tmp_path, capsys):
    study = tmp_path / "s.yaml"
    study.write_text(yaml.safe_dump({"name": "s", "base": {**TINY, "data_dir": str(tmp_path / "nowhere")},
                                     "seeds": 3}))
    assert cli.main(["sweep", str(study), "--out", str(tmp_path / "sw")]) == 2
    err = capsys.readouterr().err
    assert "cifar10: cifar-10-python.tar.gz (or its extracted cifar-10-batches-py/ folder) not found" in err
    assert "Traceback" not in err and not (tmp_path / "sw").exists()  # not one failure per run


def test_a_process_that_did_not_get_the_lock_never_removes_it(tmp_path):
    from mgcnn.fileio import is_locked

    holder, loser = DirectoryLock(tmp_path / "run"), DirectoryLock(tmp_path / "run")
    assert holder.acquire() and not loser.acquire()
    loser.release(remove=True)  # what a failed start does: a no-op without the lock
    assert (tmp_path / "run" / ".lock").exists() and is_locked(tmp_path / "run")
    holder.release(remove=True)  # the holder removes its file while still holding it
    assert not (tmp_path / "run" / ".lock").exists() and not is_locked(tmp_path / "run")


def test_sweep_rechecks_each_run_just_before_it_starts(data_root, tmp_path, monkeypatch):
    from mgcnn.sweep import expand, load_study, run_sweep
    from mgcnn.sweep import runner

    study = load_study({"name": "s", "base": {**TINY, "epochs": 1, "data_dir": str(data_root)},
                        "rows": [{"label": "a"}, {"label": "b", "model_kwargs.group_size": 4}]})
    second = tmp_path / "sw" / "runs" / expand(study)[1].run_id
    real = runner._run_in_process

    def run_and_let_another_sweep_finish_b(cfg, resume):
        out = real(cfg, resume)
        second.mkdir(parents=True, exist_ok=True)
        (second / "result.json").write_text(json.dumps({"test_acc": 1.0}))  # finished elsewhere meanwhile
        return out

    monkeypatch.setattr(runner, "_run_in_process", run_and_let_another_sweep_finish_b)
    out = run_sweep(study, tmp_path / "sw", log=lambda s: None)
    assert [o.status for o in out] == ["finished", "skipped"]
    assert not (second / "error.txt").exists()
