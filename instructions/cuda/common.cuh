// What every instruction's device code shares: the execution context, bf16 loads,
// block reductions and the vector-source prologue (instructions/vec_source.py).
#pragma once

namespace amk {

constexpr int kWarps = cfg::kThreads / 32;

struct Ctx {
  void* const* buf;    // the launch's buffer table (enc::kBuf* first)
  const float* rope;   // [positions][2][head_dim / 2]: cos then sin, HF's float32 values
  float* x;            // shared: the input vector of the task (cfg::kMaxVec floats)
  unsigned char* stage;  // shared: this task's prefetch slot: staged weights / attention
                         // scratch (cfg::kSlotBytes)
  float* red;          // shared: reduction scratch (cfg::kRedFloats)
  float* epi;          // shared: the GEMV epilogue's operands (cfg::kEpiFloats, gemv.cuh)
  float* part;         // shared: k_split's per-warp row sums (cfg::kPartFloats, gemv.cuh)
  long long* trace;    // trace builds: the running task's stamps (cfg::kTraceStamps)
  unsigned long long* mbar;  // cfg::kBulkStage: the running task's slot's mbarrier
  unsigned mbar_parity;      // ... and the parity of the phase its staged rows complete
  int step, position, forced_upto;
};

// A shared-memory pointer as the 32-bit address PTX's shared-space operands take.
__device__ __forceinline__ unsigned smem_addr(const void* p) {
  return static_cast<unsigned>(__cvta_generic_to_shared(p));
}
// 16-byte global -> shared copies that bypass registers (cp.async), grouped per task: see
// vm/cuda/megakernel.cu for which group holds what.
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(smem_addr(smem)), "l"(gmem)
               : "memory");
}
// The same for weight rows. Weights are read once per step and a step streams far more of
// them than the L2 holds, so with cfg::kWeightsEvictFirst they are copied evict-first: they
// no longer push out what is read again soon (the KV cache, the activations, the counters).
__device__ __forceinline__ unsigned long long evict_first_policy() {
  unsigned long long p;
  asm("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(p));
  return p;
}
__device__ __forceinline__ void cp_async16_weights(void* smem, const void* gmem) {
  if constexpr (cfg::kWeightsEvictFirst) {
    asm volatile("cp.async.cg.shared.global.L2::cache_hint [%0], [%1], 16, %2;"
                 ::"r"(smem_addr(smem)), "l"(gmem), "l"(evict_first_policy()) : "memory");
  } else {
    cp_async16(smem, gmem);
  }
}
// A 16-byte weight load through the read-only path (evict-first as above).
__device__ __forceinline__ uint4 ldg_weights(const uint4* p) {
  if constexpr (cfg::kWeightsEvictFirst) {
    uint4 v;
    asm("ld.global.nc.L2::cache_hint.v4.u32 {%0, %1, %2, %3}, [%4], %5;"
        : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p), "l"(evict_first_policy()));
    return v;
  } else {
    return __ldg(p);
  }
}
// Bulk copies (TMA, cfg::kBulkStage): one thread copies a run of whole weight rows into a
// slot; the slot's mbarrier completes its phase when the bytes it expects have landed.
__device__ __forceinline__ void mbar_init(unsigned long long* m) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" ::"r"(smem_addr(m)) : "memory");
}
// The slot's one arrival of this use, expecting ``bytes`` of bulk copies (0: none).
__device__ __forceinline__ void mbar_arrive_expect(unsigned long long* m, unsigned bytes) {
  asm volatile("{ .reg .b64 st; mbarrier.arrive.expect_tx.shared::cta.b64 st, [%0], %1; }"
               ::"r"(smem_addr(m)), "r"(bytes) : "memory");
}
__device__ __forceinline__ void mbar_wait(unsigned long long* m, unsigned parity) {
  unsigned done = 0;
  while (!done)
    asm volatile("{ .reg .pred p; mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;"
                 " selp.u32 %0, 1, 0, p; }"
                 : "=r"(done) : "r"(smem_addr(m)), "r"(parity) : "memory");
}
__device__ __forceinline__ void bulk_copy_weights(void* smem, const void* gmem, unsigned bytes,
                                                  unsigned long long* m) {
  if constexpr (cfg::kWeightsEvictFirst) {
    asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes"
                 ".L2::cache_hint [%0], [%1], %2, [%3], %4;"
                 ::"r"(smem_addr(smem)), "l"(gmem), "r"(bytes), "r"(smem_addr(m)),
                 "l"(evict_first_policy()) : "memory");
  } else {
    asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes"
                 " [%0], [%1], %2, [%3];"
                 ::"r"(smem_addr(smem)), "l"(gmem), "r"(bytes), "r"(smem_addr(m)) : "memory");
  }
}

__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_all;" ::: "memory"); }

// Trace builds only: thread 0 stamps the running task's stamp k (vm/build.py TRACE_STAMPS).
__device__ __forceinline__ void phase(const Ctx& c, int k) {
  if (cfg::kTrace && threadIdx.x == 0) c.trace[k] = (long long)global_ns();
}

__device__ __forceinline__ float* f32(const Ctx& c, int b) {
  return reinterpret_cast<float*>(c.buf[b]);
}
__device__ __forceinline__ int* i32(const Ctx& c, int b) {
  return reinterpret_cast<int*>(c.buf[b]);
}
// Weights never change during a launch: the read-only path is safe for them (and only them:
// activations are written by other blocks of the same launch).
__device__ __forceinline__ const unsigned short* w16(const Ctx& c, int b) {
  return reinterpret_cast<const unsigned short*>(c.buf[b]);
}
__device__ __forceinline__ float bf16(unsigned short h) {
  return __uint_as_float(static_cast<unsigned>(h) << 16);
}
__device__ __forceinline__ float bf16_lo(unsigned w) { return __uint_as_float(w << 16); }
__device__ __forceinline__ float bf16_hi(unsigned w) { return __uint_as_float(w & 0xffff0000u); }

__device__ __forceinline__ float neg_inf() { return __int_as_float(0xff800000u); }

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum over the block; every thread gets the result. Uses red[0 .. kWarps].
__device__ float block_sum(float v, float* red) {
  v = warp_sum(v);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();  // red may still be read by a previous reduction
  if (lane == 0) red[warp] = v;
  __syncthreads();
  float t = 0.f;
  for (int w = 0; w < kWarps; ++w) t += red[w];
  return t;
}

// (value, index) arg-max with torch's tie rule: the larger value, then the lower index.
__device__ __forceinline__ void better(float& v, int& i, float v2, int i2) {
  if (v2 > v || (v2 == v && i2 < i)) { v = v2; i = i2; }
}
__device__ __forceinline__ void warp_argmax(float& v, int& i) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float v2 = __shfl_xor_sync(0xffffffffu, v, o);
    const int i2 = __shfl_xor_sync(0xffffffffu, i, o);
    better(v, i, v2, i2);
  }
}
// Block arg-max; result valid in every thread. Uses red[0 .. 2 * kWarps].
__device__ void block_argmax(float& v, int& i, float* red) {
  warp_argmax(v, i);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();
  if (lane == 0) { red[warp] = v; reinterpret_cast<int*>(red)[kWarps + warp] = i; }
  __syncthreads();
  v = red[0]; i = reinterpret_cast<int*>(red)[kWarps];
  for (int w = 1; w < kWarps; ++w) better(v, i, red[w], reinterpret_cast<int*>(red)[kWarps + w]);
}

// ---- vector sources (fields kind, n, buf, parts, head_dim starting at rec[base]) ----------
__device__ __forceinline__ int step_token(const Ctx& c) { return i32(c, enc::kBufTokens)[c.step]; }

// Element r of a ``buffer`` or ``embed`` source (the residual operand).
__device__ __forceinline__ float vec_at(const Ctx& c, const int* rec, int base, int r) {
  const int kind = rec[base], n = rec[base + 1], b = rec[base + 2];
  if (kind == enc::SRC_EMBED) return bf16(w16(c, b)[(size_t)step_token(c) * n + r]);
  return f32(c, b)[r];
}

// Whole source into dst[0 .. n) (shared memory); ends with __syncthreads().
// Every thread issues all of its loads before its first store: a strided copy loop would
// wait one L2 round trip per element (the loads sit on the critical path of every task).
__device__ void load_vec(const Ctx& c, const int* rec, int base, float* dst) {
  constexpr int kPer = (cfg::kMaxVec + cfg::kThreads - 1) / cfg::kThreads;
  const int kind = rec[base], n = rec[base + 1], b = rec[base + 2];
  if (kind == enc::SRC_BUFFER || kind == enc::SRC_EMBED) {
    const float* src = f32(c, b);
    const unsigned short* row = w16(c, b) + (size_t)(kind == enc::SRC_EMBED ? step_token(c) : 0) * n;
    float v[kPer];
#pragma unroll
    for (int j = 0; j < kPer; ++j) {
      const int i = threadIdx.x + j * cfg::kThreads;
      if (i < n) v[j] = kind == enc::SRC_EMBED ? bf16(row[i]) : src[i];
    }
#pragma unroll
    for (int j = 0; j < kPer; ++j) {
      const int i = threadIdx.x + j * cfg::kThreads;
      if (i < n) dst[i] = v[j];
    }
  } else {  // flash-decoding partials [heads, parts, head_dim + 2] -> merged heads
    const int parts = rec[base + 3], hd = rec[base + 4], w = hd + 2;
    const float* P = f32(c, b);
    for (int e = threadIdx.x; e < n; e += cfg::kThreads) {
      const int h = e / hd, d = e - h * hd;
      const float* ph = P + (size_t)h * parts * w;
      float top = neg_inf();
#pragma unroll 4
      for (int p = 0; p < parts; ++p) top = fmaxf(top, ph[p * w]);
      float total = 0.f, acc = 0.f;
#pragma unroll 4
      for (int p = 0; p < parts; ++p) {
        const float m = ph[p * w];
        const float wt = (m == neg_inf()) ? 0.f : expf(m - top);
        total += wt * ph[p * w + 1];
        acc += wt * ph[p * w + 2 + d];
      }
      dst[e] = acc / total;
    }
  }
  __syncthreads();
}

// In place: x = w * (x * rsqrt(mean(x^2) + eps)), LlamaRMSNorm's float32 order. ``w`` is
// the bf16 weight, in global memory or staged in shared memory.
__device__ void rmsnorm_inplace(const Ctx& c, float* x, int n, const unsigned short* w) {
  float ss = 0.f;
  for (int i = threadIdx.x; i < n; i += cfg::kThreads) ss += x[i] * x[i];
  ss = block_sum(ss, c.red);
  const float inv = 1.0f / sqrtf(ss / (float)n + cfg::kRmsEps);
  for (int i = threadIdx.x; i < n; i += cfg::kThreads) x[i] = bf16(w[i]) * (x[i] * inv);
  __syncthreads();
}

__device__ __forceinline__ float silu(float v) { return v / (1.0f + expf(-v)); }

// RoPE angle tables of the absolute position ``pos`` (entry p rotates dims p and p + D/2).
__device__ __forceinline__ float rope_cos(const Ctx& c, int pos, int p) {
  return c.rope[(size_t)pos * cfg::kHeadDim + p];
}
__device__ __forceinline__ float rope_sin(const Ctx& c, int pos, int p) {
  return c.rope[(size_t)pos * cfg::kHeadDim + cfg::kHeadDim / 2 + p];
}

}  // namespace amk
