"""Sin-cos position embeddings: parity with the V-JEPA release, layout, interpolation."""

import math

import pytest
import torch

from encoders.pos_embed import interpolate_pos_embed, sincos_1d, sincos_2d, sincos_3d

# Reference numbers produced by running the V-JEPA release's numpy code
# (facebookresearch/jepa @ 51c59d518fc6, src/models/utils/pos_embs.py) in a scratch directory:
#   get_3d_sincos_pos_embed(20, 3, 2, uniform_power=True)[r]      (18 x 20; rows 0, 4, 17)
#   get_3d_sincos_pos_embed(16, 2, 2, uniform_power=False)[r]     (8 x 16; rows 0, 7)
#   get_2d_sincos_pos_embed(8, 3)[r]                              (9 x 8; rows 0, 5)
#   get_3d_sincos_pos_embed(1024, 14, 8, uniform_power=True): sum, sum of |.|, row 1000 at some columns
# rounded to 8 decimals. Width 20 makes each uniform-power axis 2*ceil(20/6)=8 wide, so the cut to
# 20 channels (w keeps only its sines) is exercised, as it is for ViT-L (3 x 342 -> 1024).
REF_3D_UNIFORM = {
    0: [0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0],
    4: [0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.84147098, 0.09983342, 0.00999983, 0.001, 0.54030231,
        0.99500417, 0.99995, 0.9999995, 0.84147098, 0.09983342, 0.00999983, 0.001],
    17: [0.84147098, 0.09983342, 0.00999983, 0.001, 0.54030231, 0.99500417, 0.99995, 0.9999995, 0.90929743,
         0.19866933, 0.01999867, 0.002, -0.41614684, 0.98006658, 0.99980001, 0.999998, 0.90929743, 0.19866933,
         0.01999867, 0.002],
}
REF_3D_PLAIN = {
    0: [0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0],
    7: [0.84147098, 0.09983342, 0.00999983, 0.001, 0.54030231, 0.99500417, 0.99995, 0.9999995, 0.84147098,
        0.00999983, 0.54030231, 0.99995, 0.84147098, 0.00999983, 0.54030231, 0.99995],
}
REF_2D = {
    0: [0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0],
    5: [0.84147098, 0.00999983, 0.54030231, 0.99995, 0.90929743, 0.01999867, -0.41614684, 0.99980001],
}
REF_VITL_SUM, REF_VITL_ABS_SUM = 754948.1365690216, 890589.3833379885
REF_VITL_ROW1000 = dict(zip([0, 100, 341, 342, 500, 683, 684, 900, 1023],
                            [-0.95892427, 0.02289553, 0.99999986, 0.84147098, 0.00020142, 0.99999999,
                             -0.2794155, 0.86203763, 0.99999975]))


@pytest.mark.parametrize("table, ref", [
    (lambda: sincos_3d(20, 2, 3, uniform_power=True), REF_3D_UNIFORM),
    (lambda: sincos_3d(16, 2, 2, uniform_power=False), REF_3D_PLAIN),
    (lambda: sincos_2d(8, 3), REF_2D),
])
def test_matches_release_reference_values(table, ref):
    emb = table()
    for row, values in ref.items():
        torch.testing.assert_close(emb[row], torch.tensor(values), atol=1e-7, rtol=0)


def test_vitl_table_matches_release():
    emb = sincos_3d(1024, 8, 14, uniform_power=True)
    assert emb.shape == (8 * 14 * 14, 1024) and emb.dtype == torch.float32
    assert emb.double().sum().item() == pytest.approx(REF_VITL_SUM, rel=1e-6)
    assert emb.double().abs().sum().item() == pytest.approx(REF_VITL_ABS_SUM, rel=1e-6)
    for col, value in REF_VITL_ROW1000.items():
        assert emb[1000, col].item() == pytest.approx(value, abs=1e-6)


def test_uniform_power_gives_equal_thirds_in_t_h_w_order():
    d, (t, h, w) = 96, (3, 4, 5)
    emb = sincos_3d(d, t, h, w, uniform_power=True).reshape(t, h, w, d)
    third = d // 3
    ref = sincos_1d(third, max(t, h, w))
    # First third depends only on t, the second only on h, the last only on w.
    torch.testing.assert_close(emb[:, 1, 2, :third], ref[:t])
    torch.testing.assert_close(emb[2, :, 3, third:2 * third], ref[:h])
    torch.testing.assert_close(emb[1, 0, :, 2 * third:], ref[:w])


def test_plain_split_gives_half_to_time():
    d = 32
    emb = sincos_3d(d, 2, 3, 4, uniform_power=False).reshape(2, 3, 4, d)
    torch.testing.assert_close(emb[:, 0, 0, :16], sincos_1d(16, 2))
    torch.testing.assert_close(emb[1, :, 1, 16:24], sincos_1d(8, 3))
    torch.testing.assert_close(emb[0, 2, :, 24:], sincos_1d(8, 4))


def test_1d_formula():
    emb = sincos_1d(6, 4)
    omega = torch.tensor([1.0, 10000 ** (-1 / 3), 10000 ** (-2 / 3)])
    torch.testing.assert_close(emb[3], torch.cat([torch.sin(3 * omega), torch.cos(3 * omega)]))


def test_odd_width_is_an_error():
    with pytest.raises(ValueError, match="even"):
        sincos_1d(7, 3)


def test_interpolation_same_grid_is_identity():
    pe = sincos_3d(24, 2, 4, 4, uniform_power=True).unsqueeze(0)
    assert interpolate_pos_embed(pe, (2, 4, 4), (2, 4, 4)) is pe
    pe2 = sincos_2d(24, 4).unsqueeze(0)
    assert torch.equal(interpolate_pos_embed(pe2, (4, 4), (4, 4)), pe2)


def test_interpolation_to_other_grid_has_right_shape_and_is_continuous():
    src, dst = (2, 4, 4), (4, 7, 6)
    pe = sincos_3d(48, *src, uniform_power=True).unsqueeze(0)
    out = interpolate_pos_embed(pe, src, dst)
    assert out.shape == (1, math.prod(dst), 48)
    # Trilinear values are convex combinations: inside the source range, and no step between
    # neighbouring tokens larger than the largest step of the source grid along that axis.
    assert out.min() >= pe.min() - 1e-6 and out.max() <= pe.max() + 1e-6
    grid_in, grid_out = pe.reshape(*src, -1), out.reshape(*dst, -1)
    for axis in range(3):
        step_in = grid_in.diff(dim=axis).abs().amax()
        step_out = grid_out.diff(dim=axis).abs().amax()
        assert step_out <= step_in + 1e-6
    # Upsampling in time only leaves the spatial part unchanged.
    same_space = interpolate_pos_embed(pe, src, (4, 4, 4)).reshape(4, 4, 4, 48)
    torch.testing.assert_close(same_space[:, :, :, 16:], grid_in[:1, :, :, 16:].expand(4, -1, -1, -1))


def test_interpolation_2d_is_bicubic_and_shaped():
    pe = sincos_2d(16, 4).unsqueeze(0)
    out = interpolate_pos_embed(pe, (4, 4), (6, 5))
    assert out.shape == (1, 30, 16)


def test_interpolation_rejects_wrong_grid():
    pe = sincos_3d(24, 2, 4, 4, uniform_power=True).unsqueeze(0)
    with pytest.raises(ValueError, match="32 tokens"):
        interpolate_pos_embed(pe, (2, 4, 5), (2, 4, 4))
