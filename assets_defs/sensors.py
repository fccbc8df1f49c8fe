"""Sensors: new document sources become partitions and are processed; changed sources are rerun."""


import dagster as dg

from assets_defs._common import changed_partitions_result
from assets_defs.jobs import source_job
from assets_defs.partitions import SOURCE_PARTITIONS_NAME
from resources import LinkageStore


@dg.sensor(job=source_job, minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.STOPPED)
def document_source_sensor(context: dg.SensorEvaluationContext, linkage_store: LinkageStore) -> dg.SensorResult:
    """Adds each new source in sources.yaml as a partition and runs it; reruns a source whose pages or labels changed."""
    fingerprints = {source.name: source.fingerprint() for source in linkage_store.registry().sources}
    return changed_partitions_result(
        context, fingerprints, SOURCE_PARTITIONS_NAME, new_reason="new source", changed_reason="pages or labels changed",
        nothing="no new or changed document sources",
    )
