// The GEMV tile (instructions/gemv.py + epilogues.py): y = W[rows] @ norm?(src), then the
// fused epilogue. W is bf16 [out, K] row-major, K % 8 == 0 (16-byte loads), or int8 codes
// with float32 scales dequantised in registers (gemv_int8.cuh; K % 16 == 0); accumulation
// and everything after it in fp32.
//
// A tile has one row segment, or two of equal length whose rows pair up (gate/up for
// SiLU-mul, the RoPE halves of a head for QKV): pair i is (s0a + i, s1a + i). A warp takes
// cfg::kRowsPerWarp pairs at a time; lanes split K into 16-byte chunks, cfg::kUnroll of
// them in flight per row (kernel knobs, space/kernel_knobs.py).
//
// gemv_stage() runs kPrefetch - 1 tasks BEFORE the task (vm/cuda/megakernel.cu): weights
// never depend on activations, so the folded RMSNorm weight and the leading rows of the tile
// (as many as fit in the task's kSlotBytes slot) stream into shared memory (cp.async) while
// the block runs and waits on earlier tasks. Rows that do not fit stream from global.
#pragma once
#include "gemv_int8.cuh"

namespace amk {
namespace G = enc::gemv;

struct GemvTile {
  const unsigned short* w;
  int k, n0, nseg, s0a, s1a;
  int row_bytes;   // one weight row
  bool q8;         // int8 codes (gemv_int8.cuh), else bf16
  const float* scale;  // int8: [rows][spr] scales, one per cpg 16-byte chunks of a row
  int spr, cpg;
  int norm_bytes;  // the staged RMSNorm weight at the start of the slot (0: not staged)
  int staged;      // leading tile rows held in the slot after it
};

__device__ __forceinline__ int align16(int n) { return (n + 15) & ~15; }

__device__ __forceinline__ GemvTile gemv_tile(const Ctx& c, const int* rec) {
  GemvTile t;
  t.w = w16(c, rec[G::MATRIX]);
  t.k = rec[G::SRC_N];
  t.nseg = rec[G::NSEG];
  t.s0a = rec[G::S0A];
  t.s1a = rec[G::S1A];
  t.n0 = rec[G::S0B] - t.s0a;
  t.q8 = rec[G::WDTYPE] == enc::WDT_INT8;
  t.row_bytes = t.q8 ? t.k : t.k * 2;
  t.scale = t.q8 ? f32(c, rec[G::SCALE]) : nullptr;
  t.spr = t.q8 ? t.k / rec[G::QGROUP] : 0;
  t.cpg = t.q8 ? rec[G::QGROUP] / 16 : 0;
  const int nb = align16(t.k * 2);
  t.norm_bytes = rec[G::NORM] >= 0 && nb <= cfg::kSlotBytes ? nb : 0;
  const int rows = t.n0 * t.nseg, fit = (cfg::kSlotBytes - t.norm_bytes) / t.row_bytes;
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
// This thread's copies of the task about to run have landed (kPrefetch - 1 younger groups
// may still be in flight); a __syncthreads() after it publishes every thread's copies.
__device__ __forceinline__ void cp_async_wait_own() {
  asm volatile("cp.async.wait_group %0;" ::"n"(cfg::kPrefetch - 1) : "memory");
}

// Issue (no commit: the caller commits one group per task) the copies of the tile's norm
// weight and leading rows into ``slot``.
__device__ void gemv_stage(const Ctx& c, const int* rec, unsigned char* slot) {
  const GemvTile t = gemv_tile(c, rec);
  if (t.norm_bytes) {
    const unsigned short* nw = w16(c, rec[G::NORM]);
    for (int i = threadIdx.x; i < t.k / 8; i += cfg::kThreads) cp_async16(slot + i * 16, nw + i * 8);
  }
  unsigned char* rows = slot + t.norm_bytes;
  const int cpr = t.row_bytes / 16, total = t.staged * cpr;  // 16-byte chunks per row / in all
  for (int i = threadIdx.x; i < total; i += cfg::kThreads) {
    const int li = i / cpr, ch = i - li * cpr;
    cp_async16(rows + (size_t)i * 16,
               reinterpret_cast<const unsigned char*>(t.w) + (size_t)tile_row(t, li) * t.row_bytes +
                   ch * 16);
  }
}

__device__ __forceinline__ float dot8(uint4 q, float4 a, float4 b) {
  return bf16_lo(q.x) * a.x + bf16_hi(q.x) * a.y + bf16_lo(q.y) * a.z + bf16_hi(q.y) * a.w +
         bf16_lo(q.z) * b.x + bf16_hi(q.z) * b.y + bf16_lo(q.w) * b.z + bf16_hi(q.w) * b.w;
}

// Lane-partial dot products of R row pairs (pairs i0 .. i0 + R - 1; a pair past the
// tile's end repeats its last one and is dropped by the caller) with x. Each lane loads U
// 16-byte chunks of every row before it multiplies them (loads in flight; R and U are the
// kernel knobs rows_per_warp and unroll, or the LM head's own lm_* pair);
// each row is still summed chunk by chunk in the same order, whatever the knobs. Q8: int8
// rows, each chunk's sum times its scale (gemv_int8.cuh).
template <int NSEG, bool Q8, int R, int U>
__device__ __forceinline__ void rows_dot(const Ctx& c, const GemvTile& t, int i0, int lane,
                                         float (&y)[NSEG][R]) {
  const float4* x = reinterpret_cast<const float4*>(c.x);
  const int cpr = t.row_bytes / 16;
  const uint4* w[NSEG][R];
  const float* sc[NSEG][R];  // Q8: the row's scales
  bool staged[NSEG][R];
#pragma unroll
  for (int s = 0; s < NSEG; ++s) {
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const int p = i0 + r < t.n0 ? i0 + r : t.n0 - 1, li = s * t.n0 + p;
      staged[s][r] = li < t.staged;
      w[s][r] = staged[s][r] ? reinterpret_cast<const uint4*>(c.stage + t.norm_bytes) +
                                   (size_t)li * cpr
                             : reinterpret_cast<const uint4*>(
                                   reinterpret_cast<const unsigned char*>(t.w) +
                                   (size_t)tile_row(t, li) * t.row_bytes);
      sc[s][r] = Q8 ? t.scale + (size_t)tile_row(t, li) * t.spr : nullptr;
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
      if constexpr (Q8) {
        const int g = ch / t.cpg;
#pragma unroll
        for (int s = 0; s < NSEG; ++s)
#pragma unroll
          for (int r = 0; r < R; ++r)
            y[s][r] += dot16_i8(q[u][s][r], x + 4 * ch) * __ldg(sc[s][r] + g);
      } else {
        const float4 xa = x[2 * ch], xb = x[2 * ch + 1];
#pragma unroll
        for (int s = 0; s < NSEG; ++s)
#pragma unroll
          for (int r = 0; r < R; ++r) y[s][r] += dot8(q[u][s][r], xa, xb);
      }
    }
  }
}

// QKV epilogue: pair p of head ``head`` of [q; k; v]; RoPE (cs, sn: the pair's angle) on q
// and k, k/v appended.
__device__ void qkv_rope_store(const Ctx& c, const int* rec, int p, float lo, float hi,
                               float cs, float sn) {
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
    const float l2 = lo * cs - hi * sn, h2 = hi * cs + lo * sn;
    lo = l2;
    hi = h2;
  }
  out[base + p] = lo;
  out[base + half + p] = hi;
}

// The tile's rows: warp w takes pairs [w R, w R + R), then every kWarps R pairs further.
template <int NSEG, int R, int U>
__device__ __forceinline__ void gemv_rows(const Ctx& c, const int* rec, const GemvTile& t,
                                          float& best, int& best_i) {
  const int epi = rec[G::EPI], lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  float* dst = f32(c, rec[G::DST]);
  for (int i0 = warp * R; i0 < t.n0; i0 += kWarps * R) {
    // lane 0 reads the epilogue's operands (residual rows, RoPE angles) before the dot
    // products, so their latency hides behind the weight loads
    float e0[R], e1[R];
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const int i = i0 + r < t.n0 ? i0 + r : t.n0 - 1;
      e0[r] = e1[r] = 0.f;
      if (lane == 0 && epi == enc::EPI_RESIDUAL) {
        e0[r] = vec_at(c, rec, G::RES_KIND, t.s0a + i);
        if (NSEG == 2) e1[r] = vec_at(c, rec, G::RES_KIND, t.s1a + i);
      } else if (lane == 0 && epi == enc::EPI_QKV_ROPE) {
        const int pos = c.position + c.step;
        e0[r] = rope_cos(c, pos, rec[G::P0] + i);
        e1[r] = rope_sin(c, pos, rec[G::P0] + i);
      }
    }
    float y[NSEG][R];
    if (t.q8) {
      rows_dot<NSEG, true, R, U>(c, t, i0, lane, y);
    } else {
      rows_dot<NSEG, false, R, U>(c, t, i0, lane, y);
    }
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
          dst[r0] = e0[r] + y0;
          if (NSEG == 2) dst[r1] = e1[r] + y1;
          break;
        case enc::EPI_SILU_MUL:
          dst[r0] = silu(y0) * y1;
          break;
        case enc::EPI_QKV_ROPE:
          qkv_rope_store(c, rec, rec[G::P0] + i, y0, y1, e0[r], e1[r]);
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
  cp_async_wait_own();
  load_vec(c, rec, G::SRC_KIND, c.x);  // its closing __syncthreads() publishes the slot too
  if (rec[G::NORM] >= 0) {
    const unsigned short* nw = t.norm_bytes
        ? reinterpret_cast<const unsigned short*>(c.stage) : w16(c, rec[G::NORM]);
    rmsnorm_inplace(c, c.x, t.k, nw);
  }

  float best = neg_inf();
  int best_i = 0x7fffffff;
  if (rec[G::EPI] == enc::EPI_LOGITS_ARGMAX) {  // one segment; the LM head's own knobs
    gemv_rows<1, cfg::kLmRowsPerWarp, cfg::kLmUnroll>(c, rec, t, best, best_i);
  } else if (t.nseg == 2) {
    gemv_rows<2, cfg::kRowsPerWarp, cfg::kUnroll>(c, rec, t, best, best_i);
  } else {
    gemv_rows<1, cfg::kRowsPerWarp, cfg::kUnroll>(c, rec, t, best, best_i);
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
