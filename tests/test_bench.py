"""mgcnn bench: FLOP counts, throughput fields, ratios, isolation in subprocesses."""

import json

from mgcnn import cli
from mgcnn.bench import bench_model, run_bench


def test_bench_model_counts_known_flops():
    r = bench_model("resnet20", batch_size=4, warmup=0, steps=1)
    assert 40.4e6 < r["fwd_macs_per_img"] < 40.8e6  # the well-known ~40.6 M MACs of CIFAR ResNet20
    assert r["fwd_flops_per_img"] == 2 * r["fwd_macs_per_img"]
    assert r["train_flops_per_img"] == 3 * r["fwd_flops_per_img"]  # backward = two forwards (input + weight grads)
    assert r["train_img_s"] > 0 and r["infer_img_s"] > r["train_img_s"] and r["peak_mem_mb"] > 0


def test_grouped_models_count_fewer_flops():
    dense = bench_model("mgnet", batch_size=2, warmup=0, steps=1)
    grouped = bench_model("mgnet", batch_size=2, warmup=0, steps=1, channels_last=False)
    assert dense["fwd_flops_per_img"] == grouped["fwd_flops_per_img"]  # layout does not change the maths
    g8 = bench_model("mgnet_ab_g8", batch_size=2, warmup=0, steps=1)
    assert g8["fwd_flops_per_img"] < 0.2 * dense["fwd_flops_per_img"]


def test_run_bench_ratios_and_cli_json(capsys):
    report = run_bench(["resnet20", "mgiad_l3_c16_g8"], isolate=True, batch_size=4, warmup=0, steps=1)
    rows = {r["model"]: r for r in report["rows"]}
    assert rows["resnet20"]["train_speed_vs_resnet20"] == 1.0
    assert report["ceiling_gflops"] > 0 and 0 < rows["mgiad_l3_c16_g8"]["train_efficiency"]
    assert cli.main(["bench", "--models", "mgiad_l3_c16_g4", "--batch-size", "2", "--steps", "1", "--warmup", "0",
                     "--json", "--no-isolate"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["rows"][0]["model"] == "mgiad_l3_c16_g4"
    assert cli.main(["bench", "--models", "resnet21"]) == 2  # unknown names fail before any measurement
    assert "unknown model 'resnet21'" in capsys.readouterr().err


def test_bench_records_speed_settings_and_expands_patterns(capsys):
    from mgcnn.bench import expand_models

    names = expand_models(["mgiad_l3_c16_g*", "resnet20", "mgiad_l3_c16_g4"])
    assert names == ["mgiad_l3_c16_g16", "mgiad_l3_c16_g4", "mgiad_l3_c16_g8", "resnet20"]  # sorted, deduplicated
    fast = bench_model("mgiad_l3_c16_g4", batch_size=2, warmup=0, steps=1)
    ref = bench_model("mgiad_l3_c16_g4", batch_size=2, warmup=0, steps=1, fast_paths=False, autotune=False)
    assert fast["fast_paths"] and fast["autotune"] and not ref["fast_paths"] and not ref["autotune"]
    # the fast path skips the recomputed FAS residual convolutions and runs the pair transfers elementwise
    assert fast["fwd_flops_per_img"] < ref["fwd_flops_per_img"]
    stock = bench_model("mgiad_l3_c16_g4", batch_size=2, warmup=0, steps=1, cpu_kernels=False)
    assert stock["cpu_kernels"] is False and stock["plans_cpu"] == 0 and "plans_cpu" in fast
    assert cli.main(["bench", "--models", "nosuchmodel*"]) == 2
    assert "no registered model matches" in capsys.readouterr().err


def test_flops_criterion_lists_cheap_mgiad_models():
    from mgcnn.bench import _flops_criterion

    rows = [{"model": "mgnet_ab", "fwd_flops_per_img": 100.0, "train_img_s": 50.0},
            {"model": "mgiad_a", "fwd_flops_per_img": 60.0, "train_img_s": 60.0},
            {"model": "mgiad_b", "fwd_flops_per_img": 30.0, "train_img_s": 40.0},
            {"model": "mgiad_c", "fwd_flops_per_img": 61.0, "train_img_s": 10.0}]  # above 60%: not listed
    (line,) = _flops_criterion(rows)
    assert "1 of 2 train faster" in line and "mgiad_a 1.20x" in line and "mgiad_b 0.80x" in line
    assert "mgiad_c" not in line


def test_bench_options_are_checked_with_one_line(capsys):
    """Issue item 18: `bench --batch-size 0` / `--steps 0` failed with a traceback."""
    for args, what in ((["--batch-size", "0"], "batch-size=0"), (["--steps", "0"], "steps=0"),
                       (["--image-size", "2"], "image-size=2")):
        assert cli.main(["bench", "--models", "resnet20", "--no-isolate", *args]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and what in err[0] and "Traceback" not in err[0], err


def test_bench_writes_its_table_as_csv_with_the_machine(tmp_path, capsys):
    import csv

    import torch

    out = tmp_path / "bench.csv"
    assert cli.main(["bench", "--models", "resnet20", "mgiad_l3_c16_g8", "--no-isolate", "--steps", "1",
                     "--warmup", "1", "--batch-size", "4", "--csv", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert [r["model"] for r in rows] == ["resnet20", "mgiad_l3_c16_g8"]
    assert all(r["torch"] == torch.__version__ and r["device"] == "cpu" and float(r["train_img_s"]) > 0
               and r["platform"] and r["batch_size"] == "4" for r in rows)
    assert f"wrote {out}" in capsys.readouterr().err


def test_rounds_interleave_the_models_and_report_medians_of_the_rounds_ratios(monkeypatch, capsys):
    import mgcnn.bench as bench_mod

    order = []
    speeds = {"mgnet_ab": iter([100.0, 50.0, 80.0]), "mgiad_x": iter([150.0, 100.0, 100.0])}  # drifting machine

    def fake_measure(name, isolate, kw):
        order.append(name)
        img_s = next(speeds[name])
        return {"model": name, "params": 1, "fwd_flops_per_img": 1e6, "train_img_s": img_s, "infer_img_s": 2 * img_s,
                "train_gflops": img_s * 3e-3, "infer_gflops": img_s * 2e-3, "peak_mem_mb": 10.0}

    monkeypatch.setattr(bench_mod, "_measure", fake_measure)
    report = run_bench(["mgnet_ab", "mgiad_x"], rounds=3, warmup=0, steps=1)
    assert order == ["mgnet_ab", "mgiad_x"] * 3
    row = {r["model"]: r for r in report["rows"]}["mgiad_x"]
    assert row["train_img_s"] == 100.0 and row["train_img_s_rounds"] == [150.0, 100.0, 100.0]
    assert row["train_speed_vs_mgnet_ab"] == 1.5  # the rounds' ratios 1.5, 2.0, 1.25; the ratio of medians is 1.25
    assert report["rounds"] == 3 and "rounds: 3" in bench_mod.format_table(report)
    assert cli.main(["bench", "--models", "resnet20", "--rounds", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "rounds=0" in err[0]
