-- depends_on: record_links, stg_regions, ocr_texts
-- One row per record link (accepted, or the best candidate of a no-match query): both crops with their page
-- files, boxes and texts as read in the link's condition, and the method, score, threshold, model and run;
-- reviewed: a reviewer's verdict (link_reviews) decided the link, not the model.
with regions as (
    select *
    from stg_regions
    where crop_id is not null
    qualify row_number() over (partition by crop_id order by source, page_id, reading_order) = 1
)

select
    l.query_crop_id,
    l.target_crop_id,
    l.matched,
    l.rank,
    l.score,
    l.threshold,
    l.method,
    l.ocr,
    l.model_id,
    l.run_id,
    l.reviewed,
    q.source as query_source,
    q.page_file as query_page,
    q.x0 as query_x0,
    q.y0 as query_y0,
    q.x1 as query_x1,
    q.y1 as query_y1,
    q.crop_path as query_crop_path,
    coalesce(qo.text, case when l.ocr = 'ground_truth' then q.true_text end) as query_text,
    t.source as target_source,
    t.page_file as target_page,
    t.x0 as target_x0,
    t.y0 as target_y0,
    t.x1 as target_x1,
    t.y1 as target_y1,
    t.crop_path as target_crop_path,
    coalesce(tt.text, case when l.ocr = 'ground_truth' then t.true_text end) as target_text
from record_links as l
join regions as q on q.crop_id = l.query_crop_id
left join regions as t on t.crop_id = l.target_crop_id
left join ocr_texts as qo on qo.crop_id = l.query_crop_id and qo.ocr = l.ocr
left join ocr_texts as tt on tt.crop_id = l.target_crop_id and tt.ocr = l.ocr
order by l.query_crop_id, l.rank
