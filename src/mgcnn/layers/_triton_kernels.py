"""The Triton kernels of :mod:`mgcnn.layers.triton_conv` (imported only when a kernel is first needed).

A module of its own, imported lazily, so that triton stays an optional dependency. Whether Triton's interpreter
runs the kernels (``TRITON_INTERPRET=1``, the CPU tests) is decided when triton is first imported.
Tensors are NHWC-contiguous; the weight is laid out (3, 3, g_in, C_out). A tile is BLOCK_P pixels x BLOCK_C
channels, the channels spanning several groups.
"""

import triton
import triton.language as tl


@triton.jit
def _pixels(p, OH, OW):
    """Flattened pixel index -> (image, row, column)."""
    return p // (OW * OH), (p // OW) % OH, p % OW


@triton.jit
def _tap(x_ptr, n, oh, ow, kh, kw, chan, pm, cm, H, W, C_IN, S: tl.constexpr):
    """``x[n, S oh - 1 + kh, S ow - 1 + kw, chan]`` for a tile, zero outside the image: (BLOCK_P, BLOCK_C)."""
    ih = oh * S - 1 + kh
    iw = ow * S - 1 + kw
    m = pm & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
    base = ((n * H + ih) * W + iw) * C_IN
    return tl.load(x_ptr + base[:, None] + chan[None, :], mask=m[:, None] & cm[None, :], other=0.0)


@triton.jit
def fwd(x_ptr, w_ptr, y_ptr, n_pix, H, W, C_IN, OH, OW, C_OUT,
        S: tl.constexpr, G_IN: tl.constexpr, G_OUT: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)  # output pixels
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)  # output channels, across groups
    pm, cm = p < n_pix, c < C_OUT
    n, oh, ow = _pixels(p, OH, OW)
    cin0 = (c // G_OUT) * G_IN  # first input channel of each output channel's group
    acc = tl.zeros([BLOCK_P, BLOCK_C], dtype=tl.float32)
    for kh in tl.static_range(3):
        for kw in tl.static_range(3):
            for i in tl.static_range(G_IN):
                xv = _tap(x_ptr, n, oh, ow, kh, kw, cin0 + i, pm, cm, H, W, C_IN, S)
                wv = tl.load(w_ptr + ((kh * 3 + kw) * G_IN + i) * C_OUT + c, mask=cm, other=0.0)
                acc += xv.to(tl.float32) * wv.to(tl.float32)[None, :]
    tl.store(y_ptr + p[:, None] * C_OUT + c[None, :], acc.to(y_ptr.dtype.element_ty),
             mask=pm[:, None] & cm[None, :])


@triton.jit
def bwd_input(gy_ptr, w_ptr, gx_ptr, n_pix, H, W, C_IN, OH, OW, C_OUT,
              S: tl.constexpr, G_IN: tl.constexpr, G_OUT: tl.constexpr, BLOCK_P: tl.constexpr,
              BLOCK_C: tl.constexpr):
    p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)  # input pixels
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)  # input channels
    pm, cm = p < n_pix, c < C_IN
    n, ih, iw = _pixels(p, H, W)
    co0 = (c // G_IN) * G_OUT
    i = c % G_IN
    acc = tl.zeros([BLOCK_P, BLOCK_C], dtype=tl.float32)
    for kh in tl.static_range(3):
        th = ih + 1 - kh
        oh = th // S
        for kw in tl.static_range(3):
            tw = iw + 1 - kw
            ow = tw // S
            # the output pixel this input pixel feeds through tap (kh, kw), if that is an integer in range
            m = pm & (th >= 0) & (tw >= 0) & (th % S == 0) & (tw % S == 0) & (oh < OH) & (ow < OW)
            base = ((n * OH + oh) * OW + ow) * C_OUT
            for j in tl.static_range(G_OUT):
                gv = tl.load(gy_ptr + base[:, None] + (co0 + j)[None, :], mask=m[:, None] & cm[None, :], other=0.0)
                wv = tl.load(w_ptr + ((kh * 3 + kw) * G_IN + i) * C_OUT + co0 + j, mask=cm, other=0.0)
                acc += gv.to(tl.float32) * wv.to(tl.float32)[None, :]
    tl.store(gx_ptr + p[:, None] * C_IN + c[None, :], acc.to(gx_ptr.dtype.element_ty),
             mask=pm[:, None] & cm[None, :])


@triton.jit
def bwd_weight(gy_ptr, x_ptr, part_ptr, n_pix, H, W, C_IN, OH, OW, C_OUT,
               S: tl.constexpr, G_IN: tl.constexpr, G_OUT: tl.constexpr, BLOCK_P: tl.constexpr,
               BLOCK_C: tl.constexpr):
    pid_p = tl.program_id(0)
    p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)  # output pixels
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)  # output channels
    pm, cm = p < n_pix, c < C_OUT
    n, oh, ow = _pixels(p, OH, OW)
    cin0 = (c // G_OUT) * G_IN
    gy = tl.load(gy_ptr + p[:, None] * C_OUT + c[None, :], mask=pm[:, None] & cm[None, :], other=0.0)
    gy = gy.to(tl.float32)
    for kh in tl.static_range(3):
        for kw in tl.static_range(3):
            for i in tl.static_range(G_IN):
                xv = _tap(x_ptr, n, oh, ow, kh, kw, cin0 + i, pm, cm, H, W, C_IN, S)
                s = tl.sum(gy * xv.to(tl.float32), axis=0)  # this pixel block's share of dw[c, i, kh, kw]
                tl.store(part_ptr + ((pid_p * 9 + kh * 3 + kw) * G_IN + i) * C_OUT + c, s, mask=cm)
