"""Crop policy 'shift_cap' (MiniFASNet's) on hand-worked boxes; policy 'pad' stays the default."""
import cv2
import numpy as np
import pytest

from spoofsdk.crop import CROP_POLICIES, crop_face, fit_face_crop, shift_cap_region
from spoofsdk.errors import ImageError


def test_policies():
    assert CROP_POLICIES == ("pad", "shift_cap")


def test_rectangle_scaled_from_the_box_around_its_centre():
    # box (100, 100, 50, 40), centre (125, 120), scale 2.7 -> 135 x 108 from (57.5, 66) to (192.5, 174);
    # corners truncated, far corner pixel included.
    assert shift_cap_region((480, 640), (100, 100, 50, 40), 2.7) == ((57, 66, 193, 175), False)


def test_shifted_inside_at_the_top_left():
    # 108 x 108 around (20, 30) starts at (-34, -24): moved to (0, 0), far corner (108, 108).
    assert shift_cap_region((480, 640), (0, 10, 40, 40), 2.7) == ((0, 0, 109, 109), True)


def test_shifted_inside_at_the_bottom_right():
    # 54 x 27 around (630, 475): x 603..657 -> 585..639 (last column), y 461.5..488.5 -> 452..479 (last row).
    assert shift_cap_region((480, 640), (620, 470, 20, 10), 2.7) == ((585, 452, 640, 480), True)


def test_scale_capped_so_the_crop_fits():
    # 100 x 100 frame, box 80 x 60, scale 4: capped to min(99/60, 99/80, 4) = 1.2375 -> 99 x 74.25
    # around (50, 40): x 0.5..99.5 shifted to 0..99, y 2.875..77.125.
    region, shifted = shift_cap_region((100, 100), (10, 10, 80, 60), 4.0)
    assert region == (0, 2, 100, 78) and shifted
    frame = np.random.default_rng(0).integers(0, 256, size=(100, 100, 3), dtype=np.uint8)
    crop = crop_face(frame, (10, 10, 80, 60), 4.0, 80, policy="shift_cap")
    # never padded: the cut lies inside the frame and is stretched (not squared) to 80 x 80
    assert crop.padded_fraction == 0.0 and crop.region == region and crop.shifted
    np.testing.assert_array_equal(crop.image, cv2.resize(frame[2:78, 0:100], (80, 80), interpolation=cv2.INTER_LINEAR))


def test_pad_policy_is_the_default_and_unchanged():
    frame = np.full((100, 100, 3), 200, np.uint8)
    default = crop_face(frame, (10, 10, 80, 80), 2.0, 160)
    explicit = crop_face(frame, (10, 10, 80, 80), 2.0, 160, policy="pad")
    assert default.region == explicit.region == (-30, -30, 130, 130)
    assert default.padded_fraction > 0
    np.testing.assert_array_equal(default.image, explicit.image)
    shift = crop_face(frame, (10, 10, 80, 80), 2.0, 160, policy="shift_cap")
    assert shift.padded_fraction == 0.0 and shift.image.min() == 200


def test_box_outside_the_frame_is_refused():
    with pytest.raises(ImageError, match="outside"):
        shift_cap_region((100, 100), (150, 10, 20, 20), 2.7)
    with pytest.raises(ImageError, match="positive"):
        shift_cap_region((100, 100), (10, 10, 0, 20), 2.7)


def test_unknown_policy_is_refused():
    frame = np.zeros((50, 50, 3), np.uint8)
    with pytest.raises(ValueError, match="crop policy"):
        crop_face(frame, (10, 10, 20, 20), 2.0, 32, policy="mirror")
    with pytest.raises(ValueError, match="crop policy"):
        fit_face_crop(frame, 32, policy="mirror")


def test_whole_crop_resized_for_shift_cap_centre_square_for_pad():
    crop = np.random.default_rng(1).integers(0, 256, size=(100, 60, 3), dtype=np.uint8)
    np.testing.assert_array_equal(fit_face_crop(crop, 80, "shift_cap"), cv2.resize(crop, (80, 80), interpolation=cv2.INTER_LINEAR))
    np.testing.assert_array_equal(fit_face_crop(crop, 80), fit_face_crop(crop[20:80], 80))
