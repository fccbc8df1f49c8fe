"""Linking records across sources: string baselines, FAISS index and search, top-k frames, string and
embedding links (incremental), and the selection of record links.
"""
