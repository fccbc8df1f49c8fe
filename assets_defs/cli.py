"""`linkage-pipeline`: generate the demo corpus, materialize the whole graph, print the evaluation tables.

The commands run the same Dagster definitions the UI shows, against the Dagster instance in $DAGSTER_HOME,
so every materialization they make appears in `dagster dev` afterwards.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import dagster as dg

    from assets_defs._common import RunOwner
    from linkage_pipeline.config import SourceRegistry, TableRegistry

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DEMO_DIR = REPO_ROOT / "data" / "demo"
#: Styles of the synthetic corpus (linkage_pipeline.synthetic.corpus.STYLES; kept here so parsing imports nothing).
CORPUS_STYLES = ("sparse", "dense")
DEFAULT_DAGSTER_HOME = REPO_ROOT / ".dagster_home"


def _configure_env(data_dir: Path) -> None:
    os.environ["LP_DATA_DIR"] = str(data_dir.resolve())
    os.environ.setdefault("DAGSTER_HOME", str(DEFAULT_DAGSTER_HOME))
    Path(os.environ["DAGSTER_HOME"]).mkdir(parents=True, exist_ok=True)
    dagster_yaml = Path(os.environ["DAGSTER_HOME"]) / "dagster.yaml"
    if not dagster_yaml.exists():
        # Limit concurrent DuckDB writers across parallel runs (DESIGN section 3).
        dagster_yaml.write_text("concurrency:\n  pools:\n    default_limit: 1\ntelemetry:\n  enabled: false\n")


#: Page scale of the dense demo corpus: 1860 x 2550 pages (about 225 dpi), body type 25-33 px, names up to 44 px.
DENSE_DEMO_SCALE = 1.5
#: Print and scan settings of a corpus (``generate --scans``): the demo's, or the held-out scans: smaller type on
#: smaller pages (about 195 dpi) and heavier degradation, values never used in training or to choose a constant.
SCANS: dict[str, tuple[float, float]] = {"demo": (DENSE_DEMO_SCALE, 1.0), "heldout": (1.3, 1.4)}


def generate_demo(
    out_dir: Path, *, seed: int, n_firms: int | None, force: bool, heldout: bool = False, style: str = "dense",
    scans: str = "demo",
) -> None:
    """Writes the synthetic demo corpus unless one from the same settings and generator code is already there."""
    import hashlib

    from linkage_pipeline.synthetic import corpus as synthetic_corpus
    from linkage_pipeline.synthetic import dense, entries, firms, fonts

    code = hashlib.sha256(
        b"".join(Path(m.__file__).read_bytes() for m in (firms, fonts, synthetic_corpus, dense, entries))
    ).hexdigest()[:12]
    marker = out_dir / ".corpus-settings"
    if scans not in SCANS:
        raise ConfigError(f"unknown scans {scans!r}; expected one of {sorted(SCANS)}")
    scale, noise = SCANS[scans] if style == "dense" else (1.0, 1.0)
    settings = f"seed={seed} n_firms={n_firms} heldout={heldout} style={style} scale={scale} generator={code}"
    if noise != 1.0:
        settings += f" noise={noise}"
    if not force and marker.exists() and marker.read_text() == settings and (out_dir / "sources.yaml").exists():
        print(f"demo corpus already at {out_dir} ({settings})")
        return
    if out_dir.exists() and any(out_dir.iterdir()):
        if not marker.exists():
            raise SystemExit(f"{out_dir} exists and is not a generated demo corpus; refusing to overwrite it")
        shutil.rmtree(out_dir)
    t0 = time.perf_counter()
    kwargs = {"seed": seed, "style": style} | ({"n_firms": n_firms} if n_firms else {})
    if style == "dense":  # small body type (6-7 pt) needs about 225 dpi to be read, as archives scan directories
        kwargs |= {"scale": scale, "noise": noise}
    if heldout:
        # firm names and typefaces the shipped model never saw in training
        kwargs |= {"vocabulary": "heldout", "fonts": fonts.corpus_fonts(style, heldout=True)}
    summary = synthetic_corpus.generate_corpus(out_dir, **kwargs)
    marker.write_text(settings)
    print(
        f"generated demo corpus at {out_dir} in {time.perf_counter() - t0:.1f}s: {summary.n_directory_entries} directory "
        f"entries on {summary.n_directory_pages} vertical pages, {summary.n_list_mentions} listed firms on "
        f"{summary.n_list_pages} horizontal list pages ({summary.n_absent_mentions} absent from the directory)"
    )


QUIET_RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


class ConfigError(Exception):
    """A file-level problem with the data directory (missing, or a sources.yaml that cannot be read): one line."""


@dataclass
class RunOutcome:
    """One run the CLI executed: what it was, its run id, and for a failed run one line per failed step."""

    label: str
    run_id: str
    success: bool
    failures: list[str] = field(default_factory=list)


def one_line(message: str) -> str:
    """A (possibly multi-line) error message as one line: the YAML parser's source excerpt and caret are dropped."""
    lines = [line.strip() for line in message.splitlines() if line.strip() and not line[:1].isspace()]
    return "; ".join(lines)


def load_registries(data_dir: Path) -> tuple[SourceRegistry, TableRegistry]:
    """The document and table sources of ``data_dir``.

    Raises:
        ConfigError: one line naming the file and the problem when the directory or its sources.yaml is missing
            or sources.yaml cannot be read as a whole (a bad entry is only rejected, never raised).
    """
    from linkage_pipeline.config import load_sources, load_table_sources

    try:
        registries = load_sources(data_dir), load_table_sources(data_dir)
    except (OSError, ValueError) as exc:  # OSError: e.g. a sources.yaml that cannot be read
        raise ConfigError(one_line(str(exc))) from None
    open_store(data_dir)  # tables of an older schema version: say so before any step runs
    return registries


def open_store(data_dir: Path, *, check_version: bool = True):
    """The store of ``data_dir`` (``LP_DUCKDB_PATH`` / ``LP_ARTIFACT_DIR`` honoured).

    Raises:
        ConfigError: when its tables were written by another schema version (the message says how to migrate).
    """
    from linkage_pipeline.store import SchemaVersionError, Store
    from resources import LinkageStore

    where = LinkageStore(data_dir=str(data_dir), database=os.environ.get("LP_DUCKDB_PATH", ""),
                         artifact_dir=os.environ.get("LP_ARTIFACT_DIR", ""))
    try:
        return Store(where.database_path, where.artifact_path, check_version=check_version)
    except SchemaVersionError as exc:
        raise ConfigError(one_line(str(exc))) from None


def error_line(error: object) -> str:
    """``Type: first line of the message`` of a Dagster ``SerializableErrorInfo``, unwrapped to the user's error."""
    while getattr(error, "cause", None) is not None and (error.cls_name or "").startswith("Dagster"):
        error = error.cause
    cls = error.cls_name or "Error"
    first = next((line.strip() for line in error.message.splitlines() if line.strip()), "")
    # the message is traceback.format_exception_only: "module.Type: text"
    head, sep, rest = first.partition(f"{cls}: ")
    if sep and (not head or head.endswith(".")):
        first = rest
    return f"{cls}: {first}" if first else cls


def run_failures(result: dg.ExecuteInProcessResult) -> list[str]:
    """One line per failed step of an ``ExecuteInProcessResult``: the step (with its assets) and its error; the
    run's own failure when no step failed (e.g. a resource that could not start)."""
    import dagster as dg

    lines, seen = [], set()
    for event in result.all_events:
        if not (event.is_step_failure or event.is_resource_init_failure) or event.step_key in seen:
            continue
        seen.add(event.step_key)
        data = event.step_failure_data if event.is_step_failure else event.event_specific_data
        error = getattr(data, "error", None)
        where = event.step_key or "run"
        try:
            keys = result.job_def.asset_layer.get_selected_entity_keys_for_node(event.node_handle)
            assets = sorted(k.to_user_string() for k in keys if isinstance(k, dg.AssetKey))
        except Exception:  # noqa: BLE001 - the asset names only decorate the line
            assets = []
        if assets and assets != [where]:
            where += f" (asset{'s' if len(assets) > 1 else ''} {', '.join(assets)})"
        lines.append(f"step {where}: {error_line(error) if error is not None else event.message}")
    if not lines and not result.success:
        for event in result.all_events:
            if event.event_type == dg.DagsterEventType.RUN_FAILURE:
                error = getattr(event.event_specific_data, "error", None)
                lines.append(f"run: {error_line(error) if error is not None else one_line(event.message or '')}")
    return lines


class _Runner:
    """Executes jobs in this process against the Dagster instance, tagged with this process as their owner,
    and keeps what happened to each for the summary."""

    def __init__(self, instance: dg.DagsterInstance, owner: RunOwner) -> None:
        self.instance, self.owner = instance, owner
        self.outcomes: list[RunOutcome] = []

    def execute(self, label: str, job_name: str, **kwargs: object) -> RunOutcome:
        from assets_defs.definitions import defs

        t0 = time.perf_counter()
        result = defs.resolve_job_def(job_name).execute_in_process(
            instance=self.instance, run_config=QUIET_RUN_CONFIG, raise_on_error=False, tags=self.owner.tags, **kwargs
        )
        outcome = RunOutcome(label, result.run_id, result.success, [] if result.success else run_failures(result))
        self.outcomes.append(outcome)
        print(f"{label}: {'ok' if outcome.success else 'FAILED'} in {time.perf_counter() - t0:.1f}s", flush=True)
        for line in outcome.failures:
            print(f"  {line}", file=sys.stderr)
        if not outcome.success:
            print(f"  run {outcome.run_id}", file=sys.stderr, flush=True)
        return outcome


def materialize_all(runner: _Runner, documents: SourceRegistry, tables: TableRegistry) -> None:
    """Materializes every asset: each document source's partition, then the cross-source assets, then the tables.

    Without document sources (a data directory of tables only) the document jobs are not run at all: only
    ``document_sources`` is refreshed (it records rejected entries of sources.yaml).
    """
    import dagster as dg

    from assets_defs.jobs import linkage_job, source_job
    from assets_defs.partitions import SOURCE_PARTITIONS_NAME

    names = [s.name for s in documents.sources]
    instance = runner.instance
    if not names:
        print("no document sources in sources.yaml: the document jobs are skipped", flush=True)
        runner.execute("document sources", linkage_job.name, asset_selection=[dg.AssetKey("document_sources")])
    else:
        known = set(instance.get_dynamic_partitions(SOURCE_PARTITIONS_NAME))
        new = [n for n in names if n not in known]
        if new:
            instance.add_dynamic_partitions(SOURCE_PARTITIONS_NAME, new)
        # The sources table and the linkage model first: per-source assets read both.
        runner.execute("document sources and linkage model", linkage_job.name,
                       asset_selection=[dg.AssetKey("document_sources"), dg.AssetKey("linkage_model")])
        for name in names:
            runner.execute(f"source {name}", source_job.name, partition_key=name)
        runner.execute("linkage, evaluation, SQL models, network", linkage_job.name)
    materialize_tables(runner, tables)


def materialize_tables(runner: _Runner, registry: TableRegistry) -> None:
    """Materializes the table sources (CSV/Parquet) of sources.yaml, if any: each table's records, then the
    Fellegi-Sunter patterns, model, links and clusters."""
    from assets_defs.jobs import table_job, table_linkage_job
    from assets_defs.tables import TABLE_PARTITIONS_NAME

    if not registry.sources:
        return
    known = set(runner.instance.get_dynamic_partitions(TABLE_PARTITIONS_NAME))
    new = [n for n in registry.names if n not in known]
    if new:
        runner.instance.add_dynamic_partitions(TABLE_PARTITIONS_NAME, new)
    for name in registry.names:
        runner.execute(f"table {name}", table_job.name, partition_key=name)
    runner.execute("table linkages", table_linkage_job.name)


def release_stale_runs(instance: dg.DagsterInstance) -> None:
    """Marks failed the runs of `linkage-pipeline` processes that died mid-run and frees the pool slots of runs
    that are over, printing one line each; names the live runs of other processes that hold pool slots."""
    from assets_defs._common import release_dead_runs

    released, holding = release_dead_runs(instance)
    for line in released:
        print(f"released: {line}", file=sys.stderr)
    for line in holding:
        print(f"note: {line}", file=sys.stderr)
    sys.stderr.flush()


#: The instance and run owner of the command in progress, for the signal handler (main thread).
_ACTIVE: dict[str, object] = {}


def run_pipeline(data_dir: Path) -> int:
    """Materializes everything for ``data_dir`` and prints the report; 1 if a run failed, else 0."""
    import dagster as dg

    from assets_defs._common import RunOwner

    documents, tables = load_registries(data_dir)
    # each rejection was logged (a warning on stderr) once by the loaders
    if not documents.sources and not tables.sources:
        raise ConfigError(f"{data_dir.resolve() / 'sources.yaml'}: no document or table source could be loaded "
                          "(see the rejections above); expected at least one")
    _configure_env(data_dir)
    instance = dg.DagsterInstance.get()
    release_stale_runs(instance)
    owner = RunOwner(instance)
    _ACTIVE.update(instance=instance, owner=owner)
    runner = _Runner(instance, owner)
    try:
        materialize_all(runner, documents, tables)
    except BaseException:
        from assets_defs._common import release_own_runs

        release_own_runs(instance, owner, "its linkage-pipeline process stopped on an error")
        raise
    finally:
        _ACTIVE.clear()
        owner.close()
    print_report(data_dir, documents=bool(documents.sources))
    failed = [o for o in runner.outcomes if not o.success]
    if not failed:
        return 0
    print(f"\n{len(failed)} of {len(runner.outcomes)} runs FAILED:", file=sys.stderr)
    for o in failed:
        print(f"  {o.label} (run {o.run_id}):", file=sys.stderr)
        for line in o.failures:
            print(f"    {line}", file=sys.stderr)
    print(f"open a run in the UI: .venv/bin/linkage-pipeline ui --data-dir {data_dir}, then "
          "http://127.0.0.1:3000/runs/<run id>", file=sys.stderr, flush=True)
    return 1


def print_report(data_dir: Path, *, documents: bool = True) -> None:
    """Prints the evaluation tables from the DuckDB file (the document ones only where there are document sources)."""
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
    from linkage_pipeline.evaluation.report import table_one_markdown

    tables = ("layout_evaluation", "ocr_evaluation", "linkage_evaluation") if documents else ()
    for table in (*tables, "rejected_inputs"):
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
            if (frame["split"] == "reviewed").any():
                print("\n== linkage_evaluation: reviewed queries, the reviewers' verdicts as the truth")
                print(table_one_markdown(frame, "reviewed", "top1_accuracy"))
            continue
        print(f"\n== {table} ({len(frame)} rows)")
        print(frame.to_markdown(index=False, floatfmt=".3f") if not frame.empty else "(empty)")
    if store.table_exists("table_linkage_summary"):  # only where sources.yaml declares table linkages
        print("\n== table_linkage_summary (Fellegi-Sunter on table sources)")
        print(store.read_table("table_linkage_summary").to_markdown(index=False, floatfmt=".4g"))
    print(f"\nDuckDB file: {store.database}")


def run_ui(data_dir: Path, port: int) -> None:
    """Starts `dagster dev` on 127.0.0.1 with this data directory; Ctrl-C (or SIGTERM) stops it."""
    import dagster as dg

    _configure_env(data_dir)
    open_store(data_dir)  # an older schema version is refused with how to migrate
    # runs of linkage-pipeline processes that died would keep their pool slots and block the UI's runs too
    release_stale_runs(dg.DagsterInstance.get())
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    dagster = shutil.which("dagster", path=str(Path(sys.executable).parent)) or shutil.which("dagster")
    if dagster is None:
        raise SystemExit("dagster is not installed in this environment; run .ci/setup first")
    cmd = [dagster, "dev", "-h", "127.0.0.1", "-p", str(port), "-w", str(REPO_ROOT / "workspace.yaml")]
    print("starting:", " ".join(cmd), flush=True)
    os.chdir(REPO_ROOT)
    os.execv(dagster, cmd)


def run_review(data_dir: Path, *, host: str, port: int, reviewer: str | None) -> None:
    """Serves the link-review page over ``data_dir`` until Ctrl-C (or SIGTERM)."""
    import getpass

    from linkage_pipeline.review import app

    store = open_store(data_dir)
    try:
        context = app.load_context(store)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    name = reviewer or getpass.getuser()
    print(f"reviewing {len(context.links)} record links ({context.method}, {context.ocr}) of {data_dir} as "
          f"{name!r}: open http://{host if ':' not in host else f'[{host}]'}:{port}  (Ctrl-C stops)", flush=True)
    app.serve(store, host=host, port=port, reviewer=name)


class _Stopped(BaseException):
    """SIGINT or SIGTERM arrived (raised in the main thread by the handler)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise_stopped(signum: int, _frame: object) -> None:
    raise _Stopped(signum)


def _stop_now(signum: int, stderr: object) -> None:
    """Marks this process's unfinished runs failed, frees their pool slots and exits with 128 + ``signum``."""
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, signal.SIG_DFL)  # a second signal ends the process at once
    code = 128 + signum
    watchdog = threading.Timer(10.0, os._exit, (code,))  # the instance's database may be locked by the run
    watchdog.daemon = True
    watchdog.start()
    name = signal.Signals(signum).name
    print(f"\nlinkage-pipeline: stopped by {name}", file=stderr, flush=True)
    instance, owner = _ACTIVE.get("instance"), _ACTIVE.get("owner")
    if instance is not None and owner is not None:
        from assets_defs._common import release_own_runs

        try:
            for run_id in release_own_runs(instance, owner, f"its linkage-pipeline process was stopped by {name}"):
                print(f"marked run {run_id} failed and freed its pool slots", file=stderr, flush=True)
        except Exception as exc:  # noqa: BLE001 - the next linkage-pipeline command releases them (lock is gone)
            print(f"could not mark the run failed ({type(exc).__name__}: {exc}); the next linkage-pipeline command "
                  "will", file=stderr, flush=True)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001, S110 - exiting anyway
            pass
    os._exit(code)


def run_answering_signals(command: object) -> int:
    """Runs ``command()`` in a worker thread while the main thread answers SIGINT and SIGTERM at once.

    Dagster executing a run in the main thread replaces the handlers of both signals and only looks at them
    between steps (never while a step waits for a pool slot), so a stopped command could run on for ever. In a
    worker thread Dagster leaves the handlers alone; on a signal the main thread marks the command's unfinished
    runs failed, frees their pool slots and exits (130 for SIGINT, 143 for SIGTERM) even if a step is still
    computing. Writes are atomic (DESIGN section 3), so this is no worse than the process being killed.
    """
    if threading.current_thread() is not threading.main_thread():  # only the main thread can handle signals
        return int(command() or 0)
    # Dagster points fds 1 and 2 at its log files while a run executes: the signal message goes to a copy
    try:
        stderr = os.fdopen(os.dup(sys.stderr.fileno()), "w", buffering=1)
    except (AttributeError, OSError, ValueError):  # a stderr without a file descriptor (captured in tests)
        stderr = sys.stderr
    outcome: dict[str, object] = {}

    def work() -> None:
        try:
            outcome["rc"] = command()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
            outcome["error"] = exc

    previous = {s: signal.signal(s, _raise_stopped) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        worker = threading.Thread(target=work, name="linkage-pipeline", daemon=True)
        worker.start()
        while worker.is_alive():
            worker.join(0.2)
    except _Stopped as stop:
        _stop_now(stop.signum, stderr)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if stderr is not sys.stderr:
            stderr.close()
    if "error" in outcome:
        raise outcome["error"]
    return int(outcome.get("rc") or 0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="linkage-pipeline", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="generate the demo corpus, materialize everything, print the evaluation")
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DEMO_DIR)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-firms", type=int, default=None)
    p.add_argument("--force", action="store_true", help="regenerate the corpus even if present")
    p.add_argument("--style", choices=CORPUS_STYLES, default="dense", help="corpus style (see `generate`)")
    p = sub.add_parser("generate", help="write a synthetic corpus")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-firms", type=int, default=None)
    p.add_argument("--heldout", action="store_true", help="held-out firm names and typefaces (unseen in training)")
    p.add_argument("--scans", choices=sorted(SCANS), default="demo",
                   help="print and scan settings (dense style): the demo's, or held-out ones (smaller type, worse scans)")
    p.add_argument(
        "--style", choices=CORPUS_STYLES, default="dense",
        help="sparse: one name per column or line; dense: directory entries with body text, inline lists",
    )
    p = sub.add_parser("run", help="materialize every asset for a data directory (your own scans)")
    p.add_argument("--data-dir", type=Path, default=Path(os.environ.get("LP_DATA_DIR", DEFAULT_DEMO_DIR)))
    p = sub.add_parser("report", help="print the evaluation tables")
    p.add_argument("--data-dir", type=Path, default=Path(os.environ.get("LP_DATA_DIR", DEFAULT_DEMO_DIR)))
    p = sub.add_parser("migrate", help="rename, in place, the columns of tables written by an older version")
    p.add_argument("--data-dir", type=Path, default=Path(os.environ.get("LP_DATA_DIR", DEFAULT_DEMO_DIR)))
    p = sub.add_parser("train-layout", help="train the line classifier of the ppocr layout step on synthetic corpora")
    p.add_argument("--out", type=Path, required=True, help="the model file to write (.skops, with a .json card)")
    p.add_argument("--work-dir", type=Path, required=True, help="where the training corpora are generated")
    p = sub.add_parser("review", help="review the uncertain links in a browser (http://127.0.0.1:8765)")
    p.add_argument("--data-dir", type=Path, default=Path(os.environ.get("LP_DATA_DIR", DEFAULT_DEMO_DIR)))
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--reviewer", default=None, help="the name recorded with each verdict (default: your user name)")
    p = sub.add_parser("ui", help="start the Dagster UI on 127.0.0.1")
    p.add_argument("--data-dir", type=Path, default=Path(os.environ.get("LP_DATA_DIR", DEFAULT_DEMO_DIR)))
    p.add_argument("--port", type=int, default=3000)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    try:
        if args.command == "ui":
            run_ui(args.data_dir, args.port)
            return 0
        if args.command == "review":
            run_review(args.data_dir, host=args.host, port=args.port, reviewer=args.reviewer)
            return 0
        return run_answering_signals(lambda: _command(args))
    except ConfigError as exc:
        print(f"linkage-pipeline: error: {exc}", file=sys.stderr)
        return 2


def _command(args: argparse.Namespace) -> int:
    """One command other than ``ui``; its exit status."""
    if args.command == "generate":
        generate_demo(
            args.out, seed=args.seed, n_firms=args.n_firms, force=True, heldout=args.heldout, style=args.style,
            scans=args.scans,
        )
    elif args.command == "demo":
        t0 = time.perf_counter()
        generate_demo(args.data_dir, seed=args.seed, n_firms=args.n_firms, force=args.force, style=args.style)
        rc = run_pipeline(args.data_dir)
        print(f"\ndemo finished in {time.perf_counter() - t0:.0f}s")
        print(f"open the UI:  .venv/bin/linkage-pipeline ui --data-dir {args.data_dir}   (then http://127.0.0.1:3000)")
        return rc
    elif args.command == "run":
        return run_pipeline(args.data_dir)
    elif args.command == "migrate":
        changed = open_store(args.data_dir, check_version=False).migrate()
        print("\n".join(changed) if changed else f"{args.data_dir}: tables already at the current schema version")
    elif args.command == "train-layout":
        from linkage_pipeline.documents.region_training import train_default

        print(json.dumps(train_default(args.out, args.work_dir), indent=1))
    elif args.command == "report":
        documents, _ = load_registries(args.data_dir)
        print_report(args.data_dir, documents=bool(documents.sources))
    return 0


if __name__ == "__main__":
    sys.exit(main())
