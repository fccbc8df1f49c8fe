"""Times each document stage on a corpus and prints a table (pages/s, regions/s, crops/s per OCR engine).

Usage:
    .venv/bin/python bench/stages.py [--data-dir data/demo] [--max-pages N]

The three layout detectors (ppocr with the shipped line classifier and, on a labelled source, with the one fitted
on its labels; morphology; tesseract) and both OCR engines run on the same pages in the same run, so their figures are
directly comparable (ratios are given against the tesseract baseline). Uses the library functions the assets
call; nothing is written to DuckDB.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd

from linkage_pipeline.config import load_sources
from linkage_pipeline.documents import chain
from linkage_pipeline.documents.ocr import make_engine
from linkage_pipeline.documents.pages import scan_pages

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=REPO / "data" / "demo")
    parser.add_argument("--max-pages", type=int, default=0, help="limit pages per source (0 = all)")
    args = parser.parse_args()
    if not (args.data_dir / "sources.yaml").exists():
        raise SystemExit(f"no corpus at {args.data_dir}; run `.venv/bin/linkage-pipeline generate --out {args.data_dir}`")
    registry = load_sources(args.data_dir)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for source in registry.sources:
            t0 = time.perf_counter()
            pages, _ = scan_pages(source, Path(tmp) / "rendered")
            t_pages = time.perf_counter() - t0
            if args.max_pages:
                pages = pages.head(args.max_pages)
            rows.append({"source": source.name, "stage": "page_images", "variant": "scan+decode",
                         "items": len(pages), "seconds": t_pages})
            regions = None
            variants = (("ppocr", False), ("ppocr", True), ("morphology", False), ("tesseract", False))
            for detector, fit in variants:
                if fit and not (source.labels_path.is_file() and detector == source.layout):
                    continue
                t0 = time.perf_counter()
                found, _ = chain.detect_page_regions(pages, replace(source, layout=detector), source_classifier=fit)
                name = detector + (" + fit on the source's labels" if fit else "")
                rows.append({"source": source.name, "stage": "layout_regions", "variant": name,
                             "items": len(pages), "seconds": time.perf_counter() - t0, "regions": len(found)})
                if detector == source.layout and not fit:
                    regions = found
            t0 = time.perf_counter()
            crops, _ = chain.extract_crops(pages, regions, source, Path(tmp) / "crops")
            rows.append({"source": source.name, "stage": "region_crops", "variant": "crop+pad",
                         "items": len(crops), "seconds": time.perf_counter() - t0})
            for engine in ("tesseract", "rapidocr"):
                t0 = time.perf_counter()
                chain.read_crops(crops, replace(source, ocr=(engine,), primary_ocr=engine), {engine: make_engine(engine)})
                rows.append({"source": source.name, "stage": "ocr_texts", "variant": engine,
                             "items": len(crops), "seconds": time.perf_counter() - t0})
    table = pd.DataFrame(rows)
    table["items_per_s"] = table["items"] / table["seconds"]
    base = table[table["variant"] == "tesseract"].set_index(["source", "stage"])["items_per_s"]
    table["x_vs_tesseract"] = [
        r.items_per_s / base.get((r.source, r.stage), float("nan")) if (r.source, r.stage) in base.index else float("nan")
        for r in table.itertuples()
    ]
    print(f"cores: {os.cpu_count()}  corpus: {args.data_dir}")
    print(table.to_markdown(index=False, floatfmt=".2f"))


if __name__ == "__main__":
    main()
