"""The shared heatmap mechanics (segx/modeling/keypoints/heatmaps.py) against hand-worked values."""
import math

import pytest
import torch

from segx.modeling.keypoints.heatmaps import (
    argmax_decode,
    draw_gaussian,
    gather_at,
    gaussian_kernel,
    gaussian_radius,
    heatmap_focal_loss,
    heatmap_peak_nms,
    landmark_heatmaps,
    topk_peaks,
)

# Hand-worked at min_overlap o = 0.7 (b1 = h+w, c1 = hw(1−o)/(1+o); b2 = 2(h+w), c2 = (1−o)hw;
# a3 = 4o, b3 = −2o(h+w), c3 = (o−1)hw):
#  h = w = 10: sq1 = √(400 − 70.588) = 18.1497, sq2 = √(1600 − 480) = 33.4664, sq3 = √(784 + 336) = 33.4664
#    original  r1 = (20+18.15)/2 = 19.07, r2 = (40+33.47)/2 = 36.73, r3 = (−28+33.47)/2 = 2.7332 → 2.7332
#    corrected r1 = (20−18.15)/2 = 0.9251, r2 = (40−33.47)/8 = 0.8167, r3 = 5.4664/5.6 = 0.9761 → 0.8167
#  h = 4, w = 20: sq1 = √(576 − 56.47) = 22.7932, sq2 = √(2304 − 384) = 43.8178, sq3 = √(1128.96 + 268.8) = 37.3867
#    original  r3 = (−33.6+37.3867)/2 = 1.8933 (r1 = 23.40, r2 = 45.91)
#    corrected r1 = 0.6034, r2 = (48−43.8178)/8 = 0.5228, r3 = 3.7867/5.6 = 0.6762 → 0.5228
#  h = w = 100: every root scales with the size: original 27.332, corrected 8.167.
HAND = [
    ((10, 10), 2.7332, 0.8167),
    ((4, 20), 1.8933, 0.5228),
    ((100, 100), 27.332, 8.167),
]


@pytest.mark.parametrize("hw,original,corrected", HAND)
def test_gaussian_radius_hand_values(hw, original, corrected):
    assert gaussian_radius(*hw, 0.7, "original") == pytest.approx(original, abs=1e-3)
    assert gaussian_radius(*hw, 0.7, "corrected") == pytest.approx(corrected, abs=1e-3)
    # symmetric in h, w; tensors give the same numbers
    assert gaussian_radius(hw[1], hw[0], 0.7, "original") == pytest.approx(original, abs=1e-3)
    t = gaussian_radius(torch.tensor([float(hw[0])]), torch.tensor([float(hw[1])]), 0.7, "corrected")
    assert float(t) == pytest.approx(corrected, abs=1e-3)


def _iou_cases(h, w, r):
    """IoU with the ground truth of the three boxes whose corners moved by r (CornerNet's cases)."""
    one_in_one_out = (h - r) * (w - r) / (2 * h * w - (h - r) * (w - r))
    both_in = (h - 2 * r) * (w - 2 * r) / (h * w)
    both_out = h * w / ((h + 2 * r) * (w + 2 * r))
    return one_in_one_out, both_in, both_out


@pytest.mark.parametrize("o", [0.5, 0.7, 0.9])
def test_gaussian_radius_grid(o):
    sizes = [1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144]
    for h in sizes:
        for w in sizes:
            orig = gaussian_radius(h, w, o, "original")
            corr = gaussian_radius(h, w, o, "corrected")
            # the corrected radius is exact: every case keeps IoU >= o, and the binding case has IoU = o
            ious = _iou_cases(h, w, corr)
            assert min(ious) == pytest.approx(o, abs=1e-6), (h, w, ious)
            # "both corners outside" radius, solved from its IoU equation hw / ((h+2r)(w+2r)) = o
            r_out = (-2 * (h + w) + math.sqrt(4 * (h + w) ** 2 - 16 * h * w * (1 - 1 / o))) / 8
            assert ious[2] >= o - 1e-9 and corr <= r_out + 1e-9
            # the original formula forgets the division by a3 = 4o in that root (and its other two roots,
            # the larger ones, never bind): r = 4o·r_out, larger than the exact radius
            assert orig == pytest.approx(4 * o * r_out, rel=1e-9)
            assert orig > corr
    with pytest.raises(ValueError, match="variant"):
        gaussian_radius(10, 10, 0.7, "fixed")


def test_gaussian_kernel_sigma_is_diameter_over_six():
    g = gaussian_kernel(2)
    assert g.shape == (5, 5) and g[2, 2] == 1
    sigma = 5 / 6
    assert float(g[2, 3]) == pytest.approx(math.exp(-1 / (2 * sigma**2)), rel=1e-6)  # exp(-0.72) = 0.4868
    assert float(g[0, 0]) == pytest.approx(math.exp(-8 / (2 * sigma**2)), rel=1e-5)
    torch.testing.assert_close(g, g.t())


def test_draw_gaussian_peak_max_combination_and_border():
    heat = torch.zeros(12, 16)
    draw_gaussian(heat, (5, 6), 2)
    assert heat[6, 5] == 1 and heat.max() == 1
    assert (heat > 0).sum() == 25  # a (2r+1)^2 window
    one = heat.clone()
    other = draw_gaussian(torch.zeros(12, 16), (7, 6), 3)
    draw_gaussian(heat, (7, 6), 3)
    torch.testing.assert_close(heat, torch.maximum(one, other))  # max, not sum
    assert heat[6, 5] == 1 and heat[6, 7] == 1
    # radius 0 = a single pixel; a 0.5 Gaussian never lowers what is there
    assert draw_gaussian(torch.zeros(4, 4), (1, 2), 0).nonzero().tolist() == [[2, 1]]
    draw_gaussian(heat, (5, 6), 1, k=0.5)
    assert heat[6, 5] == 1
    # clipped at the border; centres outside the map draw nothing
    edge = draw_gaussian(torch.zeros(6, 6), (0, 5), 2)
    assert edge[5, 0] == 1 and (edge > 0).sum() == 9
    assert draw_gaussian(torch.zeros(6, 6), (6, 2), 2).sum() == 0
    # radius from a float is truncated: int(2.73) = 2
    torch.testing.assert_close(draw_gaussian(torch.zeros(9, 9), (4, 4), 2.73), draw_gaussian(torch.zeros(9, 9), (4, 4), 2))


def test_focal_loss_hand_case():
    pred = torch.tensor([0.8, 0.3, 0.6]).view(1, 1, 1, 3)
    target = torch.tensor([1.0, 0.5, 0.0]).view(1, 1, 1, 3)
    # pos: log(0.8)·0.2² = −0.0089257; neg: log(0.7)·0.3²·0.5⁴ = −0.0020063, log(0.4)·0.6²·1 = −0.3298641
    expected = (0.0089257 + 0.0020063 + 0.3298641) / 1
    assert float(heatmap_focal_loss(pred, target)) == pytest.approx(expected, rel=1e-5)
    # normalised by the number of positives
    pred2, target2 = torch.cat([pred, pred], 3), torch.cat([target, target], 3)
    assert float(heatmap_focal_loss(pred2, target2)) == pytest.approx(expected, rel=1e-5)
    # no positives: the negative term alone
    assert float(heatmap_focal_loss(pred[..., 1:], target[..., 1:])) == pytest.approx(0.0020063 + 0.3298641, rel=1e-5)
    # clamped to [1e-4, 1 − 1e-4]: saturated predictions stay finite
    sat = heatmap_focal_loss(torch.tensor([0.0, 1.0]).view(1, 1, 1, 2), torch.tensor([1.0, 0.0]).view(1, 1, 1, 2))
    assert float(sat) == pytest.approx(-2 * math.log(1e-4) * (1 - 1e-4) ** 2, rel=1e-4)


def test_peak_nms_and_topk_order():
    heat = torch.zeros(1, 2, 6, 7)
    heat[0, 0, 1, 1], heat[0, 0, 1, 2] = 0.9, 0.5  # 0.5 is next to a larger peak: suppressed
    heat[0, 0, 4, 5] = 0.4
    heat[0, 1, 3, 3] = 0.7
    heat[0, 1, 0, 6] = 0.2
    kept = heatmap_peak_nms(heat)
    assert kept[0, 0, 1, 2] == 0 and kept[0, 0, 1, 1] == 0.9 and kept[0, 1, 0, 6] == 0.2
    scores, classes, index, ys, xs = topk_peaks(kept, 4)
    assert scores[0].tolist() == pytest.approx([0.9, 0.7, 0.4, 0.2])
    assert classes[0].tolist() == [0, 1, 0, 1]
    assert ys[0].tolist() == [1, 3, 4, 0] and xs[0].tolist() == [1, 3, 5, 6]
    assert index[0].tolist() == [1 * 7 + 1, 3 * 7 + 3, 4 * 7 + 5, 6]
    # k larger than the map: capped
    assert topk_peaks(torch.rand(2, 3, 2, 2), 50)[0].shape == (2, 12)
    feat = torch.arange(2 * 6 * 7, dtype=torch.float32).view(1, 2, 6, 7)
    torch.testing.assert_close(gather_at(feat, index), torch.stack([feat[0, 0].flatten()[index[0]], feat[0, 1].flatten()[index[0]]], 1)[None])


def test_argmax_decode_quarter_shift():
    heat = torch.zeros(1, 3, 5, 6)
    heat[0, 0, 2, 3] = 1.0
    heat[0, 0, 2, 4] = 0.6  # right neighbour larger → +0.25 in x
    heat[0, 0, 1, 3] = 0.3  # upper neighbour larger → −0.25 in y
    heat[0, 1, 0, 5] = 1.0  # corner: no shift at the border
    heat[0, 1, 0, 4] = 0.5
    heat[0, 2, 3, 2] = 2.0  # equal neighbours: no shift
    coords, maxvals = argmax_decode(heat)
    torch.testing.assert_close(coords[0], torch.tensor([[3.25, 1.75], [5.0, 0.0], [2.0, 3.0]]))
    torch.testing.assert_close(maxvals[0], torch.tensor([1.0, 1.0, 2.0]))
    coords, _ = argmax_decode(heat, quarter_offset=False)
    torch.testing.assert_close(coords[0], torch.tensor([[3.0, 2.0], [5.0, 0.0], [2.0, 3.0]]))


def test_landmark_heatmaps_gaussian_and_cauchy():
    maps = landmark_heatmaps([[3.4, 2.6], [20, 1]], (8, 10), sigma=1.0)
    assert maps.shape == (2, 8, 10)
    assert maps[0, 3, 3] == 1 and maps[0].argmax() == 3 * 10 + 3  # rounded point
    assert maps[1].sum() == 0  # outside the map
    c = landmark_heatmaps([[4, 4]], (9, 9), sigma=2.0, kind="cauchy")
    assert float(c[0, 4, 4]) == pytest.approx(1 / 4)
    with pytest.raises(ValueError, match="kind"):
        landmark_heatmaps([[1, 1]], (4, 4), 1.0, kind="laplace")
