-- depends_on: layout_regions, region_crops, page_images, document_sources, labelled_regions
-- One row per detected region of a declared source, with its crop, page file and (where labels exist) truth.
select
    r.region_id,
    r.source,
    s.role as source_role,
    r.page_id,
    p.file as page_file,
    p.image_path,
    r.kind,
    r.reading_order,
    r.x0,
    r.y0,
    r.x1,
    r.y1,
    r.direction,
    c.crop_id,
    c.crop_path,
    c.square_path,
    l.entity_id as true_entity_id,
    l.text as true_text,
    l.role as true_role,
    l.iou as label_iou
from layout_regions as r
join document_sources as s on s.name = r.source
join page_images as p on p.page_id = r.page_id and p.source = r.source
left join region_crops as c on c.region_id = r.region_id and c.source = r.source
left join labelled_regions as l on l.region_id = r.region_id and l.source = r.source
order by r.source, r.page_id, r.reading_order
