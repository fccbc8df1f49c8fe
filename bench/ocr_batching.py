"""rapidocr batching: width buckets (RapidOcrEngine) against rapidocr's own batching, on a synthetic corpus.

Usage:
    .venv/bin/python bench/ocr_batching.py [--n-firms 150] [--n-list-pages 15] [--repeats 3] [--seed 0]

Generates a corpus into a temporary folder, cuts every labelled box (``crops.crop_region``), and reads the crops
of each source with both batchings. Prints, per source and batching: CER against the true texts
(``evaluation.character_error_rate``), crops/s (median over ``--repeats`` timed passes; the two batchings
alternate so both see the same machine load), and how many readings change between reading all crops of the
source in one call and reading them page by page (the incremental case: only a new page's crops are read).
The baseline is rapidocr's own ``TextRecognizer`` batching (sort by aspect ratio, pad each batch to its widest
crop), which is what ``RapidOcrEngine`` did before the width buckets.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from linkage_pipeline.config import load_sources
from linkage_pipeline.documents.crops import crop_region, reflow_vertical
from linkage_pipeline.documents.ocr import EMPTY, OcrResult, RapidOcrEngine
from linkage_pipeline.evaluation.metrics import character_error_rate
from linkage_pipeline.synthetic.corpus import generate_corpus


class OwnBatchingEngine(RapidOcrEngine):
    """RapidOcrEngine reading through rapidocr's own batching (the behaviour before width buckets)."""

    def _read_batch(self, images: list[Image.Image], direction: str) -> list[OcrResult]:
        from rapidocr.ch_ppocr_rec.typings import TextRecInput

        rec = self._load()
        rec.rec_batch_num = self.batch_size  # this engine's own recogniser; the other engine has its own
        if direction == "vertical":
            images = [reflow_vertical(img) for img in images]
        arrays = [np.ascontiguousarray(np.asarray(img.convert("RGB"))[:, :, ::-1]) for img in images]
        output = rec(TextRecInput(img=arrays))
        results = []
        for text, score in zip(output.txts, output.scores, strict=True):
            text = str(text).strip()
            results.append(OcrResult(text, float(np.clip(score, 0.0, 1.0))) if text else EMPTY)
        return results


def labelled_crops(data_dir: Path) -> dict[str, tuple[str, pd.DataFrame, list[Image.Image]]]:
    """Per source: its text direction, its labels and one crop per labelled box."""
    out = {}
    for source in load_sources(data_dir).sources:
        labels = pd.read_csv(source.labels_path, dtype={"text": str})
        labels = labels.sort_values("page", kind="stable", ignore_index=True)
        crops = []
        for page, rows in labels.groupby("page", sort=False):
            with Image.open(source.pages_dir / str(page)) as img:
                img.load()
                crops += [crop_region(img, (r.x0, r.y0, r.x1, r.y1)) for r in rows.itertuples()]
        out[source.name] = (source.direction, labels, crops)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-firms", type=int, default=150)
    parser.add_argument("--n-list-pages", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per batching (median reported)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--width-step", type=int, default=32)
    args = parser.parse_args()
    engines = {
        "rapidocr own batching (before)": OwnBatchingEngine(batch_size=args.batch_size),
        f"width buckets of {args.width_step} px (after)": RapidOcrEngine(
            batch_size=args.batch_size, width_step=args.width_step
        ),
    }
    with tempfile.TemporaryDirectory() as tmp:
        generate_corpus(tmp, seed=args.seed, n_firms=args.n_firms, n_list_pages=args.n_list_pages)
        sources = labelled_crops(Path(tmp))
    rows = []
    for source, (direction, labels, crops) in sources.items():
        for engine in engines.values():  # load the models and warm up outside the timings
            engine.read(crops[:4], direction=direction)
        seconds: dict[str, list[float]] = {name: [] for name in engines}
        whole: dict[str, list[OcrResult]] = {}
        for _ in range(args.repeats):
            for name, engine in engines.items():
                t0 = time.perf_counter()
                results = engine.read(crops, direction=direction)
                seconds[name].append(time.perf_counter() - t0)
                if whole.setdefault(name, results) != results:
                    raise SystemExit(f"{name} read {source} differently on a second pass")
        pages = labels["page"].to_numpy()
        for name, engine in engines.items():
            by_page: list[OcrResult] = []
            for page in dict.fromkeys(pages):
                on_page = [crop for crop, p in zip(crops, pages, strict=True) if p == page]
                by_page += engine.read(on_page, direction=direction)
            texts = [r.text for r in whole[name]]
            rows.append(
                {
                    "source": source,
                    "direction": direction,
                    "batching": name,
                    "crops": len(crops),
                    "CER": character_error_rate(texts, labels["text"].fillna("").tolist()),
                    "crops_per_s": len(crops) / statistics.median(seconds[name]),
                    "text_changed_by_page": sum(a.text != b.text for a, b in zip(whole[name], by_page, strict=True)),
                    "result_changed_by_page": sum(a != b for a, b in zip(whole[name], by_page, strict=True)),
                }
            )
    table = pd.DataFrame(rows)
    before, after = list(engines)
    speed = table.pivot(index="source", columns="batching", values="crops_per_s")
    print(f"cores: {os.cpu_count()}  n_firms={args.n_firms} n_list_pages={args.n_list_pages} seed={args.seed}")
    print(table.to_markdown(index=False, floatfmt=".4f"))
    print()
    ratios = [f"{s} {speed.loc[s, after] / speed.loc[s, before]:.2f}" for s in speed.index]
    print("crops/s after / before:", ", ".join(ratios))


if __name__ == "__main__":
    main()
