"""LoRA (tfmlib.lora): zero-init equals the base model, the layer equals the merged-weight formula in
outputs and gradients, only adapters train, merging changes nothing, adapters and models save and load
without pickle, and bad input gives a helpful error."""
import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file

from helpers import assert_close
from tfmlib import GPT, GPTConfig
from tfmlib.bert import EncoderClassifier, EncoderConfig
from tfmlib.checkpoint import load_checkpoint, save_checkpoint
from tfmlib.lora import (LoRALinear, add_lora, load_lora, load_lora_state_dict, lora_layers, lora_state_dict,
                         merge_lora, save_lora, trainable_parameters)
from tfmlib.train import make_optimizer
from tfmlib.utils import count_parameters

V = 40
ATTENTION = ("q_proj", "k_proj", "v_proj", "out_proj")


def _gpt(preset: str = "cpu", seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig.preset(preset, vocab_size=V, dropout=0.0)).eval()


def _ids(seed: int = 1, shape=(2, 16)) -> torch.Tensor:
    return torch.randint(0, V, shape, generator=torch.Generator().manual_seed(seed))


def _train_steps(model: nn.Module, steps: int = 3, lr: float = 1e-2) -> None:
    """A few AdamW steps on next-token prediction: B leaves zero, A moves."""
    optimizer = make_optimizer(model, lr=lr)
    model.train()
    for step in range(steps):
        ids = _ids(seed=10 + step)
        loss = F.cross_entropy(model(ids[:, :-1]).flatten(0, 1), ids[:, 1:].flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()


# ---------------------------------------------------------------- (a) zero init = the base model
@pytest.mark.parametrize("preset", ["cpu", "llama-cpu"])
def test_zero_init_gives_exactly_the_base_models_logits(preset):
    model = _gpt(preset)
    ids = _ids()
    with torch.no_grad():
        before = model(ids)
        names = add_lora(model, targets=ATTENTION, r=4, alpha=8)
        after = model(ids)
    assert len(names) == 4 * model.config.n_layers and all(isinstance(m, LoRALinear) for m in lora_layers(model).values())
    assert torch.equal(before, after)


# ---------------------------------------------------------------- (b) merging changes nothing
@pytest.mark.parametrize("preset", ["cpu", "llama-cpu"])
def test_merged_model_equals_the_adapted_one(preset):
    base = _gpt(preset)
    keys = list(base.state_dict())
    ids = _ids()
    with torch.no_grad():
        base_logits = base(ids)
    model = copy.deepcopy(base)
    add_lora(model, targets=("q_proj", "v_proj", "linear1", "linear2", "up_proj", "down_proj"), r=4, alpha=8)
    _train_steps(model)
    assert all(bool(layer.lora_B.abs().max() > 0) for layer in lora_layers(model).values())
    with torch.no_grad():
        lora_logits = model(ids)
        assert (lora_logits - base_logits).abs().max() > 1e-3  # the adapters did change the model
        merged = merge_lora(copy.deepcopy(model))
        merged_logits = merged(ids)
    assert not lora_layers(merged) and list(merged.state_dict()) == keys
    assert count_parameters(merged, trainable_only=False) == count_parameters(base, trainable_only=False)
    assert (merged_logits - lora_logits).abs().max() <= 1e-5


def test_merge_and_unmerge_round_trip():
    model = _gpt()
    add_lora(model, targets=ATTENTION, r=4, alpha=8)
    _train_steps(model)
    ids = _ids()
    originals = {name: layer.base.weight.clone() for name, layer in lora_layers(model).items()}
    with torch.no_grad():
        lora_logits = model(ids)
        for layer in lora_layers(model).values():
            layer.merge()
            layer.merge()  # a second merge is a no-op
        merged_logits = model(ids)
        for layer in lora_layers(model).values():
            layer.unmerge()
        unmerged_logits = model(ids)
    assert (merged_logits - lora_logits).abs().max() <= 1e-5
    assert (unmerged_logits - lora_logits).abs().max() <= 1e-5
    for name, layer in lora_layers(model).items():
        assert not layer.merged
        assert_close(layer.base.weight, originals[name], atol=1e-6, what=f"{name} after merge + unmerge")


# ---------------------------------------------------------------- (c) only adapters train
def test_only_adapter_parameters_receive_gradients():
    model = _gpt()
    model.train()
    add_lora(model, targets=ATTENTION + ("linear1", "linear2"), r=4, alpha=8)
    ids = _ids()
    F.cross_entropy(model(ids[:, :-1]).flatten(0, 1), ids[:, 1:].flatten()).backward()
    adapters = {name for name, _ in model.named_parameters() if name.endswith((".lora_A", ".lora_B"))}
    assert len(adapters) == 2 * 6 * model.config.n_layers
    for name, p in model.named_parameters():
        if name in adapters:
            assert p.requires_grad and p.grad is not None, name
            if name.endswith("lora_B"):  # A's gradient is B^T (...) = 0 while B = 0
                assert p.grad.abs().max() > 0, name
        else:
            assert not p.requires_grad and p.grad is None, name
    assert not model.tok_embed.weight.requires_grad and not model.norm.weight.requires_grad
    optimizer = make_optimizer(model)
    in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert in_optimizer == {id(p) for name, p in model.named_parameters() if name in adapters}


def test_encoder_classifier_layers_are_found():
    torch.manual_seed(0)
    model = EncoderClassifier(EncoderConfig.preset("cpu", vocab_size=V, n_classes=3))
    names = add_lora(model, r=2, alpha=4)  # the default targets: q_proj, v_proj
    assert len(names) == 2 * model.config.n_layers and all(n.endswith(("q_proj", "v_proj")) for n in names)
    assert not model.head.weight.requires_grad  # frozen like everything else; unfreeze it to train a new head
    model.head.requires_grad_(True)
    trainable, _ = trainable_parameters(model)
    assert trainable == sum(layer.lora_A.numel() + layer.lora_B.numel() for layer in lora_layers(model).values()) \
        + sum(p.numel() for p in model.head.parameters())


# ---------------------------------------------------------------- (d) the layer against the formula
@pytest.mark.parametrize("bias", [True, False])
def test_lora_linear_equals_the_merged_weight_formula_in_outputs_and_gradients(bias):
    torch.manual_seed(0)
    base = nn.Linear(12, 8, bias=bias)
    layer = LoRALinear(base, r=4, alpha=8.0)
    assert not base.weight.requires_grad and (base.bias is None or not base.bias.requires_grad)
    assert layer.lora_A.shape == (4, 12) and layer.lora_B.shape == (8, 4) and torch.all(layer.lora_B == 0)
    with torch.no_grad():
        layer.lora_B.normal_()
    A, B = layer.lora_A.detach().clone().requires_grad_(), layer.lora_B.detach().clone().requires_grad_()
    x = torch.randn(3, 5, 12, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    out = layer(x)
    expected = F.linear(x_ref, base.weight + B @ A * (8.0 / 4), base.bias)
    assert_close(out, expected, atol=1e-6)
    weights = torch.randn(out.shape)
    (out * weights).sum().backward()
    (expected * weights).sum().backward()
    for mine, ref, name in ((layer.lora_A.grad, A.grad, "A"), (layer.lora_B.grad, B.grad, "B"), (x.grad, x_ref.grad, "x")):
        assert_close(mine, ref, atol=1e-5, what=f"gradient with respect to {name}")
    assert base.weight.grad is None
    assert_close(layer.merged_linear()(x), expected, atol=1e-5, what="merged_linear()")


def test_dropout_acts_on_the_adapter_input_only():
    torch.manual_seed(0)
    base = nn.Linear(10, 6)
    layer = LoRALinear(base, r=2, alpha=2.0, dropout=0.5).train()
    x = torch.randn(4, 10)
    with torch.no_grad():
        assert torch.equal(layer(x), base(x))  # B = 0: dropout does not touch the base path
        layer.lora_B.normal_()
        torch.manual_seed(5)
        out = layer(x)
        torch.manual_seed(5)
        expected = base(x) + F.dropout(x, 0.5, training=True) @ layer.lora_A.T @ layer.lora_B.T * 1.0
        assert_close(out, expected, atol=1e-6)
        layer.eval()
        assert_close(layer(x), F.linear(x, base.weight + layer.delta_weight(), base.bias), atol=1e-6)


def test_against_peft_when_installed():
    peft = pytest.importorskip("peft")
    torch.manual_seed(0)
    net = nn.Sequential()
    net.add_module("q_proj", nn.Linear(16, 16))
    net.add_module("act", nn.ReLU())
    net.add_module("v_proj", nn.Linear(16, 12))
    reference = peft.get_peft_model(copy.deepcopy(net), peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    add_lora(net, targets=("q_proj", "v_proj"), r=4, alpha=8)
    with torch.no_grad():
        for name, layer in lora_layers(net).items():
            theirs = reference.get_submodule(f"base_model.model.{name}")
            layer.lora_B.normal_()
            theirs.lora_A["default"].weight.copy_(layer.lora_A)
            theirs.lora_B["default"].weight.copy_(layer.lora_B)
    x = torch.randn(5, 16)
    assert_close(net(x), reference(x), atol=1e-6)
    assert trainable_parameters(net)[0] == reference.get_nb_trainable_parameters()[0]


# ---------------------------------------------------------------- (e) the trainable share
@pytest.mark.parametrize("preset", ["cpu", "llama-cpu"])
def test_trainable_share_follows_the_formula(preset):
    model = _gpt(preset)
    c = model.config
    total_before = count_parameters(model, trainable_only=False)
    r = 8
    add_lora(model, targets=("q_proj", "v_proj"), r=r, alpha=16)
    kv_width = (c.n_kv_heads or c.n_heads) * c.head_size
    expected = c.n_layers * (r * (c.d_model + c.d_model) + r * (c.d_model + kv_width))  # r (in + out) per layer
    trainable, total = trainable_parameters(model)
    assert trainable == expected and total == total_before + expected
    if preset == "cpu":  # 2 layers x (1024 + 1024) of a tied 2-block model
        assert trainable == 4096


# ---------------------------------------------------------------- (f) saving and loading, no pickle
def test_adapters_save_and_load(tmp_path):
    model = _gpt()
    add_lora(model, targets=ATTENTION, r=4, alpha=8)
    _train_steps(model)
    path = tmp_path / "adapters.safetensors"
    save_lora(model, path)
    stored = load_file(str(path))  # plain tensors: safetensors runs no code
    assert set(stored) == set(lora_state_dict(model)) and all(k.endswith(("lora_A", "lora_B")) for k in stored)
    fresh = _gpt()                 # the same base weights (same seed), new adapters
    add_lora(fresh, targets=ATTENTION, r=4, alpha=8)
    ids = _ids()
    load_lora(fresh, path)
    with torch.no_grad():
        assert torch.equal(fresh(ids), model(ids))


@pytest.mark.parametrize("targets, r, alpha, message", [
    (ATTENTION, 2, 8, "shape mismatches"),
    (("q_proj",), 4, 8, "unexpected keys"),
    (ATTENTION + ("linear1",), 4, 8, "missing keys"),
    (ATTENTION, 4, 16, "alpha"),
])
def test_loading_mismatched_adapters_explains_why(tmp_path, targets, r, alpha, message):
    model = _gpt()
    add_lora(model, targets=ATTENTION, r=4, alpha=8)
    save_lora(model, tmp_path / "a.safetensors")
    other = _gpt()
    add_lora(other, targets=targets, r=r, alpha=alpha)
    with pytest.raises(ValueError, match=message):
        load_lora(other, tmp_path / "a.safetensors")


def test_loading_into_merged_layers_or_from_nowhere_fails(tmp_path):
    model = _gpt()
    add_lora(model, targets=ATTENTION, r=4, alpha=8)
    adapters = {k: v.clone() for k, v in lora_state_dict(model).items()}
    next(iter(lora_layers(model).values())).merge()
    with pytest.raises(ValueError, match="unmerge"):
        load_lora_state_dict(model, adapters)
    with pytest.raises(FileNotFoundError, match="no adapter file"):
        load_lora(model, tmp_path / "missing.safetensors")
    with pytest.raises(ValueError, match="no LoRA layers"):
        save_lora(_gpt(), tmp_path / "x.safetensors")


def test_unmerged_and_merged_models_save_and_load_with_checkpoints(tmp_path):
    model = _gpt()
    add_lora(model, targets=ATTENTION, r=4, alpha=8)
    _train_steps(model)
    ids = _ids()
    with torch.no_grad():
        expected = model(ids)
    save_checkpoint(tmp_path / "unmerged", model)      # the LoRA model as it is (safetensors)
    restored = _gpt(seed=7)
    add_lora(restored, targets=ATTENTION, r=4, alpha=8)
    load_checkpoint(tmp_path / "unmerged", restored, restore_rng=False)
    merge_lora(model)
    save_checkpoint(tmp_path / "merged", model)        # an ordinary GPT
    plain = _gpt(seed=7)
    load_checkpoint(tmp_path / "merged", plain, restore_rng=False)
    with torch.no_grad():
        assert torch.equal(restored(ids), expected)
        assert (plain(ids) - expected).abs().max() <= 1e-5


# ---------------------------------------------------------------- (g) helpful errors
@pytest.mark.parametrize("kwargs, message", [
    (dict(r=0), r"r \(the rank\) must be an integer >= 1, got 0"),
    (dict(r=2.5), r"integer >= 1, got 2.5"),
    (dict(r=9), r"r must be <= min\(in_features, out_features\) = 8 .*got r=9"),
    (dict(alpha=0), "alpha must be a number > 0, got 0"),
    (dict(dropout=1.0), r"dropout must be in \[0, 1\), got 1.0"),
    (dict(dropout=-0.1), r"dropout must be in \[0, 1\)"),
])
def test_bad_hyperparameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LoRALinear(nn.Linear(8, 12), **kwargs)


def test_bad_targets_and_modules():
    with pytest.raises(TypeError, match="wraps an nn.Linear, got Conv1d"):
        LoRALinear(nn.Conv1d(4, 4, 1))
    model = _gpt()
    with pytest.raises(ValueError, match=r"no nn.Linear matches targets=\('query',\).*'q_proj'"):
        add_lora(model, targets=("query",))
    with pytest.raises(ValueError, match="lm_head.weight is tied to tok_embed"):
        add_lora(model, targets=lambda name, module: True)
    with pytest.raises(ValueError, match="wrap a lone nn.Linear"):
        add_lora(nn.Linear(4, 4))
    with pytest.raises(ValueError, match="name suffixes"):
        add_lora(model, targets=())
    with pytest.raises(ValueError, match=r"add_lora\('blocks.0.self_attn.q_proj'\): r must be <="):
        add_lora(model, targets=("q_proj",), r=100)
    # a failed call changed nothing
    assert not lora_layers(model) and all(p.requires_grad for p in model.parameters())


def test_adapters_added_twice_stay_trainable():
    model = _gpt()
    add_lora(model, targets=("q_proj",), r=2, alpha=4)
    add_lora(model, targets=("v_proj",), r=2, alpha=4)
    assert len(lora_layers(model)) == 2 * model.config.n_layers
    assert all(layer.lora_A.requires_grad for layer in lora_layers(model).values())
    with pytest.raises(ValueError, match="already have adapters"):
        add_lora(model, targets=("q_proj",))


# ----------------------------------------------------------------------------- trainable token rows

def _gpt_for_tokens():
    from tfmlib import GPT, GPTConfig, set_seed
    set_seed(0)
    return GPT(GPTConfig.preset("cpu", vocab_size=30, max_len=16)).eval()


def test_trainable_tokens_start_equal_train_only_their_rows_and_merge():
    from tfmlib.lora import add_lora, merge_lora, trainable_parameters
    from tfmlib.trainable_tokens import add_trainable_tokens
    model = _gpt_for_tokens()
    ids = torch.randint(0, 30, (3, 10), generator=torch.Generator().manual_seed(0))
    before = model(ids)
    base_weight = model.tok_embed.weight.detach().clone()
    add_lora(model, targets=("q_proj", "v_proj"), r=4, alpha=8)
    tokens = add_trainable_tokens(model, [27, 28, 29])
    assert torch.equal(model(ids), before)                                 # delta = 0: the same model
    trainable, _ = trainable_parameters(model)
    assert trainable == 2 * 2 * 4 * (64 + 64) + 3 * 64                    # adapters + 3 rows of C = 64
    model(ids)[..., 27:].sum().backward()
    assert tokens.delta.grad is not None and tokens.delta.grad.abs().sum() > 0
    assert model.tok_embed.weight.grad is None                             # the matrix itself stays frozen
    with torch.no_grad():
        tokens.delta.normal_(0, 0.5)
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    ids_with_new = ids.clone()
    ids_with_new[:, ::3] = 28                                              # the new tokens as inputs too
    adapted = model(ids_with_new)
    assert (adapted[..., 27:] - before[..., 27:]).abs().max() > 1e-2
    merge_lora(model)
    assert not hasattr(model, "trainable_tokens")
    torch.testing.assert_close(model(ids_with_new), adapted, atol=1e-5, rtol=1e-5)
    changed = (model.tok_embed.weight - base_weight).abs().sum(-1) > 0
    assert changed.nonzero().flatten().tolist() == [27, 28, 29]            # only those rows moved
    assert model.lm_head.weight is model.tok_embed.weight                  # still tied


def test_trainable_tokens_bad_input():
    from tfmlib import GPT, GPTConfig
    from tfmlib.trainable_tokens import add_trainable_tokens
    with pytest.raises(ValueError, match=r"ids in \[0, 29\]"):
        add_trainable_tokens(_gpt_for_tokens(), [30])
    with pytest.raises(ValueError, match="tied"):
        add_trainable_tokens(GPT(GPTConfig.preset("cpu", vocab_size=30, tie_weights=False)), [1])
    model = _gpt_for_tokens()
    add_trainable_tokens(model, [1])
    with pytest.raises(ValueError, match="already"):
        add_trainable_tokens(model, [2])


def test_trainable_tokens_survive_deepcopy():
    import copy
    from tfmlib.lora import merge_lora
    from tfmlib.trainable_tokens import add_trainable_tokens
    model = _gpt_for_tokens()
    tokens = add_trainable_tokens(model, [5])
    twin = copy.deepcopy(model)
    with torch.no_grad():
        twin.trainable_tokens.delta.fill_(1.0)                             # the copy has its own rows
    ids = torch.tensor([[5, 1, 5]])
    assert tokens.delta.abs().sum() == 0 and not torch.equal(twin(ids), model(ids))
    expected = twin(ids)
    merge_lora(twin)
    torch.testing.assert_close(twin(ids), expected)
    assert hasattr(model, "trainable_tokens")                              # the original is untouched


def test_trainable_token_rows_save_and_load_with_the_adapters(tmp_path):
    from tfmlib.trainable_tokens import add_trainable_tokens
    model = _gpt_for_tokens()
    add_lora(model, targets=("q_proj", "v_proj"), r=4, alpha=8)
    add_trainable_tokens(model, [27, 28, 29])
    with torch.no_grad():                                                  # "trained": B and the rows non-zero
        model.trainable_tokens.delta.normal_(0, 0.5)
        for layer in lora_layers(model).values():
            layer.lora_B.normal_(0, 0.05)
    assert "trainable_tokens.delta" in lora_state_dict(model)
    path = tmp_path / "adapters.safetensors"
    save_lora(model, path)
    ids = torch.tensor([[27, 3, 28, 5, 29, 1]])
    fresh = _gpt_for_tokens()                                              # the same base weights
    add_lora(fresh, targets=("q_proj", "v_proj"), r=4, alpha=8)
    add_trainable_tokens(fresh, [29, 27, 28])                              # the same ids, in any order
    load_lora(fresh, path)
    with torch.no_grad():
        assert torch.equal(fresh(ids), model(ids))
        assert not torch.equal(fresh(ids), _gpt_for_tokens()(ids))         # the rows did change something


def test_loading_token_rows_that_do_not_fit_explains_why(tmp_path):
    from tfmlib.trainable_tokens import add_trainable_tokens
    model = _gpt_for_tokens()
    add_lora(model, targets=("q_proj",), r=2, alpha=4)
    add_trainable_tokens(model, [27, 28])
    save_lora(model, tmp_path / "rows.safetensors")
    without = _gpt_for_tokens()
    add_lora(without, targets=("q_proj",), r=2, alpha=4)
    message = r"the file .* holds trainable rows for token ids \[27, 28\]: call add_trainable_tokens\(model, ids\)"
    with pytest.raises(ValueError, match=message):
        load_lora(without, tmp_path / "rows.safetensors")
    with pytest.raises(ValueError, match=r"holds trainable rows for 2 token ids: call add_trainable_tokens"):
        load_lora_state_dict(without, lora_state_dict(model))
    save_lora(without, tmp_path / "plain.safetensors")
    other = _gpt_for_tokens()
    add_lora(other, targets=("q_proj",), r=2, alpha=4)
    add_trainable_tokens(other, [27, 29])
    with pytest.raises(ValueError, match=r"only saved: \[28\], only in the model: \[29\]"):
        load_lora(other, tmp_path / "rows.safetensors")
    with pytest.raises(ValueError, match=r"the model has trainable rows for token ids \[27, 29\] but the file"):
        load_lora(other, tmp_path / "plain.safetensors")


@pytest.mark.parametrize("token_ids, error, message", [
    (5, TypeError, r"list of integer ids .* got int 5: write \[5\]"),
    (["<|end|>"], TypeError, r"got str '<\|end\|>' \(a token's text"),
    ([2.7], TypeError, "got float 2.7"),
    (2.7, TypeError, "got float"),
    ([], ValueError, "non-empty list"),
])
def test_trainable_tokens_want_a_list_of_ints(token_ids, error, message):
    from tfmlib.trainable_tokens import add_trainable_tokens
    with pytest.raises(error, match=message):
        add_trainable_tokens(_gpt_for_tokens(), token_ids)


def test_add_lora_on_a_model_without_linear_layers():
    with pytest.raises(ValueError, match=r"the model has no nn.Linear layers \(it is a Sequential\)"):
        add_lora(nn.Sequential(nn.Embedding(5, 4), nn.LayerNorm(4)))
