"""Winograd (Toom-Cook) convolution for the CPU: fewer multiplications than a direct convolution.

A stride-1 2-D convolution with an r x r kernel computes an m x m block of outputs from an
n x n input tile (n = m + r - 1).  Winograd's minimal filtering algorithm F(m x m, r x r)
does it with n*n products per (input, output) channel pair instead of m*m*r*r:

    Y = A^T [ (G g G^T) * (B^T d B) ] A

(* elementwise; ``Plan`` holds A^T, G, B^T built from n - 1 interpolation points and infinity).
Summed over the input channels, the elementwise products become n*n matrix products
(tiles x C_in) @ (C_in x C_out), one per position of the transformed tile, which is where the
time goes: F(4x4, 3x3) does 36 products per 16 outputs where the direct form does 144 (4x fewer).
All n*n products run as one grouped convolution (one oneDNN call; BLAS batched products run
these fp32 shapes at a fraction of the cores' speed on some CPUs): 1x1 for a 2-D convolution;
for a 3-D one (Winograd over H and W of each depth slice) a kd-tap convolution along the depth,
so the depth taps are summed in the transformed domain, once.  The input and output
transforms are separable (rows, then columns), each a few elementwise passes over
channel-contiguous strided slices (sparse matrices; the +-p points' rows share their even and
odd parts), so they cost a few memory passes and no reordering.

It pays where C_in and C_out are both large: the transforms cost ~(C_in + C_out) memory passes
per pixel (n*n/(m*m) = 2.25 times the input and the output), the multiplications saved
~C_in*C_out.  fp32 throughout; the error grows with the interpolation points' spread:
with 0, +-1, +-2 (F(4x4, 3x3)) it is ~1e-6 relative to the direct convolution
(``tests/test_winograd.py`` measures it).  Inputs and outputs are channels-last.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import torch
import torch.nn.functional as F

# Finite interpolation points by tile size n (the n-th point is infinity): small integers first,
# the fewer and smaller, the smaller the rounding error of the transforms.
POINTS = {4: (0, 1, -1), 6: (0, 1, -1, 2, -2), 8: (0, 1, -1, 2, -2, Fraction(1, 2), Fraction(-1, 2))}


def _poly_mul(a: list, b: list) -> list:
    out = [Fraction(0)] * (len(a) + len(b) - 1)
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            out[i + j] += x * y
    return out


def _matrices(m: int, r: int) -> tuple[list, list, list]:
    """Exact (rational) A^T (m x n), G (n x r), B^T (n x n) of F(m, r).

    The linear convolution s = g (*) h of a length-r and a length-m sequence is a polynomial
    product, recovered from its values at the points and its leading coefficient (infinity):
    s = C [g(p) h(p); g_last h_last], C's columns being the Lagrange polynomials (scaled) and
    prod (x - p).  A correlation (what convolution layers compute) is the transpose of that map,
    y = E_h^T [(E_g g) * (C^T d)]: A^T = E_h^T, G = E_g, B^T = C^T, with each Lagrange
    denominator moved from B^T into G so that B^T stays integer for integer points."""
    n = m + r - 1
    pts = [Fraction(p) for p in POINTS[n]]
    g_rows, bt_rows = [], []
    for j, p in enumerate(pts):
        others = [q for k, q in enumerate(pts) if k != j]
        scale = Fraction(1)
        basis = [Fraction(1)]
        for q in others:
            scale *= p - q
            basis = _poly_mul(basis, [-q, Fraction(1)])
        g_rows.append([p ** k / scale for k in range(r)])
        bt_rows.append(basis + [Fraction(0)])          # degree n - 2: pad to n coefficients
    full = [Fraction(1)]
    for q in pts:
        full = _poly_mul(full, [-q, Fraction(1)])
    g_rows.append([Fraction(int(k == r - 1)) for k in range(r)])
    bt_rows.append(full)
    at = [[p ** i for p in pts] + [Fraction(int(i == m - 1))] for i in range(m)]
    return at, g_rows, bt_rows


@dataclass(frozen=True)
class Plan:
    """F(m x m, r x r): output block m, kernel r, input tile n = m + r - 1 (one of ``POINTS``)."""
    m: int
    r: int

    @property
    def n(self) -> int:
        return self.m + self.r - 1

    def pairs(self) -> list[tuple[int, int]]:
        """Indices (i, j) of the points p and -p: B^T's rows and A^T's columns of such a pair are
        even and odd parts apart, which the transforms share (``_rows_by_pairs``, ``_columns_by_pairs``)."""
        pts = POINTS[self.n]
        return [(i, pts.index(-p)) for i, p in enumerate(pts) if p > 0 and -p in pts]

    def matrices(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A^T, G, B^T in float64."""
        at, g, bt = _matrices(self.m, self.r)
        return tuple(torch.tensor([[float(v) for v in row] for row in mat], dtype=torch.float64)
                     for mat in (at, g, bt))


class Prepared:
    """One convolution's weights in the transformed domain, as the weight of a grouped convolution
    (group k: position k's (C_out x C_in) matrix), with the plan's transform matrices.

    ``weight`` is (O, I, r, r), or (O, I, kd, r, r) for a 3-D convolution with Winograd over
    (H, W): then each group is a kd-tap convolution along the depth, the depth taps summed by the
    product step itself (same-size depth output, padding kd // 2)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, plan: Plan):
        at, g, bt = plan.matrices()
        w = weight.detach().double()
        w = w if w.dim() == 5 else w.unsqueeze(2)                                # (O, I, kd, r, r)
        # G g G^T in float64, rounded once: the weight transform adds no error of its own
        u = torch.einsum("ak,oidkl,bl->aboid", g, w, g).float()
        self.plan, self.in_channels, self.out_channels, self.depth = plan, w.shape[1], w.shape[0], w.shape[2]
        self.weight = u.reshape(-1, w.shape[1], self.depth, 1).contiguous(memory_format=torch.channels_last)
        self.bias = None if bias is None else bias.detach().contiguous()
        self.at, self.bt, self.pairs = at.tolist(), bt.tolist(), plan.pairs()

    def products(self, v: torch.Tensor) -> torch.Tensor:
        """v (D, tiles, n*n, C_in) -> (D, tiles, n*n, C_out): position k's (tiles, C_in) @ U[k] (summed
        over the depth taps), all positions in one grouped convolution (one oneDNN call)."""
        d, tiles, positions, c = v.shape
        x = v.view(1, d, tiles, positions * c).permute(0, 3, 1, 2)           # channels-last (1, n*n*C, D, tiles)
        pad = [self.depth // 2, 0]
        if torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled:
            # straight to oneDNN: F.conv2d sends 1x1 kernels on one thread to a per-group BLAS loop
            y = torch.mkldnn_convolution(x, self.weight, None, pad, [1, 1], [1, 1], positions)
        else:
            y = F.conv2d(x, self.weight, padding=pad, groups=positions)
        return y.permute(0, 2, 3, 1).view(d, tiles, positions, self.out_channels)


def _combine(mat: list[list[float]], views: list[torch.Tensor], outs: list[torch.Tensor],
             bias: torch.Tensor | None = None) -> None:
    """outs[a] = sum_i mat[a][i] * views[i] (+ bias): a 1-D transform as a few strided elementwise
    passes over channels-contiguous slices (zero coefficients skipped; the matrices are sparse)."""
    for row, out in zip(mat, outs):
        # a unit coefficient first: the first two terms then take one pass, not two
        terms = sorted(((c, v) for c, v in zip(row, views) if c != 0), key=lambda t: t[0] != 1)
        (c0, v0), rest = terms[0], terms[1:]
        if bias is not None:
            torch.add(bias, v0, alpha=c0, out=out)
        elif c0 == 1 and rest:
            (c1, v1), rest = rest[0], rest[1:]
            torch.add(v0, v1, alpha=c1, out=out)
        elif c0 == 1:
            out.copy_(v0)
        else:
            torch.mul(v0, c0, out=out)
        for c, v in rest:
            out.add_(v, alpha=c)


def _rows_by_pairs(mat: list[list[float]], pairs: list[tuple[int, int]], views: list[torch.Tensor],
                   outs: list[torch.Tensor]) -> None:
    """``_combine(mat, views, outs)`` with the rows i, j of each pair as E + O and E - O (E, O their
    half sum and half difference, each about half as dense): fewer passes over memory."""
    paired = {k for pair in pairs for k in pair}
    single = [a for a in range(len(mat)) if a not in paired]
    _combine([mat[a] for a in single], views, [outs[a] for a in single])
    for i, j in pairs:
        odd = torch.empty_like(outs[i])
        _combine([[(x + y) / 2 for x, y in zip(mat[i], mat[j])], [(x - y) / 2 for x, y in zip(mat[i], mat[j])]],
                 views, [outs[i], odd])
        torch.sub(outs[i], odd, out=outs[j])
        outs[i].add_(odd)


def _columns_by_pairs(mat: list[list[float]], pairs: list[tuple[int, int]], views: list[torch.Tensor],
                      outs: list[torch.Tensor], bias: torch.Tensor | None = None) -> None:
    """``_combine(mat, views, outs, bias)`` with the inputs i, j of each pair replaced by their sum
    and difference (A^T's columns for p and -p are equal or opposite in every row)."""
    paired = {k for pair in pairs for k in pair}
    single = [k for k in range(len(views)) if k not in paired]
    cols = [[row[k] for k in single] for row in mat]
    inputs = [views[k] for k in single]
    for i, j in pairs:
        inputs += [views[i] + views[j], views[i] - views[j]]
        for row, col in zip(mat, cols):
            col += [(row[i] + row[j]) / 2, (row[i] - row[j]) / 2]
    _combine(cols, inputs, outs, bias)


def _block(xp: torch.Tensor, conv: Prepared, out: torch.Tensor, th: int, tw: int) -> None:
    """One band of tile rows: xp (B, th*m + r - 1, Wp, C) padded input, out (B, th*m, tw*m, O);
    for a 3-D convolution B is the depth of one sample."""
    plan = conv.plan
    m, n = plan.m, plan.n
    b, _, wp, c = xp.shape
    o = conv.out_channels
    # B^T along the height: n rows per tile row, each a stride-m slice of the input rows
    rows = xp.new_empty(n, b, th, wp, c)
    _rows_by_pairs(conv.bt, conv.pairs, [xp[:, i:i + m * (th - 1) + 1:m] for i in range(n)], list(rows))
    # ... then along the width, into (B, th, tw, n_h, n_w, C): per tile, its n*n transformed positions
    v = xp.new_empty(b, th, tw, n, n, c)
    _rows_by_pairs(conv.bt, conv.pairs, [rows[:, :, :, j:j + m * (tw - 1) + 1:m] for j in range(n)],
                   [v[:, :, :, :, j].permute(3, 0, 1, 2, 4) for j in range(n)])
    depth = b if conv.depth > 1 else 1
    prods = conv.products(v.view(depth, b // depth * th * tw, n * n, c)).view(b, th, tw, n, n, o)
    # A^T along the height, then along the width straight into the output pixels (bias on the way)
    half = xp.new_empty(m, b, th, tw, n, o)
    _columns_by_pairs(conv.at, conv.pairs, [prods[:, :, :, a] for a in range(n)], list(half))
    blocks = out.view(b, th, m, tw, m, o)
    _columns_by_pairs(conv.at, conv.pairs, [half[..., j, :] for j in range(n)],
                      [blocks[:, :, :, :, s].permute(2, 0, 1, 3, 4) for s in range(m)], conv.bias)


# Rows of tiles done at a time, bounding the transformed input and products kept at once (a band
# must hold hundreds of tiles: each matrix product has the band's tiles as its rows)
BAND_BYTES = 64 << 20


def conv2d(x: torch.Tensor, conv: Prepared, padding: int, modulation=None) -> torch.Tensor:
    """``F.conv2d(x, weight, bias, padding=padding)`` (stride 1, square kernel) for ``conv =
    Prepared(weight, bias, plan)``.  Returns a channels-last (B, O, Ho, Wo) tensor.

    ``modulation`` (``float_rt.winograd_c.Modulation``, compiled transforms only): the 2C outputs are
    a SPADE norm's (1 + gamma, beta), applied in the output transform; returns (B, C, Ho, Wo)."""
    plan = conv.plan
    b, c, h, w = x.shape
    m, r = plan.m, plan.r
    ho, wo = h + 2 * padding - r + 1, w + 2 * padding - r + 1
    th, tw = -(-ho // m), -(-wo // m)
    kernels = _compiled(x, plan)
    if kernels is not None:
        return _conv2d_compiled(x, conv, padding, kernels, ho, wo, th, tw, modulation)
    if modulation is not None:
        raise ValueError("a modulated output needs the compiled transforms")
    hp, wp = th * m + r - 1, tw * m + r - 1
    xp = F.pad(x.permute(0, 2, 3, 1), (0, 0, padding, wp - w - padding, padding, hp - h - padding))
    out = x.new_empty(b, th * m, tw * m, conv.out_channels)
    per_row = b * tw * plan.n ** 2 * (c + conv.out_channels) * x.element_size()
    band = max(1, min(th, BAND_BYTES // per_row))
    for t0 in range(0, th, band):
        t1 = min(th, t0 + band)
        _block(xp[:, t0 * m:t1 * m + r - 1], conv, out[:, t0 * m:t1 * m], t1 - t0, tw)
    if th * m != ho or tw * m != wo:
        out = out[:, :ho, :wo]
    return out.permute(0, 3, 1, 2)


def _kernels(plan: Plan):
    from . import winograd_c     # imports this module: loaded on first use
    return winograd_c.kernels(plan)


def compiled(plan: Plan) -> bool:
    """Whether ``conv2d``/``conv3d`` of fp32 CPU tensors run ``plan``'s transforms compiled."""
    return _kernels(plan) is not None


def _compiled(x: torch.Tensor, plan: Plan):
    """The plan's compiled transforms (``float_rt.winograd_c``) where they apply to x, else None."""
    return _kernels(plan) if x.device.type == "cpu" and x.dtype == torch.float32 else None


def _conv2d_compiled(x: torch.Tensor, conv: Prepared, padding: int, kernels, ho: int, wo: int, th: int,
                     tw: int, modulation=None) -> torch.Tensor:
    """``conv2d`` with both transforms in compiled loops: no padded copy, one pass each."""
    b, c = x.shape[:2]
    n, o = conv.plan.n, conv.out_channels
    pixels = x.permute(0, 2, 3, 1).contiguous()          # a view when x is channels-last
    out = x.new_empty(b, ho, wo, o if modulation is None else o // 2)
    band = max(1, min(th, BAND_BYTES // (b * tw * n * n * (c + o) * x.element_size())))
    depth = b if conv.depth > 1 else 1
    for t0 in range(0, th, band):
        rows = min(th, t0 + band) - t0
        v = x.new_empty(b, rows, tw, n * n, c)
        kernels.input(pixels, v, padding, t0, rows, tw)
        prods = conv.products(v.view(depth, b // depth * rows * tw, n * n, c))
        if modulation is None:
            kernels.output(prods, out, conv.bias, t0, rows, tw)
        else:
            kernels.output_modulated(prods, out, conv.bias, modulation, t0, rows, tw)
    return out.permute(0, 3, 1, 2)


def conv3d(x: torch.Tensor, conv: Prepared, padding: int) -> torch.Tensor:
    """``F.conv3d(x, weight, bias, padding=(kd // 2, padding, padding))`` (stride 1) for a 5-D
    ``weight``: the depth slices of each sample as a batch of 2-D ones.  Channels-last-3d out."""
    outs = []
    for sample in x:                                          # the depth taps must not cross samples
        slices = sample.permute(1, 0, 2, 3)                   # (D, C, H, W)
        outs.append(conv2d(slices, conv, padding).permute(0, 2, 3, 1).contiguous())   # (D, H, W, O)
    # (B, D, H, W, O) with every stride set (a size-1 batch dim with stride O would make torch.cat
    # and others take the result for a plain contiguous tensor)
    out = torch.stack(outs) if len(outs) > 1 else outs[0].view(1, *outs[0].shape)
    return out.permute(0, 4, 1, 2, 3)
