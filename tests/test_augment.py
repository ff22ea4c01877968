"""Differentiable augmentation: exact transforms, shared across sources, gradients pass through."""
import pytest
import torch

from vaegan.training import augment


def _uniform(values):
    return lambda shape: torch.as_tensor(values, dtype=torch.float32).expand(shape).clone()


def test_empty_spec_is_identity_and_unknown_kinds_are_refused():
    x = torch.rand(2, 3, 8, 8) * 2 - 1
    assert augment.parse("") == () and torch.equal(augment.apply(x, {}), x)
    with pytest.raises(ValueError, match="flip"):
        augment.parse("color,flip")


def test_translation_shifts_whole_pixels_and_fills_zero():
    x = torch.arange(64.0).view(1, 1, 8, 8).expand(1, 3, 8, 8)
    # u = 1 - tiny: the largest shift, +1 pixel each way at 8 px (side / 8).
    out = augment.apply(x, augment.draw(("translation",), 1, _uniform([0.999, 0.999])))
    assert torch.equal(out[0, :, :-1, :-1], x[0, :, 1:, 1:])
    assert (out[0, :, -1, :] == 0).all() and (out[0, :, :, -1] == 0).all()
    middle = augment.apply(x, augment.draw(("translation",), 1, _uniform([0.5, 0.5])))
    assert torch.equal(middle, x)  # u = 0.5: no shift


def test_cutout_zeroes_a_half_side_square():
    x = torch.ones(1, 3, 16, 16)
    out = augment.apply(x, augment.draw(("cutout",), 1, _uniform([0.5, 0.5])))
    zero = (out[0, 0] == 0)
    assert zero.sum() == 8 * 8 and zero[4:12, 4:12].all()


def test_color_is_the_identity_at_its_neutral_draw_and_moves_otherwise():
    x = torch.rand(2, 3, 8, 8) * 2 - 1
    neutral = augment.apply(x, {"color": torch.tensor([[0.5, 0.5, 0.5]]).expand(2, 3)})
    torch.testing.assert_close(neutral, x)
    bright = augment.apply(x, {"color": torch.tensor([[0.9, 0.5, 0.5]]).expand(2, 3)})
    torch.testing.assert_close(bright, x + 0.4)


def test_same_parameters_for_every_source_and_gradients_flow():
    gen = torch.Generator().manual_seed(0)
    params = augment.draw(augment.KINDS, 4, lambda shape: torch.rand(shape, generator=gen))
    x = torch.rand(4, 3, 16, 16, requires_grad=True)
    out = augment.apply(x, params)
    assert torch.equal(augment.apply(x.detach(), params), out.detach())  # deterministic given params
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    x.grad = None
    augment.apply(x, {k: params[k] for k in ("translation", "cutout")}).sum().backward()
    assert set(x.grad.unique().tolist()) == {0.0, 1.0}  # moved pixels pass gradient 1, cut-out ones none
