"""Real orthonormal spherical harmonics to any degree (paper §3.1, appendix A.2, eq. 19).

The paper's explicit factorial formula (eq. 20) overflows for large degrees — that overflow is the
"blow-up above 2500 dims" of its Fig. 4(b). We never form factorials: the fully normalised
associated Legendre functions ``P̄_l^m`` (which already contain ``sqrt((2l+1)/4π (l-m)!/(l+m)!)``)
follow the standard stable three-term recurrence in ``l``, started from the closed-form diagonal
``P̄_m^m``. Values stay O(sqrt(l)) for every degree, so float32 is accurate to L=255 and beyond.

Layout: coefficient ``(l, m)`` with ``-l <= m <= l`` sits at index ``l*l + l + m``.
Convention (the paper's eq. 19 with eq. 20's Condon–Shortley phase cancelled)::

    Y_lm = sqrt(2) P̄_l^|m|(cos θ) sin(|m| φ)   m < 0
    Y_l0 = P̄_l^0(cos θ)
    Y_lm = sqrt(2) P̄_l^m(cos θ) cos(m φ)       m > 0

with colatitude θ = 90° - lat and φ = lon. Everything is vectorised over points, runs on any
device and dtype, and is differentiable with respect to the points.

Two evaluators give the same values (to rounding); ``real_sh`` picks one by dtype, degree and
grad mode (:func:`_use_fourier`):

* the recurrence (:func:`_assemble` under autograd, :func:`_assemble_inplace` otherwise), run in
  float64 whatever the output dtype — every float64 evaluation, every differentiable one, degrees
  above ``FOURIER_MAX_DEGREE``, other dtypes and MPS;
* the Fourier/GEMM evaluator (:func:`_fourier_block`) — float32 without autograd, L <= 159.
  ``P̄_l^m(cos θ)`` is a trigonometric polynomial of degree ``l`` in θ: a cosine series for even
  ``m``, a sine series for odd ``m``, with only frequencies ``k ≡ l (mod 2)``. Its coefficients are
  computed once per (L, dtype, device) in float64, exactly, by discrete cosine/sine projections of
  the recurrence; evaluation is then two small GEMMs per degree — even-m rows (a stride-2 row
  set) from ``cos kθ``, odd-m rows from ``sin kθ`` — written straight into the output, then one
  in-place multiply by the azimuthal factor. ``kθ`` and ``mφ`` are formed in float64, and there is
  no recurrence in ``l`` to amplify float32 rounding near the poles: the float32 output is within
  ~2e-6 absolute of the float64 recurrence up to L=255.

Both write coefficient-major storage ``[(L+1)^2, N]``; ``real_sh`` returns its ``[N, (L+1)^2]``
transposed view (``y.T`` is contiguous, which is what ``e @ y.T`` wants).
"""

from __future__ import annotations

import functools
import math

import torch

from locdiff.core.geo import validate_latlon

#: points evaluated per chunk; bounds temporary memory (chunk * (L+1)^2 values at most twice)
DEFAULT_CHUNK = 4096


def num_coeffs(degree: int) -> int:
    """Width ``(L+1)^2`` of a degree-``L`` coefficient vector."""
    return (check_degree(degree) + 1) ** 2


def check_degree(degree: int) -> int:
    if isinstance(degree, bool) or not isinstance(degree, int):
        raise ValueError(f"degree must be an int, got {degree!r}")
    if degree < 0:
        raise ValueError(f"degree must be >= 0, got {degree}")
    return degree


def degree_from_width(width: int) -> int:
    """Inverse of :func:`num_coeffs`; raises ``ValueError`` if ``width`` is not a perfect square."""
    root = math.isqrt(max(int(width), 0))
    if width < 1 or root * root != width:
        raise ValueError(f"coefficient width {width} is not (L+1)^2 for any degree L >= 0")
    return root - 1


def sh_index(l: int, m: int) -> int:
    """Position of coefficient ``(l, m)`` in a coefficient vector."""
    if abs(m) > l:
        raise ValueError(f"order m={m} out of range for degree l={l}")
    return l * l + l + m


@functools.lru_cache(maxsize=64)
def _recurrence(degree: int, dtype: torch.dtype, device: str) -> tuple:
    """Per-degree coefficients of the normalised recurrence, built in float64 then cast.

    For l >= 2 and m <= l-2:  P̄_l^m = a_lm (x P̄_{l-1}^m - b_lm P̄_{l-2}^m)
    with a_lm = sqrt((4l²-1)/(l²-m²)), b_lm = sqrt(((l-1)²-m²)/(4(l-1)²-1));
    P̄_l^{l-1} = sqrt(2l+1) x P̄_{l-1}^{l-1};  P̄_l^l = sqrt((2l+1)/(2l)) sin θ P̄_{l-1}^{l-1}.
    """
    a, b, diag, sub = [], [], [], []
    for l in range(degree + 1):
        m = torch.arange(max(l - 1, 0), dtype=torch.float64)
        a.append(torch.sqrt((4.0 * l * l - 1) / (l * l - m * m)).to(dtype=dtype, device=device))
        lm1 = l - 1
        b.append(torch.sqrt((lm1 * lm1 - m * m) / (4.0 * lm1 * lm1 - 1)).to(dtype=dtype, device=device))
        diag.append(math.sqrt((2 * l + 1) / (2 * l)) if l > 0 else 0.0)
        sub.append(math.sqrt(2 * l + 1))
    return a, b, diag, sub


def _legendre_rows(x: torch.Tensor, s: torch.Tensor, degree: int):
    """Yield ``P̄_l^m(x)`` for m = 0..l as ``[l+1, N]`` tensors (rows contiguous), l = 0..degree."""
    a, b, diag, sub = _recurrence(degree, x.dtype, str(x.device))
    xr, sr = x[None, :], s[None, :]
    prev2 = None
    prev1 = torch.full_like(xr, 1.0 / math.sqrt(4 * math.pi))
    yield prev1
    for l in range(1, degree + 1):
        last = prev1[l - 1 : l]
        edge = (sub[l] * xr * last, diag[l] * sr * last)
        if l >= 2:
            body = a[l][:, None] * (xr * prev1[: l - 1] - b[l][:, None] * prev2[: l - 1])
            row = torch.cat((body, *edge), dim=0)
        else:
            row = torch.cat(edge, dim=0)
        yield row
        prev2, prev1 = prev1, row


def _precise(t: torch.Tensor) -> torch.Tensor:
    """Angles and their sines in float64 where the device has it (MPS does not)."""
    return t.double() if t.device.type != "mps" else t


def _trig(lon_rad: torch.Tensor, degree: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """``sqrt(2) cos(mφ)`` and ``sqrt(2) sin(mφ)`` for m = 0..L as ``[L+1, N]``.

    ``m φ`` is formed in float64: in float32 its rounding alone (|mφ| up to ~800 rad at L=255)
    would cost 5e-5 absolute in every high-order coefficient.
    """
    lon = _precise(lon_rad)
    angle = torch.arange(degree + 1, dtype=lon.dtype, device=lon.device)[:, None] * lon[None, :]
    return (math.sqrt(2.0) * torch.cos(angle)).to(dtype), (math.sqrt(2.0) * torch.sin(angle)).to(dtype)


@functools.lru_cache(maxsize=1024)
def _reversed_index(count: int, device: str) -> torch.Tensor:
    """``[count-1, ..., 1, 0]``."""
    return torch.arange(count - 1, -1, -1, device=device)


@functools.lru_cache(maxsize=256)
def _negative_rows(l: int, device: str) -> torch.Tensor:
    """Output rows of orders m = -1, -2, ..., -l (descending index)."""
    return torch.arange(l * l + l - 1, l * l - 1, -1, device=device)


def _assemble(x, s, cos_m, sin_m, degree: int, dtype: torch.dtype) -> torch.Tensor:
    """Real SH ``[(L+1)^2, N]`` (coefficient-major, ``dtype``) from sin/cos of latitude and trig tables ``[L+1, N]``.

    The recurrence runs in the inputs' precision (float64 except on MPS): near the poles the
    forward recurrence in ``l`` excites the singular second solution, and float32 rounding there
    grew to 4e-4 of the kernel peak at L=255. Only the output is stored in ``dtype``.
    """
    out = torch.empty(((degree + 1) ** 2, x.shape[0]), dtype=dtype, device=x.device)
    for l, p in enumerate(_legendre_rows(x, s, degree)):
        centre = l * l + l
        out[centre] = p[0]
        if l:
            out[centre + 1 : centre + l + 1] = p[1:] * cos_m[1 : l + 1]
            out[_negative_rows(l, str(x.device))] = (p[1:] * sin_m[1 : l + 1]).to(dtype)
    return out


def _assemble_inplace(x, s, cos_m, sin_m, degree: int, dtype: torch.dtype, out: torch.Tensor | None = None) -> torch.Tensor:
    """Same values as :func:`_assemble`, with preallocated buffers and fused in-place updates.

    Used when no gradient is needed and the Fourier/GEMM path is not: about twice as fast as
    :func:`_assemble`. Writes into ``out`` ``[(L+1)^2, n]`` (any row stride) when given.
    """
    a, b, diag, sub = _recurrence(degree, x.dtype, str(x.device))
    n = x.shape[0]
    if out is None:
        out = torch.empty(((degree + 1) ** 2, n), dtype=dtype, device=x.device)
    prev2, prev1, cur = (torch.empty((degree + 1, n), dtype=x.dtype, device=x.device) for _ in range(3))
    tmp = torch.empty((max(degree, 1), n), dtype=dtype, device=x.device)
    prev1[0].fill_(1.0 / math.sqrt(4 * math.pi))
    out[0] = prev1[0]
    for l in range(1, degree + 1):
        if l >= 2:
            body = cur[: l - 1]
            torch.mul(prev1[: l - 1], x, out=body)
            body.addcmul_(prev2[: l - 1], b[l][:, None], value=-1.0)
            body.mul_(a[l][:, None])
        torch.mul(prev1[l - 1], x, out=cur[l - 1]).mul_(sub[l])
        torch.mul(prev1[l - 1], s, out=cur[l]).mul_(diag[l])
        centre = l * l + l
        out[centre] = cur[0]
        torch.mul(cur[1 : l + 1], cos_m[1 : l + 1], out=out[centre + 1 : centre + l + 1])
        torch.mul(cur[1 : l + 1], sin_m[1 : l + 1], out=tmp[:l])
        # orders m = -1..-l sit in descending rows: a reversed gather (2-3x faster than index_copy_)
        torch.index_select(tmp[:l], 0, _reversed_index(l, str(x.device)), out=out[l * l : centre])
        prev2, prev1, cur = prev1, cur, prev2
    return out


# --------------------------------------------------------------------------- Fourier/GEMM evaluator
def _fourier_rows(l: int) -> tuple[slice, slice]:
    """Rows of degree ``l``'s block ``[l², (l+1)²)`` holding even and odd orders ``m``.

    Row ``l² + l + m`` has the parity of ``m`` (``l² + l`` is even), so each set is a stride-2 slice.
    """
    start, stop = l * l, (l + 1) * (l + 1)
    return slice(start + l % 2, stop, 2), slice(start + 1 - l % 2, stop, 2)


@functools.lru_cache(maxsize=16)
def _fourier_tables(degree: int, dtype: torch.dtype, device: str) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
    """Per degree ``l``: ``Wc[l]`` [#even-m rows, #k] and ``Ws[l]`` [#odd-m rows, #k] such that

    ``c_m P̄_l^|m|(cos θ) = Σ_k Wc[l][row, k] cos(kθ)`` over ``k = p, p+2, ..., l`` (p = l mod 2) for
    even ``m``, and ``Σ_k Ws[l][row, k] sin(kθ)`` over ``k = 2-p, 4-p, ..., l`` for odd ``m``;
    ``c_0 = 1``, ``c_m = sqrt(2)``; rows ordered as in :func:`_fourier_rows` (ascending signed m).
    (``P̄_l^m(cos θ)`` is ``sin^m θ`` times a polynomial in ``cos θ`` of degree and parity ``l - m``.)

    Exact (float64) projections: on θ_j = (j + ½)π/M with M > L, {cos kθ_j}_{0≤k<M} and
    {sin kθ_j}_{1≤k≤M} are orthogonal (DCT-II / DST-II), and the series have degree ≤ L.
    """
    m_count = 2 * degree + 4
    theta = (torch.arange(m_count, dtype=torch.float64) + 0.5) * (math.pi / m_count)
    k = torch.arange(degree + 1, dtype=torch.float64)
    cos_k = torch.cos(k[:, None] * theta[None, :]) * (2.0 / m_count)
    cos_k[0] *= 0.5
    sin_k = torch.sin(k[:, None] * theta[None, :]) * (2.0 / m_count)
    wc, ws = [], []
    for l, p in enumerate(_legendre_rows(torch.cos(theta), torch.sin(theta), degree)):
        par = l % 2
        m_even = [abs(m) for m in range(par - l, l + 1, 2)]  # rows of _fourier_rows(l), ascending m
        m_odd = [abs(m) for m in range(1 - par - l, l + 1, 2)]
        scale = torch.tensor([1.0 if m == 0 else math.sqrt(2.0) for m in m_even], dtype=torch.float64)
        wc.append(((p[m_even] @ cos_k[par : l + 1 : 2].T) * scale[:, None]).to(dtype=dtype, device=device))  # k = p, p+2, ...
        ws.append(((p[m_odd] @ sin_k[2 - par : l + 1 : 2].T) * math.sqrt(2.0)).to(dtype=dtype, device=device))  # k = 2-p, 4-p, ...
    return tuple(wc), tuple(ws)


def _cos_sin(angle: torch.Tensor, degree: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """``cos(k·angle)`` and ``sin(k·angle)`` for k = 0..L as contiguous ``[L+1, n]`` tensors of ``dtype``.

    ``angle`` is float64 and every ``k·angle`` is formed in float64 (at L=255, |kφ| reaches 800 rad,
    whose float32 rounding alone would cost 5e-5). Blocked angle addition
    ``(qB + r)a = qBa + ra`` needs 2·sqrt(L+1) sin/cos per point instead of 2(L+1).
    """
    block = math.isqrt(degree) + 1
    q = (degree + block) // block
    k = torch.arange(max(block, q * block), dtype=angle.dtype, device=angle.device)
    low = k[:block, None] * angle[None, :]
    high = k[: q * block : block, None] * angle[None, :]
    # the factors are exact to rounding; their products cost ~2 ulp of ``dtype``
    cl, sl = torch.cos(low).to(dtype)[None], torch.sin(low).to(dtype)[None]
    ch, sh = torch.cos(high).to(dtype)[:, None], torch.sin(high).to(dtype)[:, None]
    cos = torch.mul(ch, cl).addcmul_(sh, sl, value=-1.0).reshape(q * block, -1)[: degree + 1]
    sin = torch.mul(sh, cl).addcmul_(ch, sl).reshape(q * block, -1)[: degree + 1]
    return cos, sin


def _fourier_block(colat: torch.Tensor, lon: torch.Tensor, degree: int, out: torch.Tensor) -> None:
    """Write ``Y`` at ``n`` points (float64 colatitude/longitude in radians) into ``out`` ``[(L+1)^2, n]``."""
    dtype = out.dtype
    wc, ws = _fourier_tables(degree, dtype, str(out.device))
    n = colat.shape[0]
    cos_t, sin_t = _cos_sin(colat, degree, dtype)  # rows contiguous: strided row sets are BLAS operands
    feats_cos = (cos_t[0::2], cos_t[1::2])  # k ≡ l (mod 2)
    feats_sin = (sin_t[2::2], sin_t[1::2])
    cos_p, sin_p = _cos_sin(lon, degree, dtype)
    trig = torch.empty((2 * degree + 1, n), dtype=dtype, device=out.device)  # m = -L..L: sin|m|φ, 1, cos mφ
    trig[degree:] = cos_p
    torch.index_select(sin_p[1:], 0, _reversed_index(degree, str(out.device)), out=trig[:degree])
    for l in range(degree + 1):
        even, odd = _fourier_rows(l)
        par = l % 2
        torch.mm(wc[l], feats_cos[par][: wc[l].shape[1]], out=out[even])
        if l:
            torch.mm(ws[l], feats_sin[par][: ws[l].shape[1]], out=out[odd])
            out[l * l : (l + 1) * (l + 1)].mul_(trig[degree - l : degree + l + 1])


#: highest degree at which each dtype takes the Fourier/GEMM path. It costs O(L) flops per
#: coefficient against the recurrence's O(1) and wins by GEMM efficiency. Measured (CPU time, one
#: thread, benchmarks/bench_harmonics.py) against the in-place recurrence: float32 1.3-1.5x faster
#: at L=47, 1.26x at L=127, 1.16x at L=159, 0.92x at L=191; float64 (GEMMs at half the float32
#: rate) 1.0x at L=47 and slower above, so float64 keeps the recurrence.
FOURIER_MAX_DEGREE = {torch.float32: 159}


def _use_fourier(flat: torch.Tensor, degree: int) -> bool:
    """The Fourier/GEMM path: float32, no autograd, a device with float64 (not MPS), L <= 159."""
    return (
        degree <= FOURIER_MAX_DEGREE.get(flat.dtype, -1)
        and flat.device.type != "mps"
        and not (torch.is_grad_enabled() and flat.requires_grad)
    )


#: points per Fourier/GEMM block on the CPU (other devices: 16x). Fixed, whatever ``chunk`` says, so
#: values never depend on it; the block's temporaries are only O(L · FOURIER_CHUNK) values.
FOURIER_CHUNK = 4096


def real_sh(latlon: torch.Tensor, degree: int, *, chunk: int = DEFAULT_CHUNK, validate: bool = True) -> torch.Tensor:
    """Real orthonormal spherical harmonics ``Y_lm`` at (lat, lon) degree points.

    ``latlon`` [..., 2] → ``[..., (degree+1)^2]`` in the points' dtype and device (integer inputs
    become the default float dtype). Differentiable with respect to ``latlon``.

    Without autograd the result is a transposed view of coefficient-major storage, and float32
    inputs up to L=159 (not on MPS) take the Fourier/GEMM evaluator (see the module docstring).
    ``chunk`` is the recurrence's block of points, bounding its ``chunk·(L+1)²`` temporaries; the
    Fourier path has only O(L) temporaries per point and uses fixed blocks of ``FOURIER_CHUNK``.
    """
    check_degree(degree)
    if validate:
        latlon = validate_latlon(latlon)
    lead = latlon.shape[:-1]
    flat = latlon.reshape(-1, 2)
    width = (degree + 1) ** 2
    if torch.is_grad_enabled() and flat.requires_grad:
        return _real_sh_autograd(flat, degree, chunk).reshape(*lead, width)
    # coefficient-major storage: every degree's rows are contiguous (GEMM / elementwise friendly)
    out = torch.empty((width, flat.shape[0]), dtype=flat.dtype, device=flat.device)
    if _use_fourier(flat, degree):
        colat = torch.deg2rad(90.0 - flat[:, 0].double())
        lon = torch.deg2rad(flat[:, 1].double())
        step = FOURIER_CHUNK if flat.device.type == "cpu" else 16 * FOURIER_CHUNK
        for start in range(0, flat.shape[0], step):
            _fourier_block(colat[start : start + step], lon[start : start + step], degree, out[:, start : start + step])
    else:
        lat = torch.deg2rad(_precise(flat[:, 0]))
        lon = torch.deg2rad(_precise(flat[:, 1]))
        for start in range(0, flat.shape[0], chunk):
            x, s, cos_m, sin_m = _latlon_terms(lat[start : start + chunk], lon[start : start + chunk], degree)
            _assemble_inplace(x, s, cos_m, sin_m, degree, flat.dtype, out=out[:, start : start + chunk])
    return out.T.reshape(*lead, width)


def _latlon_terms(lat: torch.Tensor, lon: torch.Tensor, degree: int):
    """``x = cos θ``, ``s = sin θ`` and the trig tables of one chunk (radians, precise dtype)."""
    x = torch.sin(lat)
    s = torch.cos(lat).clamp_min(0.0)  # cos(±π/2) rounds to a tiny negative
    cos_m, sin_m = _trig(lon, degree, x.dtype)
    return x, s, cos_m, sin_m


def _real_sh_autograd(flat: torch.Tensor, degree: int, chunk: int) -> torch.Tensor:
    """The differentiable evaluator (recurrence, out-of-place): ``[N, 2]`` → ``[N, (L+1)^2]``."""
    lat = torch.deg2rad(_precise(flat[:, 0]))
    lon = torch.deg2rad(_precise(flat[:, 1]))
    pieces = []
    for start in range(0, max(flat.shape[0], 1), chunk):
        x, s, cos_m, sin_m = _latlon_terms(lat[start : start + chunk], lon[start : start + chunk], degree)
        pieces.append(_assemble(x, s, cos_m, sin_m, degree, flat.dtype).T)
    return torch.cat(pieces, dim=0) if len(pieces) > 1 else pieces[0]


def legendre_table(colat_rad: torch.Tensor, degree: int) -> torch.Tensor:
    """``[n, (L+1)^2]``: column (l, m) holds ``c_m P̄_l^|m|(cos θ)`` with c_0 = 1, c_m = sqrt(2).

    With it, ``Y_lm(θ, φ) = table[θ, (l, m)] * (cos(mφ) if m >= 0 else sin(|m|φ))`` — the separable
    form the grid evaluators use.
    """
    colat = _precise(colat_rad)
    x, s = torch.cos(colat), torch.sin(colat).clamp_min(0.0)
    ones = torch.full((degree + 1, colat_rad.shape[0]), math.sqrt(2.0), dtype=x.dtype, device=x.device)
    return _assemble_inplace(x, s, ones, ones, degree, colat_rad.dtype).T


def legendre_kernel(cos_gamma: torch.Tensor, degree: int) -> torch.Tensor:
    """Reproducing kernel ``Σ_{l<=L} (2l+1)/(4π) P_l(cos γ)`` by the Bonnet recurrence.

    Equals ``encode(p)·encode(q)`` for any orthonormal real basis (the addition theorem); its peak
    (γ = 0) is ``(L+1)^2 / (4π)``. Costs O(L) per point instead of O((L+1)^2).
    """
    x = cos_gamma.clamp(-1.0, 1.0)
    p_prev, p = torch.ones_like(x), x
    total = torch.ones_like(x) / (4 * math.pi)
    if degree >= 1:
        total = total + 3 * x / (4 * math.pi)
    for l in range(2, degree + 1):
        p_prev, p = p, ((2 * l - 1) * x * p - (l - 1) * p_prev) / l
        total = total + (2 * l + 1) * p / (4 * math.pi)
    return total
