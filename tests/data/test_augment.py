"""AutoAugment on batches (mgcnn.data.augment): each op against Pillow, the policy's table and statistics, its
reproducibility, and the loader's use of it.

Every op is compared with PIL's on small random uint8 images, RGB and "L", and required to be *equal*: the pointwise
and colour ops reproduce PIL's integer and float32 arithmetic (its truncations and roundings), and the geometric ops
run with nearest interpolation on both sides and reproduce PIL's 16.16 fixed-point coordinates, so no tolerance is
needed (the largest absolute difference is 0 for every op, level and sign tested).
"""

import numpy as np
import pytest
import torch

from mgcnn.data import DeviceLoader
from mgcnn.data import augment as A
from mgcnn.data.loader import epoch_generator

PIL = pytest.importorskip("PIL")
from PIL import Image, ImageEnhance, ImageOps

GRAY = 128


def _images(c: int, h: int = 32, w: int = 32, n: int = 4, lo: int = 0, hi: int = 256, seed: int = 0) -> np.ndarray:
    """(n, H, W, C) uint8."""
    return np.random.default_rng(seed).integers(lo, hi, size=(n, h, w, c), dtype=np.uint8)


def _image_sets(c: int) -> list[np.ndarray]:
    nearly_flat = np.full((2, 32, 32, c), 200, np.uint8)
    nearly_flat[:, 0, 0] = 3  # Equalize's step is 0: left as it is
    return [_images(c), _images(c, lo=40, hi=200, seed=1), _images(c, 7, 9, seed=2), _images(c, 28, 28, seed=3),
            _images(c, lo=0, hi=2, seed=4), _images(c, n=2, lo=99, hi=100), nearly_flat]


def _tensor(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(a).permute(0, 3, 1, 2).float()


def _pil_batch(a: np.ndarray, fn) -> torch.Tensor:
    out = []
    for img in a:
        res = np.asarray(fn(Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img)))
        out.append(res[..., None] if res.ndim == 2 else res)
    return _tensor(np.stack(out))


def _fill(im):
    return (GRAY,) * 3 if im.mode == "RGB" else GRAY


def _rotate_over_gray(im, degrees):
    """The released code's rotation: rotate the RGBA image (nearest), then lay it over gray 128."""
    rgba = im.convert("RGBA").rotate(degrees)
    return Image.composite(rgba, Image.new("RGBA", rgba.size, (GRAY,) * 4), rgba).convert(im.mode)


def _pil_op(op: str, value: float):
    """PIL's version of ``op`` at the signed magnitude ``value`` (as the released code calls it)."""
    aff = lambda co: lambda im: im.transform(im.size, Image.AFFINE, co, Image.NEAREST, fillcolor=_fill(im))
    return {
        "ShearX": lambda: aff((1, value, 0, 0, 1, 0)),
        "ShearY": lambda: aff((1, 0, 0, value, 1, 0)),
        "TranslateX": lambda: aff((1, 0, value, 0, 1, 0)),
        "TranslateY": lambda: aff((1, 0, 0, 0, 1, value)),
        "Rotate": lambda: lambda im: _rotate_over_gray(im, value),
        "Color": lambda: lambda im: ImageEnhance.Color(im).enhance(1 + value),
        "Contrast": lambda: lambda im: ImageEnhance.Contrast(im).enhance(1 + value),
        "Sharpness": lambda: lambda im: ImageEnhance.Sharpness(im).enhance(1 + value),
        "Brightness": lambda: lambda im: ImageEnhance.Brightness(im).enhance(1 + value),
        "Posterize": lambda: lambda im: ImageOps.posterize(im, int(value)),
        "Solarize": lambda: lambda im: ImageOps.solarize(im, value),
        "AutoContrast": lambda: ImageOps.autocontrast,
        "Equalize": lambda: ImageOps.equalize,
        "Invert": lambda: ImageOps.invert,
    }[op]()


def _cases(op: str):
    """(level, sign) pairs: every level, both signs for the signed ops."""
    if op in A.NO_MAGNITUDE:
        return [(None, 1)]
    return [(lv, s) for lv in range(A.LEVELS) for s in ((1, -1) if op in A.SIGNED_OPS else (1,))]


@pytest.mark.parametrize("channels", [3, 1])
@pytest.mark.parametrize("op", A.OPS)
def test_each_op_equals_pil(op, channels):
    sets = _image_sets(channels) if op not in ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate") else [
        _images(channels), _images(channels, 28, 28, seed=3), _images(channels, 7, 9, seed=2)]
    for a in sets:
        x = _tensor(a)
        for level, sign in _cases(op):
            value = sign * A.magnitude(op, level, x.shape[2], x.shape[3])
            ours = A.apply_op(x, op, level, sign)
            theirs = _pil_batch(a, _pil_op(op, value))
            diff = (ours - theirs).abs().max().item()
            assert diff == 0, f"{op} level {level} sign {sign} on {tuple(x.shape)}: max |ours - PIL| = {diff}"


def test_magnitudes_are_the_papers_ranges():
    assert A.magnitude("ShearX", 9, 32, 32) == 0.3 and A.magnitude("ShearY", 0, 32, 32) == 0.0
    assert A.magnitude("TranslateX", 9, 32, 32) == pytest.approx(150 / 331 * 32)  # ~14.5 px
    assert A.magnitude("TranslateY", 9, 28, 32) == pytest.approx(150 / 331 * 28)  # of the height
    assert A.magnitude("Rotate", 9, 32, 32) == 30.0 and A.magnitude("Rotate", 2, 32, 32) == pytest.approx(20 / 3)
    assert [A.magnitude("Posterize", k, 32, 32) for k in range(10)] == [8, 8, 7, 7, 6, 6, 5, 5, 4, 4]
    assert A.magnitude("Solarize", 0, 32, 32) == 256 and A.magnitude("Solarize", 9, 32, 32) == 0
    for op in ("Color", "Contrast", "Sharpness", "Brightness"):
        assert [round(A.magnitude(op, k, 32, 32), 12) for k in range(10)] == [round(0.1 * k, 12) for k in range(10)]
    with pytest.raises(ValueError, match="magnitude level"):
        A.magnitude("Rotate", 10, 32, 32)
    with pytest.raises(ValueError, match="unknown op"):
        A.magnitude("Cutout", 1, 32, 32)


def test_geometric_conventions():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    assert torch.equal(A.translate_x(x, 1.0, fill=-1)[0, 0, :, :3], x[0, 0, :, 1:])  # content moves left
    assert (A.translate_x(x, 1.0, fill=-1)[0, 0, :, 3] == -1).all()  # the fill comes in
    assert torch.equal(A.translate_y(x, -1.0, fill=-1)[0, 0, 1:], x[0, 0, :3])  # negative: down
    assert torch.equal(A.shear_x(x, 0.0), x) and torch.equal(A.rotate(x, 0.0), x)
    assert torch.equal(A.shear_x(x, 0.5, fill=-1)[0, 0, 0], x[0, 0, 0])  # about the top-left corner: row 0 stays
    assert torch.equal(A.rotate(x, 90.0)[0, 0], x[0, 0].rot90(1))  # counter-clockwise


def test_the_cifar10_policy_is_the_papers_table():
    pol = A.CIFAR10_POLICY
    assert len(pol) == 25 and all(len(sub) == 2 for sub in pol)
    for sub in pol:
        for op, p, level in sub:
            assert op in A.OPS and 0.0 <= p <= 1.0
            assert (level is None) == (op in A.NO_MAGNITUDE)
    assert pol[0] == (("Invert", 0.1, None), ("Contrast", 0.2, 6))
    assert pol[1] == (("Rotate", 0.7, 2), ("TranslateX", 0.3, 9))
    assert pol[22] == (("AutoContrast", 0.9, None), ("Solarize", 0.8, 3))
    assert pol[24] == (("TranslateY", 0.7, 9), ("AutoContrast", 0.9, None))
    used = {op for sub in pol for op, _, _ in sub}
    assert used == set(A.OPS) - {"ShearX"}  # the CIFAR-10 policy never shears horizontally


def test_draws_have_the_policys_frequencies():
    aug, n = A.AutoAugment(), 250_000
    d = aug.draw(n, torch.Generator().manual_seed(1234))
    counts = torch.bincount(d.sub_policy, minlength=25).double()
    assert ((counts - n / 25).abs() < 5 * (n / 25 * (1 - 1 / 25)) ** 0.5).all()  # 5 sigma
    assert abs(d.sign.eq(1).double().mean().item() - 0.5) < 0.005 and set(d.sign.unique().tolist()) == {-1, 1}
    for k, sub in enumerate(A.CIFAR10_POLICY):
        mine = d.sub_policy == k
        m = int(mine.sum())
        for step, (_, p, _) in enumerate(sub):
            got = d.apply[mine, step].double().mean().item()
            assert abs(got - p) <= 5 * (p * (1 - p) / m) ** 0.5 + 1e-12, (k, step, got, p)
    # how often each op runs: sum over the steps that name it of p / 25
    expected = dict.fromkeys(A.OPS, 0.0)
    for sub in A.CIFAR10_POLICY:
        for op, p, _ in sub:
            expected[op] += p / 25
    ops = np.array([[sub[0][0], sub[1][0]] for sub in A.CIFAR10_POLICY])[d.sub_policy.numpy()]  # (n, 2)
    applied = ops[d.apply.numpy()]
    for op, f in expected.items():
        assert abs((applied == op).sum() / n - f) < 0.005, op


def _rgb(n=12, c=3, h=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, c, h, h), generator=g).float()


def test_the_batch_equals_each_image_step_by_step():
    """The grouped batch path equals a plain loop over the images applying each image's applied steps in order."""
    aug = A.AutoAugment()
    x = _rgb(n=200)
    d = aug.draw(200, torch.Generator().manual_seed(5))
    y = aug(x, d)
    for i in range(200):
        ref = x[i : i + 1]
        for step in range(2):
            if d.apply[i, step]:
                op, _, level = A.CIFAR10_POLICY[int(d.sub_policy[i])][step]
                ref = A.apply_op(ref, op, level, float(d.sign[i, step]))
        assert torch.equal(y[i : i + 1], ref), i
    assert torch.equal(torch.cat([aug(x[i : i + 1], d[i : i + 1]) for i in range(200)]), y)


def test_planning_many_batches_at_once_equals_each_batch_alone():
    aug, x = A.AutoAugment(), _rgb(n=50)
    d = aug.draw(50, torch.Generator().manual_seed(9))
    plans = aug.plan(d, 16)
    assert [p.order.shape[1] for p in plans] == [16, 16, 16, 2]  # the shorter last batch is its own
    for i, p in enumerate(plans):
        assert sum(p.counts[0]) == sum(p.counts[1]) == p.order.shape[1]
        assert torch.equal(aug.apply(x[16 * i : 16 * i + 16], p), aug(x[16 * i : 16 * i + 16], d[16 * i : 16 * i + 16]))
    with pytest.raises(ValueError, match="the plan is for 16 images"):
        aug.apply(x[:3], plans[0])


@pytest.mark.parametrize("op", A.OPS)
def test_each_op_on_a_batch_equals_it_image_by_image(op):
    x = _rgb(n=6, seed=3)
    level = None if op in A.NO_MAGNITUDE else 7
    sign = torch.tensor([1.0, -1.0, -1.0, 1.0, 1.0, -1.0])
    batch = A.apply_op(x, op, level, sign)
    assert torch.equal(batch, torch.cat([A.apply_op(x[i : i + 1], op, level, sign[i]) for i in range(6)]))


def test_shapes_dtypes_values_and_channels():
    aug = A.AutoAugment()
    for c in (3, 1):
        x = _rgb(n=64, c=c, seed=c)
        d = aug.draw(64, torch.Generator().manual_seed(0))
        y = aug(x, d)
        assert y.shape == x.shape and y.dtype == torch.float32
        assert y.min() >= 0 and y.max() <= 255 and torch.equal(y, y.round())
        assert not torch.equal(y, x)
        u = aug(x.to(torch.uint8), d)
        assert u.dtype == torch.uint8 and torch.equal(u.float(), y)
    assert torch.equal(A.color(_rgb(n=2, c=1), 0.1), _rgb(n=2, c=1))  # no colour to take away from a gray image
    with pytest.raises(ValueError, match="1- or 3-channel"):
        aug(_rgb(n=2, c=2), aug.draw(2))
    with pytest.raises(ValueError, match="a draw for each"):
        aug(_rgb(n=2), aug.draw(3))


def test_reproducible_from_the_epoch_generator():
    aug, x = A.AutoAugment(), _rgb(n=64)
    run = lambda seed, epoch: aug(x, aug.draw(64, epoch_generator(seed, epoch)))
    assert torch.equal(run(0, 3), run(0, 3))
    assert not torch.equal(run(0, 3), run(0, 4)) and not torch.equal(run(0, 3), run(1, 3))


# -- in the loader ----------------------------------------------------------------------------------------------------
def _loader(images, labels, **kw):
    return DeviceLoader(images, labels, 8, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), train=True, seed=3,
                        crop_padding=2, **kw)


def _data(n=40):
    return _rgb(n=n, h=8).to(torch.uint8), torch.arange(n)


def test_loader_applies_it_after_crop_and_flip_and_draws_last():
    images, labels = _data()
    plain = list(_loader(images, labels))
    never = A.AutoAugment([((op, 0.0, lv), (op, 0.0, lv)) for (op, _, lv), _ in A.CIFAR10_POLICY])
    # a policy that never applies leaves every batch as it was: its draws come after the crops and flips
    assert all(torch.equal(a[0], b[0]) for a, b in zip(plain, _loader(images, labels, augment=never)))
    aug = _loader(images, labels, augment="autoaugment")
    batches = list(aug)
    assert [torch.equal(a[1], b[1]) for a, b in zip(plain, batches)] == [True] * len(plain)  # same order
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(plain, batches))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(batches, _loader(images, labels, augment="autoaugment")))
    aug.set_epoch(1)
    assert not torch.equal(next(iter(aug))[0], batches[0][0])
    ev = DeviceLoader(images, labels, 8, mean=(0.5,) * 3, std=(0.25,) * 3, train=False, augment="autoaugment")
    assert torch.allclose(torch.cat([x for x, _ in ev]), (images.float() / 255 - 0.5) / 0.25, atol=1e-6)  # train only
    with pytest.raises(ValueError, match="augment='randaugment' is not supported"):
        _loader(images, labels, augment="randaugment")


def test_loader_ranks_together_see_the_single_process_augmentation():
    images, labels = _data()
    single = list(_loader(images, labels, augment="autoaugment"))
    ranks = [list(_loader(images, labels, augment="autoaugment", rank=r, world_size=2)) for r in range(2)]
    for i, (x, y) in enumerate(single):
        for xs, ys in (ranks[0][i], ranks[1][i]):
            for xi, yi in zip(xs, ys):
                assert torch.equal(xi, x[(y == yi).nonzero()[0, 0]])
