"""The lesson-14 checks pass the reference, report stubs, and catch the usual mistakes with their hint."""
import pytest

from helpers import assert_fails, assert_passes, stub
import tfmlib.checks.scaling as ck
from tfmlib.scaling import gpt_param_count


def count_good(cfg):
    return gpt_param_count(cfg)


def count_wrong(cfg, *, biases=True, positions=True, norms=True, head_twice=False, ffn_4c=False):
    C, V, L = cfg.d_model, cfg.vocab_size, cfg.n_layers
    F = 4 * C if ffn_4c else cfg.d_ff
    b = int(cfg.bias and biases)
    per_block = 4 * C * C + 2 * C * F + b * (4 * C + F + C) + (4 * C if norms else 0)
    total = L * per_block + V * C + (cfg.max_len * C if positions else 0) + (2 * C if norms else 0)
    return total + (V * C if head_twice or not cfg.tie_weights else 0)


def test_param_count():
    assert_passes(ck.check_param_count(count_good))
    assert_passes(ck.check_param_count(count_wrong))
    assert ck.check_param_count(stub).status == "not implemented"


@pytest.mark.parametrize("option, hint", [("biases", ck.HINT_NO_BIASES), ("positions", ck.HINT_NO_POSITIONS),
                                          ("norms", ck.HINT_NO_NORMS), ("head_twice", ck.HINT_HEAD_TWICE),
                                          ("ffn_4c", ck.HINT_FFN_4C)])
def test_param_count_mistakes(option, hint):
    value = option in ("head_twice", "ffn_4c")
    assert_fails(ck.check_param_count(lambda cfg: count_wrong(cfg, **{option: value})), hint)


def test_training_bytes():
    assert_passes(ck.check_training_bytes(lambda n: 16 * n))
    assert ck.check_training_bytes(stub).status == "not implemented"
    assert_fails(ck.check_training_bytes(lambda n: 12 * n), ck.HINT_NO_GRADS)
    assert_fails(ck.check_training_bytes(lambda n: 8 * n), ck.HINT_BF16_MASTER)
    assert_fails(ck.check_training_bytes(lambda n: [n]), ck.HINT_NOT_A_NUMBER)


def test_step_loss():
    assert_passes(ck.check_step_loss(lambda sums, counts: sums.sum() / counts.sum()))
    assert ck.check_step_loss(stub).status == "not implemented"
    assert_fails(ck.check_step_loss(lambda sums, counts: (sums / counts).mean()), ck.HINT_MEAN_OF_MEANS)
    assert_fails(ck.check_step_loss(lambda sums, counts: sums.sum()), ck.HINT_SUM_NOT_MEAN)


def test_mfu():
    assert_passes(ck.check_mfu(lambda tps, n, peak, devices: 6 * n * tps / (peak * devices)))
    assert ck.check_mfu(stub).status == "not implemented"
    assert_fails(ck.check_mfu(lambda tps, n, peak, devices: 2 * n * tps / (peak * devices)), ck.HINT_FORWARD_ONLY)
    assert_fails(ck.check_mfu(lambda tps, n, peak, devices: 6 * n * tps / peak), ck.HINT_NO_DEVICES)
    assert_fails(ck.check_mfu(lambda tps, n, peak, devices: 600 * n * tps / (peak * devices)), ck.HINT_PERCENT)
