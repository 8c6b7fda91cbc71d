"""The model of a run (mgcnn.train.model): checked before any side effect, so that a bad name, argument or value
leaves the run directory as it was, and a constructor that computes with its weights still trains."""

from mgcnn import cli
from mgcnn.train import train
from tests.helpers import TINY_ARGS, one_error_line, quiet, tiny


def test_a_model_that_computes_in_its_constructor_still_trains(data_root, tmp_path):
    """The model check before any side effect builds on the meta device, also for a constructor that computes with
    its weights on a real device (Poly-MgNet's spectrum-based roots: skipped on meta), which then trains as before."""
    res = train(tiny(data_root, tmp_path / "run", epochs=1, model="poly_mgnet",
                     model_kwargs={"widths": [8, 16], "degree": 2, "init": "spectrum", "spectrum_grid": 8}), **quiet)
    assert res is not None and res.epochs == 1


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
