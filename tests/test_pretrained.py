"""tfmlib.pretrained: real MiniLM weights in tfmlib's encoder equal transformers' BertModel and
sentence-transformers; a random GPT-2 the test writes in the Hugging Face layout equals
transformers' GPT2LMHeadModel in tfmlib's GPT. Nothing is downloaded (HF_HUB_OFFLINE=1)."""
import json
import os
import shutil

os.environ["HF_HUB_OFFLINE"] = "1"  # before transformers is imported: any download attempt fails
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import pytest
import torch
import torch.nn.functional as F

from tfmlib.bert import EncoderClassifier, EncoderConfig
from tfmlib.encoder import Encoder
from tfmlib.layers import ACTIVATIONS, FeedForward, LayerNorm
from tfmlib.pretrained import (encode_sentences, gpt2_config, load_bert, load_gpt2, minilm_directory,
                               read_weights)

from helpers import assert_close

transformers = pytest.importorskip("transformers")

SENTENCES = ["The cat sat on the mat.", "A kitten was resting on a rug!",
             "Attention lets every token look at every other token.",
             "Stock markets fell sharply on Tuesday, dragging tech shares down 3.2%.",
             "Ünïcödé accents, CJK 日本語 and emoji 🙂 all go through WordPiece.", "short"]


# ------------------------------------------------------------------------------------------- plumbing
def test_gelu_tanh_is_torchs_tanh_approximation_and_differs_from_exact():
    x = torch.linspace(-6, 6, 1001)
    assert torch.equal(ACTIVATIONS["gelu_tanh"](x), F.gelu(x, approximate="tanh"))
    assert (ACTIVATIONS["gelu_tanh"](x) - F.gelu(x)).abs().max() > 1e-4


def test_norm_eps_reaches_every_layernorm_and_final_norm_can_be_left_out():
    enc = Encoder(2, 16, 2, 32, norm_eps=1e-12, final_norm=False)
    eps = [m.eps for m in enc.modules() if isinstance(m, LayerNorm)]
    assert eps == [1e-12] * 4 and isinstance(enc.norm, torch.nn.Identity)
    assert all(m.eps == 1e-5 for m in Encoder(1, 16, 2, 32).modules() if isinstance(m, LayerNorm))
    cfg = EncoderConfig(vocab_size=20, d_model=16, n_heads=2, n_classes=0, norm_eps=1e-12, embed_norm=True)
    assert [m.eps for m in EncoderClassifier(cfg).modules() if isinstance(m, LayerNorm)] == [1e-12] * 6


def test_attention_mask_and_token_types_given_to_the_encoder():
    torch.manual_seed(0)
    cfg = EncoderConfig(vocab_size=20, d_model=16, n_heads=2, n_classes=3, pooling="mean", n_token_types=2,
                        embed_norm=True)
    model = EncoderClassifier(cfg).eval()
    ids = torch.tensor([[5, 6, 7, 0], [8, 9, 10, 11]])
    keep = ids != 0
    assert_close(model(ids, attention_mask=keep.long()), model(ids), what="mask given vs rebuilt from pad_id")
    types = torch.tensor([[0, 1, 1, 0], [0, 0, 1, 1]])
    assert not torch.allclose(model(ids, token_type_ids=types), model(ids))
    # an all-zero token_type_ids is the default
    assert_close(model(ids, token_type_ids=torch.zeros_like(ids)), model(ids), what="segment 0 default")
    # with [CLS] pooling the prepended token is real and of segment 0
    cls_model = EncoderClassifier(cfg.replace(pooling="cls")).eval()
    hidden, keep_cls = cls_model.features(ids, attention_mask=keep, token_type_ids=types)
    assert hidden.shape == (2, 5, 16) and keep_cls[:, 0].all()
    with pytest.raises(ValueError, match=r"token_type_ids must lie in \[0, 1\]"):
        model(ids, token_type_ids=types + 1)
    with pytest.raises(ValueError, match="attention_mask must have the shape of the tokens"):
        model(ids, attention_mask=keep[:, :2])
    with pytest.raises(TypeError, match="attention_mask must be an integer or boolean tensor"):
        model(ids, attention_mask=keep.float())
    plain = EncoderClassifier(EncoderConfig(vocab_size=20, d_model=16, n_heads=2)).eval()
    with pytest.raises(ValueError, match="no segment embeddings"):
        plain(ids, token_type_ids=types)


def test_defaults_leave_existing_models_unchanged():
    torch.manual_seed(0)
    model = EncoderClassifier(EncoderConfig.preset("tiny", vocab_size=12)).eval()
    assert model.type_embed is None and model.embed_norm is None and isinstance(model.encoder.norm, LayerNorm)
    ids = torch.tensor([[3, 4, 5, 0]])
    x = model.pos(model.tok_embed(model.with_cls(ids)))  # the lesson-07 pipeline written out
    expected = model.head(model.encoder(x, mask=(model.with_cls(ids) != 0)[:, None, None, :])[:, 0])
    assert torch.equal(model(ids), expected)


# --------------------------------------------------------------------------------------------- MiniLM
@pytest.fixture(scope="module")
def minilm():
    model, tok = load_bert(minilm_directory())
    reference = transformers.BertModel.from_pretrained(str(minilm_directory()), add_pooling_layer=False).eval()
    return model, tok, reference


def test_minilm_hidden_states_equal_bertmodel(minilm):
    model, tok, reference = minilm
    batch = tok(SENTENCES)
    with torch.no_grad():
        hidden, keep = model.features(**batch)
        expected = reference(**batch).last_hidden_state
    real = batch["attention_mask"].bool()
    assert torch.equal(keep, real)
    diff = (hidden - expected)[real].abs().max().item()
    assert diff <= 1e-5, f"MiniLM hidden states differ from BertModel's by {diff:.2e}"


def test_minilm_sentence_pairs_with_token_types(minilm):
    model, tok, reference = minilm
    batch = tok(["How old is the universe?", "What is attention?"],
                pairs=["About 13.8 billion years.", "A weighted average of values."])
    assert batch["token_type_ids"].sum() > 0
    with torch.no_grad():
        hidden, _ = model.features(**batch)
        expected = reference(**batch).last_hidden_state
        without_types = reference(batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    real = batch["attention_mask"].bool()
    assert (hidden - expected)[real].abs().max() <= 1e-5
    assert (expected - without_types)[real].abs().max() > 1e-3  # the segments do change the states


def test_minilm_sentence_embeddings_equal_sentence_transformers(minilm):
    model, tok, reference = minilm
    mine = encode_sentences(model, tok, SENTENCES)
    batch = tok(SENTENCES)
    with torch.no_grad():
        hidden = reference(**batch).last_hidden_state
    weights = batch["attention_mask"].unsqueeze(-1).float()
    expected = F.normalize((hidden * weights).sum(1) / weights.sum(1), dim=-1)
    assert mine.shape == (len(SENTENCES), 384)
    assert (mine - expected).abs().max() <= 1e-6
    sentence_transformers = pytest.importorskip("sentence_transformers")
    st = sentence_transformers.SentenceTransformer(str(minilm_directory()), device="cpu")
    st_vectors = torch.as_tensor(st.encode(SENTENCES, convert_to_numpy=True))
    assert (mine - st_vectors).abs().max() <= 1e-6
    # and they mean something: the paraphrase pair is the closest pair
    sims = mine @ mine.T - 2 * torch.eye(len(SENTENCES))
    assert sims.flatten().argmax().item() in (1, len(SENTENCES))  # (0, 1) or (1, 0)


def test_bert_loader_errors(tmp_path, minilm):
    with pytest.raises(FileNotFoundError, match="no model directory"):
        load_bert(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="config.json is missing"):
        load_bert(tmp_path)
    src = minilm_directory()
    for name in ("config.json", "vocab.txt", "tokenizer_config.json"):
        shutil.copy(src / name, tmp_path / name)
    with pytest.raises(FileNotFoundError, match="neither model.safetensors nor pytorch_model.bin"):
        load_bert(tmp_path)
    weights = read_weights(src)
    from safetensors.torch import save_file
    bad = dict(weights)
    bad["encoder.layer.2.intermediate.dense.weight"] = bad["encoder.layer.2.intermediate.dense.weight"][:100].clone()
    save_file(bad, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match=r"'encoder.layer.2.intermediate.dense.weight'.*\(1536, 384\).*\(100, 384\)"):
        load_bert(tmp_path)
    bad = {k: v for k, v in weights.items() if k != "embeddings.LayerNorm.bias"}
    bad["encoder.layer.9.output.dense.weight"] = weights["encoder.layer.0.output.dense.weight"].clone()
    save_file(bad, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match=r"missing \['embeddings.LayerNorm.bias'\].*unexpected "
                                         r"\['encoder.layer.9.output.dense.weight'\]"):
        load_bert(tmp_path)
    config = json.loads((src / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "model_type": "llama"}))
    with pytest.raises(ValueError, match="BERT-architecture models, got model_type='llama'"):
        load_bert(tmp_path)


# ---------------------------------------------------------------------------------------------- GPT-2
@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory):
    """A GPT-2 with random weights (LayerNorms and biases too), saved in the Hugging Face layout."""
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=97, n_positions=24, n_embd=48, n_layer=3, n_head=4,
                                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, layer_norm_epsilon=1e-5)
    reference = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        for name, p in reference.named_parameters():
            p.normal_(1.0 if name.endswith("ln_1.weight") or "ln_" in name and name.endswith("weight") else 0.0,
                      0.1 if "ln" in name else 0.3)
    directory = tmp_path_factory.mktemp("tiny_gpt2")
    reference.save_pretrained(directory)
    return reference, directory


def test_gpt2_config_maps_the_architecture(tiny_gpt2):
    _, directory = tiny_gpt2
    cfg = gpt2_config(json.loads((directory / "config.json").read_text()))
    assert (cfg.vocab_size, cfg.d_model, cfg.n_heads, cfg.n_layers, cfg.d_ff, cfg.max_len) == (97, 48, 4, 3, 192, 24)
    assert (cfg.activation, cfg.norm_eps, cfg.tie_weights, cfg.norm_first, cfg.bias) == ("gelu_tanh", 1e-5, True,
                                                                                         True, True)


def test_gpt2_logits_equal_gpt2lmheadmodel(tiny_gpt2):
    reference, directory = tiny_gpt2
    model, tokenizer = load_gpt2(directory)
    assert tokenizer is None and isinstance(model.blocks[0].ffn, FeedForward)
    ids = torch.randint(0, 97, (3, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        mine, expected = model(ids), reference(ids).logits
    diff = (mine - expected).abs().max().item()
    assert diff <= 1e-5, f"logits differ by {diff:.2e}"
    # GELU's tanh approximation matters: the exact GELU moves the logits visibly
    exact, _ = load_gpt2(directory, activation="gelu")
    with torch.no_grad():
        assert (exact(ids) - expected).abs().max() > 10 * max(diff, 1e-6)


@pytest.mark.parametrize("use_cache", [False, True])
def test_gpt2_greedy_continuation_equals_reference(tiny_gpt2, use_cache):
    reference, directory = tiny_gpt2
    model, _ = load_gpt2(directory)
    prompt = torch.tensor([[5, 17, 42, 3], [60, 1, 2, 90]])
    steps = 12
    with torch.no_grad():   # the reference's greedy loop, with its own KV cache
        out = reference(prompt, use_cache=True)
        past, ref_ids = out.past_key_values, prompt
        for _ in range(steps):
            next_id = out.logits[:, -1].argmax(-1, keepdim=True)
            ref_ids = torch.cat([ref_ids, next_id], dim=1)
            out = reference(next_id, past_key_values=past, use_cache=True)
            past = out.past_key_values
        uncached = prompt
        for _ in range(steps):
            uncached = torch.cat([uncached, reference(uncached).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(ref_ids, uncached)
    mine = model.generate(prompt, steps, temperature=0.0, use_cache=use_cache)
    assert torch.equal(mine, ref_ids)


def test_gpt2_loader_errors_and_tokenizer_files(tiny_gpt2, tmp_path):
    reference, directory = tiny_gpt2
    for name in os.listdir(directory):
        shutil.copy(directory / name, tmp_path / name)
    config = json.loads((directory / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "n_inner": 100}))
    with pytest.raises(ValueError, match=r"'h.0.mlp.c_fc.weight' into 'blocks.0.ffn.linear1.weight'.*"
                                         r"\(100, 48\).*\(192, 48\)"):
        load_gpt2(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**config, "model_type": "bert"}))
    with pytest.raises(ValueError, match="GPT-2-architecture models, got model_type='bert'"):
        load_gpt2(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**config, "n_layer": 4}))
    with pytest.raises(ValueError, match=r"missing \['h.3.attn.c_attn.bias', 'h.3.attn.c_attn.weight'"):
        load_gpt2(tmp_path)
    # vocab.json + merges.txt beside the weights become the tokenizer (GPT-2's file format)
    (tmp_path / "config.json").write_text(json.dumps(config))
    from tfmlib.bpe import ByteLevelBPE
    bpe = ByteLevelBPE().train("the cat sat on the mat " * 20, vocab_size=270)
    enc, merges = bpe.save_gpt2_files(tmp_path / "tok")
    shutil.copy(enc, tmp_path / "vocab.json")
    shutil.copy(merges, tmp_path / "merges.txt")
    _, tokenizer = load_gpt2(tmp_path)
    assert tokenizer.encode("the cat") == bpe.encode("the cat")


def test_gpt2_attention_mask_equals_reference_on_real_tokens(tiny_gpt2):
    reference, directory = tiny_gpt2
    model, _ = load_gpt2(directory)
    ids = torch.tensor([[5, 17, 42, 3, 9, 0, 0], [60, 1, 2, 90, 11, 12, 13]])   # row 0: 2 padding tokens
    attention_mask = torch.tensor([[1, 1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1, 1]])
    with torch.no_grad():
        mine = model(ids, attention_mask=attention_mask)
        expected = reference(ids, attention_mask=attention_mask).logits
        alone = model(ids[:1, :5])
    real = attention_mask.bool()
    assert (mine - expected)[real].abs().max() <= 1e-5
    assert (mine[0, :5] - alone[0]).abs().max() <= 1e-5          # padding on the right changes nothing
    assert torch.equal(mine, model(ids, key_mask=real))
    with pytest.raises(ValueError, match="not both"):
        model(ids, key_mask=real, attention_mask=attention_mask)
