"""Jaro-Winkler levels on a CUDA device: a Triton kernel over Unicode code points.

Chosen only when the injected device is CUDA (the CPU path, rapidfuzz's SIMD ``cdist``, stays the default: a
vectorised torch-CPU Jaro-Winkler measured 500x slower than it). Strings are passed as padded int32 code-point
matrices (never bytes, so CJK compares character by character) with their lengths; each kernel instance compares a
``BX x BY`` tile of (left, right) unique values, one pair per lane, and writes the pair's comparison level (or its
similarity). The algorithm is rapidfuzz's: match window ``max(len) // 2 - 1`` (at least 0), greedy matching of
each left character to the first unmatched equal right character in the window (a 64-bit mask of matched right
positions), half the out-of-order matches as transpositions, Winkler boost ``prefix * 0.1 * (1 - jaro)`` for a
common prefix of up to 4 characters when ``jaro > 0.7``, all in float64 and in rapidfuzz's order of operations.

Strings longer than :data:`MAX_GPU_LENGTH` code points do not fit the 64-bit masks; pairs involving them are
computed by rapidfuzz on the CPU. Torch and Triton are imported lazily: this module imports on machines without
either, and :func:`cuda_available` says whether the kernel can run.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from linkage_pipeline.probabilistic.comparisons import (
    LevelPairs,
    check_thresholds,
    jaro_winkler_level_pairs,
)

logger = logging.getLogger(__name__)

#: Longest string (in code points) the kernel compares; longer ones go to rapidfuzz on the CPU.
MAX_GPU_LENGTH = 62
_BX = 32
_BY = 32
# Cells of one uint8 level block on the device (256 MiB).
_DEVICE_BLOCK_CELLS = 1 << 28

_KERNEL: Any = None


def cuda_available() -> bool:
    """Whether torch sees a CUDA device and Triton is importable."""
    try:
        import torch
        import triton  # noqa: F401
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def _kernel() -> Any:
    """Compile (once) and return the Triton kernel; raises ImportError without Triton."""
    global _KERNEL
    if _KERNEL is not None:
        return _KERNEL
    import triton
    import triton.language as tl

    @triton.jit
    def jw_kernel(
        a_ptr, la_ptr, b_ptr, lb_ptr, thr_ptr, out_ptr,
        n_x, n_y, col0, stride_a, stride_b, stride_out,
        N_THR: tl.constexpr, LA: tl.constexpr, LB: tl.constexpr,
        BX: tl.constexpr, BY: tl.constexpr, WRITE_SIM: tl.constexpr,
    ):
        pid_x = tl.program_id(0)
        pid_y = tl.program_id(1)
        xs = pid_x * BX + tl.arange(0, BX)
        ys = col0 + pid_y * BY + tl.arange(0, BY)
        mx = xs < n_x
        my = ys < n_y
        la = tl.load(la_ptr + xs, mask=mx, other=0)[:, None]
        lb = tl.load(lb_ptr + ys, mask=my, other=0)[None, :]
        win = tl.maximum(tl.maximum(la, lb) // 2 - 1, 0)
        one = tl.full((BX, BY), 1, tl.int64)
        zero64 = tl.zeros((BX, BY), dtype=tl.int64)
        matched = zero64
        flags = zero64
        m = tl.zeros((BX, BY), dtype=tl.int32)
        for i in range(LA):
            ca = tl.load(a_ptr + xs * stride_a + i, mask=mx, other=-1)[:, None]
            eq = zero64
            for j in range(LB):
                cb = tl.load(b_ptr + ys * stride_b + j, mask=my, other=-2)[None, :]
                eq = eq | tl.where(ca == cb, one << j, zero64)
            lo = tl.maximum(i - win, 0)
            hi = tl.minimum(i + win + 1, lb)
            window = tl.where(hi > lo, ((one << hi) - 1) ^ ((one << lo) - 1), zero64)
            cand = tl.where(i < la, eq & window & ~matched, zero64)
            low = cand & (zero64 - cand)
            matched = matched | low
            hit = low != 0
            flags = flags | tl.where(hit, one << i, zero64)
            m += hit.to(tl.int32)
        rem = matched
        trans = tl.zeros((BX, BY), dtype=tl.int32)
        for i in range(LA):
            ca = tl.load(a_ptr + xs * stride_a + i, mask=mx, other=-1)[:, None]
            is_flag = ((flags >> i) & 1) != 0
            low = rem & (zero64 - rem)
            cb_at = tl.zeros((BX, BY), dtype=tl.int32)
            for j in range(LB):
                cb = tl.load(b_ptr + ys * stride_b + j, mask=my, other=-2)[None, :]
                cb_at = tl.where(low == (one << j), cb, cb_at)
            trans += (is_flag & (ca != cb_at)).to(tl.int32)
            rem = tl.where(is_flag, rem ^ low, rem)
        prefix = tl.zeros((BX, BY), dtype=tl.int32)
        still = tl.full((BX, BY), 1, tl.int1)
        for k in range(4):
            ca = tl.load(a_ptr + xs * stride_a + k, mask=mx, other=-1)[:, None]
            cb = tl.load(b_ptr + ys * stride_b + k, mask=my, other=-2)[None, :]
            still = still & (ca == cb) & (k < la) & (k < lb)
            prefix += still.to(tl.int32)
        mf = m.to(tl.float64)
        tf = (trans // 2).to(tl.float64)
        safe_m = tl.maximum(mf, 1.0)
        # lanes past the end of the tile have length 0: divide by 1 there (their result is masked out)
        la_f = tl.maximum(la, 1).to(tl.float64)
        lb_f = tl.maximum(lb, 1).to(tl.float64)
        jaro = (mf / la_f + mf / lb_f + (mf - tf) / safe_m) / 3.0
        jaro = tl.where(m > 0, jaro, 0.0)
        boost = prefix.to(tl.float64) * 0.1 * (1.0 - jaro)
        sim = tl.where(jaro > 0.7, jaro + boost, jaro)
        out_offs = (xs[:, None] - 0) * stride_out + (ys[None, :] - col0)
        out_mask = mx[:, None] & my[None, :]
        if WRITE_SIM:
            tl.store(out_ptr + out_offs, sim.to(tl.float32), mask=out_mask)
        else:
            level = tl.full((BX, BY), 1, tl.int32)
            for k in range(N_THR):
                t = tl.load(thr_ptr + k)
                level += (sim >= t).to(tl.int32)
            tl.store(out_ptr + out_offs, level.to(tl.uint8), mask=out_mask)

    _KERNEL = jw_kernel
    return _KERNEL


def encode_code_points(texts: Sequence[str], width: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Pad strings into a code-point matrix.

    Args:
        texts: n strings.
        width: Columns of the matrix; defaults to the longest string (at least 4, for the Winkler prefix).

    Returns:
        ``(codes, lengths)``: codes (n, width) int32 padded with -1, lengths (n,) int32 in code points.
    """
    lengths = np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts))
    width = max(4, int(lengths.max(initial=0))) if width is None else width
    flat = np.frombuffer("".join(texts).encode("utf-32-le", errors="surrogatepass"), dtype="<u4").astype(np.int32)
    codes = np.full((len(texts), width), -1, dtype=np.int32)
    if flat.size:
        rows = np.repeat(np.arange(len(texts)), lengths)
        cols = np.arange(flat.size) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        codes[rows, cols] = flat
    return codes, lengths.astype(np.int32)


def _launch(
    torch: Any, a: Any, la: Any, b: Any, lb: Any, thr: Any, out: Any, n_x: int, n_y: int, col0: int, write_sim: bool
) -> None:
    import triton

    kernel = _kernel()
    grid = (triton.cdiv(n_x, _BX), triton.cdiv(n_y - col0, _BY))
    kernel[grid](
        a, la, b, lb, thr, out, n_x, n_y, col0, a.stride(0), b.stride(0), out.stride(0),
        N_THR=int(thr.numel()), LA=int(a.shape[1]), LB=int(b.shape[1]), BX=_BX, BY=_BY, WRITE_SIM=write_sim,
    )


def jaro_winkler_similarity_cuda(left: Sequence[str], right: Sequence[str], device: str = "cuda") -> np.ndarray:
    """Dense Jaro-Winkler similarity matrix computed by the kernel (for tests and small inputs).

    Args:
        left: n_x strings of at most :data:`MAX_GPU_LENGTH` code points.
        right: n_y strings of at most :data:`MAX_GPU_LENGTH` code points.
        device: Torch device to run on (``"cuda"``, ``"cuda:N"``; ``"cpu"`` only under ``TRITON_INTERPRET=1``).

    Returns:
        Similarities, shape (n_x, n_y) float32.

    Raises:
        ValueError: If a string is longer than :data:`MAX_GPU_LENGTH`.
    """
    import torch

    for name, texts in (("left", left), ("right", right)):
        longest = max((len(t) for t in texts), default=0)
        if longest > MAX_GPU_LENGTH:
            raise ValueError(
                f"{name} holds a string of {longest} code points; the kernel takes at most {MAX_GPU_LENGTH}"
            )
    out = torch.zeros((len(left), len(right)), dtype=torch.float32, device=device)
    if len(left) == 0 or len(right) == 0:
        return out.cpu().numpy()
    a, la = (torch.as_tensor(v, device=device) for v in encode_code_points(left))
    b, lb = (torch.as_tensor(v, device=device) for v in encode_code_points(right))
    thr = torch.zeros(1, dtype=torch.float64, device=device)
    _launch(torch, a, la, b, lb, thr, out, len(left), len(right), 0, True)
    return out.cpu().numpy()


def jaro_winkler_level_pairs_cuda(
    left: Sequence[str],
    right: Sequence[str],
    thresholds: Sequence[float],
    *,
    symmetric: bool = False,
    device: str = "cuda",
    workers: int = -1,
) -> LevelPairs:
    """GPU version of :func:`~linkage_pipeline.probabilistic.comparisons.jaro_winkler_level_pairs`.

    Same arguments and result (agreeing pairs sorted by ``x`` then ``y``); ``device`` is the torch device.
    Pairs involving a string longer than :data:`MAX_GPU_LENGTH` are compared by rapidfuzz on the CPU.
    """
    import torch

    thresholds = check_thresholds(thresholds)
    left, right = list(left), list(right)
    n_x, n_y = len(left), len(right)
    if n_x == 0 or n_y == 0:
        return LevelPairs(np.empty(0, np.int32), np.empty(0, np.int32), np.empty(0, np.uint8))
    long_x = np.flatnonzero([len(t) > MAX_GPU_LENGTH for t in left])
    long_y = np.flatnonzero([len(t) > MAX_GPU_LENGTH for t in right])
    short_x = np.setdiff1d(np.arange(n_x), long_x)
    short_y = np.setdiff1d(np.arange(n_y), long_y)
    if symmetric and (long_x.size or long_y.size):
        # keep the mirror logic in one place: the CPU path handles symmetric inputs with long strings
        logger.info(
            "%d strings exceed %d code points: symmetric comparison runs on the CPU", long_x.size, MAX_GPU_LENGTH
        )
        return jaro_winkler_level_pairs(left, right, thresholds, symmetric=True, workers=workers)
    xs, ys, lv = [], [], []
    if short_x.size and short_y.size:
        sl = [left[i] for i in short_x]
        sr = [right[j] for j in short_y]
        a, la = (torch.as_tensor(v, device=device) for v in encode_code_points(sl))
        b, lb = (torch.as_tensor(v, device=device) for v in encode_code_points(sr))
        thr = torch.tensor(thresholds, dtype=torch.float64, device=device)
        n_sy = len(sr)
        rows = max(_BX, (_DEVICE_BLOCK_CELLS // n_sy) // _BX * _BX)
        for start in range(0, len(sl), rows):
            stop = min(start + rows, len(sl))
            col0 = start if symmetric else 0
            out = torch.empty((stop - start, n_sy - col0), dtype=torch.uint8, device=device)
            _launch(torch, a[start:stop], la[start:stop], b, lb, thr, out, stop - start, n_sy, col0, False)
            nz = torch.nonzero(out >= 2)
            bx = nz[:, 0] + start
            by = nz[:, 1] + col0
            level = out[nz[:, 0], nz[:, 1]]
            if symmetric:
                keep = by >= bx
                bx, by, level = bx[keep], by[keep], level[keep]
            xs.append(short_x[bx.cpu().numpy()])
            ys.append(short_y[by.cpu().numpy()])
            lv.append(level.cpu().numpy().astype(np.uint8))
    if long_x.size:
        p = jaro_winkler_level_pairs([left[i] for i in long_x], right, thresholds, workers=workers)
        xs.append(long_x[p.x])
        ys.append(p.y.astype(np.int64))
        lv.append(p.level)
    if long_y.size and short_x.size:
        p = jaro_winkler_level_pairs(
            [left[i] for i in short_x], [right[j] for j in long_y], thresholds, workers=workers
        )
        xs.append(short_x[p.x])
        ys.append(long_y[p.y])
        lv.append(p.level)
    x = np.concatenate(xs).astype(np.int32) if xs else np.empty(0, np.int32)
    y = np.concatenate(ys).astype(np.int32) if ys else np.empty(0, np.int32)
    level = np.concatenate(lv).astype(np.uint8) if lv else np.empty(0, np.uint8)
    if symmetric:
        off = x != y
        x, y, level = np.concatenate([x, y[off]]), np.concatenate([y, x[off]]), np.concatenate([level, level[off]])
    order = np.lexsort((y, x))
    return LevelPairs(x[order], y[order], level[order])
