"""HAT's WMT'14 En-De SubTransformer space (``space0`` of Hardware-Aware Transformers, ACL'20).

An architecture is HAT's own config dict, the one ``fairseq.evolution.Converter.gene2config`` returns
and ``LatencyPredictor.predict_lat`` takes::

    {"encoder": {"encoder_embed_dim": 640, "encoder_layer_num": 6,
                 "encoder_ffn_embed_dim": [6 ints], "encoder_self_attention_heads": [6 ints]},
     "decoder": {"decoder_embed_dim": 512, "decoder_layer_num": 3,
                 "decoder_ffn_embed_dim": [...], "decoder_self_attention_heads": [...],
                 "decoder_ende_attention_heads": [...], "decoder_arbitrary_ende_attn": [...]}}

Choices (``configs/wmt14.en-de/supertransformer/space0.yml``): embed dims {512, 640}, encoder
layers {6}, decoder layers {1..6}, FFN dims {1024, 2048, 3072}, heads {4, 8} (self and
encoder-decoder attention), arbitrary encoder-decoder attention {-1, 1, 2}: decoder layer ``i``
attends to the last encoder layer (-1), the last two (1) or the last three (2), concatenated in time.
Per-layer lists may have the super-network's 6 entries (``gene2config``) or only ``layer_num``
(HAT's SubTransformer yml files); entries of layers beyond ``layer_num`` are ignored, and the
canonical form lists active layers only. The yml form (``encoder-embed-dim-subtransformer``, ...,
``decoder-arbitrary-ende-attn-all-subtransformer``) and the canonical JSON string are accepted too.

Index layout (40 positions, HAT's gene order; values in ascending order):
``0`` encoder embed dim, ``1`` encoder layer num, ``2-7`` encoder FFN dims, ``8-13`` encoder
self-attention heads, ``14`` decoder embed dim, ``15`` decoder layer num, ``16-21`` decoder FFN
dims, ``22-27`` decoder self-attention heads, ``28-33`` encoder-decoder attention heads,
``34-39`` arbitrary encoder-decoder attention. Positions of inactive decoder layers are 0 in
canonical index vectors (:meth:`HATTransformer.sample` returns canonical ones) and are masked
out of the one-hot encoding.

The network (:meth:`HATTransformer.build_network`) is the SubTransformer HAT extracts from its
SuperTransformer (``fairseq/models/transformer_super.py``): post-LayerNorm encoder-decoder,
ReLU FFNs, sinusoidal positions, one shared token embedding of width ``max(encoder, decoder
embed dim)`` (``share-all-embeddings``; the encoder uses its first ``encoder_embed_dim``
columns, the decoder and the output projection the first ``decoder_embed_dim``), attention
projections to ``qkv_dim = 512`` for every head count (head dim ``512 / heads``), and a
vocabulary of 32,768 (HAT's joined WMT'16 En-De BPE dictionary). As HAT's
``latency_dataset.py`` times it, one inference runs the encoder once on ``src_len`` tokens
and the decoder ``tgt_len`` incremental steps (cached self-attention keys/values, encoder
keys/values computed once), each step projecting to the vocabulary; ``decoding="parallel"``
runs the decoder once over all ``tgt_len`` tokens with a causal mask instead (teacher forcing).
Both give the same logits. HAT times the encoder and decoder at ``src_len = tgt_len = 30``
(its WMT dummy sentence), the defaults here.
"""
from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from .base import SearchSpace

EMBED_DIMS = (512, 640)
ENCODER_LAYERS = (6,)
DECODER_LAYERS = (1, 2, 3, 4, 5, 6)
FFN_DIMS = (1024, 2048, 3072)
HEADS = (4, 8)
#: -1: attend to the last encoder layer; 1: the last two; 2: the last three.
ENDE_ATTN = (-1, 1, 2)
MAX_LAYERS = 6
QKV_DIM = 512
VOCAB_SIZE = 32768
DECODINGS = ("incremental", "parallel")

_ENC = ("encoder_embed_dim", "encoder_layer_num", "encoder_ffn_embed_dim", "encoder_self_attention_heads")
_DEC = ("decoder_embed_dim", "decoder_layer_num", "decoder_ffn_embed_dim", "decoder_self_attention_heads",
        "decoder_ende_attention_heads", "decoder_arbitrary_ende_attn")
#: (part, key, choices, first index position) of every per-layer list, in gene order.
_LISTS = (("encoder", "encoder_ffn_embed_dim", FFN_DIMS, 2), ("encoder", "encoder_self_attention_heads", HEADS, 8),
          ("decoder", "decoder_ffn_embed_dim", FFN_DIMS, 16), ("decoder", "decoder_self_attention_heads", HEADS, 22),
          ("decoder", "decoder_ende_attention_heads", HEADS, 28), ("decoder", "decoder_arbitrary_ende_attn", ENDE_ATTN, 34))
#: (part, key, choices, index position) of every scalar.
_SCALARS = (("encoder", "encoder_embed_dim", EMBED_DIMS, 0), ("encoder", "encoder_layer_num", ENCODER_LAYERS, 1),
            ("decoder", "decoder_embed_dim", EMBED_DIMS, 14), ("decoder", "decoder_layer_num", DECODER_LAYERS, 15))
#: HAT's SubTransformer yml keys -> config keys.
_YAML_KEYS = {
    "encoder-embed-dim-subtransformer": "encoder_embed_dim",
    "encoder-layer-num-subtransformer": "encoder_layer_num",
    "encoder-ffn-embed-dim-all-subtransformer": "encoder_ffn_embed_dim",
    "encoder-self-attention-heads-all-subtransformer": "encoder_self_attention_heads",
    "decoder-embed-dim-subtransformer": "decoder_embed_dim",
    "decoder-layer-num-subtransformer": "decoder_layer_num",
    "decoder-ffn-embed-dim-all-subtransformer": "decoder_ffn_embed_dim",
    "decoder-self-attention-heads-all-subtransformer": "decoder_self_attention_heads",
    "decoder-ende-attention-heads-all-subtransformer": "decoder_ende_attention_heads",
    "decoder-arbitrary-ende-attn-all-subtransformer": "decoder_arbitrary_ende_attn",
}


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


class HATTransformer(SearchSpace):
    """HAT's WMT'14 En-De SubTransformer space (2 x 3^6 x 2^6 x 2 x sum_L (3 x 2 x 2 x 3)^L configs).

    Args:
        src_len, tgt_len: source tokens and decoder steps of one timed inference (HAT: 30 and 30).
            They set :meth:`example_input` and the analytic costs.
        vocab_size: shared vocabulary (HAT's WMT'14 En-De dictionary: 32,768).
        decoding: ``"incremental"`` (HAT's timing: ``tgt_len`` cached decoder steps) or
            ``"parallel"`` (one teacher-forced decoder pass).
    """

    name = "hat"
    choices = ((len(EMBED_DIMS), len(ENCODER_LAYERS)) + (len(FFN_DIMS),) * 6 + (len(HEADS),) * 6
               + (len(EMBED_DIMS), len(DECODER_LAYERS)) + (len(FFN_DIMS),) * 6 + (len(HEADS),) * 12
               + (len(ENDE_ATTN),) * 6)

    def __init__(self, src_len: int = 30, tgt_len: int = 30, vocab_size: int = VOCAB_SIZE,
                 decoding: str = "incremental"):
        for label, v in (("src_len", src_len), ("tgt_len", tgt_len), ("vocab_size", vocab_size)):
            if not _is_int(v) or v < 1:
                raise ValueError(f"hat: {label} must be a positive int, got {v!r}")
        if decoding not in DECODINGS:
            raise ValueError(f"hat: unknown decoding {decoding!r}; available: {DECODINGS}")
        self.src_len, self.tgt_len, self.vocab_size, self.decoding = int(src_len), int(tgt_len), int(vocab_size), decoding

    @property
    def measurement_settings(self) -> str:
        """What this instance times beyond the architecture (part of a measurement-store key)."""
        return f"src={self.src_len},tgt={self.tgt_len},decoding={self.decoding},vocab={self.vocab_size}"

    # ------------------------------------------------------------------ parsing
    def parse(self, arch: Any) -> np.ndarray:
        if isinstance(arch, str):
            try:
                arch = json.loads(arch)
            except json.JSONDecodeError as err:
                raise ValueError(f"hat: an architecture string must be the canonical JSON config, got {arch!r}") from err
        if not isinstance(arch, dict):
            raise TypeError(f"hat: an architecture is HAT's config dict {{'encoder': {{...}}, 'decoder': {{...}}}}, "
                            f"got {type(arch).__name__}: {arch!r}")
        if any(k in _YAML_KEYS for k in arch):
            arch = self._from_yaml(arch)
        unknown = set(arch) - {"encoder", "decoder"}
        if unknown or not {"encoder", "decoder"} <= set(arch):
            raise ValueError(f"hat: a config has exactly the keys 'encoder' and 'decoder', got {sorted(arch)}")
        for part, keys in (("encoder", _ENC), ("decoder", _DEC)):
            if not isinstance(arch[part], dict):
                raise TypeError(f"hat: config[{part!r}] must be a dict, got {type(arch[part]).__name__}")
            missing = [k for k in keys if k not in arch[part]]
            extra = sorted(set(arch[part]) - set(keys))
            if missing or extra:
                raise ValueError(f"hat: config[{part!r}] is missing {missing} / has unknown keys {extra}")
        out = np.zeros(self.arch_length, dtype=np.int64)
        for part, key, values, pos in _SCALARS:
            out[pos] = self._index(arch[part][key], values, f"{key}")
        layers = {"encoder": ENCODER_LAYERS[out[1]], "decoder": DECODER_LAYERS[out[15]]}
        for part, key, values, pos in _LISTS:
            seq = arch[part][key]
            n = layers[part]
            if isinstance(seq, np.ndarray):
                seq = seq.tolist()
            if not isinstance(seq, (list, tuple)) or not n <= len(seq) <= MAX_LAYERS:
                raise ValueError(f"hat: {key} must be a list of {n} to {MAX_LAYERS} values ({part}_layer_num = {n}), "
                                 f"got {seq!r}")
            for i in range(n):
                out[pos + i] = self._index(seq[i], values, f"{key}[{i}]")
        return out

    @staticmethod
    def _index(v, values: tuple, where: str) -> int:
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        if not _is_int(v) or int(v) not in values:
            raise ValueError(f"hat: {where} = {v!r} is not one of {values}")
        return values.index(int(v))

    @staticmethod
    def _from_yaml(arch: dict) -> dict:
        unknown = sorted(set(arch) - set(_YAML_KEYS))
        if unknown:
            raise ValueError(f"hat: unknown SubTransformer yml key(s) {unknown}; expected {sorted(_YAML_KEYS)}")
        config: dict = {"encoder": {}, "decoder": {}}
        for yml, key in _YAML_KEYS.items():
            if yml in arch:
                config[key.split("_", 1)[0]][key] = arch[yml]
        return config

    def format(self, indices) -> dict:
        idx = [int(i) for i in indices]
        n_enc, n_dec = ENCODER_LAYERS[idx[1]], DECODER_LAYERS[idx[15]]
        config: dict = {"encoder": {"encoder_embed_dim": EMBED_DIMS[idx[0]], "encoder_layer_num": n_enc},
                        "decoder": {"decoder_embed_dim": EMBED_DIMS[idx[14]], "decoder_layer_num": n_dec}}
        for part, key, values, pos in _LISTS:
            n = n_enc if part == "encoder" else n_dec
            config[part][key] = [values[i] for i in idx[pos:pos + n]]
        return config

    def to_gene(self, arch: Any) -> list[int]:
        """HAT's 40-value gene of ``arch`` (``Converter.config2gene``: inactive layers repeat layer 0's
        FFN dim and heads; their arbitrary attention is -1)."""
        idx = self.canonical_indices(arch if isinstance(arch, np.ndarray) else self.parse(arch)[None])[0]
        on = self.active_mask(idx[None])[0]
        values = self._position_values()
        return [values[p][idx[p] if on[p] or p >= 34 else idx[p - (p - 16) % MAX_LAYERS]] for p in range(self.arch_length)]

    def from_gene(self, gene: Any) -> np.ndarray:
        """Index vector ``[40]`` of HAT's gene (``Converter.gene2config`` order, values not indices)."""
        gene = list(gene)
        if len(gene) != self.arch_length:
            raise ValueError(f"hat: a space0 gene has {self.arch_length} values, got {len(gene)}")
        values = self._position_values()
        idx = np.array([self._index(g, values[p], f"gene[{p}]") for p, g in enumerate(gene)], dtype=np.int64)
        return self.canonical_indices(idx[None])[0]

    @staticmethod
    def _position_values() -> list[tuple]:
        """The choice values of each of the 40 positions."""
        return ([EMBED_DIMS, ENCODER_LAYERS] + [FFN_DIMS] * 6 + [HEADS] * 6 + [EMBED_DIMS, DECODER_LAYERS]
                + [FFN_DIMS] * 6 + [HEADS] * 12 + [ENDE_ATTN] * 6)

    # ------------------------------------------------------------------ canonical index vectors
    def active_mask(self, indices: np.ndarray) -> np.ndarray:
        """``[n, 40]`` bool: which positions describe the network (inactive decoder layers' do not)."""
        n_dec = np.asarray(DECODER_LAYERS)[indices[:, 15]]
        layer_on = np.arange(MAX_LAYERS)[None, :] < n_dec[:, None]  # [n, 6]
        mask = np.ones(indices.shape, dtype=bool)
        for pos in (16, 22, 28, 34):
            mask[:, pos:pos + MAX_LAYERS] = layer_on
        return mask

    def canonical_indices(self, indices: np.ndarray) -> np.ndarray:
        """``indices`` with the positions of inactive decoder layers set to 0, ``[n, 40]``."""
        indices = self.to_indices(indices)
        return np.where(self.active_mask(indices), indices, 0)

    def sample(self, n: int, seed: int | None = None) -> np.ndarray:
        """``n`` canonical index vectors: every position uniform (HAT's gene sampling), inactive ones zeroed."""
        return self.canonical_indices(super().sample(n, seed))

    def one_hot(self, indices: np.ndarray) -> np.ndarray:
        indices = self.to_indices(indices)
        out = super().one_hot(indices)
        offsets = np.concatenate([[0], np.cumsum(self.choices)[:-1]])
        inactive = ~self.active_mask(indices)
        for pos in np.flatnonzero(inactive.any(0)):
            out[inactive[:, pos], offsets[pos]:offsets[pos] + self.choices[pos]] = 0.0
        return out

    # ------------------------------------------------------------------ costs
    def cost_features(self, indices: np.ndarray) -> np.ndarray:
        """Analytic cost of one inference of batch 1, ``[n, 4]`` float64 (see ``COST_FEATURES``).

        For ``src_len`` S, ``tgt_len`` T, vocabulary V, ``qkv_dim`` q = 512, encoder width e and
        decoder width d, a Linear of ``a -> b`` applied to ``t`` tokens costs ``t*a*b`` MACs,
        ``a*b + b`` parameters and ``t*(a + b)`` activation elements plus its ``a*b + b`` weights
        read; an attention core scoring ``p`` query-key pairs with ``h`` heads costs ``2*p*q`` MACs and
        ``2*(queries + keys)*q + 4*h*p`` elements (q, k, v, output, scores through softmax; 6*h*p with
        a causal mask).

        * encoder layer: QKV Linear e -> 3q, core S x S, out Linear q -> e, FFN e -> f -> e, 2 LayerNorms;
        * decoder layer: QKV Linear d -> 3q, causal core, out q -> d; encoder-decoder attention with
          q Linear d -> q, KV Linear e -> 2q over ``m * S`` memory tokens (m = 1, 2, 3 encoder layers,
          computed once) and core T x mS; FFN d -> f -> d; 3 LayerNorms;
        * shared embedding V x max(e, d) (parameters only), output projection d -> V per target token.

        ``decoding="incremental"`` runs the decoder T times on one token: decoder and output
        weights are read T times (the ``memory`` column counts them, as they bound batch-1
        decoding) and step t's self-attention core has t keys. ``parallel`` reads them once, with a
        T x T causal core. MACs equal exactly what ``torch.utils.flop_counter`` counts for the built
        network (halved). ``kernels`` counts the eager ops of one inference of the built network
        (Linear; scale, 2 matmuls, softmax, head merge and mask of an attention core; residual add,
        LayerNorm, ReLU; cache and memory concatenations; embedding lookup, scale and positions).
        """
        indices = self.canonical_indices(indices)
        n = len(indices)
        S, T, V, q = float(self.src_len), float(self.tgt_len), float(self.vocab_size), float(QKV_DIM)
        incremental = self.decoding == "incremental"
        e = np.asarray(EMBED_DIMS, dtype=np.float64)[indices[:, 0]]
        d = np.asarray(EMBED_DIMS, dtype=np.float64)[indices[:, 14]]
        n_dec = np.asarray(DECODER_LAYERS)[indices[:, 15]]
        ffn = np.asarray(FFN_DIMS, dtype=np.float64)
        heads = np.asarray(HEADS, dtype=np.float64)
        cost = np.zeros((n, 4))

        def linear(tokens, a, b, reads=1.0, on=1.0, calls=1.0):
            cost[:, 0] += on * tokens * a * b
            cost[:, 1] += on * (a * b + b)
            cost[:, 2] += on * (reads * (a * b + b) + tokens * (a + b))
            cost[:, 3] += on * calls

        def core(queries, keys, pairs, h, on=1.0, calls=1.0, causal=False):
            """Attention cores reading ``queries`` query and ``keys`` key (and value) rows in total and
            scoring ``pairs`` query-key pairs; a call is scale, matmul, (mask,) softmax, matmul, merge."""
            cost[:, 0] += on * 2 * pairs * q
            cost[:, 2] += on * (2 * (queries + keys) * q + (4 + 2 * causal) * h * pairs)
            cost[:, 3] += on * (5 + 2 * causal) * calls

        def elementwise(elements, ops, params=0.0, on=1.0, calls=1.0):
            """``ops`` ops over ``elements`` (read + write each); LayerNorm has 2 * width params."""
            cost[:, 1] += on * params
            cost[:, 2] += on * 2 * ops * elements
            cost[:, 3] += on * ops * calls

        cost[:, 1] += V * np.maximum(e, d)  # shared embedding
        elementwise(S * e, 3)  # lookup, scale, + positions
        for i in range(ENCODER_LAYERS[0]):
            f = ffn[indices[:, 2 + i]]
            h = heads[indices[:, 8 + i]]
            linear(S, e, 3 * q)
            core(S, S, S * S, h)
            linear(S, q, e)
            linear(S, e, f)
            linear(S, f, e)
            elementwise(S * f, 1)  # ReLU
            elementwise(S * e, 4, params=4 * e)  # 2 residual adds, 2 LayerNorms
        steps = T if incremental else 1.0  # decoder calls
        elementwise(T * d, 3, calls=steps)
        for i in range(MAX_LAYERS):
            on = (i < n_dec).astype(np.float64)
            f = ffn[indices[:, 16 + i]]
            hs = heads[indices[:, 22 + i]]
            he = heads[indices[:, 28 + i]]
            m = np.asarray(ENDE_ATTN)[indices[:, 34 + i]]
            mem = S * np.where(m == -1, 1.0, m + 1.0)  # memory tokens: the last 1, 2 or 3 encoder outputs
            elementwise(mem * e, 1, on=on * (m != -1))  # their concatenation
            linear(mem, e, 2 * q, on=on)  # encoder-decoder keys and values, computed once
            linear(T, d, 3 * q, reads=steps, on=on, calls=steps)
            if incremental:  # step t attends to t cached keys; the k/v caches grow by concatenation
                core(T, T * (T + 1) / 2, T * (T + 1) / 2, hs, on=on, calls=steps)
                cost[:, 2] += on * 2 * q * T * (T + 1)
                cost[:, 3] += on * 2 * (T - 1)
            else:
                core(T, T, T * T, hs, on=on, causal=True)
            linear(T, q, d, reads=steps, on=on, calls=steps)
            linear(T, d, q, reads=steps, on=on, calls=steps)
            core(T, mem * steps, T * mem, he, on=on, calls=steps)
            linear(T, q, d, reads=steps, on=on, calls=steps)
            linear(T, d, f, reads=steps, on=on, calls=steps)
            linear(T, f, d, reads=steps, on=on, calls=steps)
            elementwise(T * f, 1, on=on, calls=steps)  # ReLU
            elementwise(T * d, 6, params=6 * d, on=on, calls=steps)  # 3 residual adds, 3 LayerNorms
        # output projection with the shared embedding (its parameters are counted above)
        cost[:, 0] += T * d * V
        cost[:, 2] += steps * d * V + T * (d + V)
        cost[:, 3] += steps
        if incremental:  # concatenation of the steps' logits
            cost[:, 2] += 2 * T * V
            cost[:, 3] += 1
        return cost

    # ------------------------------------------------------------------ networks
    def input_size(self, arch: Any) -> tuple[int, int]:
        """``(src_len, tgt_len)``: source tokens and decoder steps of one inference."""
        return (self.src_len, self.tgt_len)

    def example_input(self, arch: Any, batch_size: int = 1) -> tuple:
        """``(src_tokens [b, src_len], prev_tokens [b, tgt_len])`` int64, as HAT's dummy sentence.

        HAT times ``[2] + [7] * (len - 1)`` as the source and ``[7] * (len - 1) + [2]`` as the
        decoder input (token 2 is fairseq's end-of-sentence).
        """
        import torch

        src = torch.full((batch_size, self.src_len), 7, dtype=torch.long)
        src[:, 0] = 2
        prev = torch.full((batch_size, self.tgt_len), 7, dtype=torch.long)
        prev[:, -1] = 2
        return (src, prev)

    def build_network(self, arch: Any, decoding: str | None = None):
        """The SubTransformer of ``arch`` as a ``torch.nn.Module``.

        ``forward(src_tokens [b, S], prev_tokens [b, T]) -> logits [b, T, vocab_size]``.
        ``decoding`` overrides the space's (``"incremental"`` or ``"parallel"``).
        """
        decoding = self.decoding if decoding is None else decoding
        if decoding not in DECODINGS:
            raise ValueError(f"hat: unknown decoding {decoding!r}; available: {DECODINGS}")
        idx = self.canonical_indices(arch if isinstance(arch, np.ndarray) else self.parse(arch)[None])[0]
        return _build(self.format(idx), self.vocab_size, max(self.src_len, self.tgt_len), decoding)


def _build(config: dict, vocab_size: int, max_len: int, decoding: str):
    import torch
    import torch.nn.functional as F
    from torch import nn

    def sinusoids(length: int, dim: int) -> torch.Tensor:
        """Sinusoidal positions 1..length (fairseq's formula), ``[length, dim]``."""
        half = dim // 2
        freq = torch.exp(torch.arange(half, dtype=torch.float32) * -(math.log(10000.0) / (half - 1)))
        angle = torch.arange(1, length + 1, dtype=torch.float32)[:, None] * freq[None, :]
        return torch.cat([torch.sin(angle), torch.cos(angle)], dim=1)

    class Attention(nn.Module):
        """``heads``-head attention through ``qkv_dim`` projections; self (fused QKV) or cross (fused KV)."""

        def __init__(self, dim: int, heads: int, kv_dim: int | None = None):
            super().__init__()
            self.heads = heads
            if kv_dim is None:
                self.qkv = nn.Linear(dim, 3 * QKV_DIM)
            else:
                self.q = nn.Linear(dim, QKV_DIM)
                self.kv = nn.Linear(kv_dim, 2 * QKV_DIM)
            self.out = nn.Linear(QKV_DIM, dim)

        def split(self, x):  # [b, t, qkv] -> [b, heads, t, qkv / heads]
            return x.view(x.shape[0], x.shape[1], self.heads, -1).transpose(1, 2)

        def attend(self, q, k, v, causal: bool):
            """fairseq's attention core: scaled scores, (causal mask,) softmax, weighted values, merge heads."""
            scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-1, -2)
            if causal:
                scores = scores + torch.full(scores.shape[-2:], float("-inf"), device=q.device, dtype=q.dtype).triu(1)
            y = torch.softmax(scores, dim=-1) @ v
            return self.out(y.transpose(1, 2).reshape(q.shape[0], q.shape[2], QKV_DIM))

        def self_attention(self, x, cache: dict | None):
            q, k, v = (self.split(t) for t in self.qkv(x).chunk(3, dim=-1))
            if cache is not None:  # incremental: append this step's keys and values
                if "k" in cache:
                    k, v = torch.cat([cache["k"], k], dim=2), torch.cat([cache["v"], v], dim=2)
                cache["k"], cache["v"] = k, v
            return self.attend(q, k, v, causal=cache is None)

        def memory(self, mem):
            return tuple(self.split(t) for t in self.kv(mem).chunk(2, dim=-1))

        def cross_attention(self, x, kv):
            return self.attend(self.split(self.q(x)), *kv, causal=False)

    class EncoderLayer(nn.Module):
        def __init__(self, dim, ffn, heads):
            super().__init__()
            self.attn = Attention(dim, heads)
            self.fc1, self.fc2 = nn.Linear(dim, ffn), nn.Linear(ffn, dim)
            self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)

        def forward(self, x):
            x = self.norm1(x + self.attn.self_attention(x, None))
            return self.norm2(x + self.fc2(F.relu(self.fc1(x))))

    class DecoderLayer(nn.Module):
        def __init__(self, dim, enc_dim, ffn, heads, ende_heads, ende_attn):
            super().__init__()
            self.memory_layers = 1 if ende_attn == -1 else ende_attn + 1
            self.self_attn = Attention(dim, heads)
            self.cross_attn = Attention(dim, ende_heads, kv_dim=enc_dim)
            self.fc1, self.fc2 = nn.Linear(dim, ffn), nn.Linear(ffn, dim)
            self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)

        def memory(self, encoder_states: list):
            """Keys/values of the last ``memory_layers`` encoder outputs (last first, concatenated in time)."""
            states = encoder_states[::-1][:self.memory_layers]
            return self.cross_attn.memory(states[0] if len(states) == 1 else torch.cat(states, dim=1))

        def forward(self, x, kv, cache):
            x = self.norm1(x + self.self_attn.self_attention(x, cache))
            x = self.norm2(x + self.cross_attn.cross_attention(x, kv))
            return self.norm3(x + self.fc2(F.relu(self.fc1(x))))

    class SubTransformer(nn.Module):
        """HAT SubTransformer; ``forward(src_tokens [b, S], prev_tokens [b, T]) -> logits [b, T, V]``."""

        def __init__(self):
            super().__init__()
            enc, dec = config["encoder"], config["decoder"]
            self.enc_dim, self.dec_dim = enc["encoder_embed_dim"], dec["decoder_embed_dim"]
            self.decoding = decoding
            self.config = config
            self.embed = nn.Parameter(torch.empty(vocab_size, max(self.enc_dim, self.dec_dim)))
            nn.init.normal_(self.embed, std=max(self.enc_dim, self.dec_dim) ** -0.5)
            self.register_buffer("enc_pos", sinusoids(max_len, self.enc_dim), persistent=False)
            self.register_buffer("dec_pos", sinusoids(max_len, self.dec_dim), persistent=False)
            self.encoder = nn.ModuleList(EncoderLayer(self.enc_dim, f, h) for f, h in zip(
                enc["encoder_ffn_embed_dim"], enc["encoder_self_attention_heads"]))
            self.decoder = nn.ModuleList(DecoderLayer(self.dec_dim, self.enc_dim, *spec) for spec in zip(
                dec["decoder_ffn_embed_dim"], dec["decoder_self_attention_heads"],
                dec["decoder_ende_attention_heads"], dec["decoder_arbitrary_ende_attn"]))

        def encode(self, src_tokens):
            """All encoder layers' outputs, ``[b, S, enc_dim]`` each."""
            x = F.embedding(src_tokens, self.embed[:, :self.enc_dim]) * math.sqrt(self.enc_dim)
            x = x + self.enc_pos[:src_tokens.shape[1]]
            states = []
            for layer in self.encoder:
                x = layer(x)
                states.append(x)
            return states

        def decode(self, tokens, memories, caches, start: int):
            """Logits ``[b, t, V]`` of ``tokens`` ``[b, t]`` at positions ``start..start + t - 1``."""
            weight = self.embed[:, :self.dec_dim]
            x = F.embedding(tokens, weight) * math.sqrt(self.dec_dim)
            x = x + self.dec_pos[start:start + tokens.shape[1]]
            for layer, kv, cache in zip(self.decoder, memories, caches):
                x = layer(x, kv, cache)
            return F.linear(x, weight)

        def forward(self, src_tokens, prev_tokens):
            if src_tokens.shape[1] > len(self.enc_pos) or prev_tokens.shape[1] > len(self.dec_pos):
                raise ValueError(f"hat: sequences of {src_tokens.shape[1]}/{prev_tokens.shape[1]} tokens exceed "
                                 f"the {len(self.enc_pos)} positions this network was built for")
            states = self.encode(src_tokens)
            memories = [layer.memory(states) for layer in self.decoder]
            if self.decoding == "parallel":
                return self.decode(prev_tokens, memories, [None] * len(self.decoder), 0)
            caches = [{} for _ in self.decoder]
            steps = [self.decode(prev_tokens[:, t:t + 1], memories, caches, t) for t in range(prev_tokens.shape[1])]
            return torch.cat(steps, dim=1)

    return SubTransformer()
