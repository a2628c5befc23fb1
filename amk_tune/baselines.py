"""What a user would run instead of the megakernel: a hand-written torch Llama decode step on
the same weights (bf16 on the GPU), timed eager, captured in a CUDA graph, and compiled with
``torch.compile`` then captured.

The step is a straightforward batch-1 decode (ANCHORS.md's baseline): fused QKV and gate/up
weights, RMSNorm, RoPE from HF's float32 tables, SDPA with GQA over a static KV cache of
``max_seq`` rows masked to ``0 .. position``, residual adds, tied or untied LM head, argmax.
The token and position are device tensors, so one captured graph replays the same step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from amk_tune.model.rope import rope_table
from amk_tune.model.weights import ModelWeights


class TorchDecodeStep:
    """One decode step over a static KV cache; ``__call__`` returns the argmax token."""

    def __init__(self, weights: ModelWeights, max_seq: int, device: str = "cuda",
                 dt: torch.dtype = torch.bfloat16) -> None:
        sp = self.spec = weights.spec
        self.w = {k: torch.from_numpy(np.ascontiguousarray(v)).to(device, dt)
                  for k, v in weights.tensors.items()}
        cos, sin = rope_table(sp, max_seq)
        self.cos = torch.from_numpy(np.concatenate([cos, cos], 1)).to(device, dt)
        self.sin = torch.from_numpy(np.concatenate([sin, sin], 1)).to(device, dt)
        shape = (sp.layers, 1, sp.kv_heads, max_seq, sp.head_dim)
        gen = torch.Generator(device=device).manual_seed(0)  # never zeros: real-data timing
        self.k = torch.randn(shape, device=device, dtype=dt, generator=gen)
        self.v = torch.randn(shape, device=device, dtype=dt, generator=gen)
        self.token = torch.zeros(1, dtype=torch.long, device=device)
        self.pos = torch.zeros(1, dtype=torch.long, device=device)
        self.arange = torch.arange(max_seq, device=device)
        self.lm = self.w[weights.lm_head_name()]

    def set(self, token: int, position: int) -> None:
        self.token.fill_(token)
        self.pos.fill_(position)

    def _norm(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.spec.rms_eps)
        return w * xf.to(x.dtype)

    def _rope(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        half = x.shape[-1] // 2
        rot = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
        return x * cos + rot * sin

    def __call__(self) -> torch.Tensor:
        sp, w = self.spec, self.w
        d, h, g = sp.head_dim, sp.heads, sp.kv_heads
        x = w["embed"][self.token]  # [1, hidden]
        cos, sin = self.cos[self.pos], self.sin[self.pos]  # [1, D]
        mask = (self.arange <= self.pos)[None, None, None, :]
        for layer in range(sp.layers):
            L = f"L{layer}"
            qkv = self._norm(x, w[f"{L}.attn_norm"]) @ w[f"{L}.wqkv"].T
            q, k, v = qkv.split([h * d, g * d, g * d], dim=-1)
            q = self._rope(q.view(1, h, 1, d), cos, sin)
            k = self._rope(k.view(1, g, 1, d), cos, sin)
            self.k[layer].index_copy_(2, self.pos, k)
            self.v[layer].index_copy_(2, self.pos, v.view(1, g, 1, d))
            att = F.scaled_dot_product_attention(q, self.k[layer], self.v[layer],
                                                 attn_mask=mask, enable_gqa=True)
            x = x + att.reshape(1, h * d) @ w[f"{L}.wo"].T
            gate, up = (self._norm(x, w[f"{L}.mlp_norm"]) @ w[f"{L}.wgu"].T).chunk(2, dim=-1)
            x = x + (F.silu(gate) * up) @ w[f"{L}.wd"].T
        logits = self._norm(x, w["final_norm"]) @ self.lm.T
        return logits.argmax(-1)


@dataclass(frozen=True)
class Timing:
    """Microseconds per call: median and the 10th-90th percentile spread of ``samples``."""

    median_us: float
    p10_us: float
    p90_us: float
    samples: int

    @staticmethod
    def of(us: list[float]) -> Timing:
        a = np.asarray(us, dtype=np.float64)
        return Timing(float(np.median(a)), float(np.percentile(a, 10)),
                      float(np.percentile(a, 90)), len(us))

    def scaled(self, factor: float) -> Timing:
        return Timing(self.median_us * factor, self.p10_us * factor, self.p90_us * factor,
                      self.samples)


def time_cuda(fn: Callable[[], object], iters: int, warmup: int = 5) -> Timing:
    """CUDA events around each of ``iters`` back-to-back calls, after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
              for _ in range(iters)]
    for a, b in events:
        a.record()
        fn()
        b.record()
    torch.cuda.synchronize()
    return Timing.of([a.elapsed_time(b) * 1e3 for a, b in events])


def graphed(fn: Callable[[], object]) -> Callable[[], None]:
    """``fn`` captured once into a CUDA graph; the result replays it."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):  # warm up (allocations, autotuning) outside the capture
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph.replay


def torch_baselines(weights: ModelWeights, position: int, iters: int, *,
                    compile: bool = True) -> dict[str, Timing | str]:
    """us per decode step at ``position``: eager, CUDA graph, torch.compile + CUDA graph
    (a string saying why, where one could not run)."""
    step = TorchDecodeStep(weights, max_seq=position + 1)
    step.set(token=1, position=position)
    out: dict[str, Timing | str] = {}
    with torch.no_grad():
        out["torch eager"] = time_cuda(step, iters)
        out["torch CUDA graph"] = time_cuda(graphed(step), iters)
        if compile:
            try:
                compiled = torch.compile(step.__call__, fullgraph=True)
                out["torch.compile + CUDA graph"] = time_cuda(graphed(compiled), iters)
            except Exception as e:  # report, don't hide: the row says why it is missing
                out["torch.compile + CUDA graph"] = f"failed: {type(e).__name__}: {e}"[:200]
        else:
            out["torch.compile + CUDA graph"] = "skipped (--no-compile)"
    return out
