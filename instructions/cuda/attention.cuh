// Decode attention (instructions/attention.py): the kGroup query heads of KV head ``group``
// over cache rows [lo, hi) of this partition, online softmax over chunks of rows.
//
// Per chunk: scores (warp per row, lanes over head_dim, all heads of the group at once so
// each K row is read once) -> per-head max / exp / sum (warp per head) -> acc rescale and
// P @ V (thread per (head, dim) output, V reads coalesced along dim).
// Shared: q in c.x [kGroup * D], scores in c.stage [kGroup][chunk], per-head m / s /
// rescale factor after the block-reduction scratch in c.red.
#pragma once

namespace amk {
namespace A = enc::attention;

__device__ void attention_run(const Ctx& c, const int* rec) {
  constexpr int kGroupMax = cfg::kGroup;
  const int g = rec[A::GROUP], part = rec[A::PART], parts = rec[A::PARTS];
  const int heads = rec[A::HEADS], kvh = rec[A::KV_HEADS], D = rec[A::HEAD_DIM];
  const int S = rec[A::MAX_SEQ], G = heads / kvh, h0 = g * G, GD = G * D;
  const int n = c.position + c.step + 1;
  int lo = 0, hi = n;
  if (parts > 1) {
    const int chunk = (n + parts - 1) / parts;
    lo = min(n, part * chunk);
    hi = min(n, (part + 1) * chunk);
  }
  const float* q = f32(c, rec[A::Q]) + (size_t)h0 * D;
  const float* kc = f32(c, rec[A::K_CACHE]) + (size_t)g * S * D;
  const float* vc = f32(c, rec[A::V_CACHE]) + (size_t)g * S * D;
  float* sc = reinterpret_cast<float*>(c.stage);
  float* hm = c.red + 2 * kWarps;
  float* hs = hm + kGroupMax;
  float* hf = hs + kGroupMax;
  const int C = cfg::kStageBytes / 4 / kGroupMax;  // rows per chunk
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;

  for (int i = threadIdx.x; i < GD; i += cfg::kThreads) c.x[i] = q[i];
  for (int i = threadIdx.x; i < G; i += cfg::kThreads) { hm[i] = neg_inf(); hs[i] = 0.f; }
  float acc[cfg::kAttnAcc];
#pragma unroll
  for (int j = 0; j < cfg::kAttnAcc; ++j) acc[j] = 0.f;
  __syncthreads();

  for (int c0 = lo; c0 < hi; c0 += C) {
    const int len = min(C, hi - c0);
    for (int t = warp; t < len; t += kWarps) {
      const float* k = kc + (size_t)(c0 + t) * D;
      float part_dot[kGroupMax];
#pragma unroll
      for (int gg = 0; gg < kGroupMax; ++gg) part_dot[gg] = 0.f;
      for (int d = lane; d < D; d += 32) {
        const float kv = k[d];
#pragma unroll
        for (int gg = 0; gg < kGroupMax; ++gg)
          if (gg < G) part_dot[gg] += kv * c.x[gg * D + d];
      }
#pragma unroll
      for (int gg = 0; gg < kGroupMax; ++gg) {
        if (gg >= G) break;
        const float s = warp_sum(part_dot[gg]);
        if (lane == 0) sc[gg * C + t] = s * cfg::kAttnScale;
      }
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
#pragma unroll
    for (int j = 0; j < cfg::kAttnAcc; ++j) {
      const int idx = threadIdx.x + j * cfg::kThreads;
      if (idx >= GD) break;
      const int gg = idx / D, d = idx - gg * D;
      const float* p = sc + gg * C;
      const float* v = vc + (size_t)c0 * D + d;
      float a = acc[j] * hf[gg];
      for (int t = 0; t < len; ++t) a += p[t] * v[(size_t)t * D];
      acc[j] = a;
    }
    __syncthreads();
  }

  float* out = f32(c, rec[A::OUT]);
#pragma unroll
  for (int j = 0; j < cfg::kAttnAcc; ++j) {
    const int idx = threadIdx.x + j * cfg::kThreads;
    if (idx >= GD) break;
    const int gg = idx / D, d = idx - gg * D, h = h0 + gg;
    if (parts == 1) {
      out[(size_t)h * D + d] = acc[j] / hs[gg];
    } else {  // flash-decoding partial (max, sum, unnormalised acc[D])
      float* o = out + ((size_t)h * parts + part) * (D + 2);
      if (d == 0) { o[0] = hm[gg]; o[1] = hs[gg]; }
      o[2 + d] = acc[j];
    }
  }
}

}  // namespace amk
