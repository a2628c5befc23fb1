// The step's token (instructions/token.py): its signal publishes tokens[step] to layer 0.
// A token outside the vocabulary (never written, or a bad host token) fails the launch.
#pragma once

namespace amk {

// Returns false (thread 0's verdict, uniform after the caller's barrier) on a bad token.
__device__ bool token_run(const Ctx& c, const int* rec, int* err) {
  if (threadIdx.x != 0) return true;
  const int tok = step_token(c);
  if (tok < 0 || tok >= rec[enc::token::VOCAB]) {
    report_error(err, enc::ERR_BAD_TOKEN, rec[enc::F_TASK], -1, rec[enc::token::VOCAB], tok,
                 c.step);
    return false;
  }
  return true;
}

}  // namespace amk
