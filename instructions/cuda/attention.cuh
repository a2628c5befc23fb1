// Decode attention (instructions/attention.py): the kGroup query heads of KV head ``group``
// over cache rows [lo, hi) of this partition, online softmax over chunks of C rows.
//
// Per chunk, every phase spreads over the whole block with many loads in flight:
// - scores: one thread per key row; its D/4 16-byte K loads are issued 8 at a time and
//   dotted with all kGroup query heads at once (q broadcast from shared memory);
// - softmax: one warp per head: chunk max, exp, sum, and the rescale factor of the
//   running accumulators (online softmax);
// - P @ V: thread (r, j) takes float4 column j of rows r, r + R, r + 2R, ... (R = threads
//   per column = kThreads / (D/4)), accumulating all heads in registers.
// At the end the R partial accumulators of each head are summed through shared memory,
// kSum threads per output dim.
// Shared: q in c.x [kGroup * D]; the task's slot holds scores [kGroup][C], then the
// partials [R][D]; per-head m / s / rescale factor after the reduction scratch in c.red.
#pragma once

namespace amk {
namespace A = enc::attention;

constexpr int kD = cfg::kHeadDim, kQ4 = kD / 4;   // float4 columns of a cache row
constexpr int kRowsPar = cfg::kThreads / kQ4;       // R: rows one P @ V pass covers
// The final sum over the R partials of a dim: kSum consecutive lanes (a power of two, at
// most 32) share it, each adding every kSum-th partial, then a shuffle tree.
__host__ __device__ constexpr int pow2_floor(int v) { return v >= 2 ? 2 * pow2_floor(v / 2) : 1; }
constexpr int kSum = pow2_floor(cfg::kThreads / kD < 32 ? cfg::kThreads / kD : 32);
static_assert(kD % 4 == 0 && kRowsPar >= 1, "head_dim: a multiple of 4, at most 4 x threads");

__device__ __forceinline__ float dot4(float4 a, float4 b) {
  return a.x * b.x + a.y * b.y + a.z * b.z + a.w * b.w;
}

__device__ void attention_run(const Ctx& c, const int* rec) {
  constexpr int G = cfg::kGroup;
  const int g = rec[A::GROUP], part = rec[A::PART], parts = rec[A::PARTS];
  const int S = rec[A::MAX_SEQ], h0 = g * G;
  const int n = c.position + c.step + 1;
  int lo = 0, hi = n;
  if (parts > 1) {
    const int chunk = (n + parts - 1) / parts;
    lo = min(n, part * chunk);
    hi = min(n, (part + 1) * chunk);
  }
  const float4* kc = reinterpret_cast<const float4*>(f32(c, rec[A::K_CACHE]) + (size_t)g * S * kD);
  const float4* vc = reinterpret_cast<const float4*>(f32(c, rec[A::V_CACHE]) + (size_t)g * S * kD);
  float* sc = reinterpret_cast<float*>(c.stage);
  constexpr int C = (cfg::kSlotBytes / 4 - kRowsPar * kD) / G / 4 * 4;  // rows per chunk
  static_assert(C >= 1, "the prefetch slot is too small for attention (vm/build.py sizes it)");
  float* partial = sc + G * C;
  float* hm = c.red + 2 * kWarps;
  float* hs = hm + G;
  float* hf = hs + G;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int col = threadIdx.x % kQ4, row0 = threadIdx.x / kQ4;
  const bool pv = row0 < kRowsPar;  // threads past R x (D/4) sit out P @ V

  const float* q = f32(c, rec[A::Q]) + (size_t)h0 * kD;
  for (int i = threadIdx.x; i < G * kD; i += cfg::kThreads) c.x[i] = q[i];
  for (int i = threadIdx.x; i < G; i += cfg::kThreads) { hm[i] = neg_inf(); hs[i] = 0.f; }
  float4 acc[G];
#pragma unroll
  for (int gg = 0; gg < G; ++gg) acc[gg] = make_float4(0.f, 0.f, 0.f, 0.f);
  const float4* q4 = reinterpret_cast<const float4*>(c.x);
  __syncthreads();

  for (int c0 = lo; c0 < hi; c0 += C) {
    const int len = min(C, hi - c0);
    for (int t = threadIdx.x; t < len; t += cfg::kThreads) {
      const float4* k = kc + (size_t)(c0 + t) * kQ4;
      float s[G];
#pragma unroll
      for (int gg = 0; gg < G; ++gg) s[gg] = 0.f;
#pragma unroll
      for (int d0 = 0; d0 < kQ4; d0 += 8) {
        float4 kv[8];
#pragma unroll
        for (int u = 0; u < 8; ++u) if (d0 + u < kQ4) kv[u] = k[d0 + u];
#pragma unroll
        for (int u = 0; u < 8; ++u) {
          if (d0 + u >= kQ4) break;
#pragma unroll
          for (int gg = 0; gg < G; ++gg) s[gg] += dot4(kv[u], q4[gg * kQ4 + d0 + u]);
        }
      }
#pragma unroll
      for (int gg = 0; gg < G; ++gg) sc[gg * C + t] = s[gg] * cfg::kAttnScale;
    }
    __syncthreads();
    for (int gg = warp; gg < G; gg += kWarps) {
      float* row = sc + gg * C;
      float mx = neg_inf();
      for (int t = lane; t < len; t += 32) mx = fmaxf(mx, row[t]);
      const float m_new = fmaxf(hm[gg], warp_max(mx));
      float sum = 0.f;
      for (int t = lane; t < len; t += 32) {
        const float p = expf(row[t] - m_new);
        row[t] = p;
        sum += p;
      }
      sum = warp_sum(sum);
      if (lane == 0) {
        const float f = expf(hm[gg] - m_new);  // 0 for the first chunk (hm = -inf)
        hf[gg] = f;
        hs[gg] = hs[gg] * f + sum;
        hm[gg] = m_new;
      }
    }
    __syncthreads();
    if (pv) {
#pragma unroll
      for (int gg = 0; gg < G; ++gg) {
        const float f = hf[gg];
        acc[gg].x *= f; acc[gg].y *= f; acc[gg].z *= f; acc[gg].w *= f;
      }
#pragma unroll 4
      for (int t = row0; t < len; t += kRowsPar) {
        const float4 v = vc[(size_t)(c0 + t) * kQ4 + col];
#pragma unroll
        for (int gg = 0; gg < G; ++gg) {
          const float p = sc[gg * C + t];
          acc[gg].x += p * v.x; acc[gg].y += p * v.y; acc[gg].z += p * v.z; acc[gg].w += p * v.w;
        }
      }
    }
    __syncthreads();  // the next chunk overwrites the scores
  }

  float* out = f32(c, rec[A::OUT]);
#pragma unroll
  for (int gg = 0; gg < G; ++gg) {
    if (pv) reinterpret_cast<float4*>(partial)[row0 * kQ4 + col] = acc[gg];
    __syncthreads();
    static_assert(kD * kSum <= cfg::kThreads, "one dim slice per thread");
    if (warp * 32 < kD * kSum) {  // whole warps, so every lane takes part in the shuffles
      const int i = threadIdx.x, d = i / kSum, k = i % kSum;
      const bool mine = i < kD * kSum;
      float a = 0.f;
      if (mine)
        for (int r = k; r < kRowsPar; r += kSum) a += partial[r * kD + d];
#pragma unroll
      for (int o = kSum / 2; o > 0; o >>= 1) a += __shfl_xor_sync(0xffffffffu, a, o);
      const int h = h0 + gg;
      if (mine && k == 0 && parts == 1) {
        out[(size_t)h * kD + d] = a / hs[gg];
      } else if (mine && k == 0) {  // flash-decoding partial (max, sum, unnormalised acc[D])
        float* o = out + ((size_t)h * parts + part) * (kD + 2);
        if (d == 0) { o[0] = hm[gg]; o[1] = hs[gg]; }
        o[2 + d] = a;
      }
    }
    __syncthreads();  // partial is rewritten for the next head
  }
}

}  // namespace amk
