// int8 weights for the GEMV tile (W8A16, amk_tune/model/quantise.py): a weight row is K int8
// codes, and W = float(code) * scale, one float32 scale per (row, group of G codes); G is a
// multiple of 16, so the 16 codes of one 16-byte chunk share one scale. The codes are
// dequantised in registers: a chunk's 16 codes times x[16 ch .. 16 ch + 16) (fp32, shared
// memory) are summed in fp32, then multiplied by the chunk's scale (gemv.cuh's rows_dot).
//
// A code becomes a float without I2F: flipping its sign bit gives u = code + 128 in 0..255,
// PRMT places u in the low mantissa byte of 2^23 (0x4B0000uu == 2^23 + u, exactly), and one
// FADD of -(2^23 + 128) leaves the code, exactly.
#pragma once

namespace amk {

__device__ __forceinline__ float i8_to_f32(unsigned biased, unsigned selector) {
  return __uint_as_float(__byte_perm(biased, 0x4B000000u, selector)) - 8388736.0f;
}

// The 4 codes of word w (byte 0 first) dotted with a.
__device__ __forceinline__ float dot4_i8(unsigned w, float4 a) {
  const unsigned u = w ^ 0x80808080u;
  return i8_to_f32(u, 0x7540u) * a.x + i8_to_f32(u, 0x7541u) * a.y +
         i8_to_f32(u, 0x7542u) * a.z + i8_to_f32(u, 0x7543u) * a.w;
}

// The 16 codes of one chunk dotted with x[0 .. 16) (4 float4).
__device__ __forceinline__ float dot16_i8(uint4 q, const float4* x) {
  return dot4_i8(q.x, x[0]) + dot4_i8(q.y, x[1]) + dot4_i8(q.z, x[2]) + dot4_i8(q.w, x[3]);
}

}  // namespace amk
