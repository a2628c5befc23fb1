// Greedy sampling (instructions/argmax.py): the step's token from the LM-head partials
// (tiles > 0) or from the full logits row (tiles == 0); larger value wins, then the lower
// index (torch.argmax). Writes out_tokens[step] and, unless the host forced it,
// tokens[step + 1]: the next step's embedding reads it (block 0's program order).
#pragma once

namespace amk {
namespace M = enc::argmax;

__device__ void argmax_run(const Ctx& c, const int* rec) {
  const int tiles = rec[M::TILES], vocab = rec[M::VOCAB];
  const float* src = f32(c, rec[M::SRC]);
  float best = neg_inf();
  int best_i = 0x7fffffff;
  if (tiles > 0) {
    for (int t = threadIdx.x; t < tiles; t += cfg::kThreads)
      better(best, best_i, src[2 * t], (int)src[2 * t + 1]);
  } else {
    const float* row = src + (size_t)c.step * vocab;
    for (int i = threadIdx.x; i < vocab; i += cfg::kThreads) better(best, best_i, row[i], i);
  }
  block_argmax(best, best_i, c.red);
  if (threadIdx.x == 0) {
    i32(c, enc::kBufOutTokens)[c.step] = best_i;
    if (c.step + 1 >= c.forced_upto) i32(c, enc::kBufTokens)[c.step + 1] = best_i;
  }
}

}  // namespace amk
