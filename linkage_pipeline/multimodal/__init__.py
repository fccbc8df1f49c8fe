"""The multimodal (image crop + OCR text) encoder: tokenizer, towers, preprocessing, checkpoints, the model
registry and crop embeddings; :mod:`.training` holds the CLIPPINGS training recipe.
"""
