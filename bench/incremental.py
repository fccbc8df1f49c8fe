"""Wall time of the scheduled incremental runs: nothing new, and one new page, against recomputing everything.

Usage:
    .venv/bin/python bench/incremental.py                      # a generated corpus of 120 firms, 12 list pages
    .venv/bin/python bench/incremental.py --n-firms 600 --list-pages 60   # demo size (about 10 minutes)

Steps, on a corpus generated into a temporary directory with one supplier-list page held back:

1. ``initial``: every source (``source_job`` per partition) and then ``linkage_job``, from nothing.
2. ``no change``: what the daily schedule runs when no scan arrived: ``linkage_job`` (and, for reference, a
   ``source_job`` run of the query source, which the sensor would not even start).
3. ``one new page``: the held-back page is put back; ``source_job`` of that source (as the sensor starts it)
   then the scheduled ``linkage_job``.
4. ``recompute``: the same two runs with every incremental shortcut switched off (``recompute`` on the
   per-source stages, ``rebuild`` of the indexes, ``relink_all``): the cost of the same update without
   incremental work, measured in the same process on the same files.

Each run is executed in-process (``execute_in_process``) on an ephemeral Dagster instance; wall time includes
Dagster's own step overhead. The "work" column comes from the runs' asset metadata.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _meta(result, asset: str) -> dict[str, object]:
    events = result.asset_materializations_for_node(asset)
    return {k: v.value for k, v in events[0].metadata.items()} if events else {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-firms", type=int, default=120)
    parser.add_argument("--list-pages", type=int, default=12)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "corpus"
        os.environ.update({"LP_DATA_DIR": str(data_dir), "LP_DUCKDB_PATH": "", "LP_ARTIFACT_DIR": ""})
        import dagster as dg

        from assets_defs.definitions import defs
        from assets_defs.partitions import SOURCE_PARTITIONS_NAME
        from linkage_pipeline.synthetic.corpus import generate_corpus

        generate_corpus(data_dir, seed=args.seed, n_firms=args.n_firms, n_list_pages=args.list_pages)
        pages = sorted((data_dir / "supplier_lists" / "pages").glob("*.png"))
        held = Path(tmp) / "held.png"
        shutil.move(pages[-1], held)
        instance = dg.DagsterInstance.ephemeral()
        sources = ["firm_directory", "supplier_lists"]
        instance.add_dynamic_partitions(SOURCE_PARTITIONS_NAME, sources)
        quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
        rows: list[tuple[str, float, str]] = []

        def run(job: str, partition: str | None = None, ops: dict | None = None, selection=None):
            t0 = time.perf_counter()
            result = defs.resolve_job_def(job).execute_in_process(
                instance=instance, partition_key=partition, run_config={**quiet, "ops": ops or {}},
                asset_selection=selection,
            )
            return result, time.perf_counter() - t0

        run("linkage_job", selection=[dg.AssetKey("document_sources"), dg.AssetKey("linkage_model")])
        total = 0.0
        for name in sources:
            _, seconds = run("source_job", name)
            total += seconds
        _, seconds = run("linkage_job")
        rows.append(("initial: every source, then linkage", total + seconds, f"{args.n_firms} firms, {len(pages) - 1} list pages"))

        result, seconds = run("linkage_job")
        links = _meta(result, "embedding_links")
        rows.append(("no change: scheduled linkage_job", seconds,
                     f"{links.get('queries_searched')} queries searched, {links.get('queries_kept')} kept"))
        result, seconds = run("source_job", "supplier_lists")
        rows.append(("no change: source_job of the query source", seconds,
                     f"{_meta(result, 'layout_regions').get('pages_detected')} pages detected, "
                     f"{_meta(result, 'ocr_texts').get('crops_read')} crop readings"))

        shutil.copy(held, pages[-1])
        result, s_source = run("source_job", "supplier_lists")
        ocr = _meta(result, "ocr_texts")
        emb = _meta(result, "crop_embeddings")
        rows.append(("one new page: source_job", s_source,
                     f"{_meta(result, 'layout_regions').get('pages_detected')} page, {ocr.get('crops_read')} readings "
                     f"({ocr.get('crops_reused')} reused), {emb.get('embedded_images')} crops embedded"))
        result, s_link = run("linkage_job")
        links = _meta(result, "embedding_links")
        rows.append(("one new page: scheduled linkage_job", s_link,
                     f"{links.get('queries_searched')} queries searched, {links.get('queries_kept')} kept"))
        rows.append(("one new page: total", s_source + s_link, ""))

        recompute = {a: {"config": {"recompute": True}} for a in ("layout_regions", "region_crops", "ocr_texts")}
        result, r_source = run("source_job", "supplier_lists", ops=recompute)
        rows.append(("recompute: source_job (every page)", r_source,
                     f"{_meta(result, 'ocr_texts').get('crops_read')} readings"))
        # crop embeddings stay keyed by crop and text, so identical readings are not embedded again either way
        result, r_link = run("linkage_job", ops={"faiss_index": {"config": {"rebuild": True}},
                                                 "embedding_links": {"config": {"relink_all": True}},
                                                 "string_links": {"config": {"relink_all": True}}})
        rows.append(("recompute: linkage_job (rebuild, relink all)", r_link,
                     f"{_meta(result, 'embedding_links').get('queries_searched')} queries searched"))
        rows.append(("recompute: total", r_source + r_link, ""))

    width = max(len(r[0]) for r in rows)
    print(f"{'run':<{width}} | {'wall s':>7} | work")
    print(f"{'-' * width}-|-{'-' * 7}-|-----")
    for name, seconds, work in rows:
        print(f"{name:<{width}} | {seconds:7.1f} | {work}")
    print(f"\none new page, incremental / recompute: {(s_source + s_link) / (r_source + r_link):.2f}x the wall time")


if __name__ == "__main__":
    main()
