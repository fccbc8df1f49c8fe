"""What the crop_embeddings asset reports: the counts of one embedding run and why a source has no embeddings."""

from __future__ import annotations

import pytest

from linkage_pipeline.multimodal.embed import embedding_run_stats, empty_source_message


def test_embedding_run_stats_give_counts_and_throughput() -> None:
    stats = embedding_run_stats({"reused": 4.0, "images": 10.0, "texts": 30.0, "seconds": 2.0})
    assert stats == {"reused_rows": 4, "embedded_images": 10, "embedded_texts": 30, "seconds": 2.0, "crops_per_s": 5.0}
    assert isinstance(stats["reused_rows"], int)
    # everything reused: nothing computed, so no throughput (not images / ~0 seconds)
    assert embedding_run_stats({"reused": 7, "images": 0, "texts": 0, "seconds": 0.0})["crops_per_s"] == 0.0
    texts_only = embedding_run_stats({"reused": 0, "images": 0, "texts": 3, "seconds": 1.0})
    assert texts_only["crops_per_s"] == pytest.approx(0.0)


def test_empty_source_message_names_the_counts_of_each_stage() -> None:
    assert empty_source_message("allbad", 0, 0, 0, 0) == (
        "no linkable crops in source 'allbad' (0 usable pages, 0 regions, 0 crops, 0 OCR texts; rejected files are "
        "in rejected_inputs): its linkages yield no links"
    )
    assert "(3 usable pages, 5 regions, 2 crops, 4 OCR texts;" in empty_source_message("s", 3, 5, 2, 4)
