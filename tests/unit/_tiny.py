"""A tiny CLIP configuration shared by the model tests: random weights, built and saved inside the tests."""

TINY = dict(
    image_size=32,
    patch_size=8,
    vision_hidden=32,
    vision_layers=1,
    text_hidden=32,
    text_layers=1,
    heads=2,
    projection_dim=16,
    max_length=24,
)
