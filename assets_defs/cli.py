"""`linkage-pipeline`: generate the demo corpus, materialize the whole graph, print the evaluation tables.

The commands run the same Dagster definitions the UI shows, against the Dagster instance in $DAGSTER_HOME,
so every materialization they make appears in `dagster dev` afterwards.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DEMO_DIR = REPO_ROOT / "data" / "demo"
DEFAULT_DAGSTER_HOME = REPO_ROOT / ".dagster_home"


def _configure_env(data_dir: Path) -> None:
    os.environ["LP_DATA_DIR"] = str(data_dir.resolve())
    os.environ.setdefault("DAGSTER_HOME", str(DEFAULT_DAGSTER_HOME))
    Path(os.environ["DAGSTER_HOME"]).mkdir(parents=True, exist_ok=True)
    dagster_yaml = Path(os.environ["DAGSTER_HOME"]) / "dagster.yaml"
    if not dagster_yaml.exists():
        # Limit concurrent DuckDB writers across parallel runs (DESIGN section 3).
        dagster_yaml.write_text("concurrency:\n  pools:\n    default_limit: 1\ntelemetry:\n  enabled: false\n")


def generate_demo(out_dir: Path, *, seed: int, n_firms: int | None, force: bool, heldout: bool = False) -> None:
    """Writes the synthetic demo corpus unless one from the same settings and generator code is already there."""
    import hashlib

    from linkage_pipeline.documents import firms, synthetic

    code = hashlib.sha256(b"".join(Path(m.__file__).read_bytes() for m in (firms, synthetic))).hexdigest()[:12]
    marker = out_dir / ".corpus-settings"
    settings = f"seed={seed} n_firms={n_firms} heldout={heldout} generator={code}"
    if not force and marker.exists() and marker.read_text() == settings and (out_dir / "sources.yaml").exists():
        print(f"demo corpus already at {out_dir} ({settings})")
        return
    if out_dir.exists() and any(out_dir.iterdir()):
        if not marker.exists():
            raise SystemExit(f"{out_dir} exists and is not a generated demo corpus; refusing to overwrite it")
        shutil.rmtree(out_dir)
    t0 = time.perf_counter()
    kwargs = {"seed": seed} | ({"n_firms": n_firms} if n_firms else {})
    if heldout:
        # firm names and typefaces the shipped model never saw in training
        kwargs |= {"vocabulary": "heldout", "fonts": synthetic.HELDOUT_FONTS}
    summary = synthetic.generate_corpus(out_dir, **kwargs)
    marker.write_text(settings)
    print(
        f"generated demo corpus at {out_dir} in {time.perf_counter() - t0:.1f}s: {summary.n_directory_entries} directory "
        f"entries on {summary.n_directory_pages} vertical pages, {summary.n_list_mentions} listed firms on "
        f"{summary.n_list_pages} horizontal list pages ({summary.n_absent_mentions} absent from the directory)"
    )


def materialize_all(data_dir: Path) -> None:
    """Materializes every asset: each source's partition, then the cross-source assets."""
    import dagster as dg

    from assets_defs.definitions import defs
    from assets_defs.jobs import linkage_job, source_job
    from assets_defs.partitions import SOURCE_PARTITIONS_NAME
    from linkage_pipeline.documents.sources import load_sources

    _configure_env(data_dir)
    registry = load_sources(data_dir)
    for r in registry.rejected:
        print(f"rejected: {r.file}: {r.reason}", file=sys.stderr)
    instance = dg.DagsterInstance.get()
    names = [s.name for s in registry.sources]
    known = set(instance.get_dynamic_partitions(SOURCE_PARTITIONS_NAME))
    new = [n for n in names if n not in known]
    if new:
        instance.add_dynamic_partitions(SOURCE_PARTITIONS_NAME, new)
    # The sources table and the linkage model first: per-source assets read both.
    quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    defs.resolve_job_def(linkage_job.name).execute_in_process(
        instance=instance,
        asset_selection=[dg.AssetKey("document_sources"), dg.AssetKey("linkage_model")],
        run_config=quiet,
    )
    for name in names:
        t0 = time.perf_counter()
        result = defs.resolve_job_def(source_job.name).execute_in_process(
            instance=instance, partition_key=name, run_config=quiet, raise_on_error=False
        )
        print(f"source {name}: {'ok' if result.success else 'FAILED'} in {time.perf_counter() - t0:.1f}s", flush=True)
    t0 = time.perf_counter()
    result = defs.resolve_job_def(linkage_job.name).execute_in_process(instance=instance, run_config=quiet, raise_on_error=False)
    print(f"linkage, evaluation, SQL models, network: {'ok' if result.success else 'FAILED'} in {time.perf_counter() - t0:.1f}s")
    materialize_tables(data_dir, instance, quiet)


def materialize_tables(data_dir: Path, instance: object, run_config: dict) -> None:
    """Materializes the table sources (CSV/Parquet) of sources.yaml, if any: each table's records, then the
    Fellegi-Sunter patterns, model, links and clusters."""
    from assets_defs.definitions import defs
    from assets_defs.jobs import table_job, table_linkage_job
    from assets_defs.tables import TABLE_PARTITIONS_NAME
    from linkage_pipeline.tables import load_table_sources

    registry = load_table_sources(data_dir)
    for r in registry.rejected:
        print(f"rejected: {r.file}: {r.source}: {r.reason}", file=sys.stderr)
    if not registry.sources:
        return
    known = set(instance.get_dynamic_partitions(TABLE_PARTITIONS_NAME))
    new = [n for n in registry.names if n not in known]
    if new:
        instance.add_dynamic_partitions(TABLE_PARTITIONS_NAME, new)
    for name in registry.names:
        t0 = time.perf_counter()
        result = defs.resolve_job_def(table_job.name).execute_in_process(
            instance=instance, partition_key=name, run_config=run_config, raise_on_error=False
        )
        print(f"table {name}: {'ok' if result.success else 'FAILED'} in {time.perf_counter() - t0:.1f}s", flush=True)
    t0 = time.perf_counter()
    result = defs.resolve_job_def(table_linkage_job.name).execute_in_process(
        instance=instance, run_config=run_config, raise_on_error=False
    )
    print(f"table linkages: {'ok' if result.success else 'FAILED'} in {time.perf_counter() - t0:.1f}s")


def print_report(data_dir: Path) -> None:
    """Prints the evaluation tables from the DuckDB file."""
    import pandas as pd

    from resources import LinkageStore

    _configure_env(data_dir)
    store = LinkageStore(
        data_dir=os.environ["LP_DATA_DIR"],
        database=os.environ.get("LP_DUCKDB_PATH", ""),
        artifact_dir=os.environ.get("LP_ARTIFACT_DIR", ""),
    ).store()

    pd.set_option("display.width", 200)
    pd.set_option("display.max_columns", 20)
    from linkage_pipeline.stages import table_one_markdown

    for table in ("layout_evaluation", "ocr_evaluation", "linkage_evaluation", "rejected_inputs"):
        if not store.table_exists(table):
            print(f"\n== {table}: not materialized")
            continue
        frame = store.read_table(table)
        if table == "linkage_evaluation" and not frame.empty:
            print("\n== linkage_evaluation: top-1 accuracy (CLIPPINGS Table 1; no-match threshold tuned on val)")
            print(table_one_markdown(frame, "test", "top1_accuracy"))
            print("\n== linkage_evaluation: with no-match queries (CLIPPINGS Table S-2)")
            print(table_one_markdown(frame, "test", "top1_accuracy_with_nomatch"))
            print("\n== linkage_evaluation: all labelled queries (every split)")
            print(table_one_markdown(frame, "all", "top1_accuracy"))
            continue
        print(f"\n== {table} ({len(frame)} rows)")
        print(frame.to_markdown(index=False, floatfmt=".3f") if not frame.empty else "(empty)")
    if store.table_exists("table_linkage_summary"):  # only where sources.yaml declares table linkages
        print("\n== table_linkage_summary (Fellegi-Sunter on table sources)")
        print(store.read_table("table_linkage_summary").to_markdown(index=False, floatfmt=".4g"))
    print(f"\nDuckDB file: {store.database}")


def run_ui(data_dir: Path, port: int) -> None:
    """Starts `dagster dev` on 127.0.0.1 with this data directory; Ctrl-C (or SIGTERM) stops it."""
    _configure_env(data_dir)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    dagster = shutil.which("dagster", path=str(Path(sys.executable).parent)) or shutil.which("dagster")
    if dagster is None:
        raise SystemExit("dagster is not installed in this environment; run .ci/setup first")
    cmd = [dagster, "dev", "-h", "127.0.0.1", "-p", str(port), "-w", str(REPO_ROOT / "workspace.yaml")]
    print("starting:", " ".join(cmd), flush=True)
    os.chdir(REPO_ROOT)
    os.execv(dagster, cmd)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="linkage-pipeline", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="generate the demo corpus, materialize everything, print the evaluation")
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DEMO_DIR)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-firms", type=int, default=None)
    p.add_argument("--force", action="store_true", help="regenerate the corpus even if present")
    p = sub.add_parser("generate", help="write a synthetic corpus")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-firms", type=int, default=None)
    p.add_argument("--heldout", action="store_true", help="held-out firm names and typefaces (unseen in training)")
    p = sub.add_parser("run", help="materialize every asset for a data directory (your own scans)")
    p.add_argument("--data-dir", type=Path, default=Path(os.environ.get("LP_DATA_DIR", DEFAULT_DEMO_DIR)))
    p = sub.add_parser("report", help="print the evaluation tables")
    p.add_argument("--data-dir", type=Path, default=Path(os.environ.get("LP_DATA_DIR", DEFAULT_DEMO_DIR)))
    p = sub.add_parser("ui", help="start the Dagster UI on 127.0.0.1")
    p.add_argument("--data-dir", type=Path, default=Path(os.environ.get("LP_DATA_DIR", DEFAULT_DEMO_DIR)))
    p.add_argument("--port", type=int, default=3000)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    if args.command == "generate":
        generate_demo(args.out, seed=args.seed, n_firms=args.n_firms, force=True, heldout=args.heldout)
    elif args.command == "demo":
        t0 = time.perf_counter()
        generate_demo(args.data_dir, seed=args.seed, n_firms=args.n_firms, force=args.force)
        materialize_all(args.data_dir)
        print_report(args.data_dir)
        print(f"\ndemo finished in {time.perf_counter() - t0:.0f}s")
        print(f"open the UI:  .venv/bin/linkage-pipeline ui --data-dir {args.data_dir}   (then http://127.0.0.1:3000)")
    elif args.command == "run":
        materialize_all(args.data_dir)
        print_report(args.data_dir)
    elif args.command == "report":
        print_report(args.data_dir)
    elif args.command == "ui":
        run_ui(args.data_dir, args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
