"""Exercise feedback that names the mistake (issue 10, items 6-8): composite checks find the inner
attention mistake, the hints fit the symptom, in-place edits and endless loops are caught."""
import functools
import time

import pytest
import torch

import tfmlib.checks.attention as at
import tfmlib.checks.decoder as dec
import tfmlib.checks.multihead as mh
from helpers import assert_fails, assert_passes, learner_attention, learner_mha


# ---------------------------------------------------------------- 6. composite checks name the inner mistake
INNER = [  # found by probing the inner attention (one head, identity weights)
    (dict(mask_mode="after"), at.HINT_MASK_AFTER),
    (dict(mask_mode="zero"), at.HINT_MASK_ZERO),
    (dict(kq=True), at.HINT_KQ),
]


def test_learner_mha_helper_is_right_by_default():
    assert_passes(mh.check_multi_head_attention(learner_mha))


@pytest.mark.parametrize("switches, hint", INNER + [(dict(split="strided"), mh.HINT_SPLIT_STRIDED),
                                                    (dict(split="tokens"), mh.HINT_SPLIT_TOKENS),
                                                    (dict(scale="none"), mh.HINT_NO_SCALE),
                                                    (dict(scale="d_k"), at.HINT_SCALE_DK),
                                                    (dict(axis=-2), mh.HINT_SOFTMAX_AXIS)],
                         ids=lambda v: str(v)[:30])
def test_multi_head_check_names_the_attention_mistake_inside(switches, hint):
    result = mh.check_multi_head_attention(functools.partial(learner_mha, **switches))
    assert_fails(result, hint)
    assert result.hint is not None


def _cross(x_dec, memory, W_q, W_k, W_v, W_o, n_heads, memory_mask=None, **switches):
    return learner_mha(x_dec, memory, W_q, W_k, W_v, W_o, n_heads, memory_mask, **switches)


def test_cross_attention_helper_is_right_by_default():
    assert_passes(dec.check_cross_attention(_cross))


@pytest.mark.parametrize("switches, hint", INNER + [(dict(split="tokens"), dec.HEAD_SPLIT),
                                                    (dict(scale="none"), dec.NO_SCALE),
                                                    (dict(axis=-2), dec.SOFTMAX_AXIS)], ids=lambda v: str(v)[:30])
def test_cross_attention_check_names_the_attention_mistake_inside(switches, hint):
    result = dec.check_cross_attention(functools.partial(_cross, **switches))
    assert_fails(result, hint)
    assert result.hint is not None
