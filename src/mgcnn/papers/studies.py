"""The built-in studies (one per paper table, and more), generated from the paper rows in ``mgcnn.papers.tables``.

    python -m mgcnn.papers.studies        # rewrites src/mgcnn/papers/study_files/*.yaml

``mgcnn sweep NAME`` finds these files by name (``mgcnn.sweep.builtin_studies``). The tests check that the committed
files equal what this produces, so the YAML data and the registry agree.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from .tables import MGIAD_ROWS, POLY_ROWS

STUDY_DIR = Path(__file__).parent / "study_files"
TABLES = {
    "I": "Table I: ResNet and MgNet baselines, CIFAR-10",
    "II": "Table II: MGiaD c_K and g_s, CIFAR-10",
    "III": "Table III: MGiaD on FashionMNIST, 4 levels",
    "IV": "Table IV: MGiaD on FashionMNIST, 3 levels",
    "V": "Table V: MGiaD channel scaling, CIFAR-100",
    "VI": "Table VI: grouped MgNet, CIFAR-10",
    "VII": "Table VII: MGiaD channel scaling, CIFAR-10",
    "VIII": "Table VIII: MGiaD post-smoothing, CIFAR-10",
    "IX": "Table IX: MGiaD scaling and post-smoothing, CIFAR-100",
}


def _paper(row) -> dict:
    d = {"table": row.table, "weights_k": row.reported_k, "test_acc": row.test_acc, "test_std": row.test_std,
         "train_acc": row.train_acc}
    if row.known_error:
        d["known_error"] = row.known_error
    return {k: v for k, v in d.items() if v is not None}


def studies() -> dict[str, dict]:
    out = {}
    for table, title in TABLES.items():
        rows = [r for r in MGIAD_ROWS if r.table == table]
        dataset = rows[0].dataset
        out[f"mgiad-table-{table}"] = {
            "name": f"mgiad-table-{table}",
            "description": f"MGiaD paper {title}. The paper's recipe; the paper reports mean ± std over several runs.",
            "base": {"recipe": "mgiad-fmnist" if dataset == "fashion-mnist" else "mgiad", "dataset": dataset},
            "seeds": 3,
            "rows": [{"label": r.label, "model": r.model, "paper": _paper(r)} for r in rows],
        }
    out["poly-mgnet"] = {
        "name": "poly-mgnet",
        "description": "Poly-MgNet degrees and widths, with the MgNet rows at the same widths, with the released "
                       "code's recipe (CIFAR-10). The paper's tables were not available: weights are the released "
                       "code's counts, no accuracies.",
        "base": {"recipe": "poly-mgnet", "dataset": "cifar10"},
        "seeds": 3,
        "rows": [{"label": r.label, "model": r.model, "paper": {"weights_k": r.reported_k}} for r in POLY_ROWS],
    }
    out.update(poly_studies())
    out["mgiad-figure-7"] = figure7_study()
    out["mgiad-figure-7-fmnist"] = figure7_fmnist_study()
    iv = [{"label": r.label, "model": r.model, "paper": _paper(r)} for r in MGIAD_ROWS if r.table == "IV"]
    for name, description, base, seeds in (
        ("fmnist-table4-cpu", ("The Table IV models on FashionMNIST with a budget our 2-core CPU affords: the short "
                               "recipe, the first 10,000 training images of a fixed shuffle, 3 epochs, full test set, "
                               "2 seeds."),
         {"recipe": "short", "dataset": "fashion-mnist", "train_subset": 10000, "epochs": 3}, 2),
        ("fmnist-table4-speedrun", ("The Table IV models on FashionMNIST with the speedrun recipe of the main job "
                                    "as it was before Muon (recipe speedrun-sgd; all 60,000 training images, the "
                                    "budget that trains MGiaD c_K=16 g_s=8 in 15 minutes on our 2-core CPU)."),
         {"recipe": "speedrun-sgd", "dataset": "fashion-mnist"}, 1),
        ("fmnist-table4-speedrun-muon", ("The Table IV models on FashionMNIST with the speedrun recipe of the main "
                                         "job (Muon for the 3x3 convolutions; all 60,000 training images, the budget "
                                         "that trains MGiaD c_K=16 g_s=8 in 15 minutes on our 2-core CPU)."),
         {"recipe": "speedrun", "dataset": "fashion-mnist"}, 1),
    ):
        out[name] = {"name": name, "description": description, "base": base, "seeds": seeds,
                     "rows": [dict(r) for r in iv]}
    return out


# -- Poly-MgNet's ablations (its abstract: initial coefficients, degree, BN/ReLU placement, real vs complex roots,
# channel scaling against ResNet and MgNet). Each study exists twice: at the released code's CIFAR-10 recipe (for a
# GPU or a cluster) and as "-fmnist", a FashionMNIST short budget that runs on our 2-core CPU: the short recipe on
# 5,000 training images for 3 epochs, the models at 1/sqrt(8) of the paper's widths ([22, 44, 88, 88]).
_POLY_CIFAR = {"recipe": "poly-mgnet", "dataset": "cifar10"}
_POLY_FMNIST = {"recipe": "short", "dataset": "fashion-mnist", "train_subset": 5000, "epochs": 3,
                "model_kwargs": {"widths": [22, 44, 88, 88]}}
_SCALES = {"1/sqrt(8)": 2 ** -1.5, "1/sqrt(2)": 2 ** -0.5, "1": 1.0, "sqrt(2)": 2 ** 0.5, "sqrt(8)": 2 ** 1.5}


def _poly_rows(study: str) -> list[dict]:
    paper = {r.model: {"weights_k": r.reported_k} for r in POLY_ROWS}
    if study == "degree":
        return [{"label": f"q_{d}", "model": f"poly_mgnet_q{d}", "paper": paper[f"poly_mgnet_q{d}"]}
                for d in (2, 4, 6, 8)]
    if study == "init":
        return [{"label": "xavier (released)", "model": "poly_mgnet_q2", "model_kwargs.init": "xavier"},
                {"label": "uniform U(1,2) (released U,a,b)", "model": "poly_mgnet_q2", "model_kwargs.init": "uniform"},
                *({"label": f"spectrum, {st}", "model": "poly_mgnet_q2", "model_kwargs.init": "spectrum",
                   "model_kwargs.spectrum_strategy": st} for st in ("paper", "minimax", "least-squares"))]
    if study == "placement":
        return [{"label": f"residual {res}, update {pl}", "model": "poly_mgnet_q4", "model_kwargs.residual": res,
                 "model_kwargs.placement": pl}
                for res in ("regular", "bn_only", "plain")
                for pl in ("regular", "outside", "relu-outside", "bn-inside")]
    if study == "roots":
        return [{"label": f"q_6, complex root {mode}", "model": "poly_mgnet_q6", "model_kwargs.complex_root": mode}
                for mode in ("learnable", "real")]
    raise ValueError(study)


def _scaling_rows(scales: dict[str, float]) -> list[dict]:
    rows = []
    for name, s in scales.items():
        for family, label in (("poly_mgnet", "Poly-MgNet^{q_2}"), ("mgnet", "MgNet^{A,B}"), ("resnet18", "ResNet18")):
            rows.append({"label": f"{label} x {name}", "model": family, "model_kwargs.channel_scale": s})
    return rows


def poly_studies() -> dict[str, dict]:
    """The Poly-MgNet ablation studies, each at the CIFAR-10 recipe and as a FashionMNIST short budget."""
    what = {"degree": "the polynomial degree q_2-q_8 (the paper's widths)",
            "init": "the initial coefficients of Poly-MgNet^{q_2}: the released Xavier and uniform rules, and "
                    "roots from the spectrum of A with each strategy",
            "placement": "where BatchNorm and ReLU sit (residual type x update placement) in Poly-MgNet^{q_4}",
            "roots": "real versus complex (learnable imaginary part) quadratic roots in Poly-MgNet^{q_6}"}
    out = {}
    for key, text in what.items():
        out[f"poly-mgnet-{key}"] = {
            "name": f"poly-mgnet-{key}", "description": f"Poly-MgNet ablation: {text}. The released code's CIFAR-10 "
                                                        "recipe (without its AutoAugment, see the recipe's note).",
            "base": dict(_POLY_CIFAR), "seeds": 3, "rows": _poly_rows(key)}
        out[f"poly-mgnet-{key}-fmnist"] = {
            "name": f"poly-mgnet-{key}-fmnist",
            "description": f"Poly-MgNet ablation on a CPU budget: {text}; FashionMNIST, the short recipe on 5,000 "
                           "training images for 3 epochs, widths [22, 44, 88, 88] (1/sqrt(8) of the paper's).",
            "base": {**_POLY_FMNIST, "model_kwargs": dict(_POLY_FMNIST["model_kwargs"])}, "seeds": 2,
            "rows": [{k: v for k, v in r.items() if k != "paper"} for r in _poly_rows(key)]}
    out["poly-mgnet-scaling"] = {
        "name": "poly-mgnet-scaling",
        "description": "Poly-MgNet^{q_2}, MgNet^{A,B} and ResNet18 at the paper's channel scalings (widths by "
                       "mgcnn.layers.common.scale_widths). The released code's CIFAR-10 recipe.",
        "base": dict(_POLY_CIFAR), "seeds": 3, "rows": _scaling_rows(_SCALES)}
    cheap = {k: v for k, v in _SCALES.items() if v < 1}
    out["poly-mgnet-scaling-fmnist"] = {
        "name": "poly-mgnet-scaling-fmnist",
        "description": "The channel-scaling study on a CPU budget: the two smaller scalings only, FashionMNIST, the "
                       "short recipe on 5,000 training images for 3 epochs.",
        "base": {k: v for k, v in _POLY_FMNIST.items() if k != "model_kwargs"}, "seeds": 2,
        "rows": _scaling_rows(cheap)}
    return out


def figure7_study() -> dict:
    """MGiaD's Figure 7: CIFAR-10 accuracy against #weights for MGiaD (one series per g_s over c_K), MgNet, grouped
    MgNet, MGIC and ResNet, with the paper's points where its tables have them (the figure itself is a plot of
    Tables I, II and VI plus MGIC, whose accuracy the paper gives only in the figure)."""
    rows = []
    for r in MGIAD_ROWS:
        if r.table == "II" and "lambda=1" in r.label:
            rows.append({"label": r.label, "series": f"MGiaD g_s={r.label.split('g_s=')[1].split()[0]}",
                         "model": r.model, "paper": _paper(r)})
        elif r.table == "I":
            series = "ResNet" if r.model.startswith("resnet") else "MgNet"
            rows.append({"label": r.label, "series": series, "model": r.model, "paper": _paper(r)})
        elif r.table == "VI" and "_g" in r.model:
            rows.append({"label": r.label, "series": "grouped MgNet^{A,B}", "model": r.model, "paper": _paper(r)})
    rows.append({"label": "MGIC", "series": "MGIC", "model": "mgic"})
    return {"name": "mgiad-figure-7", "seeds": 3, "base": {"recipe": "mgiad", "dataset": "cifar10"},
            "description": "MGiaD paper Figure 7: CIFAR-10 accuracy against #weights; one series per g_s (over c_K), "
                           "MgNet, grouped MgNet, MGIC and ResNet, the paper's points beside ours.",
            "rows": rows}


def figure7_fmnist_study() -> dict:
    """Figure 7's models and series on a budget our 2-core CPU affords: FashionMNIST, the short recipe on the first
    5,000 training images of a fixed shuffle for 2 epochs, 2,000 test images, one seed (about 70 minutes on one core:
    the 26 models do 9.5 GFLOP per 28x28 image forward together). The figure's own points are CIFAR-10, so the rows
    carry none; ``mgcnn report`` still shows the paper's FashionMNIST values (Table III, its full budget) beside
    the models that table has. What this reproduces is the figure's shape: accuracy against #weights per series."""
    rows = [{k: v for k, v in r.items() if k != "paper"} for r in figure7_study()["rows"]]
    return {"name": "mgiad-figure-7-fmnist", "seeds": 1,
            "base": {"recipe": "short", "dataset": "fashion-mnist", "train_subset": 5000, "epochs": 2,
                     "test_subset": 2000},
            "description": "MGiaD paper Figure 7's models and series on a CPU budget: FashionMNIST, the short recipe "
                           "on 5,000 training images for 2 epochs, 2,000 test images, one seed; the paper's points "
                           "only where its FashionMNIST Table III has the model (the figure's are CIFAR-10).",
            "rows": rows}


def render(study: dict) -> str:
    return yaml.safe_dump(study, sort_keys=False, allow_unicode=True, width=120)


def main() -> None:
    STUDY_DIR.mkdir(exist_ok=True)
    for name, study in studies().items():
        (STUDY_DIR / f"{name}.yaml").write_text(render(study))
        print(f"wrote {STUDY_DIR / name}.yaml ({len(study['rows'])} rows)")


if __name__ == "__main__":
    main()
