-- depends_on: stg_regions, ocr_texts, document_sources
-- One row per listed firm on a query source's pages: its page's reporting firm (the title) and its section
-- (supplier or customer), from the nearest heading before it in reading order (a run-in heading, 【仕入先】 and the
-- names after it on its line, comes first); the heading's text decides, its order is the fallback.
with texts as (
    select
        g.*,
        o.text as ocr_text
    from stg_regions as g
    join document_sources as s on s.name = g.source
    left join ocr_texts as o on o.crop_id = g.crop_id and o.ocr = s.primary_ocr
    where g.source_role = 'query'
),

headings as (
    select
        page_id,
        reading_order as heading_order,
        ocr_text as heading_text,
        row_number() over (partition by page_id order by reading_order) as heading_rank
    from texts
    where kind = 'heading'
),

titles as (
    select
        page_id,
        crop_id as title_crop_id,
        ocr_text as title_text
    from texts
    where kind = 'title'
    qualify row_number() over (partition by page_id order by reading_order) = 1
)

select
    e.region_id,
    e.crop_id,
    e.source,
    e.page_id,
    e.page_file,
    e.reading_order,
    e.ocr_text,
    e.true_entity_id,
    e.true_role,
    t.title_crop_id,
    t.title_text,
    h.heading_text,
    case
        when h.heading_text like '%仕入%' or h.heading_text like '%購入%' then 'supplier'
        when h.heading_text like '%販%' or h.heading_text like '%得意%' or h.heading_text like '%納入%' then 'customer'
        when h.heading_rank = 1 then 'supplier'
        when h.heading_rank = 2 then 'customer'
        else 'unknown'
    end as section
from texts as e
asof left join headings as h on h.page_id = e.page_id and e.reading_order > h.heading_order
left join titles as t on t.page_id = e.page_id
where e.kind = 'entry'
order by e.source, e.page_id, e.reading_order
