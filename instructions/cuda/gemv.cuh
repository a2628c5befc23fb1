// The GEMV tile (instructions/gemv.py + epilogues.py): y = W[rows] @ norm?(src), then the
// fused epilogue. W is bf16 [out, K] row-major, K % 8 == 0 (16-byte loads), or int8 codes
// with float32 scales dequantised in registers (gemv_int8.cuh; K % 16 == 0); accumulation
// and everything after it in fp32.
//
// A tile has one row segment, or two of equal length whose rows pair up (gate/up for
// SiLU-mul, the RoPE halves of a head for QKV): pair i is (s0a + i, s1a + i). A group of
// cfg::kKSplit warps takes cfg::kRowsPerWarp pairs at a time, each warp a share of K; lanes
// split a warp's share into 16-byte chunks, cfg::kUnroll of them in flight per row (kernel
// knobs, space/kernel_knobs.py). The LM head (many rows, few staged), and layer tiles too
// big for their slot, can instead stream their rows through a cp.async ring in the slot
// (rows_ring; cfg::kLmRing, cfg::kRing stages, cfg::kRingPairs).
//
// gemv_stage() runs kPrefetch - 1 tasks BEFORE the task (vm/cuda/megakernel.cu): weights
// never depend on activations, so the leading rows of the tile (as many as fit in the
// task's kSlotBytes slot) stream into shared memory (cp.async) while the block runs and
// waits on earlier tasks. Rows that do not fit stream from global. A ringed tile stages no
// rows; with cfg::kRingPrefill its ring's first items are issued there instead.
//
// After the wait, gemv_prologue() issues every load the tile needs before its dot products
// in one batch (one L2 round trip on the critical path): the input vector, the folded
// RMSNorm weight and the epilogue's operands (residual rows or RoPE angles). The norm
// needs no block reduction before the dot products: each row's sum is scaled afterwards,
// W (w * x / rms(x)) = (W (w * x)) / rms(x).
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
  int cpg_shift;   // log2(cpg) when cpg is a power of two, else -1 (chunk_group)
  int staged;      // leading tile rows held in the slot
  bool ring;       // streamed through a cp.async ring in the slot instead (rows_ring)
  int epi_n;       // epilogue operands (epi_operand), at most cfg::kEpiFloats
  int cp_n;        // rows of the tile's row copy (fuse_o), loaded after the operands
};

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
  t.cpg_shift = t.cpg > 0 && (t.cpg & (t.cpg - 1)) == 0 ? __ffs(t.cpg) - 1 : -1;
  const int epi = rec[G::EPI];
  const int rows = t.n0 * t.nseg;
  // A ringed tile's slot is its ring (rows_ring), so it stages no rows: the LM head with
  // an LM ring; a layer tile with a ring when its rows outgrow the slot (two-segment
  // tiles only with ring_pairs).
  t.ring = epi == enc::EPI_LOGITS_ARGMAX
               ? cfg::kLmRing > 0
               : cfg::kRing > 0 && (t.nseg == 1 || cfg::kRingPairs) &&
                     (long long)rows * t.row_bytes > cfg::kSlotBytes;
  const int fit = t.ring ? 0 : cfg::kSlotBytes / t.row_bytes;
  t.staged = rows < fit ? rows : fit;
  t.cp_n = cfg::kFuseO ? rec[G::CP_R1] - rec[G::CP_R0] : 0;  // (fuse_o only: registers)
  t.epi_n = epi == enc::EPI_RESIDUAL                             ? rows
            : epi == enc::EPI_QKV_ROPE || epi == enc::EPI_QKV_SPAN ? 2 * t.n0
                                                                   : 0;
  return t;
}

// The scale group of 16-byte chunk ch of an int8 row: 0 with one scale per row, a shift
// when a group's chunks are a power of two (every group the search space has), else an
// integer division (tens of instructions, once per chunk: it showed in the int8 rows).
__device__ __forceinline__ int chunk_group(const GemvTile& t, int ch) {
  return t.spr == 1 ? 0 : t.cpg_shift >= 0 ? ch >> t.cpg_shift : ch / t.cpg;
}

// Local row li (segment 0 rows first, then segment 1) -> weight row.
__device__ __forceinline__ int tile_row(const GemvTile& t, int li) {
  return li < t.n0 ? t.s0a + li : t.s1a + (li - t.n0);
}

// This thread's weight copies of the task about to run have landed: every task commits two
// groups (megakernel.cu), its own cache rows then the weights of the task kPrefetch - 1
// ahead, so 2 (kPrefetch - 1) younger groups may still be in flight. A __syncthreads()
// after it publishes every thread's copies.
__device__ __forceinline__ void cp_async_wait_own() {
  asm volatile("cp.async.wait_group %0;" ::"n"(2 * (cfg::kPrefetch - 1)) : "memory");
}

// How a tile's rows are computed: NSEG segments, R pairs per warp (and ring stage), U
// chunks in flight per row, S warps per row, a ring of D stages (0: none).
template <int NSEG_, int R_, int U_, int S_, int D_>
struct TileShape {
  static constexpr int NSEG = NSEG_, R = R_, U = U_, S = S_, D = D_;
};

// f(TileShape<...>{}) with the shape of ``rec``'s tile: the LM head has its own knobs and one
// segment; a two-segment layer tile takes the layer ring only with ring_pairs. gemv_run and
// gemv_stage both dispatch here, so the ring the prefill fills is the one rows_ring reads.
template <class F>
__device__ __forceinline__ void with_tile_shape(const int* rec, const GemvTile& t, const F& f) {
  constexpr int R = cfg::kRowsPerWarp, U = cfg::kUnroll, S = cfg::kKSplit;
  if (rec[G::EPI] == enc::EPI_LOGITS_ARGMAX) {
    f(TileShape<1, cfg::kLmRowsPerWarp, cfg::kLmUnroll, 1, cfg::kLmRing>{});
  } else if (t.nseg == 2) {
    f(TileShape<2, R, U, S, cfg::kRingPairs ? cfg::kRing : 0>{});
  } else {
    f(TileShape<1, R, U, S, cfg::kRing>{});
  }
}

// Segment s's weight row of pair i0 + r (a pair past the tile's end repeats the last; its
// result is dropped).
__device__ __forceinline__ int pair_row(const GemvTile& t, int s, int i0, int r) {
  return (s == 0 ? t.s0a : t.s1a) + (i0 + r < t.n0 ? i0 + r : t.n0 - 1);
}

// One lane's walk over its warp's ring items (rows_ring): warp w's items are (pairs i0 ..
// i0 + R - 1, chunk block b) for i0 = w R, w R + kWarps R, ... and b < nb, in that order;
// item k goes to stage k % D of the warp's [D][NSEG][R][32] 16-byte ring in ``slot``.
// rows_ring's fetcher and the prefill (gemv_stage) both walk it, so the copies land where
// the consumer reads them.
template <int NSEG, int R, int D>
struct RingWalk {
  static_assert(kWarps * D * NSEG * R * 32 * 16 <= cfg::kSlotBytes, "the ring outgrows a slot");
  static constexpr int kStage = NSEG * R * 32;  // 16-byte entries of one stage of a warp
  uint4* ring;  // this lane's entries of its warp's ring
  int lane, cpr, nb;
  int i0, b = 0, stage = 0;  // the next item

  __device__ __forceinline__ RingWalk(const GemvTile& t, unsigned char* slot)
      : lane(threadIdx.x & 31), cpr(t.row_bytes / 16), nb((cpr + 31) / 32),
        i0((threadIdx.x >> 5) * R) {
    ring = reinterpret_cast<uint4*>(slot) + (size_t)(threadIdx.x >> 5) * D * kStage + lane;
  }

  // This lane's entry of segment s, pair r in stage st.
  __device__ __forceinline__ uint4* at(int st, int s, int r) const {
    return ring + st * kStage + (s * R + r) * 32;
  }

  // Issue (no commit) this lane's copies of the next item, none past the warp's last item
  // or the row's end, and step on.
  __device__ __forceinline__ void issue(const GemvTile& t) { step(t, true); }
  // Step over the next item (copied already: cfg::kRingPrefill).
  __device__ __forceinline__ void skip(const GemvTile& t) { step(t, false); }

  // issue() / skip(): past the warp's last item only the stage moves.
  __device__ __forceinline__ void step(const GemvTile& t, bool copy) {
    if (i0 < t.n0) {
      const int ch = b * 32 + lane;
      if (copy && ch < cpr)
#pragma unroll
        for (int s = 0; s < NSEG; ++s)
#pragma unroll
          for (int r = 0; r < R; ++r)
            cp_async16_weights(at(stage, s, r), reinterpret_cast<const unsigned char*>(t.w) +
                                                    (size_t)pair_row(t, s, i0, r) * t.row_bytes +
                                                    (size_t)ch * 16);
      if (++b == nb) {
        b = 0;
        i0 += kWarps * R;
      }
    }
    stage = stage == D - 1 ? 0 : stage + 1;
  }
};

// with_tile_shape's callables are functors with an explicit __device__ operator(): NVRTC
// 13.0 takes a lambda's operator() for a host function in JIT mode and refuses it.

// Issue (no commit) each warp's first D - 1 ring items into ``slot`` (gemv_stage).
struct PrefillRing {
  const GemvTile& t;
  unsigned char* slot;
  template <class Sh>
  __device__ __forceinline__ void operator()(Sh) const {
    if constexpr (Sh::D > 0) {
      RingWalk<Sh::NSEG, Sh::R, Sh::D> walk(t, slot);
      for (int k = 0; k < Sh::D - 1; ++k) walk.issue(t);
    }
  }
};

// Whether gemv_stage issues the tile's first ring items (ring_prefill), not staged rows.
__device__ __forceinline__ bool prefills_ring(const GemvTile& t) {
  return cfg::kRingPrefill && t.ring;
}

// A silu_down tile's down-projection columns: rows s0a .. s0a + n0 of the transposed down
// matrix, contiguous, read after the tile's rows (down_accumulate). When the whole tile is
// staged and they fit in the slot after its rows, they are staged there too (kernel knob
// down_slot, cfg::kDownSlot); otherwise, with the task's staging (before its wait), one bulk
// prefetch pulls them into the L2 (sm_90; elsewhere they stream from DRAM).
__device__ __forceinline__ unsigned down_row_bytes(const int* rec, const GemvTile& t) {
  return (unsigned)rec[G::DOWN_COLS] * (t.q8 ? 1u : 2u);  // int8 codes, or bf16
}
__device__ __forceinline__ unsigned down_bytes(const int* rec, const GemvTile& t) {
  return (unsigned)t.n0 * down_row_bytes(rec, t);
}
__device__ __forceinline__ bool down_staged(const int* rec, const GemvTile& t) {
  const int rows = t.n0 * t.nseg;
  return cfg::kFuseDown && cfg::kDownSlot && rec[G::EPI] == enc::EPI_SILU_DOWN && !t.ring &&
         t.staged == rows &&
         (long long)rows * t.row_bytes + down_bytes(rec, t) <= cfg::kSlotBytes;
}
__device__ __forceinline__ const unsigned char* down_rows(const Ctx& c, const int* rec,
                                                          const GemvTile& t) {
  return reinterpret_cast<const unsigned char*>(c.buf[rec[G::DOWN]]) +
         (size_t)t.s0a * down_row_bytes(rec, t);
}
__device__ __forceinline__ void prefetch_down_l2(const Ctx& c, const int* rec, const GemvTile& t) {
#if __CUDA_ARCH__ >= 900
  if (threadIdx.x == 0)
    asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;"
                 ::"l"(down_rows(c, rec, t)), "r"(down_bytes(rec, t)) : "memory");
#endif
}

// Issue (no commit: the caller commits one group per task) the copies of the tile's
// leading rows into ``slot`` (with cfg::kBulkStage, bulk copies that complete on ``mbar``:
// returns true, having arrived on it); for a ringed tile with cfg::kRingPrefill, each
// warp's first D - 1 ring items instead (rows_ring then starts its fetcher at item D - 1).
// Each thread issues its own lane's ring entries, as rows_ring would.
__device__ bool stage_tile(const Ctx& c, const int* rec, unsigned char* slot,
                           unsigned long long* mbar) {
  const GemvTile t = gemv_tile(c, rec);
  const bool down_in_slot = down_staged(rec, t);
  if (cfg::kFuseDown && rec[G::EPI] == enc::EPI_SILU_DOWN && !down_in_slot)
    prefetch_down_l2(c, rec, t);
  unsigned char* down_at = slot + (size_t)t.staged * t.row_bytes;  // after the tile's rows
  if (prefills_ring(t)) {
    with_tile_shape(rec, t, PrefillRing{t, slot});
    return false;
  }
  if constexpr (cfg::kBulkStage) {  // thread 0: one bulk copy per segment's staged rows
    // (the slot's last use was generic-proxy accesses: the async proxy's writes follow a fence)
    if (threadIdx.x == 0) {
      const int s0 = t.staged < t.n0 ? t.staged : t.n0, s1 = t.staged - s0;
      const unsigned char* w = reinterpret_cast<const unsigned char*>(t.w);
      asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
      mbar_arrive_expect(mbar, (unsigned)(t.staged * t.row_bytes) +
                                   (down_in_slot ? down_bytes(rec, t) : 0u));
      if (s0 > 0)
        bulk_copy_weights(slot, w + (size_t)t.s0a * t.row_bytes, (unsigned)(s0 * t.row_bytes),
                          mbar);
      if (s1 > 0)
        bulk_copy_weights(slot + (size_t)t.n0 * t.row_bytes, w + (size_t)t.s1a * t.row_bytes,
                          (unsigned)(s1 * t.row_bytes), mbar);
      if (down_in_slot) bulk_copy_weights(down_at, down_rows(c, rec, t), down_bytes(rec, t), mbar);
    }
    return true;
  }
  unsigned char* rows = slot;
  const int cpr = t.row_bytes / 16, total = t.staged * cpr;  // 16-byte chunks per row / in all
  for (int i = threadIdx.x; i < total; i += cfg::kThreads) {
    const int li = i / cpr, ch = i - li * cpr;
    cp_async16_weights(rows + (size_t)i * 16,
                       reinterpret_cast<const unsigned char*>(t.w) +
                           (size_t)tile_row(t, li) * t.row_bytes + ch * 16);
  }
  if (down_in_slot) {
    const unsigned char* d = down_rows(c, rec, t);
    for (unsigned i = threadIdx.x; i < down_bytes(rec, t) / 16; i += cfg::kThreads)
      cp_async16_weights(down_at + (size_t)i * 16, d + (size_t)i * 16);
  }
  return false;
}

// stage_tile, called out of line when its copies carry the evict-first hint: inlined there,
// NVRTC 13.0 (the GPU image's) gave a hinted copy a descriptor in uniform registers that
// nothing sets (desc[UR1] in the SASS), and every launch died of an illegal instruction.
// Without the hint it stays inline (the call cost SmolLM2 2%).
__device__ __noinline__ bool stage_tile_outlined(const Ctx& c, const int* rec,
                                                 unsigned char* slot, unsigned long long* mbar) {
  return stage_tile(c, rec, slot, mbar);
}

// Returns whether it arrived on ``mbar`` (bulk-copied rows).
__device__ __forceinline__ bool gemv_stage(const Ctx& c, const int* rec, unsigned char* slot,
                                           unsigned long long* mbar) {
  if constexpr (cfg::kWeightsEvictFirst) {
    return stage_tile_outlined(c, rec, slot, mbar);
  } else {
    return stage_tile(c, rec, slot, mbar);
  }
}

__device__ __forceinline__ float dot8(uint4 q, float4 a, float4 b) {
  return bf16_lo(q.x) * a.x + bf16_hi(q.x) * a.y + bf16_lo(q.y) * a.z + bf16_hi(q.y) * a.w +
         bf16_lo(q.z) * b.x + bf16_hi(q.z) * b.y + bf16_lo(q.w) * b.z + bf16_hi(q.w) * b.w;
}

// Lane-partial dot products of R row pairs (pairs i0 .. i0 + R - 1; a pair past the
// tile's end repeats its last one and is dropped by the caller) with x, over share ``part``
// of S: the warp takes chunk blocks of 32 U chunks round-robin with the S - 1 other warps
// of its group. Each lane loads U 16-byte chunks of every row before it multiplies them
// (loads in flight; R, U, S are the kernel knobs rows_per_warp, unroll and k_split, or the
// LM head's lm_* pair with S = 1). For S = 1 each row is summed chunk by chunk in the same
// order whatever R and U. Q8: int8 rows, each chunk's sum times its scale (gemv_int8.cuh).
template <int NSEG, bool Q8, int R, int U, int S>
__device__ __forceinline__ void rows_dot(const Ctx& c, const GemvTile& t, int i0, int lane,
                                         int part, float (&y)[NSEG][R]) {
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
      w[s][r] = staged[s][r] ? reinterpret_cast<const uint4*>(c.stage) + (size_t)li * cpr
                             : reinterpret_cast<const uint4*>(
                                   reinterpret_cast<const unsigned char*>(t.w) +
                                   (size_t)tile_row(t, li) * t.row_bytes);
      sc[s][r] = Q8 ? t.scale + (size_t)tile_row(t, li) * t.spr : nullptr;
      y[s][r] = 0.f;
    }
  }
  for (int ch0 = lane + 32 * U * part; ch0 < cpr; ch0 += 32 * U * S) {
    uint4 q[U][NSEG][R];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int ch = ch0 + 32 * u;
      if (ch >= cpr) break;
#pragma unroll
      for (int s = 0; s < NSEG; ++s)
#pragma unroll
        for (int r = 0; r < R; ++r) q[u][s][r] = staged[s][r] ? w[s][r][ch] : ldg_weights(w[s][r] + ch);
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int ch = ch0 + 32 * u;
      if (ch >= cpr) break;
      if constexpr (Q8) {
        const int g = chunk_group(t, ch);
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

// Pair i of a QKV tile -> (head of [q; k; v], pair in the head): qkv_rope tiles hold pairs
// P0.. of head HEAD; qkv_span tiles hold flattened pairs P0.. of all heads (f -> head
// f / (D/2), pair f % (D/2)).
__device__ __forceinline__ int2 qkv_pair(const int* rec, int i) {
  if (rec[G::EPI] == enc::EPI_QKV_ROPE) return make_int2(rec[G::HEAD], rec[G::P0] + i);
  const int half = rec[G::HEAD_DIM] / 2, f = rec[G::P0] + i;
  return make_int2(f / half, f % half);
}

// QKV epilogue: pair p of head ``head`` of [q; k; v]; RoPE (cs, sn: the pair's angle) on q
// and k, k/v appended.
__device__ void qkv_rope_store(const Ctx& c, const int* rec, int head, int p, float lo,
                               float hi, float cs, float sn) {
  const int heads = rec[G::HEADS], kvh = rec[G::KV_HEADS];
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

// Pair i's results y0 (and y1 of a second segment): the fused epilogue, by one thread.
// Pair i's epilogue operands are c.epi[i] and c.epi[n0 + i] (gemv_prologue).
template <int NSEG>
__device__ __forceinline__ void gemv_store(const Ctx& c, const int* rec, const GemvTile& t,
                                           int i, float y0, float y1, float& best,
                                           int& best_i) {
  float* dst = f32(c, rec[G::DST]);
  const int r0 = t.s0a + i, r1 = t.s1a + i;
  const float e0 = t.epi_n ? c.epi[i] : 0.f, e1 = t.epi_n > t.n0 ? c.epi[t.n0 + i] : 0.f;
  switch (rec[G::EPI]) {
    case enc::EPI_STORE:
      dst[r0] = y0;
      if (NSEG == 2) dst[r1] = y1;
      break;
    case enc::EPI_RESIDUAL:
      dst[r0] = e0 + y0;
      if (NSEG == 2) dst[r1] = e1 + y1;
      if (cfg::kFuseDown && rec[G::COPY] >= 0) {  // fuse_down: the start of the vector the gate/up tiles add to
        float* copy = f32(c, rec[G::COPY]);
        copy[r0] = e0 + y0;
        if (NSEG == 2) copy[r1] = e1 + y1;
      }
      break;
    case enc::EPI_SILU_MUL:
      dst[r0] = silu(y0) * y1;
      break;
    case enc::EPI_SILU_DOWN:  // the act value, for down_accumulate after the rows
      // (compiled in only with fuse_down: in every tile shape's store, it added ~900 PTX
      // lines to every build, BENCHMARKS.md, tenth round)
      if constexpr (cfg::kFuseDown) c.epi[i] = silu(y0) * y1;
      break;
    case enc::EPI_QKV_ROPE:
    case enc::EPI_QKV_SPAN: {
      const int2 hp = qkv_pair(rec, i);
      qkv_rope_store(c, rec, hp.x, hp.y, y0, y1, e0, e1);
      break;
    }
    case enc::EPI_LOGITS_ARGMAX:
      dst[(size_t)c.step * rec[G::VOCAB] + r0] = y0;
      better(best, best_i, y0, r0);
      break;
  }
}

// The tile's rows. Warps form groups of S (k_split); group q takes pairs [q R, q R + R),
// then every (kWarps / S) R pairs further, each warp of the group a share of K. ``inv``:
// the folded RMSNorm's 1 / rms (1 without a norm). S > 1: each round the warps leave their
// sums in c.part (double-buffered by round parity, so one barrier a round suffices: a
// buffer is rewritten two rounds later, after the next round's barrier, which every
// reader of it has passed), and the group's first warp adds them in warp order.
template <int NSEG, int R, int U, int S>
__device__ __forceinline__ void gemv_rows(const Ctx& c, const int* rec, const GemvTile& t,
                                          float inv, float& best, int& best_i) {
  static_assert(kWarps % S == 0, "k_split must divide the warps of a block");
  constexpr int kGroups = kWarps / S;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, part = warp % S;
  const int rounds = (t.n0 + kGroups * R - 1) / (kGroups * R);  // the same in every warp
  for (int round = 0; round < rounds; ++round) {
    const int i0 = (round * kGroups + warp / S) * R;
    if (S == 1 && i0 >= t.n0) break;
    float y[NSEG][R];
    if (t.q8) {
      rows_dot<NSEG, true, R, U, S>(c, t, i0, lane, part, y);
    } else {
      rows_dot<NSEG, false, R, U, S>(c, t, i0, lane, part, y);
    }
#pragma unroll
    for (int s = 0; s < NSEG; ++s)
#pragma unroll
      for (int r = 0; r < R; ++r) y[s][r] = warp_sum(y[s][r]);
    if (S > 1) {
      float* buf = c.part + (round & 1) * (kWarps * NSEG * R);  // [warp][seg][r]
      if (lane == 0)
#pragma unroll
        for (int s = 0; s < NSEG; ++s)
#pragma unroll
          for (int r = 0; r < R; ++r) buf[(warp * NSEG + s) * R + r] = y[s][r];
      __syncthreads();
      if (part != 0) continue;
#pragma unroll
      for (int s = 0; s < NSEG; ++s)
#pragma unroll
        for (int r = 0; r < R; ++r) {
          float v = 0.f;
          for (int q = warp; q < warp + S; ++q) v += buf[(q * NSEG + s) * R + r];
          y[s][r] = v;
        }
    }
    if (lane != 0) continue;
#pragma unroll
    for (int r = 0; r < R; ++r)
      if (i0 + r < t.n0)
        gemv_store<NSEG>(c, rec, t, i0 + r, y[0][r] * inv, NSEG == 2 ? y[NSEG - 1][r] * inv : 0.f,
                         best, best_i);
  }
}

// A tile's rows through a cp.async ring of D stages (the LM head: cfg::kLmRing; a layer
// tile too big for its slot: cfg::kRing, two-segment tiles only with cfg::kRingPairs):
// warp w takes pairs [w R, w R + R), then every kWarps R further, like gemv_rows with
// S = 1, but its loads go to its own [D][NSEG][R][32] 16-byte ring in the task's slot, so
// D NSEG R loads per lane stay in flight across chunk blocks and rows without registers
// to hold them. The warp's items (RingWalk) are fetched D - 1 ahead of the consumer, one
// cp.async group per item. A lane copies and reads back only its own ring entries, so its
// cp.async.wait_group is the only ordering needed; a stage is refilled one item after its
// values were used (the FMAs consumed them before the copy issues). The groups committed
// here are younger than the prefetched weights' groups and all are waited for, so the
// megakernel's group accounting still holds after the task.
//
// Prefilled (cfg::kRingPrefill): gemv_stage issued items 0 .. D - 2 (each lane its own
// entries, as the fetcher would) into the task's weight group, which cp_async_wait_own()
// waited for before the prologue, whose __syncthreads() published it. So the fetcher starts
// at item D - 1 and those items are read without a wait: a wait_group(D - 1) there would
// only stall on older groups (the later tasks' prefetched weights). From item D - 1 on,
// the D - 1 groups committed after an item's own are the later items', so wait_group(D - 1)
// is exact again (and drains those older groups, as item 0 does without a prefill).
template <int NSEG, bool Q8, int R, int D>
__device__ __forceinline__ void rows_ring(const Ctx& c, const int* rec, const GemvTile& t,
                                          float inv, float& best, int& best_i) {
  constexpr int kPrefilled = cfg::kRingPrefill ? D - 1 : 0;  // leading items not waited for
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const float4* x = reinterpret_cast<const float4*>(c.x);
  RingWalk<NSEG, R, D> fetch(t, c.stage);
  const int cpr = fetch.cpr, nb = fetch.nb;
  for (int k = 0; k < D - 1; ++k) {
    if constexpr (kPrefilled > 0) {
      fetch.skip(t);
    } else {
      fetch.issue(t);
      cp_async_commit();
    }
  }
  float y[NSEG][R];
#pragma unroll
  for (int s = 0; s < NSEG; ++s)
#pragma unroll
    for (int r = 0; r < R; ++r) y[s][r] = 0.f;
  int b = 0, stage = 0, item = 0;
  for (int i0 = warp * R; i0 < t.n0; ++item) {
    fetch.issue(t);
    cp_async_commit();
    if (kPrefilled == 0 || item >= kPrefilled)
      asm volatile("cp.async.wait_group %0;" ::"n"(D - 1) : "memory");  // this item landed
    const int ch = b * 32 + lane;
    if (ch < cpr) {
      if constexpr (Q8) {
        const int g = chunk_group(t, ch);
#pragma unroll
        for (int s = 0; s < NSEG; ++s)
#pragma unroll
          for (int r = 0; r < R; ++r)
            y[s][r] += dot16_i8(*fetch.at(stage, s, r), x + 4 * ch) *
                       __ldg(t.scale + (size_t)pair_row(t, s, i0, r) * t.spr + g);
      } else {
        const float4 xa = x[2 * ch], xb = x[2 * ch + 1];
#pragma unroll
        for (int s = 0; s < NSEG; ++s)
#pragma unroll
          for (int r = 0; r < R; ++r) y[s][r] += dot8(*fetch.at(stage, s, r), xa, xb);
      }
    }
    stage = stage == D - 1 ? 0 : stage + 1;
    if (++b < nb) continue;
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const float y0 = warp_sum(y[0][r]) * inv;
      const float y1 = NSEG == 2 ? warp_sum(y[NSEG - 1][r]) * inv : 0.f;
#pragma unroll
      for (int s = 0; s < NSEG; ++s) y[s][r] = 0.f;
      if (lane == 0 && i0 + r < t.n0) gemv_store<NSEG>(c, rec, t, i0 + r, y0, y1, best, best_i);
    }
    b = 0;
    i0 += kWarps * R;
  }
}

// Epilogue operand i < t.epi_n: residual row tile_row(t, i), or the RoPE angle of the
// tile's pair i (qkv_pair): its cosine (i < n0), then its sine.
__device__ __forceinline__ float epi_operand(const Ctx& c, const int* rec, const GemvTile& t,
                                             int i) {
  if (rec[G::EPI] == enc::EPI_RESIDUAL) return vec_at(c, rec, G::RES_KIND, tile_row(t, i));
  const int pos = c.position + c.step;
  return i < t.n0 ? rope_cos(c, pos, qkv_pair(rec, i).y)
                  : rope_sin(c, pos, qkv_pair(rec, i - t.n0).y);
}

// Input vector x of a ``buffer`` / ``embed`` source into c.x, times the folded norm
// weight nw when NORM (each warp's sum of x^2 into c.red[warp]). Every load is in flight
// before the first store. PER: elements per thread, the longest such vector.
template <int PER, bool NORM>
__device__ __forceinline__ void load_direct(const Ctx& c, int kind, int n, int b,
                                            const unsigned short* nw) {
  const float* src = f32(c, b);
  const unsigned short* row = w16(c, b) + (size_t)(kind == enc::SRC_EMBED ? step_token(c) : 0) * n;
  float v[PER], w[PER];
#pragma unroll
  for (int j = 0; j < PER; ++j) {
    const int i = threadIdx.x + j * cfg::kThreads;
    if (i < n) {
      v[j] = kind == enc::SRC_EMBED ? bf16(row[i]) : src[i];
      w[j] = NORM ? bf16(nw[i]) : 1.f;
    }
  }
  float ss = 0.f;
#pragma unroll
  for (int j = 0; j < PER; ++j) {
    const int i = threadIdx.x + j * cfg::kThreads;
    if (i < n) {
      ss += v[j] * v[j];
      c.x[i] = NORM ? w[j] * v[j] : v[j];
    }
  }
  if (NORM) {
    ss = warp_sum(ss);
    if ((threadIdx.x & 31) == 0) c.red[threadIdx.x >> 5] = ss;
  }
}

// Input vector (times the folded norm weight) into c.x and epilogue operands into c.epi,
// in one batch of loads; ends with __syncthreads(), which also publishes the staged
// weights. Returns the norm's 1 / rms(x), or 1.
__device__ float gemv_prologue(const Ctx& c, const int* rec, const GemvTile& t) {
  constexpr int kE = (cfg::kEpiFloats + cfg::kThreads - 1) / cfg::kThreads;
  constexpr int kNormPer = cfg::kNormVec > 0 ? (cfg::kNormVec + cfg::kThreads - 1) / cfg::kThreads : 1;
  const int kind = rec[G::SRC_KIND], n = rec[G::SRC_KIND + 1], b = rec[G::SRC_KIND + 2];
  const bool direct = kind == enc::SRC_BUFFER || kind == enc::SRC_EMBED;
  const bool norm = rec[G::NORM] >= 0, folded = norm && direct && n <= cfg::kNormVec;
  float ev[kE];
#pragma unroll
  for (int j = 0; j < kE; ++j) {
    const int i = threadIdx.x + j * cfg::kThreads;
    if (i < t.epi_n) ev[j] = epi_operand(c, rec, t, i);
    else if (i < t.epi_n + t.cp_n) ev[j] = vec_at(c, rec, G::CP_KIND, rec[G::CP_R0] + i - t.epi_n);
  }
  if (folded) {
    load_direct<kNormPer, true>(c, kind, n, b, w16(c, rec[G::NORM]));
  } else if (direct && !norm) {
    load_direct<(cfg::kMaxVec + cfg::kThreads - 1) / cfg::kThreads, false>(c, kind, n, b, nullptr);
  } else {  // flash-decoding partials (merged by load_vec), or a norm the kernel cannot fold
    load_vec(c, rec, G::SRC_KIND, c.x);
    if (norm) rmsnorm_inplace(c, c.x, t.k, w16(c, rec[G::NORM]));
  }
#pragma unroll
  for (int j = 0; j < kE; ++j) {
    const int i = threadIdx.x + j * cfg::kThreads;
    if (i < t.epi_n + t.cp_n) c.epi[i] = ev[j];
  }
  __syncthreads();
  if (!folded) return 1.f;
  float total = 0.f;
  for (int w = 0; w < kWarps; ++w) total += c.red[w];
  return 1.0f / sqrtf(total / (float)n + cfg::kRmsEps);
}

// dst[j] += a_j (N floats, N a multiple of 4) with atomic adds: vector reductions on sm_90.
template <int N>
__device__ __forceinline__ void red_add(float* dst, const float (&a)[N]) {
#if __CUDA_ARCH__ >= 900
#pragma unroll
  for (int h = 0; h < N; h += 4)
    asm volatile("red.global.add.v4.f32 [%0], {%1, %2, %3, %4};"
                 ::"l"(dst + h), "f"(a[h]), "f"(a[h + 1]), "f"(a[h + 2]), "f"(a[h + 3])
                 : "memory");
#else
#pragma unroll
  for (int h = 0; h < N; ++h) atomicAdd(dst + h, a[h]);
#endif
}

// a (8 floats) += s * the 8 bf16 of q.
__device__ __forceinline__ void axpy8(float (&a)[8], float s, uint4 q) {
  a[0] += s * bf16_lo(q.x); a[1] += s * bf16_hi(q.x);
  a[2] += s * bf16_lo(q.y); a[3] += s * bf16_hi(q.y);
  a[4] += s * bf16_lo(q.z); a[5] += s * bf16_hi(q.z);
  a[6] += s * bf16_lo(q.w); a[7] += s * bf16_hi(q.w);
}

constexpr int kDownInFlight = 8;  // 16-byte down loads in flight per thread

// The row groups of down_accumulate: as many as the threads allow (each thread one 16-byte
// column chunk of one group), and as c.x holds the sums of all but one (N floats a chunk).
// c.x is free once the rows are done; it holds at least one output vector.
template <int N>
__device__ __forceinline__ int down_groups(int chunks) {
  const int by_threads = cfg::kThreads / chunks, by_smem = 1 + cfg::kMaxVec / (chunks * N);
  const int g = by_threads < by_smem ? by_threads : by_smem;
  return g > 0 ? g : 1;
}

// dst[N j .. N j + N) += thread (j, g)'s sums s, for every thread k = g * chunks + j below
// chunks * groups. With groups > 1 (then one (j, g) per thread) the groups but the first
// leave theirs in c.x, and group 0 adds them up: a block adds each column once, since
// every block's adds go to the same few cache lines and queue there (the hop after them
// grew by 5 us, BENCHMARKS.md, tenth round). Every thread of the block calls it.
template <int N>
__device__ __forceinline__ void add_down_sums(const Ctx& c, float* dst, float (&s)[N], int k,
                                              int chunks, int groups) {
  const int j = k % chunks, g = k / chunks;
  if (groups == 1) {
    if (k < chunks) red_add<N>(dst + N * j, s);
    return;
  }
  float4* part = reinterpret_cast<float4*>(c.x) + (N / 4) * j;  // group g's: + (g-1) chunks
  if (g > 0 && g < groups) {
#pragma unroll
    for (int h = 0; h < N / 4; ++h)
      part[(g - 1) * chunks * (N / 4) + h] = make_float4(s[4 * h], s[4 * h + 1],
                                                         s[4 * h + 2], s[4 * h + 3]);
  }
  __syncthreads();
  if (g != 0) return;
  for (int o = 1; o < groups; ++o) {
#pragma unroll
    for (int h = 0; h < N / 4; ++h) {
      const float4 v = part[(o - 1) * chunks * (N / 4) + h];
      s[4 * h] += v.x; s[4 * h + 1] += v.y; s[4 * h + 2] += v.z; s[4 * h + 3] += v.w;
    }
  }
  red_add<N>(dst + N * j, s);
}

// down_accumulate's sums over the n0 transposed rows at ``w`` (global or the slot).
template <bool GLOBAL>
__device__ __forceinline__ void down_sums(const Ctx& c, const int* rec, const GemvTile& t,
                                          const uint4* w, int chunks, int groups) {
  float* dst = f32(c, rec[G::DST]);
  // a uniform trip count: add_down_sums may hold a barrier
  for (int k0 = 0; k0 < chunks * groups; k0 += cfg::kThreads) {
    const int k = k0 + threadIdx.x, j = k % chunks, g = k / chunks;
    float acc[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
    for (int i0 = g; k < chunks * groups && i0 < t.n0; i0 += groups * kDownInFlight) {
      uint4 q[kDownInFlight];
#pragma unroll
      for (int u = 0; u < kDownInFlight; ++u) {
        const int i = i0 + u * groups;
        if (i < t.n0) q[u] = GLOBAL ? ldg_weights(w + (size_t)i * chunks + j)
                                    : w[(size_t)i * chunks + j];
      }
#pragma unroll
      for (int u = 0; u < kDownInFlight; ++u) {
        const int i = i0 + u * groups;
        if (i < t.n0) axpy8(acc, c.epi[i], q[u]);
      }
    }
    add_down_sums<8>(c, dst, acc, k, chunks, groups);
  }
}

// tot[e] += acc[e] times column (col + e)'s scale of scale group sg; acc is cleared.
__device__ __forceinline__ void flush16(float (&tot)[16], float (&acc)[16], const float* scale,
                                        int col, int sgroups, int sg) {
#pragma unroll
  for (int e = 0; e < 16; ++e) {
    tot[e] += acc[e] * __ldg(scale + (size_t)(col + e) * sgroups + sg);
    acc[e] = 0.f;
  }
}

// down_sums for int8 codes: thread (j, g) takes 16 columns j (one 16-byte load of codes) of
// rows g, g + G, ...; the sums of each run of rows that share a scale group (intermediate
// index / down_group) are multiplied by their columns' scales ([hidden][I / down_group],
// L{l}.wd's) when the run ends.
template <bool GLOBAL>
__device__ __forceinline__ void down_sums_i8(const Ctx& c, const int* rec, const GemvTile& t,
                                             const uint4* w, int chunks, int groups) {
  float* dst = f32(c, rec[G::DST]);
  const float* scale = f32(c, rec[G::DOWN_SCALE]);
  const int qg = rec[G::DOWN_GROUP], sgroups = rec[G::DOWN_SPR];
  for (int k0 = 0; k0 < chunks * groups; k0 += cfg::kThreads) {  // uniform, as down_sums
    const int k = k0 + threadIdx.x, j = k % chunks, g = k / chunks;
    float acc[16], tot[16];
#pragma unroll
    for (int e = 0; e < 16; ++e) acc[e] = tot[e] = 0.f;
    int cur = -1;  // the scale group acc holds
    for (int i0 = g; k < chunks * groups && i0 < t.n0; i0 += groups * kDownInFlight) {
      uint4 q[kDownInFlight];
#pragma unroll
      for (int u = 0; u < kDownInFlight; ++u) {
        const int i = i0 + u * groups;
        if (i < t.n0) q[u] = GLOBAL ? ldg_weights(w + (size_t)i * chunks + j)
                                    : w[(size_t)i * chunks + j];
      }
#pragma unroll
      for (int u = 0; u < kDownInFlight; ++u) {
        const int i = i0 + u * groups;
        if (i >= t.n0) break;
        const int sg = (t.s0a + i) / qg;
        if (sg != cur) {
          if (cur >= 0) flush16(tot, acc, scale, 16 * j, sgroups, cur);
          cur = sg;
        }
        const float a = c.epi[i];
        const unsigned words[4] = {q[u].x ^ 0x80808080u, q[u].y ^ 0x80808080u,
                                   q[u].z ^ 0x80808080u, q[u].w ^ 0x80808080u};
#pragma unroll
        for (int e = 0; e < 16; ++e)
          acc[e] += a * i8_to_f32(words[e / 4], 0x7540u + (unsigned)(e % 4));
      }
    }
    if (cur >= 0) flush16(tot, acc, scale, 16 * j, sgroups, cur);
    add_down_sums<16>(c, dst, tot, k, chunks, groups);
  }
}

// silu_down, after the rows (their act values in c.epi): dst += act @ down_t[s0a .. s0a + n0],
// from the slot when stage_tile put the rows there (down_staged), else from global (L2).
// The transposed rows are contiguous, so thread (j, g) takes 16 bytes of columns j of every
// row g, g + G, ... (G: down_groups), kDownInFlight loads in flight, and the block adds its
// sums into dst atomically (add_down_sums). The adds are relaxed atomics; the task's signal
// after the block's barrier releases them like plain stores.
__device__ void down_accumulate(const Ctx& c, const int* rec, const GemvTile& t) {
  __syncthreads();  // every warp's act values are in c.epi; the rows are done with c.x
  const int chunks = (int)down_row_bytes(rec, t) / 16;  // 16-byte loads per row
  const bool in_slot = down_staged(rec, t);
  const uint4* w = reinterpret_cast<const uint4*>(
      in_slot ? c.stage + (size_t)t.staged * t.row_bytes : down_rows(c, rec, t));
  if (t.q8) {  // each dtype's sums compiled in only when the program has them (registers)
    if constexpr (cfg::kFuseDownInt8) {
      const int groups = down_groups<16>(chunks);
      if (in_slot) down_sums_i8<false>(c, rec, t, w, chunks, groups);
      else down_sums_i8<true>(c, rec, t, w, chunks, groups);
    }
  } else if constexpr (cfg::kFuseDownBf16) {
    const int groups = down_groups<8>(chunks);
    if (in_slot) down_sums<false>(c, rec, t, w, chunks, groups);
    else down_sums<true>(c, rec, t, w, chunks, groups);
  }
}

// A tile's rows: through its ring (D > 0 stages, t.ring), else from the slot and
// registers.
template <int NSEG, int R, int U, int S, int D>
__device__ __forceinline__ void tile_rows(const Ctx& c, const int* rec, const GemvTile& t,
                                          float inv, float& best, int& best_i) {
  if constexpr (D > 0) {
    if (t.ring) {
      if (t.q8) {
        rows_ring<NSEG, true, R, D>(c, rec, t, inv, best, best_i);
      } else {
        rows_ring<NSEG, false, R, D>(c, rec, t, inv, best, best_i);
      }
      return;
    }
  }
  gemv_rows<NSEG, R, U, S>(c, rec, t, inv, best, best_i);
}

// The tile's rows with its shape (gemv_run).
struct RunRows {
  const Ctx& c;
  const int* rec;
  const GemvTile& t;
  float inv;
  float& best;
  int& best_i;
  template <class Sh>
  __device__ __forceinline__ void operator()(Sh) const {
    tile_rows<Sh::NSEG, Sh::R, Sh::U, Sh::S, Sh::D>(c, rec, t, inv, best, best_i);
  }
};

__device__ void gemv_run(const Ctx& c, const int* rec) {
  const GemvTile t = gemv_tile(c, rec);
  cp_async_wait_own();
  if (cfg::kBulkStage && !prefills_ring(t)) mbar_wait(c.mbar, c.mbar_parity);  // staged rows
  phase(c, 3);
  const float inv = gemv_prologue(c, rec, t);
  phase(c, 4);

  float best = neg_inf();
  int best_i = 0x7fffffff;
  with_tile_shape(rec, t, RunRows{c, rec, t, inv, best, best_i});
  if (cfg::kFuseDown && rec[G::EPI] == enc::EPI_SILU_DOWN) down_accumulate(c, rec, t);
  if (t.cp_n > 0) {  // fuse_o: the row copy, loaded by the prologue after the operands
    float* d0 = f32(c, rec[G::CP_DST0]);
    float* d1 = rec[G::CP_DST1] >= 0 ? f32(c, rec[G::CP_DST1]) : nullptr;
    for (int i = threadIdx.x; i < t.cp_n; i += cfg::kThreads) {
      const float v = c.epi[t.epi_n + i];
      d0[rec[G::CP_R0] + i] = v;
      if (d1) d1[rec[G::CP_R0] + i] = v;
    }
  }
  phase(c, 5);
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
