// Epoch counters between blocks: acquire spin, release signal, and the device watchdog.
//
// A wait passes in step s when counters[c] >= s * per_step + value (PROGRAM_FORMAT.md).
// Only thread 0 of a block spins; __syncthreads() then publishes what it acquired to the
// rest of the block (acquire by one thread + CTA barrier = happens-before for all).
#pragma once

namespace amk {

__device__ __forceinline__ int ld_acquire_gpu(const int* p) {
  int v;
  asm volatile("ld.acquire.gpu.global.s32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}

__device__ __forceinline__ int ld_relaxed_gpu(const int* p) {
  int v;
  asm volatile("ld.relaxed.gpu.global.s32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}

__device__ __forceinline__ void red_release_gpu(int* p, int v) {
  asm volatile("red.release.gpu.global.add.s32 [%0], %1;" ::"l"(p), "r"(v) : "memory");
}

__device__ __forceinline__ unsigned long long global_ns() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

// Record the first failure of the launch; later failures keep the first record.
__device__ __forceinline__ void report_error(int* err, int code, int task, int counter, int need,
                                             int seen, int step) {
  if (atomicCAS(err + enc::ERRF_CODE, 0, code) == 0) {
    err[enc::ERRF_TASK] = task;
    err[enc::ERRF_COUNTER] = counter;
    err[enc::ERRF_NEED] = need;
    err[enc::ERRF_SEEN] = seen;
    err[enc::ERRF_STEP] = step;
    err[enc::ERRF_BLOCK] = blockIdx.x;
    __threadfence();
  }
}

// What this block waited for when the launch stopped (the host lists every stuck block).
__device__ __forceinline__ void report_stuck(int* stuck, const int* rec, int counter, int need,
                                             int seen, int step) {
  int* s = stuck + (size_t)blockIdx.x * enc::kStuckInts;
  s[enc::STUCK_TASK] = rec[enc::F_TASK];
  s[enc::STUCK_COUNTER] = counter;
  s[enc::STUCK_NEED] = need;
  s[enc::STUCK_SEEN] = seen;
  s[enc::STUCK_STEP] = step;
}

// Thread 0 only. Spins until every wait of the record passes. Returns false when the
// launch must stop: this wait ran past the watchdog bound (the error record then names the
// task and counter), or another block already failed. The error flag is read only on the
// slow path, so a wait that passes at once costs one acquire load.
__device__ bool wait_all(const int* rec, int step, const int* counters, int* err, int* stuck,
                         long long watchdog_ns) {
  const int n = rec[enc::F_N_WAIT];
  for (int i = 0; i < n; ++i) {
    const int c = rec[enc::F_W0_COUNTER + 3 * i];
    const int need = step * rec[enc::F_W0_PER_STEP + 3 * i] + rec[enc::F_W0_VALUE + 3 * i];
    int seen = ld_acquire_gpu(counters + c);
    if (seen >= need) continue;
    const unsigned long long start = global_ns();
    unsigned sleep = 0;
    while ((seen = ld_acquire_gpu(counters + c)) < need) {
      if (ld_relaxed_gpu(err + enc::ERRF_CODE) != 0) {
        report_stuck(stuck, rec, c, need, seen, step);
        return false;
      }
      if ((long long)(global_ns() - start) > watchdog_ns) {
        report_error(err, enc::ERR_WATCHDOG, rec[enc::F_TASK], c, need, seen, step);
        report_stuck(stuck, rec, c, need, seen, step);
        return false;
      }
      if (sleep) __nanosleep(sleep);
      // short back-off (kernel knob spin_sleep_ns; 0 = pure spin): a hop costs ~1 us anyway
      sleep = sleep + 16 < cfg::kSpinSleepNs ? sleep + 16 : cfg::kSpinSleepNs;
    }
  }
  return true;
}

// Thread 0 only, after a __syncthreads() that ends the task. No fence is needed: in the
// PTX memory model the CTA barrier puts every thread's writes in causality order before
// thread 0's gpu-scope release, and causality order is transitive, so a consumer whose
// acquire reads the counter sees them (the barrier + single-thread release pattern).
__device__ __forceinline__ void signal_all(const int* rec, int* counters) {
  const int n = rec[enc::F_N_SIGNAL];
  for (int i = 0; i < n; ++i)
    red_release_gpu(counters + rec[enc::F_S0_COUNTER + 2 * i], rec[enc::F_S0_ADD + 2 * i]);
}

}  // namespace amk
