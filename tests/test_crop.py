"""crop_face geometry and to_tensor normalisation, against hand computations."""
import cv2
import numpy as np
import pytest

from spoofsdk.crop import as_bgr_uint8, crop_face, crop_region, fit_face_crop, resize_square, to_tensor
from spoofsdk.detect import HaarDetector
from spoofsdk.errors import ImageError

from conftest import sample_files


def test_region_centred_on_the_box():
    # box centre (125, 120), longer side 50, scale 2 -> a 100 px square from (75, 70)
    assert crop_region((480, 640), (100, 100, 50, 40), 2.0) == ((75, 70, 175, 170), False)


def test_region_shifted_inside_the_frame():
    # centred it would start at x = -20; it fits, so it moves right to 0 instead of padding
    (x0, y0, x1, y1), shifted = crop_region((480, 640), (0, 10, 40, 40), 2.0)
    assert (x0, y0, x1, y1) == (0, 0, 80, 80) and shifted
    # bottom-right corner: moves left/up
    assert crop_region((480, 640), (620, 470, 20, 10), 2.0) == ((600, 440, 640, 480), True)


def test_padding_only_where_the_square_is_larger_than_the_frame():
    frame = np.full((100, 100, 3), 200, np.uint8)
    crop = crop_face(frame, (10, 10, 80, 80), scale=2.0, size=160)
    assert crop.region == (-30, -30, 130, 130)
    assert crop.padded_fraction == pytest.approx(1 - (100 * 100) / (160 * 160))
    # the black border is 30 px on each side at 1:1 scale
    assert crop.image[0, 0].tolist() == [0, 0, 0] and crop.image[80, 80].tolist() == [200, 200, 200]
    assert crop.image[29, 80].tolist() == [0, 0, 0] and crop.image[30, 80].tolist() == [200, 200, 200]


def test_crop_matches_a_hand_computation(nuaa_dir):
    path = sample_files(nuaa_dir / "real", 1)[0]
    frame = cv2.imread(str(path))
    box = HaarDetector().detect(frame)[0].box
    crop = crop_face(frame, box, scale=1.5, size=112)
    x, y, w, h = box
    side = int(round(max(w, h) * 1.5))
    x0, y0 = int(round(x + w / 2 - side / 2)), int(round(y + h / 2 - side / 2))
    x0, y0 = min(max(x0, 0), 640 - side), min(max(y0, 0), 480 - side)
    expected = cv2.resize(frame[y0 : y0 + side, x0 : x0 + side], (112, 112), interpolation=cv2.INTER_AREA)
    assert crop.region == (x0, y0, x0 + side, y0 + side)
    assert crop.padded_fraction == 0.0
    np.testing.assert_array_equal(crop.image, expected)


def test_resize_square_interpolation():
    small = np.arange(16, dtype=np.uint8).reshape(4, 4)
    np.testing.assert_array_equal(resize_square(small, 8), cv2.resize(small, (8, 8), interpolation=cv2.INTER_LINEAR))
    big = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64).astype(np.uint8)
    np.testing.assert_array_equal(resize_square(big, 16), cv2.resize(big, (16, 16), interpolation=cv2.INTER_AREA))


def test_to_tensor_colour_order_and_normalisation():
    crop = np.zeros((2, 2, 3), np.uint8)
    crop[...] = (0, 51, 255)  # B, G, R
    t = to_tensor([crop], "RGB", mean=(0.5, 0.5, 0.5), std=(0.5, 0.25, 0.5))
    assert t.shape == (1, 3, 2, 2) and t.dtype == np.float32
    np.testing.assert_allclose(t[0, :, 0, 0], [(1 - 0.5) / 0.5, (0.2 - 0.5) / 0.25, (0 - 0.5) / 0.5], rtol=1e-6)
    t_bgr = to_tensor(np.stack([crop]), "BGR", mean=(0, 0, 0), std=(1, 1, 1))
    np.testing.assert_allclose(t_bgr[0, :, 1, 1], [0, 0.2, 1.0], rtol=1e-6)


def test_as_bgr_uint8_conversions():
    grey = np.full((4, 5), 7, np.uint8)
    assert as_bgr_uint8(grey).shape == (4, 5, 3)
    assert as_bgr_uint8(grey[..., None]).shape == (4, 5, 3)
    bgra = np.zeros((4, 5, 4), np.uint8)
    bgra[..., :3] = (1, 2, 3)
    assert as_bgr_uint8(bgra)[0, 0].tolist() == [1, 2, 3]
    deep = np.full((4, 5, 3), 0x1234, np.uint16)
    assert as_bgr_uint8(deep)[0, 0].tolist() == [0x12] * 3
    for bad in (None, np.zeros((0, 3, 3), np.uint8), np.zeros((4, 5, 3), np.float32), np.zeros((4, 5, 2), np.uint8), [1, 2]):
        with pytest.raises(ImageError):
            as_bgr_uint8(bad)


def test_fit_face_crop_takes_the_centre_square_without_distortion():
    tall = np.zeros((120, 80, 3), np.uint8)
    tall[20:100, :] = 200  # the centre 80x80 square is all 200; 20 rows above and below are black
    out = fit_face_crop(tall, 40)
    assert out.shape == (40, 40, 3) and out.dtype == np.uint8
    assert (out == 200).all()  # squashing 120x80 to 40x40 would pull black rows in
    wide = np.arange(60 * 90 * 3, dtype=np.uint32).reshape(60, 90, 3).astype(np.uint8)
    np.testing.assert_array_equal(fit_face_crop(wide, 60), wide[:, 15:75])


def test_a_face_box_far_larger_than_the_frame_is_refused_not_padded():
    """YuNet once returned this box on a one-row frame; padding it would allocate ~200 TB (cv2 OutOfMemory)."""
    frame = np.full((1, 640, 3), 230, np.uint8)
    for policy in ("pad", "shift_cap"):
        with pytest.raises(ImageError, match="larger than 2x"):
            crop_face(frame, (-2883100.25, 401.54, 5768026.5, 165.38), 1.5, 64, policy)
    big = np.zeros((100, 200, 3), np.uint8)
    crop_face(big, (-100, -50, 400, 300), 1.0, 64)  # a close face up to twice the frame still crops (padded)
    with pytest.raises(ImageError, match="larger than 2x"):
        crop_face(big, (-100, -50, 401, 300), 1.0, 64)


@pytest.mark.parametrize("policy", ["pad", "shift_cap"])
def test_a_face_box_wholly_outside_the_frame_is_refused_under_every_crop_policy(policy):
    """Shifting the square back inside would score a patch the box never held (found by a review: the pad
    policy cropped (185, 105, 320, 240) of a 320x240 frame for the box (1000, 1000, 50, 50))."""
    frame = np.full((240, 320, 3), 100, np.uint8)
    for box in [(1000, 1000, 50, 50), (320, 10, 40, 40), (10, -60, 40, 60), (-41, 10, 40, 40)]:
        with pytest.raises(ImageError, match="lies outside"):
            crop_face(frame, box, 1.5, 64, policy)
    for box in [(1e308, 10, 1e308, 50), (1e308, 10, 50, 50), (10, 10, float("inf"), 50), (10, float("nan"), 50, 50)]:
        with pytest.raises(ImageError):
            crop_face(frame, box, 1.5, 64, policy)
    assert crop_face(frame, (-39, 10, 40, 40), 1.5, 64, policy).image.shape == (64, 64, 3)  # one column in: a face at the edge
