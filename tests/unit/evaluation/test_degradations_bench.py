"""bench/degradations.py: image-only linking under each scan operation, one at a time (a small run)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "bench"))
import degradations as bench

from linkage_pipeline.multimodal.training.degrade import HELDOUT_FAMILY, TRAIN_FAMILY


def test_conditions_are_the_whole_families_then_each_operation_of_the_chosen_one() -> None:
    held = bench.conditions(HELDOUT_FAMILY)
    assert list(held)[:3] == ["none", "whole train family", "whole heldout family"]
    assert held["none"] is None and held["whole heldout family"] is HELDOUT_FAMILY
    assert set(list(held)[3:]) == HELDOUT_FAMILY.used()  # motion blur, shear, bleed-through: the held-out's own
    assert "gaussian_blur" not in held and "gaussian_blur" in bench.conditions(TRAIN_FAMILY)
    one = held["neighbour_edge"]
    assert one.used() == {"neighbour_edge"} and one.spec("neighbour_edge").probability == 1.0
    assert (one.spec("neighbour_edge").low, one.spec("neighbour_edge").high) == (
        HELDOUT_FAMILY.spec("neighbour_edge").low, HELDOUT_FAMILY.spec("neighbour_edge").high)


def test_a_small_run_links_undegraded_crops_and_writes_every_row(tmp_path: Path) -> None:
    out = tmp_path / "rows.json"
    assert bench.main(["--firms", "10", "--faces", "BIZ UDMincho", "--json", str(out)]) == 0
    rows = {r["degradation"]: r for r in json.loads(out.read_text())}
    assert set(rows) == set(bench.conditions(HELDOUT_FAMILY))
    assert all(0.0 <= r["vision_top1"] <= 1.0 and r["vision_top1"] == r["BIZ UDMincho"] for r in rows.values())
    # ten held-out firms, undegraded: the shipped image tower links at least 8 (it links 0.875 of 200 at this size)
    assert rows["none"]["vision_top1"] >= 0.8
