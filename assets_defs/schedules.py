"""The daily linkage schedule: links whatever the per-source runs added since the last linkage run."""


import os

import dagster as dg

from assets_defs._common import latest_materialization, runs_in_progress
from assets_defs.jobs import linkage_job
from assets_defs.partitions import SOURCE_PARTITIONS_NAME
from resources import LinkageStore

#: Cron string of the linkage schedule (daily at 03:00 by default) and its time zone; set in the environment of
#: the Dagster daemon and the code server.
LINKAGE_CRON = os.environ.get("LP_LINKAGE_CRON", "0 3 * * *")
LINKAGE_TIMEZONE = os.environ.get("LP_LINKAGE_TIMEZONE", "UTC")


def unprocessed_sources(instance: dg.DagsterInstance, linkage_store: LinkageStore) -> list[str]:
    """Sources whose pages or labels changed since their last complete run (or that never ran), by name.

    A source is processed when its latest ``page_images`` materialization recorded the source's current
    fingerprint and ``crop_embeddings`` was materialized after it.
    """
    known = set(instance.get_dynamic_partitions(SOURCE_PARTITIONS_NAME))
    stale = []
    for source in sorted(linkage_store.registry().sources, key=lambda s: s.name):
        pages = latest_materialization(instance, "page_images", source.name) if source.name in known else None
        embedded = latest_materialization(instance, "crop_embeddings", source.name) if pages is not None else None
        recorded = pages.asset_materialization.metadata.get("fingerprint") if pages is not None else None
        if (
            pages is None
            or embedded is None
            or embedded.timestamp < pages.timestamp
            or recorded is None
            or recorded.value != source.fingerprint()
        ):
            stale.append(source.name)
    return stale


@dg.schedule(
    cron_schedule=LINKAGE_CRON,
    execution_timezone=LINKAGE_TIMEZONE,
    job=linkage_job,
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Links what changed since the last run (new targets added to the indexes, only affected queries "
    "relinked) and rebuilds the network. New scans are processed per source by document_source_sensor.",
)
def linkage_job_schedule(context: dg.ScheduleEvaluationContext, linkage_store: LinkageStore):
    """Requests one incremental linkage run per tick, unless source runs are still in progress."""
    if not linkage_store.registry().sources:
        # a data directory of tables only: nothing to link here (table_linkage_sensor links the tables)
        return dg.SkipReason("no document sources in sources.yaml")
    busy = runs_in_progress(context.instance, ["source_job"])
    if busy:
        return dg.SkipReason(f"{busy} source run(s) in progress; linking at the next tick")
    stale = unprocessed_sources(context.instance, linkage_store)
    tags = {"linkage/scheduled": "true"}
    if stale:
        # linking what is processed is still useful; the names say what is left out (turn on the sensor)
        tags["linkage/unprocessed_sources"] = ",".join(stale)
        context.log.warning(f"sources not yet processed are left out of this run: {', '.join(stale)}")
    return dg.RunRequest(tags=tags)
