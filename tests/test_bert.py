"""tfmlib.bert: the encoder-only classifier, masked mean pooling and BERT's 80/10/10 masking rule."""
import pytest
import torch
import torch.nn.functional as F

from tfmlib.bert import IGNORE_INDEX, EncoderClassifier, EncoderConfig, mean_pool, mlm_mask
from tfmlib.masks import padding_mask

from helpers import assert_close


def _model(**overrides):
    torch.manual_seed(0)
    cfg = EncoderConfig.preset("tiny", vocab_size=12, n_classes=3, **overrides)
    return EncoderClassifier(cfg).eval()


# ------------------------------------------------------------------ config
def test_presets_and_validation():
    cfg = EncoderConfig.preset("cpu", vocab_size=8)
    assert (cfg.d_model, cfg.n_heads, cfg.n_layers, cfg.pooling) == (64, 4, 2, "cls")
    assert EncoderConfig.preset("gpu").d_model > cfg.d_model
    assert cfg.replace(pooling="mean").pooling == "mean"
    with pytest.raises(ValueError, match="pooling must be 'cls' or 'mean'"):
        EncoderConfig(pooling="max")
    with pytest.raises(ValueError, match="cls_id must be a token id"):
        EncoderConfig(vocab_size=8, cls_id=8)
    with pytest.raises(ValueError, match="divisible"):
        EncoderConfig(d_model=30, n_heads=4)
    with pytest.raises(ValueError, match="unknown EncoderConfig preset"):
        EncoderConfig.preset("huge")
    with pytest.raises(TypeError, match="must be an EncoderConfig"):
        EncoderClassifier({"d_model": 32})


# -------------------------------------------------------------- classifier
@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_shapes_and_padding_invariance(pooling):
    model = _model(pooling=pooling)
    tokens = torch.tensor([[5, 6, 7, 8, 0, 0], [9, 10, 11, 5, 6, 7]])
    logits = model(tokens)
    assert logits.shape == (2, 3)
    hidden, keep = model.features(tokens)
    extra = 1 if pooling == "cls" else 0
    assert hidden.shape == (2, 6 + extra, 32) and keep.shape == (2, 6 + extra)
    assert keep.sum().item() == 10 + 2 * extra
    assert model.embed(tokens).shape == (2, 32)
    # more padding, or a row alone, changes nothing: padding is masked out of attention and pooling
    padded = F.pad(tokens, (0, 3), value=0)
    assert_close(model(padded), logits, atol=1e-5, what="logits with extra padding")
    assert_close(model(tokens[:1, :4]), logits[:1], atol=1e-5, what="logits of the unpadded row alone")


def test_cls_token_in_front_and_classifier_equals_manual_pipeline():
    model = _model(pooling="cls")
    tokens = torch.tensor([[5, 6, 0], [7, 8, 9]])
    with_cls = model.with_cls(tokens)
    assert with_cls[:, 0].tolist() == [1, 1] and torch.equal(with_cls[:, 1:], tokens)
    x = model.pos(model.tok_embed(with_cls))
    hidden = model.encoder(x, mask=padding_mask(with_cls))
    assert_close(model(tokens), model.head(hidden[:, 0]), what="logits")


def test_encoder_is_bidirectional():
    model = _model(pooling="mean")
    a = torch.tensor([[5, 6, 7, 8, 9]])
    b = a.clone()
    b[0, -1] = 10                                   # change only the LAST token
    ha, hb = model.features(a)[0], model.features(b)[0]
    assert (ha[0, 0] - hb[0, 0]).abs().max() > 1e-4  # the FIRST position's output changes


def test_bad_tokens_raise():
    model = _model()
    with pytest.raises(TypeError, match="tokens"):
        model(torch.randn(2, 5))
    with pytest.raises(ValueError, match="dimensions"):
        model(torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="token ids must lie in"):
        model(torch.tensor([[1, 12]]))


def test_trains_a_few_steps():
    model = _model(pooling="mean").train()
    tokens = torch.randint(4, 12, (32, 6))
    labels = (tokens[:, 0] > 7).long()
    opt = torch.optim.AdamW(model.parameters(), 3e-3)
    losses = []
    for _ in range(30):
        loss = F.cross_entropy(model(tokens), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


# --------------------------------------------------------------- mean_pool
def test_mean_pool_ignores_padding():
    hidden = torch.randn(3, 4, 5)
    mask = torch.tensor([[True, True, True, True], [True, True, False, False], [True, False, False, False]])
    out = mean_pool(hidden, mask)
    expected = torch.stack([hidden[0].mean(0), hidden[1, :2].mean(0), hidden[2, 0]])
    assert_close(out, expected, what="mean over real tokens")
    assert_close(mean_pool(hidden, torch.zeros(3, 4, dtype=torch.bool)), torch.zeros(3, 5), what="empty rows")
    with pytest.raises(ValueError, match=r"mask must have shape \(B, T\)"):
        mean_pool(hidden, mask[:, :3])
    with pytest.raises(TypeError, match="mask"):
        mean_pool(hidden, mask.float())


# ---------------------------------------------------------------- mlm_mask
SPECIAL = [0, 1, 2, 3, 4]


def _batch(B=300, T=100, vocab=500):
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(5, vocab, (B, T), generator=gen)
    tokens[:, 0], tokens[:, -10:] = 1, 0               # [CLS] ... padding
    return tokens


def test_mlm_mask_rule_and_proportions():
    tokens = _batch()
    before = tokens.clone()
    inputs, labels = mlm_mask(tokens, 4, 500, SPECIAL, generator=torch.Generator().manual_seed(1))
    assert torch.equal(tokens, before), "tokens must not be modified"
    assert inputs.dtype == labels.dtype == torch.long and inputs.shape == labels.shape == tokens.shape
    special = torch.isin(tokens, torch.tensor(SPECIAL))
    chosen = labels != IGNORE_INDEX
    assert not chosen[special].any() and torch.equal(inputs[special], tokens[special])
    assert torch.equal(labels[chosen], tokens[chosen])
    assert torch.equal(inputs[~chosen], tokens[~chosen])
    rate = chosen.sum().item() / (~special).sum().item()
    assert abs(rate - 0.15) < 0.01
    masked = (inputs == 4)[chosen].float().mean().item()
    kept = (inputs == tokens)[chosen].float().mean().item()
    assert abs(masked - 0.8) < 0.02 and abs(kept - 0.1) < 0.02 and abs(1 - masked - kept - 0.1) < 0.02
    replaced = inputs[chosen & (inputs != 4) & (inputs != tokens)]
    assert replaced.min() >= 5 and replaced.max() < 500


def test_mlm_mask_generator_and_edge_cases():
    tokens = _batch(20, 30)
    a = mlm_mask(tokens, 4, 500, SPECIAL, generator=torch.Generator().manual_seed(3))
    b = mlm_mask(tokens, 4, 500, SPECIAL, generator=torch.Generator().manual_seed(3))
    c = mlm_mask(tokens, 4, 500, SPECIAL, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and not torch.equal(a[1], c[1])
    inputs, labels = mlm_mask(tokens, 4, 500, SPECIAL, p=0.0)
    assert torch.equal(inputs, tokens) and (labels == IGNORE_INDEX).all()
    inputs, labels = mlm_mask(tokens, 4, 500, SPECIAL, p=1.0)
    ordinary = ~torch.isin(tokens, torch.tensor(SPECIAL))
    assert torch.equal(labels != IGNORE_INDEX, ordinary)
    one = torch.tensor([7])                            # 1-D input, T = 1
    inputs, labels = mlm_mask(one, 4, 500, SPECIAL, p=1.0)
    assert labels.tolist() == [7] and inputs.shape == (1,)


def test_mlm_mask_bad_arguments():
    tokens = _batch(2, 8)
    with pytest.raises(ValueError, match="p must be in"):
        mlm_mask(tokens, 4, 500, SPECIAL, p=1.5)
    with pytest.raises(ValueError, match="must lie in"):
        mlm_mask(tokens, 600, 500, SPECIAL)
    with pytest.raises(ValueError, match="no ordinary token"):
        mlm_mask(tokens, 4, 5, SPECIAL)
    with pytest.raises(TypeError, match="tokens"):
        mlm_mask(tokens.float(), 4, 500, SPECIAL)
