-- depends_on: int_list_entries, record_links, stg_regions, ocr_texts, document_sources
-- One row per supply relation read off a list page: supplier firm -> customer firm. A firm is the directory
-- entry its mention links to; a mention with no accepted link stays its own node ("unlinked:<crop_id>").
with best as (
    select query_crop_id, target_crop_id, score
    from record_links
    where matched
    qualify row_number() over (partition by query_crop_id order by rank, target_crop_id) = 1
),

labels as (
    select g.crop_id, o.text as label
    from stg_regions as g
    join document_sources as s on s.name = g.source
    join ocr_texts as o on o.crop_id = g.crop_id and o.ocr = s.primary_ocr
),

mentions as (
    select
        e.*,
        coalesce(be.target_crop_id, 'unlinked:' || e.crop_id) as entry_node,
        coalesce(bt.target_crop_id, 'unlinked:' || e.title_crop_id) as title_node,
        be.score as entry_score,
        bt.score as title_score
    from int_list_entries as e
    left join best as be on be.query_crop_id = e.crop_id
    left join best as bt on bt.query_crop_id = e.title_crop_id
    where e.section in ('supplier', 'customer') and e.title_crop_id is not null
)

select
    case when m.section = 'supplier' then m.entry_node else m.title_node end as supplier_id,
    case when m.section = 'supplier' then m.title_node else m.entry_node end as customer_id,
    coalesce(
        case when m.section = 'supplier' then le.label else lt.label end,
        case when m.section = 'supplier' then m.ocr_text else m.title_text end
    ) as supplier_label,
    coalesce(
        case when m.section = 'supplier' then lt.label else le.label end,
        case when m.section = 'supplier' then m.title_text else m.ocr_text end
    ) as customer_label,
    m.section,
    m.source,
    m.page_file,
    m.region_id,
    m.crop_id as mention_crop_id,
    m.entry_score,
    m.title_score
from mentions as m
left join labels as le on le.crop_id = m.entry_node
left join labels as lt on lt.crop_id = m.title_node
order by m.source, m.page_file, m.reading_order
