-- depends_on: stg_regions, ocr_texts
-- One row per linkable crop (titles and entries) and text condition: each OCR engine, and the labelled
-- text as the upper bound ("ground_truth") where labels exist.
select
    g.crop_id,
    g.region_id,
    g.source,
    g.source_role,
    g.kind,
    o.ocr,
    o.text,
    o.confidence
from stg_regions as g
join ocr_texts as o on o.crop_id = g.crop_id and o.source = g.source
where g.kind in ('title', 'entry')
union all
select
    g.crop_id,
    g.region_id,
    g.source,
    g.source_role,
    g.kind,
    'ground_truth' as ocr,
    g.true_text as text,
    1.0 as confidence
from stg_regions as g
where g.kind in ('title', 'entry') and g.true_text is not null and g.crop_id is not null
order by source, ocr, crop_id
