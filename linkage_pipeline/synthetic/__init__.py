"""Synthetic material the project draws itself: firm names with their variants, typefaces, the demo corpus
(directory and list pages with labels) and English firm tables.
"""
