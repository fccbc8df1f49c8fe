"""The CUDA/Triton Jaro-Winkler kernel against rapidfuzz and the CPU levels (linkage_pipeline.probabilistic.gpu)."""

from __future__ import annotations

import numpy as np
import pytest
from _fs_cases import ALPHABETS, random_strings
from rapidfuzz.distance import JaroWinkler

from linkage_pipeline.probabilistic.comparisons import jaro_winkler_level_pairs

# ---------------------------------------------------------------------------------------------------- GPU
try:
    import torch

    _CUDA = bool(torch.cuda.is_available())
except ImportError:  # the CPU path never needs torch
    _CUDA = False


@pytest.mark.gpu
@pytest.mark.skipif(not _CUDA, reason="needs CUDA")
@pytest.mark.parametrize("alphabet", sorted(ALPHABETS))
def test_cuda_jaro_winkler_equals_rapidfuzz(alphabet):
    from linkage_pipeline.probabilistic.gpu import jaro_winkler_similarity_cuda

    rng = np.random.default_rng(13)
    left = random_strings(rng, ALPHABETS[alphabet], 200, 20)
    right = random_strings(rng, ALPHABETS[alphabet], 150, 20)
    got = jaro_winkler_similarity_cuda(left, right)
    expected = np.array([[JaroWinkler.normalized_similarity(x, y) for y in right] for x in left], dtype=np.float32)
    np.testing.assert_array_equal(got, expected)


@pytest.mark.gpu
@pytest.mark.skipif(not _CUDA, reason="needs CUDA")
@pytest.mark.parametrize("symmetric", [False, True])
def test_cuda_level_pairs_equal_cpu_level_pairs(symmetric):
    from linkage_pipeline.probabilistic.gpu import jaro_winkler_level_pairs_cuda

    rng = np.random.default_rng(14)
    left = random_strings(rng, ALPHABETS["mixed"], 300, 12) + ["a" * 70 + "東"]  # one string for the CPU fallback
    right = left if symmetric else random_strings(rng, ALPHABETS["mixed"], 250, 12) + ["a" * 69]
    cpu = jaro_winkler_level_pairs(left, right, (0.88, 0.94), symmetric=symmetric)
    gpu = jaro_winkler_level_pairs_cuda(left, right, (0.88, 0.94), symmetric=symmetric)
    for name in ("x", "y", "level"):
        np.testing.assert_array_equal(getattr(gpu, name), getattr(cpu, name))


def _triton_importable() -> bool:
    import importlib.util

    return importlib.util.find_spec("triton") is not None


# Triton reads TRITON_INTERPRET when it is imported: the interpreter runs in a fresh process, so that a Triton
# imported earlier in the test session (by torch, for instance) cannot leave it off.
_INTERPRETED = """
import json, sys
from linkage_pipeline.probabilistic import gpu
args = json.load(sys.stdin)
if args["what"] == "similarity":
    out = gpu.jaro_winkler_similarity_cuda(args["left"], args["right"], device="cpu").tolist()
else:
    p = gpu.jaro_winkler_level_pairs_cuda(args["left"], args["right"], args["thresholds"],
                                          symmetric=args["symmetric"], device="cpu")
    out = [p.x.tolist(), p.y.tolist(), p.level.tolist(), str(p.x.dtype), str(p.level.dtype)]
print(json.dumps(out))
"""


def _interpreted(**args):
    import json
    import os
    import subprocess
    import sys

    env = {**os.environ, "TRITON_INTERPRET": "1"}
    done = subprocess.run([sys.executable, "-c", _INTERPRETED], input=json.dumps(args), capture_output=True,
                          text=True, env=env, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not _triton_importable(), reason="needs Triton (its interpreter runs the kernel on the CPU)")
def test_triton_kernel_in_interpreter_mode_equals_rapidfuzz():
    """The kernel's algorithm, checked without a GPU: TRITON_INTERPRET=1 runs it with numpy on CPU tensors."""
    rng = np.random.default_rng(15)
    left = random_strings(rng, ALPHABETS["mixed"], 25, 10)
    right = random_strings(rng, ALPHABETS["cjk"] + "a", 20, 10)
    got = np.array(_interpreted(what="similarity", left=left, right=right), dtype=np.float32)
    expected = np.array([[JaroWinkler.normalized_similarity(x, y) for y in right] for x in left], dtype=np.float32)
    np.testing.assert_array_equal(got, expected)


@pytest.mark.skipif(not _triton_importable(), reason="needs Triton (its interpreter runs the kernel on the CPU)")
@pytest.mark.parametrize("symmetric", [False, True])
def test_triton_level_pairs_in_interpreter_mode_equal_cpu_level_pairs(symmetric):
    """The device path's levels (tiles, thresholds, symmetric halves, long strings sent to the CPU) without a GPU."""
    rng = np.random.default_rng(16)
    left = random_strings(rng, ALPHABETS["mixed"], 40, 8)
    # strings longer than MAX_GPU_LENGTH go to the CPU (all of a symmetric comparison would: none there)
    left += [] if symmetric else ["a" * 70 + "東"]
    right = left if symmetric else random_strings(rng, ALPHABETS["mixed"], 30, 8) + ["a" * 69]
    cpu = jaro_winkler_level_pairs(left, right, (0.7, 0.88), symmetric=symmetric)
    x, y, level, x_dtype, level_dtype = _interpreted(what="levels", left=left, right=right, thresholds=[0.7, 0.88],
                                                     symmetric=symmetric)
    assert len(cpu) > 40  # agreeing pairs at both levels
    assert (x, y, level) == (cpu.x.tolist(), cpu.y.tolist(), cpu.level.tolist())
    assert (x_dtype, level_dtype) == ("int32", "uint8")
