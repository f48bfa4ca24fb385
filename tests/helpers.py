import torch


def assert_close(actual, expected, atol=1e-5, rtol=1e-5, what="tensor"):
    """Shapes equal and values within float32 tolerance."""
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    torch.testing.assert_close(actual, expected, atol=atol, rtol=rtol, msg=lambda m: f"{what}: {m}")


def assert_grads_close(mine, ref, pairs, atol=1e-5, rtol=1e-4):
    """Compare the gradients of named parameter pairs [(mine_tensor, ref_tensor, name), ...]."""
    for a, b, name in pairs:
        assert a.grad is not None and b.grad is not None, f"{name}: no gradient"
        assert_close(a.grad, b.grad, atol=atol, rtol=rtol, what=f"grad of {name}")
