"""DropConnect's stored-nowhere masks: the forward product and both gradients use the same masks,
which have the asked keep rate and differ between samples and seeds."""

import pytest
import torch

from qnnlab.kernels.masks import masked_linear, masked_linear_grads, masks


@pytest.mark.parametrize(
    "keep, batch, n_out, n_in",
    [(0.5, 6, 9, 37), (0.8, 6, 9, 64), (1.0, 6, 9, 5), (0.75, 19, 37, 130), (0.3, 9, 17, 65)],  # past the blocks
)
def test_masked_products_and_gradients_equal_explicit_masks(keep, batch, n_out, n_in):
    torch.manual_seed(0)
    x, w, grad = torch.randn(batch, n_in), torch.randn(n_out, n_in), torch.randn(batch, n_out)
    m = masks(batch, n_out, n_in, seed=11, keep=keep).float() * (65536 / round(keep * 65536))
    x_ref, w_ref = x.clone().requires_grad_(), w.clone().requires_grad_()
    y_ref = torch.einsum("boi,oi,bi->bo", m, w_ref, x_ref)
    y_ref.backward(grad)
    torch.testing.assert_close(masked_linear(x, w, 11, keep), y_ref.detach(), atol=1e-4, rtol=1e-4)
    dx, dw = masked_linear_grads(grad, x, w, 11, keep)
    torch.testing.assert_close(dx, x_ref.grad, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(dw, w_ref.grad, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("keep", [0.3, 0.5, 0.75, 0.9])
def test_masks_keep_at_the_asked_rate_and_differ_by_sample_and_seed(keep):
    drawn = masks(8, 64, 128, seed=3, keep=keep)
    assert abs(drawn.float().mean().item() - keep) < 0.01
    halves = drawn.reshape(-1, 64).float()  # the bits of one word are independent draws
    pairs = (halves[:, ::2] * halves[:, 1::2]).mean().item()
    assert abs(pairs - keep**2) < 0.01
    assert not torch.equal(drawn[0], drawn[1]) and not torch.equal(drawn, masks(8, 64, 128, seed=4, keep=keep))
    assert torch.equal(drawn, masks(8, 64, 128, seed=3, keep=keep))


@pytest.mark.parametrize("keep", [0.0, 1.5, -0.1])
def test_a_keep_rate_outside_0_1_is_refused(keep):
    with pytest.raises(ValueError, match="keep"):
        masked_linear(torch.ones(1, 2), torch.ones(1, 2), 0, keep)
