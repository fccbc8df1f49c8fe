"""Embedding throughput of the shipped model against a CLIPPINGS-sized peer, and exact kNN at CLIPPINGS scale.

Usage:
    .venv/bin/python bench/embedding.py                                    # defaults: 1024 crops, 36,673 x 70,000 kNN
    .venv/bin/python bench/embedding.py --crops 128 --peer-crops 8 --queries 2000 --targets 4000
    .venv/bin/python bench/embedding.py --skip-embed --json /tmp/knn.json

Table 1 (crops/s, image + text per crop): the shipped model (``MultimodalEncoder.encode_images`` with its
preprocessing, plus ``encode_texts``) on synthetic crops from ``build_training_set`` (rendering is not timed),
against a peer of CLIPPINGS size: a transformers ``CLIPModel`` with a ViT-B/16 vision tower and a BERT-base-sized
text tower, random weights, fed ready-made 224 x 224 pixel tensors and 16 token ids per crop (so the peer gets no
preprocessing cost). CPU rows run once per ``--threads`` value; on CUDA the peer also runs in fp16 (``.half()``)
on ``--gpu-crops`` crops, against the issue's target of >= 3000 crops/s, and the shipped model runs with its
default CUDA precision (fp16 autocast).

Table 2 (seconds): exact top-k inner-product search of random unit vectors with ``linkage_pipeline.linking.index``
(flat index: build + search) against the floor, the bare blocked matrix product ``queries @ targets.T`` (no
top-k); also blocked ``torch.topk`` and an IVF index with its recall@1 against the exact result. GPU rows need
CUDA (torch.mm) and faiss-gpu (flat index); inputs are copied to the GPU inside the timed region in both.

Every figure carries a ratio against its peer measured in the same run (same device and threads). Timings on a
shared machine are noisy; compare ratios, not absolute figures across runs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from collections.abc import Callable
from typing import Any

import faiss
import numpy as np
import pandas as pd
import torch

from linkage_pipeline.device import resolve_device
from linkage_pipeline.linking.index import (
    IndexSpec,
    build_index,
    faiss_gpu_available,
    search,
)
from linkage_pipeline.multimodal.checkpoints import shipped_model_dir
from linkage_pipeline.multimodal.encoder import MultimodalEncoder
from linkage_pipeline.multimodal.training.data import build_training_set

Row = dict[str, Any]
GPU_TARGET_CROPS_PER_S = 3000.0
KNN_TARGET_RATIO = 1.2


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Seconds taken by ``fn()`` and its result."""
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def sync(device: torch.device) -> None:
    """Wait for queued CUDA work, so that timings cover it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peer_model() -> Any:
    """A CLIPPINGS-sized CLIP: ViT-B/16 vision tower, BERT-base-sized text tower, random weights."""
    from transformers import CLIPConfig, CLIPModel, CLIPTextConfig, CLIPVisionConfig

    vision = CLIPVisionConfig(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                              intermediate_size=3072, patch_size=16, image_size=224)
    text = CLIPTextConfig(vocab_size=32000, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                          intermediate_size=3072, max_position_embeddings=77, pad_token_id=0, bos_token_id=1,
                          eos_token_id=2)
    config = CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=512)
    torch.manual_seed(0)
    return CLIPModel(config).eval()


def run_peer(model: Any, n: int, batch_size: int, device: torch.device, dtype: torch.dtype) -> float:
    """Seconds for the peer to embed ``n`` crops (image + 16 text tokens each); inputs start on the CPU."""
    gen = torch.Generator().manual_seed(0)
    pixels = torch.randn(min(n, batch_size), 3, 224, 224, generator=gen)
    ids = torch.randint(3, 32000, (min(n, batch_size), 16), generator=gen)
    ids[:, -1] = 2  # end-of-text token, where CLIP pools the text
    mask = torch.ones_like(ids)
    sync(device)
    start = time.perf_counter()
    with torch.inference_mode():
        for lo in range(0, n, batch_size):
            b = min(batch_size, n - lo)
            model.get_image_features(pixel_values=pixels[:b].to(device, dtype))
            model.get_text_features(input_ids=ids[:b].to(device), attention_mask=mask[:b].to(device))
    sync(device)
    return time.perf_counter() - start


def run_ours(encoder: MultimodalEncoder, crops: Any, batch_size: int) -> float:
    """Seconds for the shipped model to embed the crops: preprocessing + image tower + text tower."""
    sync(encoder.device)
    start = time.perf_counter()
    encoder.encode_images(crops.images, directions=crops.directions, batch_size=batch_size)
    encoder.encode_texts(crops.texts)
    sync(encoder.device)
    return time.perf_counter() - start


def embed_rows(args: argparse.Namespace, use_cuda: bool, skipped: list[str]) -> list[Row]:
    """Table 1: crops/s of the shipped model and the peer, CPU per thread count, then CUDA."""
    firms = max(2, math.ceil(args.crops / 4))
    crops = _head(build_training_set(firms, 4, seed=0), args.crops)
    ours_cpu = MultimodalEncoder.load(shipped_model_dir(), device="cpu")
    peer = peer_model()
    cpu = torch.device("cpu")
    rows: list[Row] = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        run_ours(ours_cpu, _head(crops, 8), 8)  # warm-up: lazy allocations, first-call dispatch
        run_peer(peer, 1, 1, cpu, torch.float32)
        t_ours = run_ours(ours_cpu, crops, args.batch_size)
        t_peer = run_peer(peer, args.peer_crops, args.batch_size, cpu, torch.float32)
        rows += _pair(ours_cpu, "cpu", ("fp32", "fp32"), threads, (args.crops, t_ours), (args.peer_crops, t_peer),
                      args.batch_size)
    if not use_cuda:
        skipped.append("embedding GPU rows (shipped model and fp16 ViT-B/16 peer): no CUDA device"
                       if not torch.cuda.is_available() else "embedding GPU rows: --device cpu")
        return rows
    gpu = torch.device("cuda")
    ours_gpu = MultimodalEncoder.load(shipped_model_dir(), device="cuda")
    peer = peer.to(gpu).half()
    run_ours(ours_gpu, _head(crops, 64), 64)
    run_peer(peer, args.batch_size, args.batch_size, gpu, torch.float16)  # warm-up: cuBLAS/cuDNN set-up
    t_ours = run_ours(ours_gpu, crops, args.batch_size)
    t_peer = run_peer(peer, args.gpu_crops, args.batch_size, gpu, torch.float16)
    rows += _pair(ours_gpu, "cuda", ("fp16 autocast", "fp16 .half()"), torch.get_num_threads(), (args.crops, t_ours),
                  (args.gpu_crops, t_peer), args.batch_size)
    met = rows[-1]["crops_per_s"] >= GPU_TARGET_CROPS_PER_S
    rows[-1]["note"] += f"; target >= {GPU_TARGET_CROPS_PER_S:.0f}/s: {'met' if met else 'missed'}"
    return rows


def _head(crops: Any, n: int) -> Any:
    """The first ``n`` crops, as an object with the three lists ``run_ours`` reads."""
    return argparse.Namespace(images=crops.images[:n], directions=crops.directions[:n], texts=crops.texts[:n])


def _pair(encoder: MultimodalEncoder, device: str, precision: tuple[str, str], threads: int,
          ours: tuple[int, float], peer: tuple[int, float], batch: int) -> list[Row]:
    """The rows of one (device, threads) setting, ours then the peer, with ratio ours / peer.

    ``precision`` is (ours, peer); ``ours`` and ``peer`` are (crops, seconds).
    """
    (n_ours, t_ours), (n_peer, t_peer) = ours, peer
    ours_rate, peer_rate = n_ours / t_ours, n_peer / t_peer
    return [
        {"model": f"shipped ({encoder.n_parameters() / 1e6:.1f}M, dim {encoder.dim})", "device": device,
         "precision": precision[0], "threads": threads, "batch": batch, "crops": n_ours, "seconds": t_ours,
         "crops_per_s": ours_rate, "x_vs_peer": ours_rate / peer_rate, "note": "incl. preprocessing"},
        {"model": "peer ViT-B/16 + BERT-base", "device": device, "precision": precision[1], "threads": threads,
         "batch": batch, "crops": n_peer, "seconds": t_peer, "crops_per_s": peer_rate, "x_vs_peer": 1.0,
         "note": "tensors in, no preprocessing"},
    ]


def blocked_matmul(q: torch.Tensor, t: torch.Tensor, block: int, k: int = 0) -> None:
    """``q @ t.T`` in row blocks (the full product does not fit in memory); top-``k`` per row when ``k``."""
    tt = t.T
    # one reused output buffer: a fresh 1 GB block per step costs page faults that are not matmul work
    buf = torch.empty((min(block, q.shape[0]), t.shape[0]), dtype=q.dtype, device=q.device)
    for lo in range(0, q.shape[0], block):
        rows = q[lo: lo + block]
        scores = torch.mm(rows, tt, out=buf[: rows.shape[0]])
        if k:
            torch.topk(scores, k, dim=1)


def knn_rows(args: argparse.Namespace, dim: int, use_cuda: bool, skipped: list[str]) -> list[Row]:
    """Table 2: seconds of exact kNN (ours), the bare blocked product (floor), blocked top-k and IVF."""
    torch.set_num_threads(args.threads_knn)
    faiss.omp_set_num_threads(args.threads_knn)
    rng = np.random.default_rng(0)
    queries, targets = (rng.standard_normal((n, dim), dtype=np.float32) for n in (args.queries, args.targets))
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    targets /= np.linalg.norm(targets, axis=1, keepdims=True)
    q, t = torch.from_numpy(queries), torch.from_numpy(targets)
    # warm-up: OpenMP thread pools of both libraries, first-call dispatch
    blocked_matmul(q[:256], t, args.block)
    search(build_index(targets[:256]), queries[:256], args.k)
    t_ours, (_, exact) = timed(lambda: search(build_index(targets, IndexSpec(kind="flat")), queries, args.k))
    t_mm, _ = timed(lambda: blocked_matmul(q, t, args.block))
    t_topk, _ = timed(lambda: blocked_matmul(q, t, args.block, args.k))
    t_ivf, (_, approx) = timed(lambda: search(build_index(targets, IndexSpec(kind="ivf")), queries, args.k))
    base = {"device": "cpu", "threads": args.threads_knn}

    def row(method: str, seconds: float, floor: float, recall: float = float("nan"), **extra: Any) -> Row:
        return {"method": method, **base, **extra, "seconds": seconds, "x_vs_matmul": seconds / floor,
                "recall@1": recall, "note": ""}

    rows = [row("ours: faiss flat (build+search)", t_ours, t_mm, 1.0),
            row("bare blocked matmul (floor)", t_mm, t_mm),
            row("blocked matmul + torch.topk", t_topk, t_mm),
            row("ours: faiss IVF (train+add+search)", t_ivf, t_mm, float(np.mean(approx[:, 0] == exact[:, 0])))]
    met = t_ours / t_mm <= KNN_TARGET_RATIO
    rows[0]["note"] = f"reference; target <= {KNN_TARGET_RATIO}x: {'met' if met else 'missed'}"
    rows[3]["note"] = "recall vs flat; random vectors are IVF's worst case"
    if not use_cuda:
        skipped.append("kNN GPU rows (faiss GPU flat, torch.mm on CUDA): "
                       + ("no CUDA device" if not torch.cuda.is_available() else "--device cpu"))
        return rows
    gpu = torch.device("cuda")
    blocked_matmul(q[:256].to(gpu), t.to(gpu), args.block)  # warm-up: CUDA context, cuBLAS handles
    sync(gpu)

    def gpu_mm() -> None:
        blocked_matmul(q.to(gpu), t.to(gpu), args.block)
        sync(gpu)

    t_gmm, _ = timed(gpu_mm)
    rows.append(row("bare blocked matmul (floor)", t_gmm, t_gmm, device="cuda"))
    if not faiss_gpu_available():
        skipped.append("kNN faiss GPU flat row: this faiss has no GPU support (install faiss-gpu)")
        return rows
    spec = IndexSpec(kind="flat", device="cuda")
    build_index(targets[:256], spec)  # warm-up: GPU resources
    t_gflat, (_, gexact) = timed(lambda: search(build_index(targets, spec), queries, args.k))
    rows.append(row("ours: faiss GPU flat (build+search)", t_gflat, t_gmm, float(np.mean(gexact[:, 0] == exact[:, 0])),
                    device="cuda"))
    return rows


def _finite(x: Any) -> Any:
    """``x`` with NaN floats as ``None``, so that the JSON is strict."""
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_finite(v) for v in x]
    return None if isinstance(x, float) and math.isnan(x) else x


def header(use_cuda: bool) -> str:
    """One line on the machine and library versions."""
    gpu = torch.cuda.get_device_name(0) if use_cuda else ("none" if not torch.cuda.is_available() else "unused")
    return (f"cpus: {os.cpu_count()}  cpu: {platform.processor() or platform.machine()}  torch: {torch.__version__}  "
            f"faiss: {faiss.__version__} (gpu: {faiss_gpu_available()})  cuda device: {gpu}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--crops", type=int, default=1024, help="synthetic crops for the shipped model")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--threads", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2],
                        help="comma-separated torch thread counts for the CPU embedding rows")
    parser.add_argument("--peer-crops", type=int, default=32, help="crops for the peer on the CPU (it is slow)")
    parser.add_argument("--gpu-crops", type=int, default=4096, help="crops for the fp16 peer on CUDA")
    parser.add_argument("--queries", type=int, default=36673)
    parser.add_argument("--targets", type=int, default=70000)
    parser.add_argument("--dim", type=int, default=0, help="embedding dimension (0 = the shipped model's)")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--block", type=int, default=4096, help="query rows per block of the bare product")
    parser.add_argument("--threads-knn", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--skip-embed", action="store_true")
    parser.add_argument("--skip-knn", action="store_true")
    parser.add_argument("--json", type=str, default="", help="also write the rows to this JSON file")
    args = parser.parse_args()
    try:
        use_cuda = resolve_device(args.device).type == "cuda"
    except ValueError as exc:  # e.g. cuda asked for where torch sees none
        raise SystemExit(f"--device: {exc}") from None
    dim = args.dim or MultimodalEncoder.load(shipped_model_dir(), device="cpu").dim
    skipped: list[str] = []
    out: dict[str, Any] = {"machine": header(use_cuda)}
    print(out["machine"])
    if not args.skip_embed:
        out["embedding"] = embed_rows(args, use_cuda, skipped)
        print("\n## Embedding throughput (image + text per crop)\n")
        print(pd.DataFrame(out["embedding"]).to_markdown(index=False, floatfmt=".3g"))
    if not args.skip_knn:
        out["knn"] = knn_rows(args, dim, use_cuda, skipped)
        out["knn_setup"] = {"queries": args.queries, "targets": args.targets, "dim": dim, "k": args.k}
        print(f"\n## Exact kNN, {args.queries} queries x {args.targets} targets, dim {dim}, k {args.k}\n")
        print(pd.DataFrame(out["knn"]).to_markdown(index=False, floatfmt=".3g"))
    for line in skipped:
        print(f"skipped: {line}")
    out["skipped"] = skipped
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(_finite(out), fh, indent=2)


if __name__ == "__main__":
    main()
