// The GEMV tile (instructions/gemv.py + epilogues.py): y = W[rows] @ norm?(src), then the
// fused epilogue. W is bf16 [out, K] row-major, K % 8 == 0 (16-byte loads); accumulation
// and everything after it in fp32.
//
// A tile has one row segment, or two of equal length whose rows pair up (gate/up for
// SiLU-mul, the RoPE halves of a head for QKV): pair i is (s0a + i, s1a + i). A warp takes
// cfg::kRowsPerWarp pairs at a time; lanes split K into 16-byte chunks, cfg::kUnroll of
// them in flight per row (kernel knobs, space/kernel_knobs.py).
//
// gemv_stage() runs BEFORE the task's wait: weights never depend on activations, so the
// first kStageBytes of the tile stream into shared memory (cp.async) while the block waits.
#pragma once

namespace amk {
namespace G = enc::gemv;

struct GemvTile {
  const unsigned short* w;
  int k, n0, nseg, s0a, s1a, staged;  // staged: leading tile rows held in shared memory
};

__device__ __forceinline__ GemvTile gemv_tile(const Ctx& c, const int* rec) {
  GemvTile t;
  t.w = w16(c, rec[G::MATRIX]);
  t.k = rec[G::SRC_N];
  t.nseg = rec[G::NSEG];
  t.s0a = rec[G::S0A];
  t.s1a = rec[G::S1A];
  t.n0 = rec[G::S0B] - t.s0a;
  const int rows = t.n0 * t.nseg, fit = cfg::kStageBytes / (t.k * 2);
  t.staged = rows < fit ? rows : fit;
  return t;
}

// Local row li (segment 0 rows first, then segment 1) -> weight row.
__device__ __forceinline__ int tile_row(const GemvTile& t, int li) {
  return li < t.n0 ? t.s0a + li : t.s1a + (li - t.n0);
}

__device__ __forceinline__ void cp_async16(void* smem, const void* gmem) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(s), "l"(gmem) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_all;" ::: "memory"); }

__device__ void gemv_stage(const Ctx& c, const int* rec) {
  const GemvTile t = gemv_tile(c, rec);
  const int cpr = t.k / 8, total = t.staged * cpr;  // 16-byte chunks per row / in all
  for (int i = threadIdx.x; i < total; i += cfg::kThreads) {
    const int li = i / cpr, ch = i - li * cpr;
    cp_async16(c.stage + (size_t)i * 16, t.w + (size_t)tile_row(t, li) * t.k + ch * 8);
  }
  cp_async_commit();
}

__device__ __forceinline__ float dot8(uint4 q, float4 a, float4 b) {
  return bf16_lo(q.x) * a.x + bf16_hi(q.x) * a.y + bf16_lo(q.y) * a.z + bf16_hi(q.y) * a.w +
         bf16_lo(q.z) * b.x + bf16_hi(q.z) * b.y + bf16_lo(q.w) * b.z + bf16_hi(q.w) * b.w;
}

// Lane-partial dot products of kRowsPerWarp row pairs (pairs i0 .. i0 + R - 1; a pair
// past the tile's end repeats its last one and is dropped by the caller) with x. Each lane
// loads kUnroll 16-byte chunks of every row before it multiplies them (loads in flight);
// each row is still summed chunk by chunk in the same order, whatever the knobs.
template <int NSEG>
__device__ __forceinline__ void rows_dot(const Ctx& c, const GemvTile& t, int i0, int lane,
                                         float (&y)[NSEG][cfg::kRowsPerWarp]) {
  constexpr int R = cfg::kRowsPerWarp, U = cfg::kUnroll;
  const float4* x = reinterpret_cast<const float4*>(c.x);
  const int cpr = t.k / 8;
  const uint4* w[NSEG][R];
  bool staged[NSEG][R];
#pragma unroll
  for (int s = 0; s < NSEG; ++s) {
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const int p = i0 + r < t.n0 ? i0 + r : t.n0 - 1, li = s * t.n0 + p;
      staged[s][r] = li < t.staged;
      w[s][r] = staged[s][r] ? reinterpret_cast<const uint4*>(c.stage) + (size_t)li * cpr
                             : reinterpret_cast<const uint4*>(t.w + (size_t)tile_row(t, li) * t.k);
      y[s][r] = 0.f;
    }
  }
  for (int ch0 = lane; ch0 < cpr; ch0 += 32 * U) {
    uint4 q[U][NSEG][R];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int ch = ch0 + 32 * u;
      if (ch >= cpr) break;
#pragma unroll
      for (int s = 0; s < NSEG; ++s)
#pragma unroll
        for (int r = 0; r < R; ++r) q[u][s][r] = staged[s][r] ? w[s][r][ch] : __ldg(w[s][r] + ch);
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int ch = ch0 + 32 * u;
      if (ch >= cpr) break;
      const float4 xa = x[2 * ch], xb = x[2 * ch + 1];
#pragma unroll
      for (int s = 0; s < NSEG; ++s)
#pragma unroll
        for (int r = 0; r < R; ++r) y[s][r] += dot8(q[u][s][r], xa, xb);
    }
  }
}

// QKV epilogue: pair p of head ``head`` of [q; k; v]; RoPE on q and k, k/v appended.
__device__ void qkv_rope_store(const Ctx& c, const int* rec, int p, float lo, float hi) {
  const int head = rec[G::HEAD], heads = rec[G::HEADS], kvh = rec[G::KV_HEADS];
  const int d = rec[G::HEAD_DIM], half = d / 2, pos = c.position + c.step;
  float* out;
  size_t base;
  bool rotate = true;
  if (head < heads) {
    out = f32(c, rec[G::Q]);
    base = (size_t)head * d;
  } else {
    const bool is_k = head < heads + kvh;
    const int h = is_k ? head - heads : head - heads - kvh;
    out = f32(c, is_k ? rec[G::K_CACHE] : rec[G::V_CACHE]);
    base = ((size_t)h * rec[G::MAX_SEQ] + pos) * d;
    rotate = is_k;
  }
  if (rotate) {
    const float cs = rope_cos(c, pos, p), sn = rope_sin(c, pos, p);
    const float l2 = lo * cs - hi * sn, h2 = hi * cs + lo * sn;
    lo = l2;
    hi = h2;
  }
  out[base + p] = lo;
  out[base + half + p] = hi;
}

// The tile's rows: warp w takes pairs [w R, w R + R), then every kWarps R pairs further.
template <int NSEG>
__device__ __forceinline__ void gemv_rows(const Ctx& c, const int* rec, const GemvTile& t,
                                          float& best, int& best_i) {
  constexpr int R = cfg::kRowsPerWarp;
  const int epi = rec[G::EPI], lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  float* dst = f32(c, rec[G::DST]);
  for (int i0 = warp * R; i0 < t.n0; i0 += kWarps * R) {
    float y[NSEG][R];
    rows_dot<NSEG>(c, t, i0, lane, y);
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const int i = i0 + r;
      const float y0 = warp_sum(y[0][r]);
      const float y1 = NSEG == 2 ? warp_sum(y[NSEG - 1][r]) : 0.f;
      if (lane != 0 || i >= t.n0) continue;
      const int r0 = t.s0a + i, r1 = t.s1a + i;
      switch (epi) {
        case enc::EPI_STORE:
          dst[r0] = y0;
          if (NSEG == 2) dst[r1] = y1;
          break;
        case enc::EPI_RESIDUAL:
          dst[r0] = vec_at(c, rec, G::RES_KIND, r0) + y0;
          if (NSEG == 2) dst[r1] = vec_at(c, rec, G::RES_KIND, r1) + y1;
          break;
        case enc::EPI_SILU_MUL:
          dst[r0] = silu(y0) * y1;
          break;
        case enc::EPI_QKV_ROPE:
          qkv_rope_store(c, rec, rec[G::P0] + i, y0, y1);
          break;
        case enc::EPI_LOGITS_ARGMAX:
          dst[(size_t)c.step * rec[G::VOCAB] + r0] = y0;
          better(best, best_i, y0, r0);
          break;
      }
    }
  }
}

__device__ void gemv_run(const Ctx& c, const int* rec) {
  const GemvTile t = gemv_tile(c, rec);
  load_vec(c, rec, G::SRC_KIND, c.x);
  if (rec[G::NORM] >= 0) rmsnorm_inplace(c, c.x, t.k, rec[G::NORM]);
  cp_async_wait_all();
  __syncthreads();

  float best = neg_inf();
  int best_i = 0x7fffffff;
  if (t.nseg == 2) {
    gemv_rows<2>(c, rec, t, best, best_i);
  } else {
    gemv_rows<1>(c, rec, t, best, best_i);
  }
  if (rec[G::EPI] == enc::EPI_LOGITS_ARGMAX) {
    block_argmax(best, best_i, c.red);
    if (threadIdx.x == 0) {
      float* part = f32(c, rec[G::PART]) + 2 * rec[G::TILE];
      part[0] = best;
      part[1] = (float)best_i;
    }
  }
}

}  // namespace amk
