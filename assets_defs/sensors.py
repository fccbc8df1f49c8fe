"""Sensors: new document sources become partitions and are processed; changed sources are rerun."""


import json

import dagster as dg

from assets_defs.jobs import source_job
from assets_defs.partitions import SOURCE_PARTITIONS_NAME
from resources import LinkageStore


@dg.sensor(job=source_job, minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.STOPPED)
def document_source_sensor(context: dg.SensorEvaluationContext, linkage_store: LinkageStore) -> dg.SensorResult:
    """Adds each new source in sources.yaml as a partition and runs it; reruns a source whose pages or labels changed."""
    registry = linkage_store.registry()
    seen: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    known = set(context.instance.get_dynamic_partitions(SOURCE_PARTITIONS_NAME))
    new = sorted(s.name for s in registry.sources if s.name not in known)
    requests, now = [], {}
    for source in sorted(registry.sources, key=lambda s: s.name):
        now[source.name] = fingerprint = source.fingerprint()
        # a known source the sensor has not fingerprinted yet (switched on after the source was processed) is
        # recorded, not rerun; from then on every change of its files reruns it
        changed = source.name in seen and seen[source.name] != fingerprint
        if source.name in new or changed:
            reason = "new source" if source.name in new else "pages or labels changed"
            requests.append(
                dg.RunRequest(
                    partition_key=source.name,
                    run_key=f"{source.name}-{fingerprint}",
                    tags={"linkage/reason": reason, "linkage/fingerprint": fingerprint},
                )
            )
    cursor = json.dumps(now, sort_keys=True)
    if not requests:
        return dg.SensorResult(skip_reason="no new or changed document sources", cursor=cursor)
    return dg.SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=[dg.AddDynamicPartitionsRequest(SOURCE_PARTITIONS_NAME, new)] if new else [],
        cursor=cursor,
    )
