"""What travels between clients and server, and its exact size in bytes.

A `Payload` is a set of named tensors plus small integer metadata (shapes and ranks of
factorised matrices). Its byte count is the bytes of the tensors as sent (dtype included)
plus 4 bytes per metadata integer (int32 on the wire). The engine counts these bytes, so an
algorithm cannot under-report what it sends.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import torch

META_INT_BYTES = 4


@dataclass
class Payload:
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    meta: dict[str, tuple[int, ...]] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        tensor_bytes = sum(t.numel() * t.element_size() for t in self.tensors.values())
        return tensor_bytes + META_INT_BYTES * sum(len(v) for v in self.meta.values())

    def first_nonfinite(self) -> str | None:
        for name, t in self.tensors.items():
            if t.is_floating_point() and not all_finite(t):
                return name
        return None


def all_finite(t: torch.Tensor) -> bool:
    """torch.isfinite(t).all(), in one reduction when it holds: a NaN or inf anywhere makes the
    sum NaN or inf, so a finite sum proves every element finite (an overflowing sum of finite
    values falls through to the elementwise check). ~14x faster on a 512x1024 matrix."""
    return bool(torch.isfinite(t.sum())) or bool(torch.isfinite(t).all())


class NonFiniteError(FloatingPointError):
    pass


def dense_payload(state: dict[str, torch.Tensor], dtype: torch.dtype = torch.float32) -> Payload:
    """Every tensor sent as is (floating tensors cast to the transport dtype)."""
    return Payload({k: (v.detach().to(dtype) if v.is_floating_point() else v.detach()) for k, v in state.items()})


def unpack_dense(p: Payload, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    return {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in p.tensors.items()}


def energy_rank(s: torch.Tensor, energy: float) -> int:
    """Smallest k with sum(s[:k]^2) >= energy * sum(s^2) (s sorted descending)."""
    e = s.double() ** 2
    total = e.sum()
    if total == 0:
        return 0
    cum = torch.cumsum(e, 0)
    k = int(torch.searchsorted(cum, energy * total).item()) + 1
    return min(k, s.numel())


# Energy-fraction margin of the dense pre-check below: float32 SVD's singular values move the
# energy fraction by ~1e-6 at most, so a decision this far from the threshold is the SVD's own.
DENSE_CHECK_MARGIN = 1e-3


def _sent_dense(k: int, rows: int, cols: int, ndim: int, elem: int) -> bool:
    """Dense whenever factors plus their metadata (shape, rank) would not be smaller."""
    return k * (rows + cols + 1) * elem + META_INT_BYTES * (ndim + 1) >= rows * cols * elem


def _squared_singular_values(m: torch.Tensor) -> torch.Tensor:
    """sigma_i^2 of m, descending, from the eigenvalues of its smaller float64 Gram matrix."""
    a = m.double()
    return torch.linalg.eigvalsh(a @ a.T if a.shape[0] <= a.shape[1] else a.T @ a).flip(0).clamp_min(0)


class SpectralReference:
    """A state that uploads stay close to (the broadcast they were trained from). For each of
    its matrices it keeps sqrt of the energy of the best rank p (the Ky Fan (p, 2) norm),
    computed once; `_surely_dense` then settles most uploads from ||upload - reference||
    alone, without a Gram matrix and eigendecomposition per upload."""

    def __init__(self, state: dict[str, torch.Tensor]):
        self.state = state
        self._root: dict[tuple[str, int], tuple[torch.Tensor, float, float]] = {}

    def top_root(self, name: str, rows: int, cols: int, p: int) -> tuple[torch.Tensor, float, float] | None:
        """(the reference as a float32 rows x cols matrix, sqrt of its top-p energy, its top-p
        energy share), or None when the reference has no such matrix."""
        if (name, p) not in self._root:
            ref = self.state.get(name)
            if ref is None or not ref.is_floating_point() or ref.dim() < 2 or ref.shape[0] != rows \
                    or ref.numel() != rows * cols:
                return None
            r = ref.detach().reshape(rows, cols).float()
            lam = _squared_singular_values(r)
            top, total = float(lam[:p].sum()), float(lam.sum())
            self._root[(name, p)] = (r, top ** 0.5, top / total if total > 0 else 0.0)
        return self._root[(name, p)]


def _dense_rank(rows: int, cols: int, ndim: int, elem: int) -> int:
    """The smallest rank at which a rows x cols matrix is sent dense (factors not smaller)."""
    k = max(0, (rows * cols * elem - META_INT_BYTES * (ndim + 1)) // ((rows + cols + 1) * elem))
    while k > 0 and _sent_dense(k - 1, rows, cols, ndim, elem):
        k -= 1
    while not _sent_dense(k, rows, cols, ndim, elem):
        k += 1
    return k


def _surely_dense(m: torch.Tensor, energy: float, k_dense: int, name: str = "",
                  reference: SpectralReference | None = None, spectrum: bool = True) -> bool:
    """True when the energy rule is certain to keep a rank at which `m` is sent dense
    (`k_dense`, from `_dense_rank`), so its SVD would be thrown away; when unsure, the SVD
    decides. It never disagrees with the SVD's decision: the energy share of the best rank below
    the dense threshold must be below `energy` by a margin. That share is bounded two ways,
    cheapest first:
    - with a reference R close to m: the Ky Fan (p, 2) norm is a norm, so
      ||m||_(p) <= ||R||_(p) + ||m - R||_F (the reference's part is computed once per
      reference). When R itself would be factorised, m goes straight to the SVD instead;
    - exactly, from the eigenvalues of the float64 Gram matrix (the squared singular values,
      ~5x cheaper than the SVD of a 512x1024 matrix); skipped when `spectrum` is false."""
    rows, cols = m.shape
    if k_dense > min(rows, cols) or energy - DENSE_CHECK_MARGIN <= 0:
        return False
    total = float(torch.linalg.vector_norm(m, dtype=torch.float64)) ** 2
    if total == 0:  # all-zero matrix: the SVD path sends it as an explicit rank-0 record
        return False
    if k_dense <= 1:
        return True
    ref = reference.top_root(name, rows, cols, k_dense - 1) if reference is not None else None
    if ref is not None:
        r, root, share = ref
        # 1e-6: float32 rounding of m - r (2^-24 of each element) and the float64 sums, far
        # below the margin
        dist = float(torch.linalg.vector_norm(m - r, dtype=torch.float64)) * (1 + 1e-6)
        if (root + dist) ** 2 * (1 + 1e-6) < (energy - DENSE_CHECK_MARGIN) * total:
            return True
        if share >= energy:
            return False
    if not spectrum:
        return False
    lam = _squared_singular_values(m)
    return float(lam[:k_dense - 1].sum()) < (energy - DENSE_CHECK_MARGIN) * float(lam.sum())


# The randomized range finder (`_sketched_factors`). Sketches grow 16, 32, 64 columns; an answer is
# used only when it leaves OVERSAMPLE columns spare, else the full SVD decides. Updates of the CNN
# keep rank 1-18 at 95-98 % energy (docs/performance.md), so the first or second sketch settles
# nearly all of them. Matrices whose smaller side is below SKETCH_MIN_SIDE go to the SVD, which
# costs about as much there (64 x 800: 2.2 ms either way, measured).
SKETCH_COLUMNS = (16, 32, 64)
OVERSAMPLE = 8
POWER_ITERATIONS = 2
SKETCH_MIN_SIDE = 128
SKETCH_SEED = 0  # a fixed test matrix: the codec is a pure function of its input


def _sketched_factors(m: torch.Tensor, energy: float, k_max: int) -> tuple[torch.Tensor, ...] | None:
    """U_k, s_k, V_k^T (float64) of the orthogonal projection of `m` onto a k-dimensional subspace
    that holds at least `energy` of ||m||_F^2, from a randomized range finder with power
    iterations; None when no sketch settles it with k <= k_max (then the full SVD decides).

    What is exact: the total energy is ||m||_F^2, and with Q an orthonormal basis of the sketch
    and Q^T m = U_b diag(s) V^T, the energy that rank j keeps, ||(Q U_b[:, :j])^T m||_F^2 =
    s_1^2 + ... + s_j^2, is computed in float64 from the projected matrix. k is the smallest j
    whose kept energy reaches energy * total, so the rule's guarantee holds as with the full SVD.
    s_i(Q^T m) <= sigma_i(m) (Q^T has orthonormal rows), so no rank below the full SVD's k reaches
    the threshold here: k is never below the exact rule's k; it is larger only when the sketch
    misses part of the top singular subspace."""
    rows, cols = m.shape
    exact = m.double()
    total = float(torch.linalg.vector_norm(exact)) ** 2
    if total == 0:  # an all-zero matrix: the explicit rank-0 record, as the SVD path sends it
        return exact[:, :0], exact[0, :0], exact[:0]
    target = torch.tensor(energy * total, dtype=torch.float64, device=m.device)
    gen = torch.Generator().manual_seed(SKETCH_SEED)
    for width in SKETCH_COLUMNS:
        if width - OVERSAMPLE < 1 or width > min(rows, cols):
            break
        # The range is found in float32 (a good basis is all it must give); the basis is then
        # orthonormalised and the projection taken in float64, where the energies are counted.
        q = torch.linalg.qr(m @ torch.randn(cols, width, generator=gen).to(m.device))[0]
        for _ in range(POWER_ITERATIONS):
            q = torch.linalg.qr(m @ torch.linalg.qr(m.T @ q)[0])[0]
        q = torch.linalg.qr(q.double())[0]
        ub, s, vh = torch.linalg.svd(q.T @ exact, full_matrices=False)
        kept = torch.cumsum(s * s, 0)
        if kept[-1] < target:
            continue
        k = int(torch.searchsorted(kept, target)) + 1
        if k > width - OVERSAMPLE:
            continue
        return (None if k > k_max else ((q @ ub[:, :k]), s[:k], vh[:k]))
    return None


def svd_encode(state: dict[str, torch.Tensor], energy: float | None = None, dtype: torch.dtype = torch.float32,
               rank: int | None = None, dense_check: bool = True,
               reference: SpectralReference | None = None, exact: bool = False) -> Payload:
    """Dynamic singular-value selection (docs/method.md, Global parameter decomposition): each tensor with >= 2 dims is reshaped to
    (out, rest) and sent as U_k, s_k, V_k^T when that is smaller than the dense matrix;
    everything else is sent dense. Ranks and shapes go in the metadata. k is the smallest rank
    keeping `energy` of sum(s^2), or `rank` when given (the fixed-rank ablation).
    Matrices with both sides >= SKETCH_MIN_SIDE are factorised from a randomized sketch when
    one settles them (`_sketched_factors`: the same energy guarantee, k never below the full
    SVD's); `exact=True` always takes the full SVD.
    `dense_check`: skip the SVD of a matrix that is certain to be sent dense (same payload);
    `reference`: a state close to `state` that makes that check cheap (see `_surely_dense`)."""
    p = Payload()
    elem = torch.empty((), dtype=dtype).element_size()
    for name, w in state.items():
        w = w.detach()
        if w.is_floating_point() and not all_finite(w):
            raise NonFiniteError(f"tensor {name!r} has non-finite values; refusing to factorise it")
        if w.dim() < 2 or not w.is_floating_point():
            p.tensors[name] = w.to(dtype) if w.is_floating_point() else w
            continue
        m = w.reshape(w.shape[0], -1).float()
        rows, cols = m.shape
        factors = None
        if rank is not None:
            if dense_check and _sent_dense(min(rank, rows, cols), rows, cols, w.dim(), elem):
                p.tensors[name] = w.to(dtype)
                continue
        else:
            k_dense = _dense_rank(rows, cols, w.dim(), elem)
            sketch = not exact and min(rows, cols) >= SKETCH_MIN_SIDE
            # The cheap proofs first; a sketch next (it settles low-rank matrices); the exact
            # spectrum only for what neither settles.
            if dense_check and _surely_dense(m, energy, k_dense, name, reference, spectrum=not sketch):
                p.tensors[name] = w.to(dtype)
                continue
            if sketch:
                factors = _sketched_factors(m, energy, k_dense - 1)
                if factors is None and dense_check and _surely_dense(m, energy, k_dense):
                    p.tensors[name] = w.to(dtype)
                    continue
        if factors is None:
            u, s, vh = torch.linalg.svd(m, full_matrices=False)
            k = min(rank, s.numel()) if rank is not None else energy_rank(s, energy)
            if _sent_dense(k, rows, cols, w.dim(), elem):
                p.tensors[name] = w.to(dtype)
                continue
            factors = u[:, :k], s[:k], vh[:k]
        # Rank 0 happens only for an all-zero matrix: sent as an explicit rank-0 record.
        u, s, vh = factors
        p.tensors[name + ".U"] = u.contiguous().to(dtype)
        p.tensors[name + ".S"] = s.contiguous().to(dtype)
        p.tensors[name + ".Vh"] = vh.contiguous().to(dtype)
        p.meta[name] = tuple(w.shape) + (s.numel(),)
    return p


def svd_decode(p: Payload, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for name, t in p.tensors.items():
        base, _, part = name.rpartition(".")
        if base in p.meta and part in ("U", "S", "Vh"):
            continue
        out[name] = t.to(dtype) if t.is_floating_point() else t
    for name, info in p.meta.items():
        shape = info[:-1]
        u, s, vh = (p.tensors[f"{name}.{x}"].to(dtype) for x in ("U", "S", "Vh"))
        out[name] = ((u * s) @ vh).reshape(shape)
    return out


def kept_ranks(p: Payload) -> dict[str, int]:
    """Rank kept per factorised tensor (dense tensors are absent)."""
    return {name: info[-1] for name, info in p.meta.items()}


def energy_schedule(rnd: int, rounds: int, start: float, end: float) -> float:
    """FedKD's dynamic energy threshold: linear from `start` (round 1) to `end` (last round)."""
    frac = (rnd - 1) / max(rounds - 1, 1)
    return start + (end - start) * frac


def state_delta(new: dict[str, torch.Tensor], old: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """new - old for floating tensors; integer buffers (BN counters) travel as their value."""
    return {k: (v - old[k] if v.is_floating_point() else v) for k, v in new.items()}


def apply_delta(base: dict[str, torch.Tensor], delta: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of `state_delta`: base + delta (integer buffers take the delta's value)."""
    return {**base, **{k: (base[k] + v if v.is_floating_point() else v) for k, v in delta.items()}}


class Upload(NamedTuple):
    """One client's upload as the server receives it: who sent it (a real server knows its
    peers), what it sent, and its aggregation weight (sample count, or 1 for uniform)."""

    cid: int
    payload: Payload
    weight: float


def weighted_average(states: list[dict[str, torch.Tensor]], weights: list[float]) -> dict[str, torch.Tensor]:
    """Average floating tensors with the given weights; integer buffers (BN batch counters)
    are taken from the first state since averaging a counter means nothing."""
    w = torch.tensor(weights, dtype=torch.float64)
    w = (w / w.sum()).tolist()
    out = {}
    for k, v0 in states[0].items():
        if v0.is_floating_point():
            acc = torch.zeros_like(v0, dtype=torch.float32)
            for s, wi in zip(states, w):
                acc.add_(s[k].float(), alpha=wi)
            out[k] = acc.to(v0.dtype)
        else:
            out[k] = v0.clone()
    return out
