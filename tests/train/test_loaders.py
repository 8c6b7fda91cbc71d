"""The loaders of a run: subsets are what the config records, never silently fewer images."""

from mgcnn import cli
from tests.helpers import TINY_ARGS, one_error_line


def test_a_subset_larger_than_its_split_is_refused_before_anything_is_written(data_root, tmp_path, capsys):
    """Issue item 13: --train-subset/--test-subset above the split were clamped while the config recorded them."""
    for flag, n, what in (("--train-subset", "1000", "train_subset=1000"), ("--test-subset", "33", "test_subset=33")):
        out = tmp_path / flag.strip("-")
        assert cli.main(["train", *TINY_ARGS, "--data-dir", str(data_root), "--out", str(out), flag, n]) == 2
        line = one_error_line(capsys)
        assert what in line and "larger than the" in line and "use at most" in line
        assert not out.exists()
