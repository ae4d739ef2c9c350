"""Projection maths for the unlearning methods: tensors in, tensors out, no model.

Conventions: a *basis* is a matrix whose columns are orthonormal, (d, r) with r <= d, r may be 0.
A *direction* is what a method writes into `.grad`: the optimiser descends along it, so a retain
sample with gradient r is harmed (to first order) by a direction g exactly when <g, r> < 0.
Layer updates are matrices (C_out, D): a Conv2d weight (C_out, C_in, k, k) is read as
(C_out, C_in * k * k), the shape of its im2col product; a bias or a BatchNorm affine vector is (C_out,).
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Sequence

import torch
from torch import Tensor

RANK_TOL = 1e-6
"""Relative size below which a singular value (or QR pivot) counts as zero."""


class Spectrum:
    """Principal directions of a set of row vectors, with the share of energy each carries;
    the directions of a wide matrix are built only as far as they are asked for.

    Both shapes go through the eigendecomposition of the smaller Gram matrix, in float32, not an
    SVD of the rows: with n = 1024 sampled rows of a d = 2304 im2col layer (a ResNet's 3x3 conv
    on 256 channels) the SVD took 0.65 s on 2 cores and the Gram route about 0.1 s, and layers
    are many. A tall matrix (n > d) uses the (d, d) Gram matrix, whose eigenvectors are the
    directions; a wide one the (n, n) Gram matrix, whose eigenvectors w map to the directions by
    rows^T w / sigma, made orthonormal again by a Cholesky QR (a triangular change of basis, so
    the first r directions span what they spanned before, for every r). A TGP input basis of a
    wide layer keeps a few of its up to 1024 directions, so building only those saves the rest.

    With `threshold` (and min(n, d) > LEADING_MIN_DIM), only the leading directions are sought,
    by `leading_directions`: as many as hold `threshold` of the energy, which they then hold
    exactly, at a fraction of the full eigendecomposition's cost when they are few (the input
    side of a TGP layer: 4 to 100 of up to 1024 on a ResNet-18).

    rows: (n, d) float, one observation per row (im2col patches, backward signals, ...).
    threshold: None for the whole spectrum, else the energy share the leading directions must
        hold (`energy` then stops where they do).
    energy: (k,) sigma_i^2 / sum sigma^2, descending, sums to 1 (all zeros when rows are 0);
        k = min(n, d) for tall rows, the numerical rank (sigma^2 > RANK_TOL * sigma_max^2) for
        wide ones; with `threshold`, the first k reaching it.
    """

    def __init__(self, rows: Tensor, threshold: float | None = None):
        rows = rows.float()
        scale = rows.abs().max()
        self.dim = rows.shape[1]
        self._rows: Tensor | None = None
        self._weights: Tensor | None = None
        self._directions: Tensor | None
        if scale == 0:
            k = min(rows.shape)
            self._directions = torch.eye(rows.shape[1], k, device=rows.device)
            self.energy = rows.new_zeros(k)
            return
        rows = rows / scale  # backward signals can be tiny; keep their squares well inside float32
        if threshold is not None and 0 < threshold < 1 and min(rows.shape) > LEADING_MIN_DIM:
            found = leading_directions(rows, threshold)
            if found is not None:
                self._directions, self.energy = found
                return
        if rows.shape[0] > rows.shape[1]:
            power, directions = torch.linalg.eigh(rows.T @ rows)
            power, self._directions = power.flip(0).clamp_min(0), directions.flip(1)
            self.energy = power / power.sum()
            return
        power, weights = torch.linalg.eigh(rows @ rows.T)
        power, weights = power.flip(0).clamp_min(0), weights.flip(1)
        rank = int((power > RANK_TOL * power[0]).sum())
        self._rows, self._weights = rows, weights[:, :rank] / power[:rank].sqrt()
        self._directions = None
        self.energy = power[:rank] / power.sum()

    def directions(self, rank: int | None = None) -> Tensor:
        """The leading `rank` directions (d, rank), orthonormal columns (default: all k)."""
        rank = self.energy.numel() if rank is None else rank
        if self._directions is not None:
            return self._directions[:, :rank]
        assert self._rows is not None and self._weights is not None  # set whenever _directions is not
        if rank == 0:
            return self._rows.new_zeros(self.dim, 0)
        return orthonormal_columns(self._rows.T @ self._weights[:, :rank])


LEADING_MIN_DIM = 256
"""Below this many dimensions (the smaller of rows and columns) a full eigendecomposition is
cheap enough that `Spectrum` does not look for the leading directions alone."""


def leading_directions(rows: Tensor, threshold: float, block: int = 32, oversample: int = 8,
                       iterations: int = 3, generator: torch.Generator | None = None
                       ) -> tuple[Tensor, Tensor] | None:
    """The fewest leading right singular directions found that hold `threshold` of the rows'
    energy, by randomized subspace iteration with Rayleigh-Ritz.

    A block of `block + oversample` random directions goes through `iterations` products with
    rows^T rows (each 4 n d (block + oversample) flops, re-orthonormalised), then the Ritz
    directions of that block are ranked by the energy they hold, rows' v_i squared over the
    rows' total; this energy is exact for those directions whatever the convergence, so the
    first r whose energies reach `threshold` hold it (r may exceed the least possible rank by a
    few where the spectrum is flat). When r leaves fewer than `oversample` Ritz directions spare,
    the block doubles, starting from the directions found; past an eighth of min(n, d) the answer
    is None: a full eigendecomposition is then cheaper (on a ResNet-18's 512-channel output
    signals, where r is about half of 512, the search cost 1.5x to 10x the eigendecomposition).

    rows: (n, d) float -> (directions (d, r) orthonormal, energy (r,) descending), or None.
    """
    generator = generator or torch.Generator().manual_seed(0)
    total = rows.square().sum()
    limit = min(rows.shape) // 8
    basis = torch.randn(rows.shape[1], block + oversample, generator=generator).to(rows)
    while basis.shape[1] <= limit:
        for _ in range(iterations):
            basis = torch.linalg.qr(rows.T @ (rows @ basis)).Q
        projected = rows @ basis  # (n, l)
        power, weights = torch.linalg.eigh(projected.T @ projected)
        power, weights = power.flip(0).clamp_min(0), weights.flip(1)
        energy = power / total
        reached = torch.cumsum(energy, 0) >= threshold - 1e-7
        if bool(reached.any()):
            rank = int(reached.nonzero()[0]) + 1
            if rank <= basis.shape[1] - oversample:
                return (basis @ weights[:, :rank]), energy[:rank]
        extra = torch.randn(rows.shape[1], basis.shape[1], generator=generator).to(rows)
        basis = torch.cat([basis @ weights, extra], dim=1)
    return None


def spectrum(rows: Tensor) -> tuple[Tensor, Tensor]:
    """Principal directions of a set of row vectors and the share of energy each carries
    (see `Spectrum`).

    Args:
        rows: (n, d) float, one observation per row.
    Returns:
        directions (d, k), orthonormal columns, strongest first; energy (k,) as in `Spectrum`.
    """
    result = Spectrum(rows)
    return result.directions(), result.energy


def orthonormal_columns(matrix: Tensor) -> Tensor:
    """Cholesky QR of a (d, k) matrix whose columns are nearly orthonormal: Q = M R^-1 with
    R^T R = M^T M, in float64 for the (k, k) factor. Column j of Q lies in the span of columns
    1..j of M. Falls back to a Householder QR when M^T M is not positive definite."""
    gram = (matrix.T @ matrix).double()
    factor, info = torch.linalg.cholesky_ex(gram, upper=True)
    if int(info) != 0:
        return torch.linalg.qr(matrix).Q
    inverse = torch.linalg.solve_triangular(factor, torch.eye(
        gram.shape[0], dtype=gram.dtype, device=gram.device), upper=True)
    return matrix @ inverse.to(matrix.dtype)


def threshold_rank(energy: Tensor, threshold: float) -> int:
    """Smallest r whose leading r energies reach `threshold` of the total (GPM's criterion).

    energy: (k,) descending shares summing to 1 (or all zero -> 0); threshold in [0, 1].
    """
    if energy.numel() == 0 or float(energy.sum()) <= 0 or threshold <= 0:
        return 0
    reached = torch.cumsum(energy, 0) >= threshold - 1e-7
    return int(reached.nonzero()[0]) + 1 if bool(reached.any()) else energy.numel()


def energy_basis(rows: Tensor, threshold: float) -> Tensor:
    """Orthonormal basis (d, r) of the span of `rows` (n, d) keeping `threshold` of their energy."""
    result = Spectrum(rows)
    return result.directions(threshold_rank(result.energy, threshold))


def allocate_ranks(energies: Sequence[Tensor], costs: Sequence[float],
                   sides: Sequence[tuple[str, str]], budget: float) -> list[int]:
    """Share a memory budget among the bases of several layers.

    A layer's projection removes about E_in * E_out of the kept signal, where E_side is the mean
    energy its bases on that side capture (1 for a side with no basis: every direction is kept,
    as for the inputs of a bias). Every basis first gets its leading direction (most energy per
    float first, while the budget lasts); then directions are added one at a time by their gain
    in sum over layers of E_in * E_out per float: e_next / n_side * E_other_side / cost.

    Args:
        energies: per basis, (k_i,) descending energy shares, cut at its threshold rank.
        costs: per basis, floats one direction takes (its dimension).
        sides: per basis, (layer, "input" or "output").
        budget: floats all bases may take together.
    Returns:
        ranks r_i <= k_i with sum r_i * costs[i] <= budget.
    """
    shares = [e.tolist() for e in energies]
    count = Counter(sides)
    captured = dict.fromkeys(count, 0.0)
    ranks, spent = [0] * len(shares), 0.0
    by_side: dict[tuple[str, str], list[int]] = {}
    for i, key in enumerate(sides):
        by_side.setdefault(key, []).append(i)

    def take(i: int) -> None:
        nonlocal spent
        captured[sides[i]] += shares[i][ranks[i]]
        ranks[i] += 1
        spent += costs[i]

    def coverage(layer: str, side: str) -> float:
        return captured[(layer, side)] / count[(layer, side)] if (layer, side) in count else 1.0

    def gain(i: int) -> float:
        layer, side = sides[i]
        other = coverage(layer, "output" if side == "input" else "input")
        return shares[i][ranks[i]] / count[(layer, side)] * other / costs[i]

    for i in sorted(range(len(shares)), key=lambda i: -shares[i][0] / costs[i] if shares[i] else 0):
        if shares[i] and spent + costs[i] <= budget:
            take(i)
    # Greedy by gain, as a lazy heap: a take changes only the gain of the basis taken from (its
    # next share) and of the bases on the other side of its layer (their coverage factor), so
    # only those are pushed again; an entry whose gain is no longer current is skipped. Ties go
    # to the lower index, and a basis that no longer fits never will (spending only grows).
    heap = [(-gain(i), i) for i in range(len(shares)) if ranks[i] < len(shares[i])]
    heapq.heapify(heap)
    while heap:
        negative, i = heapq.heappop(heap)
        if ranks[i] >= len(shares[i]) or spent + costs[i] > budget:
            continue
        current = gain(i)
        if -negative != current:
            heapq.heappush(heap, (-current, i))
            continue
        if current <= 0:
            continue
        take(i)
        layer, side = sides[i]
        for j in [i, *by_side.get((layer, "output" if side == "input" else "input"), [])]:
            if ranks[j] < len(shares[j]):
                heapq.heappush(heap, (-gain(j), j))
    return ranks


def union_basis(bases: Sequence[Tensor]) -> Tensor:
    """Orthonormal basis of the sum of several subspaces.

    bases: at least one (d, r_i) matrix (orthonormal or not; r_i may be 0) -> (d, r) with
    r = rank of [B_1 ... B_m] <= sum r_i. A single basis with orthonormal columns is its own
    union and is returned as it is (an SVD of it would only rotate it within its span).
    """
    nonempty = [b.float() for b in bases if b.shape[1] > 0]
    if len(nonempty) == 1:
        only = nonempty[0]
        gram = only.T @ only
        if torch.allclose(gram, torch.eye(gram.shape[0], device=gram.device), atol=1e-4):
            return only
    stacked = torch.cat([b.float() for b in bases], dim=1)
    if stacked.shape[1] == 0:
        return stacked
    left, sigma, _ = torch.linalg.svd(stacked, full_matrices=False)
    return left[:, sigma > RANK_TOL * float(sigma[0])]


def span_basis(vectors: Tensor) -> Tensor:
    """Orthonormal basis of the span of k vectors, by QR (SVD when they are rank-deficient).

    vectors: (k, n) -> (n, r), r = rank <= min(k, n). QR's pivots give the rank when the vectors
    are independent; a small pivot means QR's column there is arbitrary, so SVD decides instead.
    """
    columns = vectors.float().T  # (n, k)
    scale = float(columns.norm(dim=0).max()) if columns.numel() else 0.0
    if scale == 0.0:
        return columns[:, :0]
    q, r = torch.linalg.qr(columns)
    pivots = r.diagonal().abs()
    if pivots.numel() == columns.shape[1] and bool((pivots > RANK_TOL * scale).all()):
        return q
    left, sigma, _ = torch.linalg.svd(columns, full_matrices=False)
    return left[:, sigma > RANK_TOL * scale]


def project_out(vector: Tensor, basis: Tensor) -> Tensor:
    """vector - B B^T vector: (n,) and (n, r) -> (n,), orthogonal to every column of B."""
    return vector - basis @ (basis.T @ vector)


GRAM_TOL = 1e-3
"""Relative singular value below which `project_out_rows` counts a direction of the rows' span
as zero: its float32 Gram matrix resolves singular values down to about 3e-4 of the largest. A
sample gradient within 0.1% of the span of the others is thereby still covered to 0.1%."""


def project_out_rows(vector: Tensor, rows: Tensor, block: int = 1 << 14) -> Tensor:
    """vector minus its projection on the span of the rows: (n,) and (k, n) -> (n,).

    Through the (k, k) Gram matrix of the rows, as if scaled to unit length (float64 eigh, directions
    whose singular value is below GRAM_TOL of the largest count as zero), then once more on the
    residue, which brings what the float32 Gram loses back to float32 accuracy. Costs
    2 k^2 n + 8 k n flops and no (n, k) basis, against about 4 k^2 n for a QR and its Q: on a
    ResNet-18 (11 M parameters, k = 16) QR was a sixth of an IGO step's time.

    The rows are read in blocks of `block` columns, each block used twice while it is in cache
    (the Gram matrix and rows @ vector; the first residue and rows @ residue): three passes over
    the rows instead of five, which bound the time (1.6x faster on a (16, 2.4 M) ResNet layer).
    """
    rows = rows.to(vector.dtype)
    k, n = rows.shape
    gram, first = rows.new_zeros(k, k), rows.new_zeros(k)
    for start in range(0, n, block):
        part = rows[:, start:start + block]
        gram.addmm_(part, part.T)
        first.addmv_(part, vector[start:start + block])
    gram = gram.double()
    norms = gram.diagonal().sqrt()
    scale = torch.where(norms > 0, norms, torch.ones_like(norms))  # a zero row stays zero
    values, vectors = torch.linalg.eigh(gram / scale[:, None] / scale[None, :])
    kept = values > GRAM_TOL ** 2 * values[-1].clamp_min(0)
    vectors = vectors[:, kept] / scale[:, None]  # pseudo-inverse of the unscaled Gram matrix
    inverse = ((vectors / values[kept]) @ vectors.T).to(vector.dtype)
    coefficients = inverse @ first
    residue, second = torch.empty_like(vector), rows.new_zeros(k)
    for start in range(0, n, block):
        part = rows[:, start:start + block]
        piece = residue[start:start + block]
        torch.addmv(vector[start:start + block], part.T, coefficients, alpha=-1, out=piece)
        second.addmv_(part, piece)
    return residue.sub_(rows.T @ (inverse @ second))


def orthogonalize(direction: Tensor, samples: Tensor, conflict_only: bool = False) -> Tensor:
    """Instance-level gradient orthogonalisation (OrthoGrad / IGO) of one parameter tensor.

    Args:
        direction: (n,) the update direction (descended by the optimiser).
        samples: (k, n) per-sample retain gradients.
        conflict_only: remove only the span of the samples the direction conflicts with
            (<direction, r_j> < 0, PCGrad-style); samples it already helps are left alone.
    Returns:
        (n,) orthogonal to every (conflicting) sample gradient (`project_out_rows`).
    """
    if conflict_only:
        samples = samples[samples @ direction < 0]
    if samples.shape[0] == 0:
        return direction
    return project_out_rows(direction, samples)


def pcgrad(direction: Tensor, others: Tensor) -> Tensor:
    """PCGrad conflict removal (Yu et al. 2020) of one direction against task gradients.

    For each row g_t in turn (in the order given), when <d, g_t> < 0 the direction loses its
    component along g_t: d <- d - <d, g_t> / |g_t|^2 g_t. Rows that do not conflict are skipped.

    direction: (n,); others: (T, n) -> (n,).
    """
    for other in others:
        dot = torch.dot(direction, other)
        if dot < 0:
            direction = direction - dot / other.square().sum().clamp_min(1e-30) * other
    return direction


def project_task_aware(update: Tensor, outputs: Tensor | None, inputs: Tensor | None) -> Tensor:
    """Task-aware gradient projection of one layer's update (docs/ARCHITECTURE.md section 8.2).

    dW <- dW - V V^T dW U U^T removes exactly the changes that are both in the kept inputs' span
    (U) and in the kept tasks' sensitive output directions (V): for v in span V and a in span U,
    <dW', v a^T>_F = v^T dW' a = 0. A vector update (bias, BatchNorm affine) is bias-like:
    db <- db - V V^T db.

    Args:
        update: (C_out, ...) weight update (trailing dims flattened to D) or (C_out,) vector.
        outputs: V (C_out, r_out), orthonormal; None means every output direction (V V^T = I:
            GPM's input-only projection dW - dW U U^T).
        inputs: U (D, r_in), orthonormal; None means every input direction (U U^T = I: the
            output-only projection dW - V V^T dW); ignored for a vector update.
    Returns:
        the projected update, same shape as `update`.
    """
    return update - task_aware_removed(update, outputs, inputs)


def task_aware_removed(update: Tensor, outputs: Tensor | None, inputs: Tensor | None) -> Tensor:
    """What `project_task_aware` takes away from `update`, same shape: project(x) = x - this."""
    matrix = update.reshape(update.shape[0], -1)  # (C_out, D); a vector is (C_out, 1)
    inputs = None if update.dim() == 1 else inputs
    return task_aware_part(matrix, outputs, inputs).view_as(update)


def task_aware_part(matrix: Tensor, outputs: Tensor | None, inputs: Tensor | None) -> Tensor:
    """What `project_task_aware` removes from a (C_out, D) update: V V^T dW U U^T (U U^T = I
    where `inputs` is None, as for a vector update (C_out, 1); V V^T = I where `outputs` is).

    With both bases, the (r_out, r_in) core V^T dW U is formed first, from whichever of dW U and
    V^T dW is smaller, then expanded by V and U^T: about 2 C_out D (r_in + min(r_in, r_out))
    flops against 4 C_out D (r_in + r_out) for dW U U^T and then V V^T of that (the output
    bases of a ResNet's wide layers keep half or more of their C_out directions).
    """
    if inputs is None:
        return matrix if outputs is None else outputs @ (outputs.T @ matrix)
    if outputs is None:
        return (matrix @ inputs) @ inputs.T
    if inputs.shape[1] <= outputs.shape[1]:
        core = outputs.T @ (matrix @ inputs)
    else:
        core = (outputs.T @ matrix) @ inputs
    return (outputs @ core) @ inputs.T
