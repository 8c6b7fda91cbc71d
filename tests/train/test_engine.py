"""The training loop (mgcnn.train.engine) on tiny synthetic CIFAR-10 archives (official format): lr schedules,
channels-last, bf16 and compile, training options, `mgcnn train` and `mgcnn eval`, throughput, progress lines, Ctrl-C,
progressive resizing and flip TTA. What a run writes, resume, checkpoints and divergence have their own files here."""

import contextlib
import json

import pytest
import torch
import yaml

from mgcnn import cli
from mgcnn.train import TrainConfig, evaluate_checkpoint, load_checkpoint, lr_factor, train
from tests.helpers import tiny


def test_lr_schedules():
    cfg = TrainConfig(epochs=10, schedule="cosine", warmup_epochs=0)
    assert lr_factor(cfg, 0) == 1 and lr_factor(cfg, 5) == pytest.approx(0.5) and lr_factor(cfg, 10) == 0
    cfg = TrainConfig(epochs=100, schedule="step", step_size=25, gamma=0.1, warmup_epochs=0)
    assert [lr_factor(cfg, e) for e in (0, 24.9, 25, 60)] == pytest.approx([1, 1, 0.1, 0.01])
    cfg = TrainConfig(epochs=4, schedule="onecycle", warmup_epochs=1)
    assert [lr_factor(cfg, e) for e in (0.5, 1, 2.5, 4)] == pytest.approx([0.5, 1, 0.5, 0])


def test_equivalence_of_channels_last_bf16_and_compile_on_one_step():
    import mgcnn

    torch.manual_seed(0)
    ref = mgcnn.create_model("mgiad_l3_c16_g8", level1_transfer=False)
    x, y = torch.randn(8, 3, 16, 16), torch.randint(0, 10, (8,))

    def step(model, x, amp=None):
        model.zero_grad()
        with torch.autocast("cpu", dtype=amp, enabled=amp is not None):
            loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters()]

    loss0, g0 = step(ref, x)
    cl = mgcnn.create_model("mgiad_l3_c16_g8", level1_transfer=False)
    cl.load_state_dict(ref.state_dict())
    cl.to(memory_format=torch.channels_last)
    loss1, g1 = step(cl, x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(loss1, loss0, rtol=1e-5, atol=1e-5)
    for a, b in zip(g0, g1):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)
    loss2, g2 = step(cl, x, amp=torch.bfloat16)
    assert abs(loss2 - loss0) < 0.05 * abs(loss0)  # bf16 keeps ~3 significant digits
    cos = torch.nn.functional.cosine_similarity(torch.cat([g.flatten() for g in g0]),
                                                torch.cat([g.flatten() for g in g2]), dim=0)
    # bf16 keeps 8 mantissa bits through ~40 stacked convolutions and batch norms: directions agree, not digits.
    assert cos > 0.9


def test_compile_matches_eager():
    import mgcnn

    # A one-level MGiaD keeps the compile time of the test small; the graph has the same kinds of ops.
    torch.manual_seed(0)
    eager = mgcnn.create_model("mgiad", widths=[16], coarse_channels=4, group_size=4, level1_transfer=False)
    x, y = torch.randn(8, 3, 8, 8), torch.randint(0, 10, (8,))
    compiled = torch.compile(eager)
    losses, grads = [], []
    for m in (eager, compiled):
        eager.zero_grad()
        loss = torch.nn.functional.cross_entropy(m(x), y)
        loss.backward()
        losses.append(loss.detach())
        grads.append([p.grad.clone() for p in eager.parameters()])
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-4, atol=1e-5)
    for a, b in zip(*grads):
        torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-5)


def test_training_options_run_end_to_end(data_root, tmp_path):
    for i, extra in enumerate([dict(channels_last=False), dict(amp="bf16"), dict(amp="fp16")]):
        res = train(tiny(data_root, tmp_path / f"r{i}", epochs=1, **extra), progress=False, log=lambda s: None)
        assert res.epochs == 1 and 0 <= res.test_acc <= 100


def test_cli_train_eval_and_overrides(data_root, tmp_path, capsys):
    out = tmp_path / "cli-run"
    argv = ["train", "--model", "mgiad", "--dataset", "cifar10", "--data-dir", str(data_root), "--epochs", "1",
            "--batch-size", "16", "--out", str(out), "--model-arg", "widths=[8, 16]", "--model-arg",
            "coarse_channels=4", "--set", "model_kwargs.group_size=2", "--set", "label_smoothing=0.1",
            "--no-channels-last", "--threads", "1", "--set", "schedule=step",  # step: a run can be extended
            "--set", "train_size=null"]  # (with progressive resizing, growing it would move the full-size epoch)
    assert cli.main(argv) == 0
    assert "final test accuracy" in capsys.readouterr().out
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["model_kwargs"] == {"widths": [8, 16], "coarse_channels": 4, "group_size": 2}
    assert saved["label_smoothing"] == 0.1 and saved["channels_last"] is False
    assert cli.main(argv) == 2  # refuses the finished run
    assert "already holds a finished run" in capsys.readouterr().err
    assert cli.main(["train", "--resume", str(out), "--epochs", "2"]) == 0  # extend the finished run
    assert json.loads((out / "result.json").read_text())["epochs"] == 2
    res = evaluate_checkpoint(out / "checkpoint.pt")
    assert res["epoch"] == 2 and res["test_acc"] == pytest.approx(
        json.loads((out / "result.json").read_text())["test_acc"])
    assert cli.main(["eval", str(out / "checkpoint.pt")]) == 0
    assert "test accuracy" in capsys.readouterr().out
    assert cli.main(["train", "--set", "nonsense=1"]) == 2
    assert "unknown config field(s) ['nonsense']" in capsys.readouterr().err


def test_images_per_sec_is_total_images_over_total_time(data_root, tmp_path):
    train(tiny(data_root, tmp_path / "run", epochs=3), progress=False, log=lambda s: None)
    metrics = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert all(m["images"] == 48 for m in metrics)  # 60 images in the tiny archive: 3 full batches of 16
    expected = sum(m["images"] for m in metrics) / sum(m["seconds"] for m in metrics)
    assert result["images_per_sec"] == pytest.approx(expected, rel=1e-9)
    assert result["seconds"] == pytest.approx(sum(m["seconds"] for m in metrics), rel=1e-9)


def test_progress_lines_when_output_is_not_a_terminal(data_root, tmp_path):
    lines = []
    train(tiny(data_root, tmp_path / "run"), log=lines.append, progress_every=1e-9)  # pytest's stderr: no TTY
    steps = [x for x in lines if " step " in x]
    assert len(steps) == 2 * 3  # every step of both epochs (3 batches of 16), as the interval is ~0
    assert steps[0].startswith("epoch 1/2 step 1/3") and steps[-1].startswith("epoch 2/2 step 3/3")
    for x in steps:
        assert "loss " in x and " acc " in x and "lr " in x and "run ETA " in x
    lines.clear()
    train(tiny(data_root, tmp_path / "quiet"), log=lines.append, progress_every=0)
    assert not [x for x in lines if " step " in x]


def test_progress_bar_shows_running_loss_lr_and_run_eta():
    from mgcnn.train.progress import Progress

    class Tty:
        def __init__(self):
            self.text = ""

        def isatty(self):
            return True

        def write(self, s):
            self.text += s

        def flush(self):
            pass

    stream = Tty()
    bar = Progress(range(20), epoch=1, epochs=4, first_epoch=0, eval_seconds=2.0, enabled=True, every=30, say=print,
                   stream=stream)
    for step, _ in enumerate(bar):
        bar.update(step + 1, torch.tensor([0.5 * (step + 1), 0.25 * (step + 1), step + 1.0]), 0.05)
    bar.close()
    assert bar.bar is not None and not bar.plain
    assert bar.bar.postfix.startswith("loss 0.5000 acc 25.00% lr 0.05 run ETA ")  # shown at tqdm's next redraw
    assert 0 < bar.eta(10) < float("inf")


def test_ctrl_c_keeps_the_last_checkpoint_and_says_how_to_resume(data_root, tmp_path, monkeypatch, capsys):
    from mgcnn.train import TrainingInterrupted, engine

    def log(line):  # Ctrl-C right after epoch 1's line, i.e. at the start of epoch 2, after epoch 1's checkpoint
        if line.startswith("epoch   1/"):
            raise KeyboardInterrupt

    run = tmp_path / "run"
    with pytest.raises(TrainingInterrupted) as info:
        train(tiny(data_root, run), progress=False, log=log)
    assert info.value.epochs_done == 1 and f"--resume {run}" in str(info.value)
    assert load_checkpoint(run / "checkpoint.pt")["epoch"] == 1

    real_evaluate, calls = engine.evaluate, []

    def evaluate(*args, **kwargs):  # Ctrl-C in epoch 2, after its training steps, before its checkpoint
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(engine, "evaluate", evaluate)  # the CLI has no log hook: a Ctrl-C inside the epoch
    args = ["train", "--data-dir", str(data_root), "--out", str(tmp_path / "cli"), "--dataset", "cifar10", "--model",
            "mgiad", "--model-arg", "widths=[8, 16]", "--model-arg", "coarse_channels=4", "--model-arg",
            "group_size=2", "--batch-size", "16", "--epochs", "2", "--threads", "1", "--set", "eval_every=1"]
    assert cli.main(args) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0]
    assert err[0].startswith("mgcnn train: interrupted during epoch 2/2") and f"--resume {tmp_path / 'cli'}" in err[0]
    monkeypatch.setattr(engine, "evaluate", real_evaluate)
    assert cli.main(["train", "--resume", str(tmp_path / "cli")]) == 0
    assert json.loads((tmp_path / "cli" / "result.json").read_text())["epochs"] == 2


def test_ctrl_c_before_the_first_epoch_says_there_is_nothing_to_resume(data_root, tmp_path):
    from mgcnn.train import TrainingInterrupted

    def log(line):  # the first progress line comes during epoch 1's first steps
        if line.startswith("epoch 1/2 step"):
            raise KeyboardInterrupt

    with pytest.raises(TrainingInterrupted, match="before the first epoch finished; nothing to resume"):
        train(tiny(data_root, tmp_path / "run"), progress=True, progress_every=1e-9, log=log)
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_progressive_resizing_evaluates_every_nth_epoch_and_the_last(data_root, tmp_path):
    from torch.nn.modules.module import register_module_forward_pre_hook

    from mgcnn.models import MultigridNet

    sizes = []

    def record(module, inp):  # every forward of the run's model (a torch-wide hook: no patching of mgcnn)
        if isinstance(module, MultigridNet):
            sizes.append((module.training, inp[0].shape[-1]))

    handle = register_module_forward_pre_hook(record)
    try:
        cfg = tiny(data_root, tmp_path / "run", epochs=3, train_size=24, full_size_epochs=1, eval_every=2)
        res = train(cfg, progress=False, log=lambda s: None)
    finally:
        handle.remove()
    trained = [s for training, s in sizes if training]
    steps = len(trained) // 3
    assert steps >= 1 and trained == [24] * (2 * steps) + [32] * steps  # the last epoch at the full size
    assert {s for training, s in sizes if not training} == {32}  # evaluation always at the full size
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert ["test_acc" in h for h in lines] == [False, True, True]
    assert res.test_acc == lines[-1]["test_acc"] and res.best_epoch in (2, 3)


def test_flip_tta_averages_the_logits_of_the_image_and_its_mirror_image():
    from mgcnn.data import DeviceLoader
    from mgcnn.train import evaluate

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3), torch.nn.Flatten(), torch.nn.LazyLinear(4))
    images, labels = torch.randint(0, 256, (20, 1, 8, 8), dtype=torch.uint8), torch.randint(0, 4, (20,))
    loader = DeviceLoader(images, labels, 7, mean=(0.5,), std=(0.25,), train=False)
    model(next(iter(loader))[0])  # materialise the lazy layer
    x = (images.float() / 255 - 0.5) / 0.25
    with torch.no_grad():
        mean = 0.5 * (model(x) + model(x.flip(3)))
    res = evaluate(model, loader, contextlib.nullcontext, tta_flip=True)
    assert res.acc == pytest.approx(100.0 * (mean.argmax(1) == labels).float().mean().item())
    assert res.loss == pytest.approx(torch.nn.functional.cross_entropy(mean, labels).item(), rel=1e-5)
    plain = evaluate(model, loader, contextlib.nullcontext)
    assert plain.loss != pytest.approx(res.loss)


def test_train_takes_a_config_or_a_mapping_of_its_fields_and_nothing_else(data_root, tmp_path):
    """Issue item 19: train(dict) raised AttributeError."""
    from tests.helpers import TINY, quiet

    with pytest.raises(TypeError, match=r"train\(\) takes a TrainConfig"):
        train("runs/x", **quiet)
    res = train({**TINY, "data_dir": str(data_root), "out": str(tmp_path / "run"), "epochs": 1}, **quiet)
    assert res.epochs == 1
