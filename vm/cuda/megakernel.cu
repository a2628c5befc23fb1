// The persistent megakernel: one cooperative launch, every block co-resident, block b runs
// queue b (records tasks[offsets[b] .. offsets[b+1])) once per decode step, ``steps`` times.
// A task: [GEMV: stage its weights] -> wait (acquire) -> run -> barrier -> signal (release).
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

extern "C" __global__ void __launch_bounds__(cfg::kThreads, cfg::kMinBlocksPerSm)
amk_megakernel(const int* __restrict__ tasks, const int* __restrict__ offsets,
               void* const* __restrict__ buffers, int* counters, int* err, int* stuck,
               const float* __restrict__ rope, int steps, int position, int forced_upto,
               long long watchdog_ns) {
  extern __shared__ __align__(16) unsigned char smem[];
  __shared__ int s_waited_out, s_failed;  // two flags: each write is a barrier after its reads
  amk::Ctx c;
  c.buf = buffers;
  c.rope = rope;
  c.stage = smem;
  c.x = reinterpret_cast<float*>(smem + cfg::kXOffset);
  c.red = reinterpret_cast<float*>(smem + cfg::kRedOffset);
  c.position = position;
  c.forced_upto = forced_upto;
  const int q0 = offsets[blockIdx.x], q1 = offsets[blockIdx.x + 1];

  for (int step = 0; step < steps; ++step) {
    c.step = step;
    for (int t = q0; t < q1; ++t) {
      const int* rec = tasks + (size_t)t * enc::kRecordInts;
      const int op = rec[enc::F_OP];
      if (op == enc::OP_GEMV) amk::gemv_stage(c, rec);  // weights before the wait
      if (threadIdx.x == 0) s_waited_out = !amk::wait_all(rec, step, counters, err, stuck, watchdog_ns);
      __syncthreads();
      if (s_waited_out) {
        amk::cp_async_wait_all();
        return;
      }
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
        default:
          if (threadIdx.x == 0) amk::report_error(err, enc::ERR_BAD_OP, t, -1, op, op, step);
          ok = false;
      }
      if (threadIdx.x == 0) s_failed = !ok;
      __syncthreads();  // the task's writes are done (and s_failed is published)
      if (s_failed) return;
      if (threadIdx.x == 0) amk::signal_all(rec, counters);
    }
  }
}
