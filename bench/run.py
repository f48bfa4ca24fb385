"""Speed of tfmlib against PyTorch's own modules, on this machine.

    python bench/run.py            # the full set (a few minutes on a 2-core CPU)
    python bench/run.py --quick    # smaller and fewer rounds: under a minute
    python bench/run.py --threads 1 --only gpt   # steadier when other jobs share the CPU

One line per comparison, ending in ``ratio=<tfmlib time / reference time>`` (below 1 means
tfmlib is faster). A and B run alternately in one process (A B B A ...), after warm-up
steps; the times are medians over rounds and the ratio is the median of the per-round
ratios, which keeps a busy, shared machine from favouring either side.

    mha      tfmlib MultiHeadAttention vs nn.MultiheadAttention(batch_first=True),
             self-attention forward + backward, need_weights=False
    seq2seq  one training step (forward, loss, backward, AdamW) of Seq2SeqTransformer vs the
             same embeddings, positions and head around nn.Transformer(norm_first=True)
    gpt      one training step of tfmlib's GPT vs a GPT made of nn.TransformerEncoderLayer
             (norm_first=True, gelu, causal mask) with the same embeddings and tied head
    modern   one training step of tfmlib's GPT with a Llama-style option on vs the GPT-2-style
             default (both tfmlib): RMSNorm, SwiGLU at 2/3 width, RoPE, GQA, no biases, and all of
             them (the "llama-cpu" preset's choices); ratio = option on / option off. Then, when
             the dev dependency transformers is installed, the Llama-style GPT vs Hugging Face's
             LlamaForCausalLM (sdpa attention) at the same config, weights loaded into tfmlib's
    bpe      tfmlib.bpe (pure Python) against compiled tokenizers, on ~1 MB of Shakespeare:
             training a 500-token byte-level vocabulary vs Hugging Face `tokenizers` (BpeTrainer,
             ByteLevel pre-tokenizer; tiktoken has no trainer), and encoding with GPT-2's
             vocabulary vs tiktoken's "gpt2" built from the same files and HF's BPE.from_file.
             These ratios are reported, not held to the 1.10 goal (Python against Rust).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from tfmlib import GPT, GPTConfig, MultiHeadAttention, Seq2SeqTransformer, TransformerConfig  # noqa: E402
from tfmlib.embeddings import TokenEmbedding  # noqa: E402
from tfmlib.transformer import make_positional  # noqa: E402


# --------------------------------------------------------------------------- reference models

class TorchSeq2Seq(nn.Module):
    """tfmlib's embeddings, positions and head around nn.Transformer: only the body differs."""

    def __init__(self, c: TransformerConfig):
        super().__init__()
        self.pad_id = c.pad_id
        self.src_embed = TokenEmbedding(c.src_vocab_size, c.d_model)
        self.tgt_embed = TokenEmbedding(c.tgt_vocab_size, c.d_model)
        self.src_pos = make_positional(c.positional, c.d_model, c.max_len, c.dropout)
        self.tgt_pos = make_positional(c.positional, c.d_model, c.max_len, c.dropout)
        self.transformer = nn.Transformer(c.d_model, c.n_heads, c.n_encoder_layers, c.n_decoder_layers, c.d_ff,
                                          c.dropout, c.activation, batch_first=True, norm_first=c.norm_first)
        self.lm_head = nn.Linear(c.d_model, c.tgt_vocab_size, bias=False)

    def forward(self, src, tgt_in):
        T = tgt_in.shape[1]
        causal = torch.ones(T, T, dtype=torch.bool, device=src.device).triu(1)  # True = may NOT attend
        src_pad, tgt_pad = src == self.pad_id, tgt_in == self.pad_id
        x = self.transformer(self.src_pos(self.src_embed(src)), self.tgt_pos(self.tgt_embed(tgt_in)),
                             tgt_mask=causal, src_key_padding_mask=src_pad, tgt_key_padding_mask=tgt_pad,
                             memory_key_padding_mask=src_pad, tgt_is_causal=True)
        return self.lm_head(x)


class TorchGPT(nn.Module):
    """A GPT made of nn.TransformerEncoderLayer blocks, sized like tfmlib's GPT(config)."""

    def __init__(self, c: GPTConfig):
        super().__init__()
        self.tok_embed = TokenEmbedding(c.vocab_size, c.d_model, scale=False)
        self.pos = make_positional(c.positional, c.d_model, c.max_len, c.dropout)
        layer = nn.TransformerEncoderLayer(c.d_model, c.n_heads, c.d_ff, c.dropout, c.activation,
                                           batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, c.n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(c.d_model)
        self.lm_head = nn.Linear(c.d_model, c.vocab_size, bias=False)
        self.lm_head.weight = self.tok_embed.weight

    def forward(self, idx):
        T = idx.shape[1]
        causal = torch.ones(T, T, dtype=torch.bool, device=idx.device).triu(1)  # True = may NOT attend
        x = self.blocks(self.pos(self.tok_embed(idx)), mask=causal, is_causal=True)
        return self.lm_head(self.norm(x))


# --------------------------------------------------------------------------- what one measured step does

def mha_step(module, x, is_ref):
    out = module(x, x, x, need_weights=False)[0] if is_ref else module(x)[0]
    out.sum().backward()


def make_train_step(model, make_batch, loss_of):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batch = make_batch()

    def step():
        loss = loss_of(model, batch)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def seq2seq_loss(model, batch):
    src, tgt_in, tgt_out = batch
    logits = model(src, tgt_in)
    return F.cross_entropy(logits.flatten(0, 1), tgt_out.flatten(), ignore_index=0)


def gpt_loss(model, batch):
    x, y = batch
    return F.cross_entropy(model(x).flatten(0, 1), y.flatten())


# --------------------------------------------------------------------------- timing

def compare(label: str, step_a, step_b, rounds: int, reps: int, warmup: int = 1,
            names: tuple[str, str] = ("tfmlib", "torch")) -> float:
    for _ in range(warmup):
        step_a()
        step_b()
    times_a, times_b, ratios = [], [], []
    for r in range(rounds):
        order = ((step_a, times_a), (step_b, times_b)) if r % 2 == 0 else ((step_b, times_b), (step_a, times_a))
        for step, times in order:
            start = time.perf_counter()
            for _ in range(reps):
                step()
            times.append((time.perf_counter() - start) / reps)
        ratios.append(times_a[-1] / times_b[-1])
    med_a, med_b, ratio = statistics.median(times_a), statistics.median(times_b), statistics.median(ratios)
    print(f"{label:<58} {names[0]} {med_a * 1e3:8.2f} ms  {names[1]} {med_b * 1e3:8.2f} ms  ratio={ratio:.3f}",
          flush=True)
    return ratio


def bench_mha(B, T, C, H, rounds, reps):
    mine = MultiHeadAttention(C, H)
    ref = nn.MultiheadAttention(C, H, batch_first=True)
    x = torch.randn(B, T, C, requires_grad=True)
    return compare(f"mha fwd+bwd (B,T,C,H)=({B},{T},{C},{H})",
                   lambda: mha_step(mine, x, False), lambda: mha_step(ref, x, True), rounds, reps)


def bench_seq2seq(cfg: TransformerConfig, B, S, T, rounds, reps):
    def batch():
        gen = torch.Generator().manual_seed(0)
        src = torch.randint(4, cfg.src_vocab_size, (B, S), generator=gen)
        tgt = torch.randint(4, cfg.tgt_vocab_size, (B, T + 1), generator=gen)
        src[: B // 2, S - S // 4:] = 0  # some padding, as in real batches
        tgt[: B // 2, T - T // 4:] = 0
        return src, tgt[:, :-1], tgt[:, 1:]
    torch.manual_seed(0)
    mine, ref = Seq2SeqTransformer(cfg), TorchSeq2Seq(cfg)
    label = (f"seq2seq train step d={cfg.d_model} L={cfg.n_encoder_layers}+{cfg.n_decoder_layers} "
             f"B={B} S={S} T={T}")
    return compare(label, make_train_step(mine, batch, seq2seq_loss), make_train_step(ref, batch, seq2seq_loss),
                   rounds, reps)


def bench_gpt(cfg: GPTConfig, B, T, rounds, reps):
    def batch():
        tokens = torch.randint(0, cfg.vocab_size, (B, T + 1), generator=torch.Generator().manual_seed(0))
        return tokens[:, :-1], tokens[:, 1:]
    torch.manual_seed(0)
    mine, ref = GPT(cfg), TorchGPT(cfg)
    label = f"gpt train step d={cfg.d_model} L={cfg.n_layers} B={B} T={T}"
    return compare(label, make_train_step(mine, batch, gpt_loss), make_train_step(ref, batch, gpt_loss), rounds, reps)


MODERN_OPTIONS = {
    "rmsnorm": dict(norm="rmsnorm", norm_eps=1e-6),
    "swiglu (d_ff x 2/3)": dict(ffn="swiglu", activation="silu"),
    "rope": dict(positional="rope"),
    "gqa (n_kv_heads = H/2)": dict(),  # filled in with the config's n_heads
    "bias=False": dict(bias=False),
    "all (llama style)": dict(norm="rmsnorm", norm_eps=1e-6, ffn="swiglu", activation="silu", positional="rope",
                              bias=False, tie_weights=False),
}


def bench_modern(cfg: GPTConfig, B, T, rounds, reps):
    """GPT-2-style default vs each Llama-style option, both tfmlib; ratio = on / off."""
    def batch():
        tokens = torch.randint(0, cfg.vocab_size, (B, T + 1), generator=torch.Generator().manual_seed(0))
        return tokens[:, :-1], tokens[:, 1:]
    ratios = []
    for name, option in MODERN_OPTIONS.items():
        option = dict(option)
        if name.startswith("gqa") or name.startswith("all"):
            option["n_kv_heads"] = cfg.n_heads // 2
        if "ffn" in option:
            option["d_ff"] = 2 * cfg.d_ff // 3  # same FFN parameters as the MLP
        torch.manual_seed(0)
        off, on = GPT(cfg), GPT(cfg.replace(**option))
        label = f"gpt d={cfg.d_model} L={cfg.n_layers} B={B} T={T}: {name}"
        ratios.append(compare(label, make_train_step(on, batch, gpt_loss), make_train_step(off, batch, gpt_loss),
                              rounds, reps, names=("on", "off")))
    return ratios


def bench_llama_reference(cfg: GPTConfig, B, T, rounds, reps):
    """tfmlib's Llama-style GPT vs transformers.LlamaForCausalLM with the same weights."""
    try:
        import transformers
    except ImportError:
        print("llama reference: transformers is not installed (pip install -e '.[dev]'); skipped", flush=True)
        return None
    from tfmlib.llama import load_llama_state_dict
    hf_cfg = transformers.LlamaConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, intermediate_size=cfg.d_ff,
        num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads, num_key_value_heads=cfg.n_kv_heads,
        max_position_embeddings=cfg.max_len, rms_norm_eps=cfg.norm_eps, tie_word_embeddings=cfg.tie_weights,
        attn_implementation="sdpa")
    torch.manual_seed(0)
    ref = transformers.LlamaForCausalLM(hf_cfg)
    mine = GPT(cfg)
    load_llama_state_dict(mine, ref.state_dict())

    def batch():
        tokens = torch.randint(0, cfg.vocab_size, (B, T + 1), generator=torch.Generator().manual_seed(0))
        return tokens[:, :-1], tokens[:, 1:]

    def hf_loss(model, b):
        x, y = b
        return F.cross_entropy(model(x, use_cache=False).logits.flatten(0, 1), y.flatten())
    label = f"llama train step d={cfg.d_model} L={cfg.n_layers} B={B} T={T} (vs transformers)"
    return compare(label, make_train_step(mine, batch, gpt_loss), make_train_step(ref, batch, hf_loss),
                   rounds, reps, names=("tfmlib", "hf"))


def bench_bpe(rounds: int) -> list[float]:
    """Training (500 tokens) and encoding (GPT-2's vocabulary) on the first 1 MB of Shakespeare."""
    try:
        import tiktoken
        from tiktoken.load import data_gym_to_mergeable_bpe_ranks
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    except ImportError as err:
        print(f"bpe: skipped ({err.name} is not installed: pip install -e '.[dev]')", flush=True)
        return []
    from tfmlib.bpe import GPT2_PATTERN, ByteLevelBPE, gpt2_files, gpt2_tokenizer
    from tfmlib.data import load_corpus

    text = load_corpus("shakespeare")[:1_000_000]
    lines = text.splitlines(keepends=True)

    def train_hf():
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        trainer = trainers.BpeTrainer(vocab_size=500, min_frequency=2, show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        tok.train_from_iterator(lines, trainer)
    ratios = [compare("bpe train 500 tokens on 1 MB (vs HF tokenizers)",
                      lambda: ByteLevelBPE().train(text, 500), train_hf, rounds, 1, names=("tfmlib", "HF"))]

    encoder_json, vocab_bpe = gpt2_files()
    ranks = data_gym_to_mergeable_bpe_ranks(vocab_bpe_file=str(vocab_bpe), encoder_json_file=str(encoder_json))
    tik = tiktoken.Encoding(name="gpt2-local", pat_str=GPT2_PATTERN, mergeable_ranks=ranks,
                            special_tokens={"<|endoftext|>": 50256}, explicit_n_vocab=50257)
    hf = Tokenizer(models.BPE.from_file(str(encoder_json), str(vocab_bpe)))
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    mine = gpt2_tokenizer()

    def encode_mine():
        mine._cache.clear()  # cold: no chunk seen before
        return mine.encode(text)
    assert encode_mine() == tik.encode_ordinary(text) == hf.encode(text).ids
    ratios.append(compare("bpe encode 1 MB, GPT-2 vocabulary (vs tiktoken)", encode_mine,
                          lambda: tik.encode_ordinary(text), rounds, 1, names=("tfmlib", "tiktoken")))
    ratios.append(compare("bpe encode 1 MB, GPT-2 vocabulary (vs HF tokenizers)", encode_mine,
                          lambda: hf.encode(text), rounds, 1, names=("tfmlib", "HF")))
    return ratios


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer rounds and smaller models (< 1 minute)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: PyTorch's)")
    parser.add_argument("--only", choices=["mha", "seq2seq", "gpt", "modern", "bpe"], default=None)
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message="enable_nested_tensor")  # nn.Transformer with norm_first
    if args.threads:
        torch.set_num_threads(args.threads)
    rounds = 5 if args.quick else 15
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores, "
          f"load average {load:.1f}, {'quick' if args.quick else 'full'}: medians of {rounds} alternating rounds",
          flush=True)
    if load > (os.cpu_count() or 1):
        print("note: the machine is busy; on a shared machine --threads 1 gives steadier ratios", flush=True)
    start, ratios = time.perf_counter(), []
    if args.only in (None, "mha"):
        ratios.append(bench_mha(32, 128, 256, 8, rounds, 1))
        ratios.append(bench_mha(8, 512, 256, 8, rounds, 1))
    if args.only in (None, "seq2seq"):
        small = TransformerConfig.preset("cpu", src_vocab_size=64, tgt_vocab_size=64)
        ratios.append(bench_seq2seq(small, 64, 24, 16, rounds, 2 if args.quick else 5))
        if not args.quick:
            big = TransformerConfig.preset("cpu", src_vocab_size=1000, tgt_vocab_size=1000, d_model=256,
                                           n_heads=8, d_ff=1024, n_encoder_layers=3, n_decoder_layers=3)
            ratios.append(bench_seq2seq(big, 32, 64, 64, rounds, 1))
    if args.only in (None, "gpt"):
        small = GPTConfig.preset("cpu", vocab_size=65)
        ratios.append(bench_gpt(small, 32, 64, rounds, 2 if args.quick else 5))
        if not args.quick:
            big = GPTConfig.preset("cpu", vocab_size=1000, d_model=256, n_heads=8, d_ff=1024, n_layers=4)
            ratios.append(bench_gpt(big, 16, 128, rounds, 1))
    if args.only in (None, "modern"):  # option on / off: reported, not part of the goal against PyTorch
        small = GPTConfig.preset("cpu", vocab_size=65, dropout=0.0)
        bench_modern(small, 32, 64, rounds, 2 if args.quick else 5)
        if not args.quick:
            big = GPTConfig.preset("cpu", vocab_size=1000, d_model=256, n_heads=8, d_ff=1024, n_layers=4, dropout=0.0)
            bench_modern(big, 16, 128, rounds, 1)
        llama = GPTConfig.preset("llama-cpu", vocab_size=65, dropout=0.0)
        ratio = bench_llama_reference(llama, 32, 64, rounds, 2 if args.quick else 5)
        if ratio is not None:
            ratios.append(ratio)
    if args.only in (None, "bpe"):
        bench_bpe(3 if args.quick else 5)
    if not ratios:
        return 0
    worst = max(ratios)
    print(f"worst torch ratio {worst:.3f} ({'ok' if worst <= 1.10 else 'above 1.10'}), "
          f"{time.perf_counter() - start:.0f} s in all", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
