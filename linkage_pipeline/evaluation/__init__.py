"""Evaluation: metrics (IoU matching, CER, top-1 accuracy), report tables (Table 1, S-2), data-quality
measures behind the asset checks, and link provenance sheets.
"""
