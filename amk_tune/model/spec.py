"""ModelSpec: the shape of a Llama-family decoder, and nothing the megakernel cannot run."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RopeScaling:
    """Llama-3 style RoPE frequency scaling (``rope_type: llama3``)."""

    factor: float
    low_freq_factor: float
    high_freq_factor: float
    original_max_position_embeddings: int


@dataclass(frozen=True)
class ModelSpec:
    """Everything lowering needs to know about a model's shape.

    Attention is grouped-query: ``heads`` query heads share ``kv_heads`` key/value heads
    (``heads % kv_heads == 0``). RoPE pairs dimension ``i`` with ``i + head_dim/2`` of every
    head (HF's ``rotate_half`` convention).
    """

    name: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    rms_eps: float
    rope_theta: float
    tie_embeddings: bool
    max_position: int
    rope_scaling: RopeScaling | None = None
    bos_token_id: int | None = None
    eos_token_id: int | None = None

    @property
    def group(self) -> int:
        """Query heads per KV head."""
        return self.heads // self.kv_heads

    @property
    def qkv_rows(self) -> int:
        return (self.heads + 2 * self.kv_heads) * self.head_dim

    def param_count(self) -> int:
        per_layer = (
            self.qkv_rows * self.hidden
            + self.hidden * self.heads * self.head_dim
            + 3 * self.intermediate * self.hidden
            + 2 * self.hidden
        )
        head = 0 if self.tie_embeddings else self.vocab * self.hidden
        return self.layers * per_layer + self.vocab * self.hidden + head + self.hidden

    def weight_bytes_per_token(self, bytes_per_weight: float = 2.0) -> int:
        """Bytes of weights one decode step must read (the embedding row, not the table)."""
        streamed = self.param_count() - self.vocab * self.hidden
        # a tied LM head streams the whole table (the looked-up row included)
        streamed += self.vocab * self.hidden if self.tie_embeddings else self.hidden
        return int(streamed * bytes_per_weight)
