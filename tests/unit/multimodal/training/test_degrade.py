"""Unit tests of linkage_pipeline.multimodal.training.degrade: scan-like degradations and their two families."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from linkage_pipeline.multimodal.training import degrade as D
from linkage_pipeline.multimodal.training.degrade import (
    HELDOUT_FAMILY,
    MAX_SIDE,
    OP_ORDER,
    OPERATIONS,
    SHAPE_CHANGING,
    TRAIN_FAMILY,
    Family,
    OpSpec,
    degrade,
)

PAPER, INK = 235, 30


def text_crop() -> np.ndarray:
    """A 64x256 horizontal crop: Hershey text, dark ink on light paper (no font files needed)."""
    img = np.full((64, 256), PAPER, np.uint8)
    cv2.putText(img, "Kabushiki 123", (6, 44), cv2.FONT_HERSHEY_SIMPLEX, 1.1, INK, 3, cv2.LINE_AA)
    return img


def bar_crop(direction: str) -> np.ndarray:
    """A straight bar along the text direction through the centre (horizontal: 64x256, vertical: 256x64)."""
    img = np.full((64, 256), PAPER, np.uint8)
    img[28:36, 16:240] = INK
    return img if direction == "horizontal" else np.ascontiguousarray(img.T)


def ink_count(img: np.ndarray) -> int:
    return int((img < 128).sum())


def sharpness(img: np.ndarray) -> float:
    """Variance of the Laplacian: high-frequency energy."""
    return float(cv2.Laplacian(img.astype(np.float32), cv2.CV_32F).var())


def mean_abs_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b).mean())


def centre_across(img: np.ndarray, direction: str) -> np.ndarray:
    """Darkness-weighted ink centroid across the text at each position along it (NaN where there is no ink)."""
    ink = np.clip(PAPER - img.astype(np.float64), 0, None)
    ink[ink < 0.05 * (PAPER - INK)] = 0.0  # ignore faint interpolation fringes far from the stroke
    if direction == "vertical":
        ink = ink.T
    rows = np.arange(ink.shape[0])[:, None]
    with np.errstate(invalid="ignore"):
        return (ink * rows).sum(0) / ink.sum(0)


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# ------------------------------------------------------------------------------------------- determinism
@pytest.mark.parametrize("family", [TRAIN_FAMILY, HELDOUT_FAMILY], ids=lambda f: f.name)
def test_same_seed_same_bytes_and_different_seeds_differ(family: Family) -> None:
    img = text_crop()
    outs = []
    for seed in range(6):
        a, applied_a = degrade(img, rng(seed), family)
        b, applied_b = degrade(img, rng(seed), family)
        assert a.dtype == np.uint8 and a.tobytes() == b.tobytes() and a.shape == b.shape
        assert applied_a == applied_b
        outs.append(a)
    distinct = {(o.shape, o.tobytes()) for o in outs}
    assert len(distinct) == len(outs)


def test_input_is_not_modified() -> None:
    img = text_crop()
    before = img.copy()
    for seed in range(20):
        degrade(img, rng(seed), HELDOUT_FAMILY)
    assert np.array_equal(img, before)


# ---------------------------------------------------------------------------------------- each operation
def test_ink_spread_raises_and_erosion_lowers_ink_count() -> None:
    img = text_crop()
    base = ink_count(img)
    assert ink_count(D.ink_spread(img, rng(), 1.0)) > base * 1.2
    assert ink_count(D.ink_erosion(img, rng(), 1.0)) < base * 0.8


def test_broken_strokes_removes_ink_only() -> None:
    img = text_crop()
    out = D.broken_strokes(img, rng(), 0.1)
    lost = ink_count(img) - ink_count(out)
    assert 0.02 * ink_count(img) < lost < 0.2 * ink_count(img)
    assert (out >= img).all()  # gaps are paper: nothing gets darker
    assert (out[img == PAPER] == PAPER).all()  # the paper is untouched


def test_blurs_and_low_resolution_lower_high_frequency_energy_and_keep_shape() -> None:
    img = text_crop()
    base = sharpness(img)
    for out in (
        D.gaussian_blur(img, rng(), 1.0),
        D.motion_blur(img, rng(), 4.0),
        D.low_resolution(img, rng(), 0.5),
    ):
        assert out.shape == img.shape and out.dtype == np.uint8
        assert sharpness(out) < 0.5 * base
        assert abs(float(out.mean()) - float(img.mean())) < 2.0


def test_stronger_blur_is_blurrier() -> None:
    img = text_crop()
    assert sharpness(D.gaussian_blur(img, rng(), 2.0)) < sharpness(D.gaussian_blur(img, rng(), 0.7))
    assert sharpness(D.low_resolution(img, rng(), 0.6)) < sharpness(D.low_resolution(img, rng(), 0.2))


def test_jpeg_round_trip_differs_but_keeps_the_mean() -> None:
    img = text_crop()
    out = D.jpeg(img, rng(), 70.0)  # quality 30
    assert out.shape == img.shape
    assert int((out != img).sum()) > 0.1 * img.size
    assert abs(float(out.mean()) - float(img.mean())) < 2.0
    milder = D.jpeg(img, rng(), 10.0)  # quality 90
    assert mean_abs_err(milder, img) < mean_abs_err(out, img)


def test_paper_texture_mottles_the_paper() -> None:
    img = text_crop()
    out = D.paper_texture(img, rng(), 10.0)
    paper = img == PAPER
    assert out.shape == img.shape
    assert 5.0 < float(out[paper].std()) < 15.0  # the clean paper is flat (std 0)
    assert abs(float(out[paper].mean()) - PAPER) < 4.0
    assert abs(ink_count(out) - ink_count(img)) < 0.05 * ink_count(img)


def test_bleed_through_only_darkens_the_paper_faintly() -> None:
    img = text_crop()
    for seed in range(4):  # both ghost sources (mirrored crop, random strokes)
        out = D.bleed_through(img, rng(seed), 0.3)
        assert (out <= img).all()
        paper = img == PAPER
        assert float(out[paper].mean()) < PAPER - 1.0
        assert int(out[paper].min()) > 128  # faint: the ghost never reads as ink
        assert ink_count(out) == ink_count(img)


def test_illumination_shades_one_side() -> None:
    img = np.full((64, 256), PAPER, np.uint8)
    out = D.illumination(img, rng(), 0.4)
    assert (out <= img).all()
    assert int(out.max()) - int(out.min()) > 0.3 * PAPER  # darkest edge loses ~40 %
    assert int(out.max()) >= PAPER - 1  # the lit edge keeps its brightness


@pytest.mark.parametrize("direction", ["horizontal", "vertical"])
def test_baseline_warp_moves_the_line_across_the_text_smoothly(direction: str) -> None:
    img = bar_crop(direction)
    out = D.baseline_warp(img, rng(3), 0.06, direction=direction)
    assert out.shape == img.shape
    before, after = centre_across(img, direction), centre_across(out, direction)
    ok = ~np.isnan(before) & ~np.isnan(after)
    assert np.ptp(before[ok]) < 0.01  # straight bar
    assert np.ptp(after[ok]) > 2.0  # 6 % of 64 px peak: the bar now waves across the text
    assert np.abs(np.diff(after[ok])).max() < 1.0  # smooth: no jumps between neighbouring positions


@pytest.mark.parametrize("direction", ["horizontal", "vertical"])
def test_rotation_and_shear_keep_shape_and_tilt_the_text(direction: str) -> None:
    img = bar_crop(direction)
    rot = D.rotation(img, rng(), 2.0, direction=direction)
    assert rot.shape == img.shape
    c = centre_across(rot, direction)
    ok = ~np.isnan(c)
    slope = np.polyfit(np.flatnonzero(ok), c[ok], 1)[0]
    assert abs(abs(slope) - np.tan(np.radians(2.0))) < 0.01
    # Shear slants strokes across the text: a bar across the text (a vertical stroke of horizontal text) tilts.
    stroke = np.full_like(img, PAPER)
    if direction == "horizontal":
        stroke[8:56, 124:132] = INK
    else:
        stroke[124:132, 8:56] = INK
    sh = D.shear(stroke, rng(), 0.2, direction=direction)
    assert sh.shape == stroke.shape
    across = "vertical" if direction == "horizontal" else "horizontal"
    c = centre_across(sh, across)
    ok = ~np.isnan(c)
    slope = np.polyfit(np.flatnonzero(ok), c[ok], 1)[0]
    assert abs(abs(slope) - 0.2) < 0.02


@pytest.mark.parametrize("direction", ["horizontal", "vertical"])
def test_cut_short_drops_3_to_15_percent_along_the_text(direction: str) -> None:
    img = text_crop() if direction == "horizontal" else np.ascontiguousarray(text_crop().T)
    axis = 1 if direction == "horizontal" else 0
    for strength in (0.03, 0.1, 0.15):
        out = D.cut_short(img, rng(), strength, direction=direction)
        assert out.shape[1 - axis] == img.shape[1 - axis]
        assert out.shape[axis] == img.shape[axis] - round(strength * img.shape[axis])
    for family in (TRAIN_FAMILY, HELDOUT_FAMILY):
        seen = 0
        for seed in range(200):
            out, applied = degrade(img, rng(seed), family, direction=direction)
            if "cut_short" in applied:  # neighbour_edge only adds across the text
                lost = 1.0 - out.shape[axis] / img.shape[axis]
                assert 0.03 - 1e-9 <= lost <= 0.15 + 1e-9
                seen += 1
            else:
                assert out.shape[axis] == img.shape[axis]
        assert seen > 10


@pytest.mark.parametrize("direction", ["horizontal", "vertical"])
def test_neighbour_edge_appends_a_strip_of_strokes(direction: str) -> None:
    img = text_crop() if direction == "horizontal" else np.ascontiguousarray(text_crop().T)
    across = 0 if direction == "horizontal" else 1
    out = D.neighbour_edge(img, rng(), 0.25, direction=direction)
    k = round(0.25 * 64)
    assert out.shape[across] == img.shape[across] + k and out.shape[1 - across] == img.shape[1 - across]
    assert ink_count(out) > ink_count(img)  # synthesised strokes in the strip
    # From a given neighbour: an all-ink line puts solid ink in the strip, with the crop itself intact.
    neighbour = np.full((64, 300), PAPER, np.uint8)
    neighbour[:, 20:280] = INK  # a line solid with ink along its whole length, paper at both ends
    if direction == "vertical":
        neighbour = np.ascontiguousarray(neighbour.T)
    for seed in range(4):
        out = D.neighbour_edge(img, rng(seed), 0.25, direction=direction, neighbour=neighbour)
        assert out.shape[across] == img.shape[across] + k
        front = out[:k] if direction == "horizontal" else out[:, :k]
        back = out[-k:] if direction == "horizontal" else out[:, -k:]
        rest_front = out[k:] if direction == "horizontal" else out[:, k:]
        rest_back = out[:-k] if direction == "horizontal" else out[:, :-k]
        if np.array_equal(rest_front, img):
            strip = front
        else:
            assert np.array_equal(rest_back, img)
            strip = back
        assert ink_count(strip) > 0.5 * strip.size


def test_speckle_hits_the_given_fraction_of_pixels() -> None:
    img = text_crop()
    out = D.speckle(img, rng(), 0.01)
    changed = int((out != img).sum())
    assert 0.7 * 0.01 * img.size < changed <= 0.01 * img.size
    darker, lighter = int((out < img).sum()), int((out > img).sum())
    assert darker > 0.2 * changed and lighter > 0.2 * changed


@pytest.mark.parametrize("name", OP_ORDER)
def test_every_operation_is_deterministic_and_keeps_shape_unless_documented(name: str) -> None:
    img = text_crop()
    spec = HELDOUT_FAMILY.spec(name) if HELDOUT_FAMILY.spec(name).high > 0 else TRAIN_FAMILY.spec(name)
    s = spec.high
    a, b = OPERATIONS[name](img, rng(5), s), OPERATIONS[name](img, rng(5), s)
    assert a.dtype == np.uint8 and a.tobytes() == b.tobytes()
    assert not (a.shape == img.shape and np.array_equal(a, img))  # it does something at the family's strength
    if name not in SHAPE_CHANGING:
        assert a.shape == img.shape
    assert np.array_equal(OPERATIONS[name](img, rng(5), 0.0), img)


# ---------------------------------------------------------------------------------------------- families
def test_families_differ_as_documented() -> None:
    heldout_only = {"bleed_through", "shear", "motion_blur"}
    assert heldout_only <= HELDOUT_FAMILY.used()
    assert not heldout_only & TRAIN_FAMILY.used()
    assert "gaussian_blur" in TRAIN_FAMILY.used() and "gaussian_blur" not in HELDOUT_FAMILY.used()
    for name in TRAIN_FAMILY.used() & HELDOUT_FAMILY.used():
        t, h = TRAIN_FAMILY.spec(name), HELDOUT_FAMILY.spec(name)
        assert h.low >= t.high, name  # held-out ranges start where train ranges end
    assert HELDOUT_FAMILY.spec("jpeg").low > TRAIN_FAMILY.spec("jpeg").high  # heavier JPEG (lower quality)


def test_held_out_applies_operations_train_never_applies() -> None:
    img = text_crop()
    seen: dict[str, set[str]] = {}
    for family in (TRAIN_FAMILY, HELDOUT_FAMILY):
        names: set[str] = set()
        r = rng(11)
        for _ in range(200):
            _, applied = degrade(img, r, family)
            assert applied == [n for n in OP_ORDER if n in applied]  # in the documented order
            names.update(applied)
        seen[family.name] = names
    assert {"bleed_through", "shear", "motion_blur"} <= seen["heldout"] - seen["train"]
    assert not seen["train"] & {"bleed_through", "shear", "motion_blur"}
    assert seen["train"] == TRAIN_FAMILY.used()  # 200 draws reach every train operation
    assert seen["heldout"] == HELDOUT_FAMILY.used()


def test_family_validation() -> None:
    with pytest.raises(ValueError, match="unknown operations"):
        Family("x", {"ink_splash": OpSpec(0.5, 0.0, 1.0)})
    with pytest.raises(ValueError, match="probability"):
        OpSpec(1.5, 0.0, 1.0)
    with pytest.raises(ValueError, match="low <= high"):
        OpSpec(0.5, 2.0, 1.0)
    assert Family("empty", {}).spec("jpeg").probability == 0.0


def test_degrade_with_a_neighbour_crop() -> None:
    img = text_crop()
    neighbour = np.full((40, 100), PAPER, np.uint8)
    neighbour[:, 10:90] = INK
    always = Family("edge", {"neighbour_edge": OpSpec(1.0, 0.25, 0.25)})
    out, applied = degrade(img, rng(), always, neighbour=neighbour)
    assert applied == ["neighbour_edge"]
    assert out.shape == (64 + 16, 256)
    strip = out[:16] if np.array_equal(out[16:], img) else out[-16:]
    assert ink_count(strip) == 16 * 80  # the neighbour's 80 ink columns, padded with paper past its end


# -------------------------------------------------------------------------------------- strength / errors
@pytest.mark.parametrize("family", [TRAIN_FAMILY, HELDOUT_FAMILY], ids=lambda f: f.name)
def test_strength_zero_returns_the_input_unchanged(family: Family) -> None:
    img = text_crop()
    for seed in range(5):
        out, applied = degrade(img, rng(seed), family, strength=0.0)
        assert applied == [] and np.array_equal(out, img) and out is not img


def test_strength_scales_the_damage() -> None:
    img = text_crop()
    jpeg_only = Family("j", {"jpeg": OpSpec(1.0, 40.0, 40.0)})
    mild, _ = degrade(img, rng(), jpeg_only, strength=0.5)  # quality 80
    hard, _ = degrade(img, rng(), jpeg_only, strength=2.0)  # quality 20
    assert mean_abs_err(mild, img) < mean_abs_err(hard, img)


def test_errors() -> None:
    img = text_crop()
    with pytest.raises(ValueError, match=r"empty \(shape \(0, 10\)\)"):
        degrade(np.zeros((0, 10), np.uint8), rng(), TRAIN_FAMILY)
    with pytest.raises(ValueError, match=rf"\(10, {MAX_SIDE + 1}\).*larger than {MAX_SIDE}"):
        degrade(np.zeros((10, MAX_SIDE + 1), np.uint8), rng(), TRAIN_FAMILY)
    with pytest.raises(ValueError, match="neighbour is empty"):
        degrade(img, rng(), TRAIN_FAMILY, neighbour=np.zeros((5, 0), np.uint8))
    with pytest.raises(ValueError, match="direction must be 'horizontal' or 'vertical', got 'diagonal'"):
        degrade(img, rng(), TRAIN_FAMILY, direction="diagonal")
    with pytest.raises(ValueError, match="direction"):
        D.cut_short(img, rng(), 0.1, direction="rtl")
    with pytest.raises(ValueError, match="2-D"):
        degrade(np.zeros((8, 8, 3), np.uint8), rng(), TRAIN_FAMILY)
    with pytest.raises(ValueError, match="uint8"):
        degrade(img.astype(np.float32), rng(), TRAIN_FAMILY)
    with pytest.raises(ValueError, match="strength"):
        degrade(img, rng(), TRAIN_FAMILY, strength=-1.0)
    with pytest.raises(ValueError, match="empty"):
        D.jpeg(np.zeros((3, 0), np.uint8), rng(), 50.0)


def test_largest_accepted_crop_side() -> None:
    img = np.full((8, MAX_SIDE), PAPER, np.uint8)
    img[3:5, 10:-10] = INK
    out, _ = degrade(img, rng(), HELDOUT_FAMILY)
    assert out.dtype == np.uint8 and max(out.shape) <= MAX_SIDE
