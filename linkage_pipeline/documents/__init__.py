"""Document sources page by page: pages, ground-truth labels, layout detection, crops, OCR, and the chain
that runs them per source (incremental).
"""
