"""Sensors: new document sources in sources.yaml become partitions and are processed."""


import dagster as dg

from assets_defs.jobs import source_job
from assets_defs.partitions import SOURCE_PARTITIONS_NAME
from resources import LinkageStore


@dg.sensor(job=source_job, minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.STOPPED)
def document_source_sensor(context: dg.SensorEvaluationContext, linkage_store: LinkageStore) -> dg.SensorResult:
    """Adds each source declared in sources.yaml as a partition and requests a run for the new ones."""
    registry = linkage_store.registry()
    known = set(context.instance.get_dynamic_partitions(SOURCE_PARTITIONS_NAME))
    new = sorted(s.name for s in registry.sources if s.name not in known)
    if not new:
        return dg.SensorResult(skip_reason="no new document sources")
    return dg.SensorResult(
        run_requests=[dg.RunRequest(partition_key=name, run_key=f"new-source-{name}") for name in new],
        dynamic_partitions_requests=[dg.AddDynamicPartitionsRequest(SOURCE_PARTITIONS_NAME, new)],
    )
