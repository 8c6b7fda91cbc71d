"""The Triton kernels of :mod:`mgcnn.layers.triton_conv` (imported only when a kernel is first needed).

A module of its own so that ``tl`` is a module global: Triton's interpreter (``TRITON_INTERPRET=1``) patches the
language functions through the kernels' globals, and the tests re-import this module to switch to it.
"""

import triton
import triton.language as tl


@triton.jit
def fwd(x_ptr, w_ptr, y_ptr, n_pix, H, W, C_IN, OH, OW, C_OUT,
        S: tl.constexpr, G_IN: tl.constexpr, G_OUT: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)  # flattened (n, oh, ow)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)  # output channels, across groups
    pm, cm = p < n_pix, c < C_OUT
    ow = p % OW
    oh = (p // OW) % OH
    n = p // (OW * OH)
    cin0 = (c // G_OUT) * G_IN  # first input channel of each output channel's group
    acc = tl.zeros([BLOCK_P, BLOCK_C], dtype=tl.float32)
    for kh in tl.static_range(3):
        ih = oh * S - 1 + kh
        for kw in tl.static_range(3):
            iw = ow * S - 1 + kw
            m = pm & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
            base = ((n * H + ih) * W + iw) * C_IN
            for i in tl.static_range(G_IN):
                xv = tl.load(x_ptr + base[:, None] + (cin0 + i)[None, :], mask=m[:, None] & cm[None, :],
                             other=0.0)
                wv = tl.load(w_ptr + ((kh * 3 + kw) * G_IN + i) * C_OUT + c, mask=cm, other=0.0)
                acc += xv.to(tl.float32) * wv.to(tl.float32)[None, :]
    tl.store(y_ptr + p[:, None] * C_OUT + c[None, :], acc.to(y_ptr.dtype.element_ty),
             mask=pm[:, None] & cm[None, :])

@triton.jit
def bwd_input(gy_ptr, w_ptr, gx_ptr, n_pix, H, W, C_IN, OH, OW, C_OUT,
              S: tl.constexpr, G_IN: tl.constexpr, G_OUT: tl.constexpr, BLOCK_P: tl.constexpr,
              BLOCK_C: tl.constexpr):
    p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)  # flattened (n, ih, iw)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)  # input channels
    pm, cm = p < n_pix, c < C_IN
    iw = p % W
    ih = (p // W) % H
    n = p // (W * H)
    co0 = (c // G_IN) * G_OUT
    i = c % G_IN
    acc = tl.zeros([BLOCK_P, BLOCK_C], dtype=tl.float32)
    for kh in tl.static_range(3):
        th = ih + 1 - kh
        oh = th // S
        for kw in tl.static_range(3):
            tw = iw + 1 - kw
            ow = tw // S
            m = pm & (th >= 0) & (tw >= 0) & (th % S == 0) & (tw % S == 0) & (oh < OH) & (ow < OW)
            base = ((n * OH + oh) * OW + ow) * C_OUT
            for j in tl.static_range(G_OUT):
                gv = tl.load(gy_ptr + base[:, None] + (co0 + j)[None, :], mask=m[:, None] & cm[None, :],
                             other=0.0)
                wv = tl.load(w_ptr + ((kh * 3 + kw) * G_IN + i) * C_OUT + co0 + j, mask=cm, other=0.0)
                acc += gv.to(tl.float32) * wv.to(tl.float32)[None, :]
    tl.store(gx_ptr + p[:, None] * C_IN + c[None, :], acc.to(gx_ptr.dtype.element_ty),
             mask=pm[:, None] & cm[None, :])

@triton.jit
def bwd_weight(gy_ptr, x_ptr, part_ptr, n_pix, H, W, C_IN, OH, OW, C_OUT,
               S: tl.constexpr, G_IN: tl.constexpr, G_OUT: tl.constexpr, BLOCK_P: tl.constexpr,
               BLOCK_C: tl.constexpr):
    pid_p = tl.program_id(0)
    p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)  # output channels
    pm, cm = p < n_pix, c < C_OUT
    ow = p % OW
    oh = (p // OW) % OH
    n = p // (OW * OH)
    cin0 = (c // G_OUT) * G_IN
    gy = tl.load(gy_ptr + p[:, None] * C_OUT + c[None, :], mask=pm[:, None] & cm[None, :], other=0.0)
    gy = gy.to(tl.float32)
    for kh in tl.static_range(3):
        ih = oh * S - 1 + kh
        for kw in tl.static_range(3):
            iw = ow * S - 1 + kw
            m = pm & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
            base = ((n * H + ih) * W + iw) * C_IN
            for i in tl.static_range(G_IN):
                xv = tl.load(x_ptr + base[:, None] + (cin0 + i)[None, :], mask=m[:, None] & cm[None, :],
                             other=0.0)
                s = tl.sum(gy * xv.to(tl.float32), axis=0)  # (BLOCK_C,)
                tl.store(part_ptr + ((pid_p * 9 + kh * 3 + kw) * G_IN + i) * C_OUT + c, s, mask=cm)
