// The unfused stages (instructions/unfused.py): one task for a whole vector each, emitted
// only when a fusion knob is off.
#pragma once

namespace amk {

__device__ void rmsnorm_run(const Ctx& c, const int* rec) {
  namespace F = enc::rmsnorm;
  const int n = rec[F::SRC_N];
  load_vec(c, rec, F::SRC_KIND, c.x);
  rmsnorm_inplace(c, c.x, n, w16(c, rec[F::WEIGHT]));
  float* dst = f32(c, rec[F::DST]);
  for (int i = threadIdx.x; i < n; i += cfg::kThreads) dst[i] = c.x[i];
}

// RoPE on the group's query heads and its key head from the raw [q; k; v] vector; the key
// and value rows appended to the caches at this step's position.
__device__ void rope_append_run(const Ctx& c, const int* rec) {
  namespace F = enc::rope_append;
  const int g = rec[F::GROUP], heads = rec[F::HEADS], kvh = rec[F::KV_HEADS];
  const int d = rec[F::HEAD_DIM], half = d / 2, G = heads / kvh, pos = c.position + c.step;
  const float* src = f32(c, rec[F::SRC]);
  float* q = f32(c, rec[F::Q]);
  const size_t row = ((size_t)g * rec[F::MAX_SEQ] + pos) * d;
  float* k = f32(c, rec[F::K_CACHE]) + row;
  float* v = f32(c, rec[F::V_CACHE]) + row;
  // G query heads then the key head: (G + 1) * half rotated pairs; then d value copies
  const int pairs = (G + 1) * half;
  for (int e = threadIdx.x; e < pairs; e += cfg::kThreads) {
    const int j = e / half, p = e - j * half;
    const int head = j < G ? g * G + j : heads + g;
    const float lo = src[(size_t)head * d + p], hi = src[(size_t)head * d + half + p];
    const float cs = rope_cos(c, pos, p), sn = rope_sin(c, pos, p);
    float* out = j < G ? q + (size_t)head * d : k;
    out[p] = lo * cs - hi * sn;
    out[half + p] = hi * cs + lo * sn;
  }
  const float* vs = src + (size_t)(heads + kvh + g) * d;
  for (int i = threadIdx.x; i < d; i += cfg::kThreads) v[i] = vs[i];
}

__device__ void residual_add_run(const Ctx& c, const int* rec) {
  namespace F = enc::residual_add;
  const int n = rec[F::RES_N];
  const float* src = f32(c, rec[F::SRC]);
  float* dst = f32(c, rec[F::DST]);
  for (int i = threadIdx.x; i < n; i += cfg::kThreads)
    dst[i] = vec_at(c, rec, F::RES_KIND, i) + src[i];
}

__device__ void silu_mul_run(const Ctx& c, const int* rec) {
  namespace F = enc::silu_mul;
  const int n = rec[F::N];
  const float* src = f32(c, rec[F::SRC]);
  float* dst = f32(c, rec[F::DST]);
  for (int i = threadIdx.x; i < n; i += cfg::kThreads) dst[i] = silu(src[i]) * src[n + i];
}

}  // namespace amk
