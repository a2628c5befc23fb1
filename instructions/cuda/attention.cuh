// Decode attention (instructions/attention.py): the kGroup query heads of KV head ``group``
// over cache rows [lo, hi) of this partition, online softmax over chunks of kChunk rows
// copied into shared memory (the task's prefetch slot).
//
// Cache rows are append-only, and every row before n - 1 (n = rows this step) was written
// in an earlier step or launch. This block's instance of the same task in the previous
// step waited for all of them: the task's declared reads cover every row of the launch,
// so the validator proved its waits order those writes before it. attention_stage() can
// therefore copy the first chunk's complete rows (cp.async) BEFORE the task's wait, while
// thread 0 spins; after the wait only q and row n - 1 (this step's QKV tiles wrote them)
// are loaded, in one batch. Rows past the first chunk are copied after the wait.
//
// Per chunk, with K and V in shared memory:
// - scores: one thread per key row (K rows padded by 16 bytes, so the threads of a warp
//   read different banks), dotted with all kGroup query heads at once;
// - softmax: one warp per head: chunk max, exp, sum, and the rescale factor of the
//   running accumulators (online softmax);
// - P @ V: thread (r, j) takes float4 column j of rows r, r + R, r + 2R, ... (R = threads
//   per column = kThreads / (D/4)), accumulating all heads in registers.
// At the end the R partial accumulators of kHeadsPerSum heads at a time are summed
// through shared memory (over the chunk area), one thread per output.
// Shared: q in c.x [kGroup * D]; slot = K [kChunk][D/4 + 1] float4, V [kChunk][D/4]
// float4, scores [kGroup][kChunk]; per-head m / s / rescale factor in c.red.
#pragma once

namespace amk {
namespace A = enc::attention;

constexpr int kD = cfg::kHeadDim, kQ4 = kD / 4;   // float4 columns of a cache row
constexpr int kKS = kQ4 + 1;                        // K row stride in the slot (float4)
constexpr int kRowsPar = cfg::kThreads / kQ4;       // R: rows one P @ V pass covers
constexpr int kChunk = cfg::kSlotBytes / ((kKS + kQ4) * 16 + cfg::kGroup * 4);
constexpr int kSumHeads = cfg::kSlotBytes / (kRowsPar * kD * 4);
constexpr int kHeadsPerSum = kSumHeads < cfg::kGroup ? kSumHeads : cfg::kGroup;
static_assert(kD % 4 == 0 && kRowsPar >= 1, "head_dim: a multiple of 4, at most 4 x threads");
static_assert(kChunk >= 1 && kHeadsPerSum >= 1,
              "the prefetch slot is too small for attention (vm/build.py sizes it)");

__device__ __forceinline__ float dot4(float4 a, float4 b) {
  return a.x * b.x + a.y * b.y + a.z * b.z + a.w * b.w;
}

struct AttnTask {
  int lo, hi, n;              // this partition's rows; rows this step
  const float4* kc;           // KV head ``group``'s caches, [max_seq][D/4]
  const float4* vc;
};

__device__ __forceinline__ AttnTask attn_task(const Ctx& c, const int* rec) {
  AttnTask a;
  const int g = rec[A::GROUP], part = rec[A::PART], parts = rec[A::PARTS];
  const size_t row0 = (size_t)g * rec[A::MAX_SEQ] * kQ4;
  a.n = c.position + c.step + 1;
  a.lo = 0;
  a.hi = a.n;
  if (parts > 1) {
    const int chunk = (a.n + parts - 1) / parts;
    a.lo = min(a.n, part * chunk);
    a.hi = min(a.n, (part + 1) * chunk);
  }
  a.kc = reinterpret_cast<const float4*>(f32(c, rec[A::K_CACHE])) + row0;
  a.vc = reinterpret_cast<const float4*>(f32(c, rec[A::V_CACHE])) + row0;
  return a;
}

__device__ __forceinline__ float4* k_smem(const Ctx& c) { return reinterpret_cast<float4*>(c.stage); }
__device__ __forceinline__ float4* v_smem(const Ctx& c) { return k_smem(c) + kChunk * kKS; }
__device__ __forceinline__ float* s_smem(const Ctx& c) {
  return reinterpret_cast<float*>(v_smem(c) + kChunk * kQ4);
}

// Issue (no commit) cp.async copies of cache rows [r0, r1) to chunk rows 0 .. r1 - r0.
__device__ void attn_copy_rows(const Ctx& c, const AttnTask& a, int r0, int r1) {
  float4* ks = k_smem(c);
  float4* vs = v_smem(c);
  for (int i = threadIdx.x; i < (r1 - r0) * kQ4; i += cfg::kThreads) {
    const int r = i / kQ4, d = i - r * kQ4;
    cp_async16(ks + r * kKS + d, a.kc + (size_t)(r0 + r) * kQ4 + d);
    cp_async16(vs + r * kQ4 + d, a.vc + (size_t)(r0 + r) * kQ4 + d);
  }
}

// Before the task's wait (every thread; the caller commits): the first chunk's complete rows.
__device__ void attention_stage(const Ctx& c, const int* rec) {
  const AttnTask a = attn_task(c, rec);
  const int end = min(min(a.hi, a.lo + kChunk), a.n - 1);
  if (end > a.lo) attn_copy_rows(c, a, a.lo, end);
}

__device__ void attention_run(const Ctx& c, const int* rec) {
  constexpr int G = cfg::kGroup;
  const AttnTask a = attn_task(c, rec);
  const int h0 = rec[A::GROUP] * G, part = rec[A::PART], parts = rec[A::PARTS];
  float4* ks = k_smem(c);
  float4* vs = v_smem(c);
  float* sc = s_smem(c);
  float* hm = c.red + 2 * kWarps;
  float* hs = hm + G;
  float* hf = hs + G;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int col = threadIdx.x % kQ4, row0 = threadIdx.x / kQ4;
  const bool pv = row0 < kRowsPar;  // threads past R x (D/4) sit out P @ V

  // After the wait, one batch: q, and row n - 1 when the first chunk holds it.
  const float* q = f32(c, rec[A::Q]) + (size_t)h0 * kD;
  const int end0 = min(a.hi, a.lo + kChunk), fresh = end0 == a.n ? max(a.lo, a.n - 1) : end0;
  for (int i = threadIdx.x; i < G * kD; i += cfg::kThreads) c.x[i] = q[i];
  for (int i = threadIdx.x; i < (end0 - fresh) * kQ4; i += cfg::kThreads) {
    const int r = fresh - a.lo + i / kQ4, d = i % kQ4;
    ks[r * kKS + d] = a.kc[(size_t)(fresh + i / kQ4) * kQ4 + d];
    vs[r * kQ4 + d] = a.vc[(size_t)(fresh + i / kQ4) * kQ4 + d];
  }
  for (int i = threadIdx.x; i < G; i += cfg::kThreads) { hm[i] = neg_inf(); hs[i] = 0.f; }
  float4 acc[G];
#pragma unroll
  for (int gg = 0; gg < G; ++gg) acc[gg] = make_float4(0.f, 0.f, 0.f, 0.f);
  const float4* q4 = reinterpret_cast<const float4*>(c.x);
  // the staged rows: this task's own group, the last but one committed (megakernel.cu)
  asm volatile("cp.async.wait_group 1;" ::: "memory");
  phase(c, 3);

  for (int c0 = a.lo; c0 < a.hi; c0 += kChunk) {
    const int len = min(kChunk, a.hi - c0);
    if (c0 != a.lo) {  // a later chunk: the previous one is consumed (barrier below)
      attn_copy_rows(c, a, c0, c0 + len);
      cp_async_commit();
      cp_async_wait_all();
    }
    __syncthreads();
    for (int t = threadIdx.x; t < len; t += cfg::kThreads) {
      const float4* k = ks + t * kKS;
      float s[G];
#pragma unroll
      for (int gg = 0; gg < G; ++gg) s[gg] = 0.f;
#pragma unroll 8
      for (int d = 0; d < kQ4; ++d) {
        const float4 kv = k[d];
#pragma unroll
        for (int gg = 0; gg < G; ++gg) s[gg] += dot4(kv, q4[gg * kQ4 + d]);
      }
#pragma unroll
      for (int gg = 0; gg < G; ++gg) sc[gg * kChunk + t] = s[gg] * cfg::kAttnScale;
    }
    __syncthreads();
    for (int gg = warp; gg < G; gg += kWarps) {
      float* row = sc + gg * kChunk;
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
        const float4 v = vs[t * kQ4 + col];
#pragma unroll
        for (int gg = 0; gg < G; ++gg) {
          const float p = sc[gg * kChunk + t];
          acc[gg].x += p * v.x; acc[gg].y += p * v.y; acc[gg].z += p * v.z; acc[gg].w += p * v.w;
        }
      }
    }
    __syncthreads();  // the next chunk (or the partial sums) overwrites the slot
  }
  phase(c, 4);

  float* out = rec[A::OUT] >= 0 ? f32(c, rec[A::OUT]) : nullptr;  // attn_o: into c.x
  float* partial = reinterpret_cast<float*>(c.stage);  // [kHeadsPerSum][R][D]
#pragma unroll
  for (int g0 = 0; g0 < G; g0 += kHeadsPerSum) {
#pragma unroll
    for (int hh = 0; hh < kHeadsPerSum; ++hh) {
      const int gg = g0 + hh < G ? g0 + hh : G - 1;
      if (pv && g0 + hh < G)
        reinterpret_cast<float4*>(partial)[(hh * kRowsPar + row0) * kQ4 + col] = acc[gg];
    }
    __syncthreads();
    const int nh = min(kHeadsPerSum, G - g0);
    for (int i = threadIdx.x; i < nh * kD; i += cfg::kThreads) {
      const int hh = i / kD, d = i - hh * kD, gg = g0 + hh, h = h0 + gg;
      float s = 0.f;
      for (int r = 0; r < kRowsPar; ++r) s += partial[(hh * kRowsPar + r) * kD + d];
      if (cfg::kFuseO && out == nullptr) {  // attn_o (q in c.x is read no more)
        c.x[gg * kD + d] = s / hs[gg];
      } else if (parts == 1) {
        out[(size_t)h * kD + d] = s / hs[gg];
      } else {  // flash-decoding partial (max, sum, unnormalised acc[D])
        float* o = out + ((size_t)h * parts + part) * (kD + 2);
        if (d == 0) { o[0] = hm[gg]; o[1] = hs[gg]; }
        o[2 + d] = s;
      }
    }
    __syncthreads();  // partial is rewritten for the next heads
  }
  phase(c, 5);
}

// attn_o (instructions/attn_o.py): the group's attention as above, its G * D outputs left in
// c.x, then rows r0 .. r1 of the grouped O view (rows vrow0 ..) over those columns, each
// added into dst0 (and dst1) with an atomic add. Warp w takes kORows rows at a time, lanes
// over the rows' 16-byte chunks, every load of the kORows rows in flight before the FMAs.
// Before the wait (stage_own) thread 0 prefetched the rows into the L2 (sm_90).
namespace AO = enc::attn_o;
static_assert(AO::GROUP == A::GROUP && AO::OUT == A::OUT && AO::V_CACHE == A::V_CACHE,
              "attn_o shares attention's record layout");
constexpr int kOCpr = cfg::kGroup * kD / 8;  // 16-byte chunks of a view row
constexpr int kOCh = (kOCpr + 31) / 32;      // ... per lane
constexpr int kORows = 4;

__device__ __forceinline__ const uint4* o_view_rows(const Ctx& c, const int* rec) {
  return reinterpret_cast<const uint4*>(w16(c, rec[AO::MATRIX])) + (size_t)rec[AO::VROW0] * kOCpr;
}

__device__ void attn_o_stage(const Ctx& c, const int* rec) {
  attention_stage(c, rec);
#if __CUDA_ARCH__ >= 900
  if (threadIdx.x == 0)
    asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;"
                 ::"l"(o_view_rows(c, rec)), "r"((unsigned)((rec[AO::R1] - rec[AO::R0]) * kOCpr * 16))
                 : "memory");
#endif
}

__device__ void attn_o_run(const Ctx& c, const int* rec) {
  attention_run(c, rec);  // ends with a barrier: the outputs are in c.x
  const uint4* w = o_view_rows(c, rec);
  const int r0 = rec[AO::R0], n = rec[AO::R1] - r0;
  float* d0 = f32(c, rec[AO::DST0]);
  float* d1 = rec[AO::DST1] >= 0 ? f32(c, rec[AO::DST1]) : nullptr;
  const float4* x = reinterpret_cast<const float4*>(c.x);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int i0 = warp * kORows; i0 < n; i0 += kWarps * kORows) {
    uint4 q[kORows][kOCh];
#pragma unroll
    for (int r = 0; r < kORows; ++r)
#pragma unroll
      for (int k = 0; k < kOCh; ++k) {
        const int ch = lane + 32 * k;
        if (i0 + r < n && ch < kOCpr) q[r][k] = ldg_weights(w + (size_t)(i0 + r) * kOCpr + ch);
      }
#pragma unroll
    for (int r = 0; r < kORows; ++r) {
      float y = 0.f;
#pragma unroll
      for (int k = 0; k < kOCh; ++k) {
        const int ch = lane + 32 * k;
        if (i0 + r < n && ch < kOCpr) y += dot8(q[r][k], x[2 * ch], x[2 * ch + 1]);
      }
      y = warp_sum(y);
      if (lane == 0 && i0 + r < n) {
        atomicAdd(d0 + r0 + i0 + r, y);
        if (d1) atomicAdd(d1 + r0 + i0 + r, y);
      }
    }
  }
}

}  // namespace amk
