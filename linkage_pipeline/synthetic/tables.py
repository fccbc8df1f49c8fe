"""English firm tables with known duplicates, for trying the table linkage (Fellegi-Sunter) without data of one's own."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

# ---------------------------------------------------------------------------------------------- demo data
_SURNAMES = (
    "Abe Baker Carter Dalton Ellis Fischer Garcia Hughes Ibsen Jensen Keller Larsen Moreau Nakamura Olsen Perez "
    "Quinn Rossi Sato Tanaka Ueda Vogel Walsh Young Zimmer Brandt Costa Dubois Eriksen Fontaine"
).split()
_TRADES = ("Textiles", "Shipping", "Brewing", "Steel", "Paper", "Chemicals", "Machinery", "Trading", "Mining",
           "Foods", "Glass", "Cement", "Rubber", "Printing", "Electric", "Tobacco")
_SUFFIXES = (("Company", "Co."), ("Limited", "Ltd."), ("Corporation", "Corp."), ("Brothers", "Bros."))
_CITIES = ("Osaka", "Tokyo", "Nagoya", "Kobe", "Yokohama", "Kyoto", "Sendai", "Hiroshima", "Fukuoka", "Sapporo",
           "Niigata", "Kanazawa")


def _typo(text: str, rng: np.random.Generator) -> str:
    if len(text) < 4:
        return text
    k = int(rng.integers(1, len(text) - 1))
    op = int(rng.integers(3))
    if op == 0:  # substitution
        return text[:k] + "abcdefghijklmnopqrstuvwxyz"[int(rng.integers(26))] + text[k + 1:]
    if op == 1:  # deletion
        return text[:k] + text[k + 1:]
    return text[: k - 1] + text[k] + text[k - 1] + text[k + 1:]  # transposition


def synthetic_firm_tables(
    n_firms: int = 200, *, seed: int = 0, overlap: float = 0.7, duplicate_share: float = 0.1
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Two small firm registers with known truth, for tests and the README example.

    The left register lists every firm once plus noisy duplicates of ``duplicate_share`` of them (for dedup);
    the right register lists ``overlap`` of the firms, each with noise (a typo in the name, an abbreviated legal
    suffix, a missing city, a founding year off by one, each with some probability), plus as many new firms.

    Args:
        n_firms: firms in the left register (before duplicates).
        seed: random seed; the same seed gives the same tables.
        overlap: share of the firms also in the right register.
        duplicate_share: share of the firms listed twice in the left register.

    Returns:
        ``(left, right, truth)``: left has ``firm_id, name, city, founded``; right has ``record_no, firm_name,
        city, founded``; truth has ``table`` (``left``/``right``), ``record_id`` and ``entity_id``.
    """
    if n_firms < 2:
        raise ValueError(f"n_firms must be at least 2, got {n_firms}")
    if not 0.0 <= overlap <= 1.0 or not 0.0 <= duplicate_share <= 1.0:
        raise ValueError(f"overlap and duplicate_share must lie in [0, 1], got {overlap} and {duplicate_share}")
    rng = np.random.default_rng(seed)

    def firm(k: int) -> dict[str, Any]:
        a, b = rng.choice(len(_SURNAMES), size=2, replace=False)
        suffix = _SUFFIXES[int(rng.integers(len(_SUFFIXES)))]
        return {"entity": f"E{k:05d}", "base": f"{_SURNAMES[a]} {_SURNAMES[b]} {_TRADES[int(rng.integers(len(_TRADES)))]}",
                "suffix": suffix, "city": _CITIES[int(rng.integers(len(_CITIES)))],
                "founded": int(rng.integers(1850, 1950))}

    def noisy(f: dict[str, Any]) -> dict[str, Any]:
        base = _typo(f["base"], rng) if rng.random() < 0.5 else f["base"]
        suffix = f["suffix"][1] if rng.random() < 0.5 else f["suffix"][0]
        city = None if rng.random() < 0.15 else f["city"]
        founded = f["founded"] + (1 if rng.random() < 0.15 else 0)
        return {"name": f"{base} {suffix}", "city": city, "founded": str(founded)}

    firms = [firm(k) for k in range(n_firms)]
    left_rows, truth = [], []
    for f in firms:
        left_rows.append({"entity": f["entity"], "name": f"{f['base']} {f['suffix'][0]}", "city": f["city"],
                          "founded": str(f["founded"])})
    for k in rng.choice(n_firms, size=int(round(duplicate_share * n_firms)), replace=False):
        left_rows.append({"entity": firms[int(k)]["entity"], **noisy(firms[int(k)])})
    order = rng.permutation(len(left_rows))
    left = pd.DataFrame([left_rows[k] for k in order])
    left.insert(0, "firm_id", [f"L{k:05d}" for k in range(len(left))])
    truth.append(pd.DataFrame({"table": "left", "record_id": left["firm_id"], "entity_id": left.pop("entity")}))

    shared = rng.choice(n_firms, size=int(round(overlap * n_firms)), replace=False)
    new = [firm(n_firms + k) for k in range(len(shared))]
    right_rows = [{"entity": firms[int(k)]["entity"], **noisy(firms[int(k)])} for k in shared]
    right_rows += [{"entity": f["entity"], "name": f"{f['base']} {f['suffix'][int(rng.integers(2))]}",
                    "city": f["city"], "founded": str(f["founded"])} for f in new]
    order = rng.permutation(len(right_rows))
    right = pd.DataFrame([right_rows[k] for k in order]).rename(columns={"name": "firm_name"})
    right.insert(0, "record_no", [f"R{k:05d}" for k in range(len(right))])
    truth.append(pd.DataFrame({"table": "right", "record_id": right["record_no"], "entity_id": right.pop("entity")}))
    return left, right, pd.concat(truth, ignore_index=True)
