// The persistent megakernel: one cooperative launch, every block co-resident, block b runs
// queue b (records tasks[offsets[b] .. offsets[b+1])) once per decode step, ``steps`` times.
// A task: wait (acquire) -> run -> barrier -> signal (release).
//
// Weight prefetch ring: shared memory holds cfg::kPrefetch slots of cfg::kSlotBytes. Task g
// (g counts the block's tasks over all steps) owns slot g % kPrefetch; its GEMV weights are
// issued as one cp.async group kPrefetch - 1 tasks before it runs, so while the block waits
// on task g's inputs the weights of tasks g .. g + kPrefetch - 1 stream in. A task that
// stages no weights (attention) uses its own slot as scratch: the slot's previous owner
// finished, its next is issued later.
//
// With cfg::kBulkStage (bulk_stage), a staged tile's rows come by TMA bulk copies instead:
// slot s has an mbarrier whose phase k is task g = s + k kPrefetch's use. issue() arrives on
// it once per task, expecting the bulk-copied bytes (0 for anything else), and the task
// waits on that phase's parity before its prologue (gemv_run). Those copies join no cp.async
// group.
//
// cp.async groups: before its wait, task g commits two groups, in this order: its own
// pre-wait copies (attention's complete cache rows, attention.cuh; empty otherwise), then
// the weights of task g + kPrefetch - 1 (empty when that is no GEMV). The prologue commits
// the same pairs for tasks 0 .. kPrefetch - 2. So "task g's weights landed" is always
// cp.async.wait_group(2 (kPrefetch - 1)) and "task g's own copies landed" wait_group(1).
// A GEMV's weights are its leading rows or, for a ringed tile with cfg::kRingPrefill, the
// first D - 1 items of its ring (gemv.cuh: gemv_stage): one group either way. rows_ring
// commits more groups while its task runs, and all of them have landed when it ends.
//
// Specialised per program by the generated "amk_config.cuh" (enc:: record layout from
// vm/encoding.py, cfg:: model/launch constants from vm/build.py); build.py inlines the
// includes below, so NVRTC sees one translation unit with no include path.
#include "amk_config.cuh"
#include "sync.cuh"
#include "common.cuh"
#include "token.cuh"
#include "gemv.cuh"
#include "attention.cuh"
#include "argmax.cuh"
#include "unfused.cuh"

namespace amk {

__device__ __forceinline__ unsigned char* slot(unsigned char* smem, int g) {
  return smem + (size_t)(g % cfg::kPrefetch) * cfg::kSlotBytes;
}
// cfg::kBulkStage: task g's slot's mbarrier, and the parity of its phase g / kPrefetch.
__device__ __forceinline__ unsigned long long* slot_mbar(unsigned long long* mbar, int g) {
  return mbar + g % cfg::kPrefetch;
}
__device__ __forceinline__ unsigned slot_parity(int g) {
  return (unsigned)(g / cfg::kPrefetch) & 1u;
}

// Before task g's wait: its own copies into its slot (attention's cache rows); commits.
__device__ __forceinline__ void stage_own(const Ctx& c, const int* rec) {
  if (rec[enc::F_OP] == enc::OP_ATTENTION) attention_stage(c, rec);
  if (cfg::kFuseO && rec[enc::F_OP] == enc::OP_ATTN_O) attn_o_stage(c, rec);
  cp_async_commit();
}

// Stage task g's weights into its slot (if it is a GEMV) and commit its group. With
// cfg::kBulkStage every use of a slot arrives once on its mbarrier (phase g / kPrefetch),
// expecting the bulk-copied rows' bytes, or none.
__device__ __forceinline__ void issue(const Ctx& c, unsigned char* smem, const int* tasks,
                                      int q0, int n, int total, int g,
                                      unsigned long long* mbar) {
  if (g < total) {
    const int* rec = tasks + (size_t)(q0 + g % n) * enc::kRecordInts;
    bool arrived = false;
    unsigned long long* m = slot_mbar(mbar, g);
    if (rec[enc::F_OP] == enc::OP_GEMV) arrived = gemv_stage(c, rec, slot(smem, g), m);
    if (cfg::kBulkStage && !arrived && threadIdx.x == 0) mbar_arrive_expect(m, 0);
  }
  cp_async_commit();
}

// A block leaving early (a wait timed out, a task failed) first lets the bulk copies of tasks
// g .. g + kPrefetch - 1 land: none may write into the shared memory of a finished block.
__device__ __forceinline__ void drain_bulk(unsigned long long* mbar, int g, int total) {
  if constexpr (cfg::kBulkStage)
    for (int j = g; j < g + cfg::kPrefetch && j < total; ++j)
      mbar_wait(slot_mbar(mbar, j), slot_parity(j));
}

// Trace builds only: task g's stamps (vm/build.py TRACE_STAMPS; 0-2 written here, the
// instruction's phases through phase()); nullptr otherwise.
__device__ __forceinline__ long long* task_trace(long long* trace, int stride, int g) {
  return cfg::kTrace ? trace + ((size_t)blockIdx.x * stride + g) * cfg::kTraceStamps : nullptr;
}

}  // namespace amk

extern "C" __global__ void __launch_bounds__(cfg::kThreads, cfg::kMinBlocksPerSm)
amk_megakernel(const int* __restrict__ tasks, const int* __restrict__ offsets,
               void* const* __restrict__ buffers, int* counters, int* err, int* stuck,
               const float* __restrict__ rope, int steps, int position, int forced_upto,
               long long watchdog_ns, long long* trace, int trace_stride) {
  extern __shared__ __align__(16) unsigned char smem[];
  __shared__ int s_waited_out, s_failed;  // two flags: each write is a barrier after its reads
  // The running task's record: copied while thread 0 waits, so the task's many field reads
  // are shared-memory loads instead of dependent global ones (thread 0 waits and signals
  // from the global copy: s_rec is rewritten by the next task while it signals).
  __shared__ int s_rec[enc::kRecordInts];
  __shared__ __align__(8) unsigned long long s_mbar[cfg::kPrefetch];  // cfg::kBulkStage
  amk::Ctx c;
  c.buf = buffers;
  c.rope = rope;
  c.x = reinterpret_cast<float*>(smem + cfg::kXOffset);
  c.red = reinterpret_cast<float*>(smem + cfg::kRedOffset);
  c.epi = reinterpret_cast<float*>(smem + cfg::kEpiOffset);
  c.part = reinterpret_cast<float*>(smem + cfg::kPartOffset);
  c.position = position;
  c.forced_upto = forced_upto;
  const int q0 = offsets[blockIdx.x], n = offsets[blockIdx.x + 1] - q0, total = steps * n;

  if (cfg::kBulkStage) {
    if (threadIdx.x == 0) {
      for (int i = 0; i < cfg::kPrefetch; ++i) amk::mbar_init(&s_mbar[i]);
      asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    }
    __syncthreads();
  }
  for (int g = 0; g < cfg::kPrefetch - 1; ++g) {
    amk::cp_async_commit();  // (tasks before the first have no own copies)
    amk::issue(c, smem, tasks, q0, n, total, g, s_mbar);
  }
  for (int g = 0; g < total; ++g) {
    const int step = g / n, t = q0 + g % n;
    const int* grec = tasks + (size_t)t * enc::kRecordInts;
    const int* rec = s_rec;
    c.step = step;
    c.stage = amk::slot(smem, g);
    c.mbar = amk::slot_mbar(s_mbar, g);
    c.mbar_parity = amk::slot_parity(g);
    c.trace = amk::task_trace(trace, trace_stride, g);
    amk::phase(c, 0);
    amk::stage_own(c, grec);
    amk::issue(c, smem, tasks, q0, n, total, g + cfg::kPrefetch - 1, s_mbar);  // run ahead
    for (int i = threadIdx.x; i < enc::kRecordInts; i += cfg::kThreads) s_rec[i] = grec[i];
    if (threadIdx.x == 0) s_waited_out = !amk::wait_all(grec, step, counters, err, stuck, watchdog_ns);
    __syncthreads();
    const int op = rec[enc::F_OP];
    if (s_waited_out) {
      amk::cp_async_wait_all();
      amk::drain_bulk(s_mbar, g, total);
      return;
    }
    amk::phase(c, 1);
    bool ok = true;
    switch (op) {
      case enc::OP_TOKEN: ok = amk::token_run(c, rec, err); break;
      case enc::OP_GEMV: amk::gemv_run(c, rec); break;
      case enc::OP_ATTENTION: amk::attention_run(c, rec); break;
      case enc::OP_ARGMAX: amk::argmax_run(c, rec); break;
      case enc::OP_RMSNORM: amk::rmsnorm_run(c, rec); break;
      case enc::OP_ROPE_APPEND: amk::rope_append_run(c, rec); break;
      case enc::OP_RESIDUAL_ADD: amk::residual_add_run(c, rec); break;
      case enc::OP_SILU_MUL: amk::silu_mul_run(c, rec); break;
      case enc::OP_ATTN_O:  // compiled in only when the program has it (cfg::kFuseO)
        if (cfg::kFuseO) {
          amk::attn_o_run(c, rec);
          break;
        }
        [[fallthrough]];
      default:
        if (threadIdx.x == 0) amk::report_error(err, enc::ERR_BAD_OP, t, -1, op, op, step);
        ok = false;
    }
    if (threadIdx.x == 0) s_failed = !ok;
    __syncthreads();  // the task's writes are done (and s_failed is published)
    if (s_failed) {
      amk::cp_async_wait_all();
      amk::drain_bulk(s_mbar, g, total);
      return;
    }
    amk::phase(c, 2);
    if (threadIdx.x == 0) amk::signal_all(grec, counters);
  }
  amk::cp_async_wait_all();  // copies issued for nothing must land before the block exits
}
