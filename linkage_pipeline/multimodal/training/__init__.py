"""Training the multimodal encoder: data, augmentation (rendering and simulated OCR), losses, hard-negative
mining, the trainer and the two-stage recipe.
"""
