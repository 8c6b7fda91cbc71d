"""AutoAugment's CIFAR-10 policy as a batched augmentation on the device.

Images are float tensors (B, C, H, W) holding the integer values 0-255 of uint8 images, which is what
:class:`~mgcnn.data.DeviceLoader` has after its crop and flip and before its normalisation; every op returns such
values again (uint8 input is accepted by :class:`AutoAugment` and returned as uint8). Each op runs once on a whole
group of images: the geometric ones as one ``F.affine_grid`` + ``F.grid_sample``, the colour ones as a few
elementwise kernels, a sort (Equalize) or a reduction (AutoContrast). There is no loop over the images of a batch.

Sources, and what is taken from which:

- The policy: Cubuk et al. 2019, "AutoAugment: Learning Augmentation Policies from Data", the 25 sub-policies
  found on reduced CIFAR-10, each two (op, probability, magnitude level 0-9) steps (:data:`CIFAR10_POLICY`). The
  same table is in torchvision's ``AutoAugment`` and in the ``CIFAR10Policy`` of the released Poly-MgNet code,
  which trains CIFAR-10 (only: its CIFAR-100 and FashionMNIST pipelines have no AutoAugment) with
  RandomCrop(32, padding=4, fill=128), RandomHorizontalFlip, this policy, ToTensor, Normalize.
- The magnitudes of the levels: as in the released code (and torchvision, except Solarize): level k of 0-9 is the
  k-th of 10 evenly spaced values of a range: shears 0-0.3, translations 0-150/331 of the image size (14.5 px at
  32 px), rotation 0-30 degrees, enhancement factors 1 +- (0-0.9), posterize 8-4 bits (rounded), solarize threshold
  256-0 (torchvision: 255-0). AutoContrast, Equalize and Invert take no magnitude.
- The ops: the formulas of PIL's ``ImageOps`` and ``ImageEnhance`` (which the released code calls), down to PIL's
  rounding, so that each op equals PIL's on uint8 images (tests/data/test_augment.py checks them against Pillow).

Choices where the sources differ or leave something open:

- Signs: shears, translations, rotation and the enhancement factors (Color, Contrast, Brightness, Sharpness) take
  a random sign, + or - with probability 1/2, drawn per image and step, as in torchvision. The released code draws
  the sign for all of them except the rotation, which it always turns counter-clockwise; the paper's own
  implementation (tensorflow/models, research/autoaugment) draws it for the shears, translations and the rotation,
  and maps an enhancement level to a factor 0.1-1.9 without a sign.
- Interpolation: nearest for every geometric op, as torchvision's default. PIL in the released code uses nearest
  (its default) for the translations and the rotation and bicubic for the shears, so our shears differ from the
  released code's by the interpolation (not by the geometry). Nearest keeps the values integer and reproduces PIL's
  nearest transform pixel for pixel: the grid is computed in float64, PIL's 16.16 fixed-point coefficients are
  reproduced for the shears and rotations, and PIL's rule (the pixel containing the source point: ``floor``) is
  kept at exact ties, where ``grid_sample`` would round half to even, by moving the source by 1e-9 px.
- Geometry as PIL's: pixel centres at i + 0.5, shears about the top-left corner (PIL's ``AFFINE`` coefficients
  (1, m, 0, 0, 1, 0) and (1, 0, 0, m, 1, 0), which torchvision reproduces with ``center=[0, 0]``), the rotation
  about the centre (W/2, H/2), counter-clockwise for a positive angle. A translation by m (signed) samples the
  input at x + m·W: the content moves by m·W to the left (up for TranslateY), and m·W is not rounded (14.5 px at
  32 px, which with nearest moves it by 15 px, as PIL does; torchvision truncates it to 14).
- Fill: 128 in every channel for the area a geometric op brings in (the released code's ``fillcolor`` and its
  rotation's composite over gray 128); 1-channel images are filled with 128 as well.
- The translation's range is relative to the size the op sees: after progressive resizing's crop, of that size.
- The crop before the policy is the loader's, which pads with zeros by default (``pad_mode``); the released code
  pads its crop with 128.
- Colour ops on 1-channel images mean what PIL's do on an "L" image: Color is the identity, Contrast blends with the
  mean of the image itself. Color and Contrast need 1 or 3 channels; the other ops work per channel.
- A step applies when u < p for u uniform in [0, 1) (the released code's ``random.random() < p``).
- PIL's arithmetic, reproduced: the grayscale is PIL's integer ITU-R 601-2 luma
  L = (19595 R + 38470 G + 7471 B + 2^15) >> 16; ``Image.blend`` computes in1 + factor·(in2 - in1) in float32 and
  truncates, clipping to 0-255 (Brightness blends with black, Color with L, Contrast with
  int(mean(L) + 0.5), Sharpness with PIL's SMOOTH filter [[1, 1, 1], [1, 5, 1], [1, 1, 1]]/13, rounded half up, on
  the interior and the image itself on the one-pixel border); AutoContrast maps each channel by
  int(v·255/(hi - lo) - lo·255/(hi - lo)) in double precision; Equalize uses PIL's per-channel lookup
  (step = (N - count of the largest value) // 255, lut[i] = (step // 2 + #values below i) // step, clipped to 255).
- Randomness: :meth:`AutoAugment.draw` draws, from one ``torch.Generator``, for every image a sub-policy, two
  uniforms (does step 1, step 2 apply?) and two signs, all on the CPU; the loader draws them for the whole epoch
  from its epoch generator, after its crop offsets and flips, so a run is reproducible and resumable and the
  ranks of a distributed run see together the augmentation of the single-process run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

AUGMENTS = ("none", "autoaugment")  # the names of TrainConfig.augment and DeviceLoader(augment=...)

OPS = ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Color", "Posterize", "Solarize", "Contrast",
       "Sharpness", "Brightness", "AutoContrast", "Equalize", "Invert")
SIGNED_OPS = frozenset({"ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Color", "Contrast", "Sharpness",
                        "Brightness"})
NO_MAGNITUDE = frozenset({"AutoContrast", "Equalize", "Invert"})
LEVELS = 10  # magnitude levels 0-9

Step = tuple[str, float, int | None]  # (op, probability, magnitude level; None for ops without one)
SubPolicy = tuple[Step, Step]

# Cubuk et al. 2019, the CIFAR-10 policy (the released Poly-MgNet code and torchvision list the same 25 sub-policies).
CIFAR10_POLICY: tuple[SubPolicy, ...] = (
    (("Invert", 0.1, None), ("Contrast", 0.2, 6)),
    (("Rotate", 0.7, 2), ("TranslateX", 0.3, 9)),
    (("Sharpness", 0.8, 1), ("Sharpness", 0.9, 3)),
    (("ShearY", 0.5, 8), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.5, None), ("Equalize", 0.9, None)),
    (("ShearY", 0.2, 7), ("Posterize", 0.3, 7)),
    (("Color", 0.4, 3), ("Brightness", 0.6, 7)),
    (("Sharpness", 0.3, 9), ("Brightness", 0.7, 9)),
    (("Equalize", 0.6, None), ("Equalize", 0.5, None)),
    (("Contrast", 0.6, 7), ("Sharpness", 0.6, 5)),
    (("Color", 0.7, 7), ("TranslateX", 0.5, 8)),
    (("Equalize", 0.3, None), ("AutoContrast", 0.4, None)),
    (("TranslateY", 0.4, 3), ("Sharpness", 0.2, 6)),
    (("Brightness", 0.9, 6), ("Color", 0.2, 8)),
    (("Solarize", 0.5, 2), ("Invert", 0.0, None)),
    (("Equalize", 0.2, None), ("AutoContrast", 0.6, None)),
    (("Equalize", 0.2, None), ("Equalize", 0.6, None)),
    (("Color", 0.9, 9), ("Equalize", 0.6, None)),
    (("AutoContrast", 0.8, None), ("Solarize", 0.2, 8)),
    (("Brightness", 0.1, 3), ("Color", 0.7, 0)),
    (("Solarize", 0.4, 5), ("AutoContrast", 0.9, None)),
    (("TranslateY", 0.9, 9), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.9, None), ("Solarize", 0.8, 3)),
    (("Equalize", 0.8, None), ("Invert", 0.1, None)),
    (("TranslateY", 0.7, 9), ("AutoContrast", 0.9, None)),
)

FILL = 128.0  # the value geometric ops bring in (the released code's fillcolor (128, 128, 128))
_TIE = 1e-9  # px: turns grid_sample's rounding half to even into PIL's floor of the source coordinate


# -- magnitudes -------------------------------------------------------------------------------------------------------
def _level(lo: float, hi: float, level: int) -> float:
    """The ``level``-th of 10 evenly spaced values from lo to hi, computed as numpy's ``linspace`` does."""
    return hi if level == LEVELS - 1 else level * ((hi - lo) / (LEVELS - 1)) + lo


def magnitude(op: str, level: int | None, height: int, width: int) -> float:
    """The unsigned magnitude of ``op`` at ``level``: the shear factor, the translation in pixels, the angle in
    degrees, the enhancement factor's distance from 1, the bits kept (Posterize), the threshold (Solarize); 0.0 for
    the ops without a magnitude."""
    if op not in OPS:
        raise ValueError(f"unknown op {op!r}; the ops are {', '.join(OPS)}")
    if op in NO_MAGNITUDE:
        return 0.0
    if level is None or not 0 <= level < LEVELS:
        raise ValueError(f"{op} needs a magnitude level 0-{LEVELS - 1}, got {level!r}")
    if op in ("ShearX", "ShearY"):
        return _level(0.0, 0.3, level)
    if op == "TranslateX":
        return _level(0.0, 150 / 331, level) * width
    if op == "TranslateY":
        return _level(0.0, 150 / 331, level) * height
    if op == "Rotate":
        return _level(0.0, 30.0, level)
    if op == "Posterize":
        return float(round(_level(8.0, 4.0, level)))
    if op == "Solarize":
        return _level(256.0, 0.0, level)
    return _level(0.0, 0.9, level)  # Color, Contrast, Sharpness, Brightness


# -- geometric ops ----------------------------------------------------------------------------------------------------
def _per_image(value: Tensor | float, x: Tensor) -> Tensor:
    """``value`` (a number or one per image) as a float64 (B,) tensor on x's device. A number becomes a fill
    kernel, never a copy from the host (which would wait for the device)."""
    if not isinstance(value, Tensor):
        return torch.full((x.shape[0],), float(value), dtype=torch.float64, device=x.device)
    v = value.to(device=x.device, dtype=torch.float64)
    return v.expand(x.shape[0]) if v.dim() == 0 else v


def _fixed_point(v: Tensor) -> Tensor:
    return torch.floor(v * 65536.0 + 0.5) / 65536.0


def warp(x: Tensor, coeffs: Tensor, fill: float = FILL) -> Tensor:
    """Resample each image of ``x`` (B, C, H, W) by PIL's ``AFFINE`` transform with nearest interpolation.

    ``coeffs`` (B, 6): PIL's (a, b, c, d, e, f) per image: the output pixel whose centre is (u, v) (pixel centres
    at i + 0.5) takes the input pixel containing (a u + b v + c, d u + e v + f); one outside the image takes
    ``fill``. One ``affine_grid`` and one ``grid_sample`` for the batch, in float64 as PIL computes coordinates.
    """
    b, ch, h, w = x.shape
    a, bb, c, d, e, f = coeffs.to(torch.float64).unbind(1)
    # PIL runs a nearest transform that does more than shift and scale in 16.16 fixed point: the coefficients and the
    # source of the first pixel centre rounded to 1/65536. The source coordinates are then exact multiples of it.
    fixed = (bb != 0) | (d != 0)
    c0, f0 = c + 0.5 * (a + bb), f + 0.5 * (d + e)  # the source of the pixel centre (0.5, 0.5)
    a, bb, d, e, c0, f0 = (torch.where(fixed, _fixed_point(v), v) for v in (a, bb, d, e, c0, f0))
    c, f = c0 - 0.5 * (a + bb) + _TIE, f0 - 0.5 * (d + e) + _TIE
    # PIL's continuous coordinates u in [0, W] are grid_sample's normalised ones (align_corners=False) as 2u/W - 1.
    theta = torch.stack([
        torch.stack([a, bb * h / w, a + bb * h / w + 2 * c / w - 1], 1),
        torch.stack([d * w / h, e, d * w / h + e + 2 * f / h - 1], 1),
    ], 1)  # (B, 2, 3)
    grid = F.affine_grid(theta, [b, ch, h, w], align_corners=False)
    out = F.grid_sample(x.to(torch.float64) - fill, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return (out + fill).to(x.dtype)


def _affine(x: Tensor, a, b, c, d, e, f, fill: float) -> Tensor:
    parts = [_per_image(v, x) for v in (a, b, c, d, e, f)]
    return warp(x, torch.stack(parts, 1), fill)


def shear_x(x: Tensor, m: Tensor | float, fill: float = FILL) -> Tensor:
    """PIL's ``transform(AFFINE, (1, m, 0, 0, 1, 0))``: row v moves left by m·v (about the top-left corner)."""
    return _affine(x, 1.0, m, 0.0, 0.0, 1.0, 0.0, fill)


def shear_y(x: Tensor, m: Tensor | float, fill: float = FILL) -> Tensor:
    """PIL's ``transform(AFFINE, (1, 0, 0, m, 1, 0))``: column u moves up by m·u (about the top-left corner)."""
    return _affine(x, 1.0, 0.0, 0.0, m, 1.0, 0.0, fill)


def translate_x(x: Tensor, pixels: Tensor | float, fill: float = FILL) -> Tensor:
    """PIL's ``transform(AFFINE, (1, 0, t, 0, 1, 0))``: the content moves left by ``pixels`` (need not be whole)."""
    return _affine(x, 1.0, 0.0, pixels, 0.0, 1.0, 0.0, fill)


def translate_y(x: Tensor, pixels: Tensor | float, fill: float = FILL) -> Tensor:
    """PIL's ``transform(AFFINE, (1, 0, 0, 0, 1, t))``: the content moves up by ``pixels``."""
    return _affine(x, 1.0, 0.0, 0.0, 0.0, 1.0, pixels, fill)


def rotate(x: Tensor, degrees: Tensor | float, fill: float = FILL) -> Tensor:
    """PIL's ``rotate(degrees)``: counter-clockwise about the image centre, same size, nearest."""
    h, w = x.shape[-2:]
    t = -torch.deg2rad(_per_image(degrees, x))  # PIL's matrix, as Image.rotate builds it
    a, b, d, e = torch.cos(t), torch.sin(t), -torch.sin(t), torch.cos(t)
    cx, cy = w / 2, h / 2
    return _affine(x, a, b, a * -cx + b * -cy + cx, d, e, d * -cx + e * -cy + cy, fill)


# -- colour ops -------------------------------------------------------------------------------------------------------
def _factor(value: Tensor | float, x: Tensor) -> Tensor:
    """PIL passes the enhancement factor to C as a float: float32, one per image, broadcastable to x."""
    return _per_image(value, x).to(torch.float32).view(-1, 1, 1, 1)


def blend(degenerate: Tensor, x: Tensor, factor: Tensor | float) -> Tensor:
    """PIL's ``Image.blend(degenerate, x, factor)`` on uint8 values: degenerate + factor·(x - degenerate) in
    float32 (two roundings, as PIL's C code: no fused multiply-add), truncated, clipped to 0-255."""
    d = x.to(torch.float32) - degenerate.to(torch.float32)
    t = degenerate.to(torch.float32) + _factor(factor, x) * d
    return t.clamp(0.0, 255.0).floor().to(x.dtype)


def grayscale(x: Tensor) -> Tensor:
    """PIL's ``convert("L")`` (ITU-R 601-2 luma in PIL's integer form), (B, 1, H, W); 1 channel: x itself."""
    if x.shape[1] == 1:
        return x
    if x.shape[1] != 3:
        raise ValueError(f"a grayscale needs 1 or 3 channels, got {x.shape[1]}")
    r, g, b = x.to(torch.int64).unbind(1)
    return ((19595 * r + 38470 * g + 7471 * b + 32768) >> 16).unsqueeze(1).to(x.dtype)


def color(x: Tensor, factor: Tensor | float) -> Tensor:
    """PIL's ``ImageEnhance.Color``: blend with the grayscale (the identity on 1-channel images)."""
    if x.shape[1] == 1:
        return x.clone()
    return blend(grayscale(x).expand_as(x), x, factor)


def contrast(x: Tensor, factor: Tensor | float) -> Tensor:
    """PIL's ``ImageEnhance.Contrast``: blend with the image's mean gray level int(mean(L) + 0.5)."""
    lum = grayscale(x).to(torch.int64).flatten(1)
    n = lum.shape[1]
    mean = (2 * lum.sum(1) + n) // (2 * n)  # int(sum/n + 0.5), in integers (exact on every device)
    return blend(mean.to(x.dtype).view(-1, 1, 1, 1).expand_as(x), x, factor)


def brightness(x: Tensor, factor: Tensor | float) -> Tensor:
    """PIL's ``ImageEnhance.Brightness``: blend with black."""
    return blend(torch.zeros_like(x), x, factor)


def smooth(x: Tensor) -> Tensor:
    """PIL's ``filter(ImageFilter.SMOOTH)``: [[1, 1, 1], [1, 5, 1], [1, 1, 1]]/13 rounded half up on the interior,
    the one-pixel border unchanged (PIL copies it)."""
    h, w = x.shape[-2:]
    if h < 3 or w < 3:
        return x.clone()
    v = x.to(torch.int64)
    s = 4 * v[..., 1:-1, 1:-1]
    for dy in range(3):
        for dx in range(3):
            s = s + v[..., dy : h - 2 + dy, dx : w - 2 + dx]
    out = x.clone()
    out[..., 1:-1, 1:-1] = ((2 * s + 13) // 26).to(x.dtype)  # s/13 rounded half up (s/13 is never a half)
    return out


def sharpness(x: Tensor, factor: Tensor | float) -> Tensor:
    """PIL's ``ImageEnhance.Sharpness``: blend with the smoothed image (:func:`smooth`)."""
    return blend(smooth(x), x, factor)


def posterize(x: Tensor, bits: int) -> Tensor:
    """PIL's ``ImageOps.posterize``: keep the ``bits`` high bits of each value."""
    q = 2 ** (8 - int(bits))
    return torch.floor(x / q) * q


def solarize(x: Tensor, threshold: float) -> Tensor:
    """PIL's ``ImageOps.solarize``: values >= threshold become 255 - value."""
    return torch.where(x >= threshold, 255 - x, x)


def invert(x: Tensor) -> Tensor:
    """PIL's ``ImageOps.invert``: 255 - value."""
    return 255 - x


def autocontrast(x: Tensor) -> Tensor:
    """PIL's ``ImageOps.autocontrast`` (no cutoff): each channel's [min, max] stretched to [0, 255] by PIL's
    lookup ``int(v * scale + offset)``, scale = 255/(max - min), offset = -min·scale, in double precision; a
    constant channel is left as it is."""
    v = x.to(torch.float64)
    lo = v.amin(dim=(2, 3), keepdim=True)
    hi = v.amax(dim=(2, 3), keepdim=True)
    flat = hi <= lo
    # Each double operation as PIL's Python does it: a true division (not 255 times a reciprocal, as a number divided
    # by a tensor would be), and a product and a sum rounded each (no fused multiply-add).
    scale = torch.full_like(hi, 255.0) / torch.where(flat, torch.ones_like(hi), hi - lo)
    offset = -lo * scale
    y = torch.trunc((v * scale) + offset).clamp(0.0, 255.0)
    return torch.where(flat, v, y).to(x.dtype)


def equalize(x: Tensor) -> Tensor:
    """PIL's ``ImageOps.equalize``, per channel: with N values, ``step = (N - count of the largest value) // 255``
    and ``lut[i] = (step // 2 + number of values below i) // step`` clipped to 255; a channel with step 0 (at most
    one distinct value, or nearly all values the largest) is left as it is. The histograms of all channels are one
    integer ``scatter_add_`` (exact, and deterministic on every device)."""
    b, c, h, w = x.shape
    v = x.reshape(b * c, h * w).to(torch.int64)
    rows = torch.arange(b * c, device=x.device).unsqueeze(1)
    hist = torch.zeros(b * c * 256, dtype=torch.int64, device=x.device)
    hist.scatter_add_(0, (v + 256 * rows).flatten(), torch.ones_like(v).flatten())
    hist = hist.view(b * c, 256)
    below = hist.cumsum(1) - hist  # number of values < i
    n_largest = hist.gather(1, v.amax(1, keepdim=True))
    step = (h * w - n_largest) // 255  # (R, 1)
    lut = ((step // 2 + below) // step.clamp(min=1)).clamp(max=255)
    y = torch.where(step > 0, lut.gather(1, v), v)
    return y.view(b, c, h, w).to(x.dtype)


# -- the policy -------------------------------------------------------------------------------------------------------
_GEOMETRIC = {"ShearX": shear_x, "ShearY": shear_y, "TranslateX": translate_x, "TranslateY": translate_y,
              "Rotate": rotate}
_ENHANCE = {"Color": color, "Contrast": contrast, "Sharpness": sharpness, "Brightness": brightness}


def apply_op(x: Tensor, op: str, level: int | None, sign: Tensor | float = 1.0, fill: float = FILL) -> Tensor:
    """Apply ``op`` at magnitude ``level`` to every image of ``x`` (B, C, H, W), with ``sign`` (+1 or -1, one per
    image or one for all) for the signed ops (ignored by the others)."""
    m = magnitude(op, level, x.shape[-2], x.shape[-1])
    if op in _GEOMETRIC:
        return _GEOMETRIC[op](x, _per_image(sign, x) * m, fill)
    if op in _ENHANCE:
        return _ENHANCE[op](x, 1.0 + _per_image(sign, x) * m)
    if op == "Posterize":
        return posterize(x, int(m))
    if op == "Solarize":
        return solarize(x, m)
    if op == "AutoContrast":
        return autocontrast(x)
    if op == "Equalize":
        return equalize(x)
    return invert(x)


def _checked_step(op: str, p: float, level: int | None) -> Step:
    magnitude(op, level, 32, 32)  # a known op, a level where it needs one
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"probability {p!r} of {op} is not in [0, 1]")
    return op, float(p), level


@dataclass(frozen=True)
class PolicyDraw:
    """The random part of the policy for n images (CPU tensors): the sub-policy of each image, whether each of its
    two steps applies, and each step's sign (+1 or -1)."""

    sub_policy: Tensor  # (n,) int64
    apply: Tensor  # (n, 2) bool
    sign: Tensor  # (n, 2) int64, +1 or -1

    def __len__(self) -> int:
        return len(self.sub_policy)

    def __getitem__(self, idx) -> PolicyDraw:
        return PolicyDraw(self.sub_policy[idx], self.apply[idx], self.sign[idx])


@dataclass(frozen=True)
class BatchPlan:
    """The groups of one batch, per step s: ``counts[s]`` (on the CPU) the group sizes, first the images the step
    leaves alone, then one group per sub-policy; ``order[s]`` the images sorted by group, ``inverse[s]`` the inverse
    permutation and ``sign[s]`` the signs in group order (on the images' device)."""

    counts: tuple[list[int], list[int]]
    order: Tensor  # (2, b) int64
    inverse: Tensor  # (2, b) int64
    sign: Tensor  # (2, b) float64


class AutoAugment:
    """An AutoAugment policy (default: :data:`CIFAR10_POLICY`) on batches.

    ``draw(n, generator)`` draws the randomness of n images; ``aug(x, draw)`` applies it to x (B, C, H, W) with
    B = len(draw): each step, the images are grouped by their sub-policy (those whose step applies), and each
    group's op runs once on the group. A loader plans the groups of all its batches at once
    (:meth:`plan`, on the CPU, copied to the device in one transfer) and applies each batch's plan
    (:meth:`apply`): no transfer and no wait for the device per batch.
    """

    def __init__(self, policy: Sequence[SubPolicy] = CIFAR10_POLICY, fill: float = FILL):
        self.policy: tuple[SubPolicy, ...] = tuple((_checked_step(*s1), _checked_step(*s2)) for s1, s2 in policy)
        self.fill = float(fill)
        self._probs = torch.tensor([[p for _, p, _ in sub] for sub in self.policy], dtype=torch.float64)

    def draw(self, n: int, generator: torch.Generator | None = None) -> PolicyDraw:
        """Three draws from ``generator``, in this order: the sub-policies, the uniforms of the steps, the signs."""
        sub = torch.randint(0, len(self.policy), (n,), generator=generator)
        u = torch.rand((n, 2), generator=generator, dtype=torch.float64)
        sign = torch.randint(0, 2, (n, 2), generator=generator) * 2 - 1
        return PolicyDraw(sub, u < self._probs[sub], sign)

    def plan(self, draw: PolicyDraw, batch_size: int | None = None,
             device: torch.device | str = "cpu") -> list[BatchPlan]:
        """The groups of each consecutive ``batch_size`` draws (default: one batch of all; a shorter last batch is
        its own), computed on the CPU for all batches together and moved to ``device`` in one copy."""
        n = len(draw)
        b = n if batch_size is None else batch_size
        full = (n // b) * b if b else 0
        plans = self._plan(draw[:full], b, device) if full else []
        return plans + (self._plan(draw[full:], n - full, device) if full < n else [])

    def _plan(self, draw: PolicyDraw, b: int, device) -> list[BatchPlan]:
        m, k = len(draw) // b, len(self.policy) + 1
        key = torch.where(draw.apply, draw.sub_policy[:, None], -1) + 1  # (n, 2): 0 (not applied) or 1 + sub-policy
        key = key.reshape(m, b, 2).transpose(1, 2)  # (m, 2, b)
        order = torch.argsort(key, dim=2, stable=True)
        inverse = torch.empty_like(order).scatter_(2, order, torch.arange(b).expand(m, 2, b))
        slot = key + k * torch.arange(2 * m).view(m, 2, 1)
        counts = torch.bincount(slot.flatten(), minlength=2 * m * k).view(m, 2, k).tolist()
        sign = draw.sign.reshape(m, b, 2).transpose(1, 2).gather(2, order)
        packed = torch.stack([order, inverse, sign], 1).to(device)  # (m, 3, 2, b): one transfer
        signs = packed[:, 2].to(torch.float64)
        return [BatchPlan((counts[i][0], counts[i][1]), packed[i, 0], packed[i, 1], signs[i]) for i in range(m)]

    def __call__(self, x: Tensor, draw: PolicyDraw) -> Tensor:
        if len(draw) != (x.shape[0] if x.dim() == 4 else -1):
            raise ValueError(f"expected images (B, C, H, W) and a draw for each, got {tuple(x.shape)} and "
                             f"{len(draw)} draws")
        return self.apply(x, self.plan(draw, device=x.device)[0]) if len(draw) else x.clone()

    def apply(self, x: Tensor, plan: BatchPlan) -> Tensor:
        """Apply the two steps of ``plan`` to x (B, C, H, W): float with values 0-255 (returned as float of the same
        dtype) or uint8 (returned as uint8)."""
        if x.dim() != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"AutoAugment needs 1- or 3-channel images (B, C, H, W), got {tuple(x.shape)}")
        if plan.order.shape[1] != x.shape[0]:
            raise ValueError(f"the plan is for {plan.order.shape[1]} images, the batch has {x.shape[0]}")
        dtype = x.dtype
        y = x if dtype.is_floating_point else x.to(torch.float32)
        for step in range(2):
            counts = plan.counts[step]
            if counts[0] == len(y):
                continue
            groups = list(y[plan.order[step]].split(counts))
            signs = plan.sign[step].split(counts)
            for g, n in enumerate(counts[1:]):
                if n:
                    op, _, level = self.policy[g][step]
                    groups[g + 1] = apply_op(groups[g + 1], op, level, signs[g + 1], self.fill)
            y = torch.cat(groups)[plan.inverse[step]]
        return y if y.dtype == dtype else y.to(dtype)
