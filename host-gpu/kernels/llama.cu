// CUDA kernels of the llama forward pass (sovra-gpu's CUDA backend).
//
// Compiled at run time by NVRTC for the device's architecture (sm_90 on
// Hopper); no CUDA headers are needed. Activations are f32; matrix products
// (cuBLAS) read bf16, so the kernels that feed a product write bf16.
// Weights stay in their GGUF blocks on the device and are decoded to bf16
// once at load by the `dequant_*` kernels.
//
// The KV cache is a pool of blocks of BLOCK_TOKENS positions, laid out like
// the CPU backend's: block -> layer -> {keys, values} -> slot -> kv_dim.

#define BLOCK_TOKENS 16

typedef unsigned short bf16;
typedef unsigned char u8;

__device__ __forceinline__ float bf16_to_f32(bf16 v) {
    return __uint_as_float(((unsigned int)v) << 16);
}

// Round to nearest even; NaN stays NaN.
__device__ __forceinline__ bf16 f32_to_bf16(float f) {
    unsigned int u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (bf16)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (bf16)(u >> 16);
}

__device__ __forceinline__ float f16_to_f32(unsigned short h) {
    unsigned int sign = (h & 0x8000u) << 16;
    unsigned int exp = (h >> 10) & 0x1fu;
    unsigned int mant = h & 0x3ffu;
    if (exp == 0) {
        // Zero or subnormal: mant * 2^-24.
        float v = (float)mant * 5.9604644775390625e-8f;
        return sign ? -v : v;
    }
    if (exp == 31) return __uint_as_float(sign | 0x7f800000u | (mant << 13));
    return __uint_as_float(sign | ((exp + 112u) << 23) | (mant << 13));
}

__device__ __forceinline__ float read_f16(const u8* p) {
    return f16_to_f32((unsigned short)(p[0] | (p[1] << 8)));
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024).
__device__ float block_sum(float v) {
    __shared__ float partial[32];
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    __syncthreads();
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    int warps = (blockDim.x + 31) >> 5;
    v = (threadIdx.x < warps) ? partial[threadIdx.x] : 0.0f;
    if (warp == 0)
        for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
    if (threadIdx.x == 0) partial[0] = v;
    __syncthreads();
    return partial[0];
}

// ---- Weight decoding (once, at load): GGUF blocks -> bf16 rows ----------

// F32 -> bf16.
extern "C" __global__ void dequant_f32(const float* src, bf16* dst, long long n) {
    long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (i < n) dst[i] = f32_to_bf16(src[i]);
}

// F16 -> bf16.
extern "C" __global__ void dequant_f16(const unsigned short* src, bf16* dst, long long n) {
    long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (i < n) dst[i] = f32_to_bf16(f16_to_f32(src[i]));
}

// Q8_0: 32 weights = f16 scale + 32 int8. One thread per weight.
extern "C" __global__ void dequant_q8_0(const u8* src, bf16* dst, long long n) {
    long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (i >= n) return;
    const u8* b = src + (i / 32) * 34;
    float d = read_f16(b);
    dst[i] = f32_to_bf16(d * (float)(signed char)b[2 + (i % 32)]);
}

// Q4_0: f16 scale + 16 bytes; weight j < 16 is the low nibble of byte j,
// j >= 16 the high nibble of byte j - 16; value (q - 8) * d.
extern "C" __global__ void dequant_q4_0(const u8* src, bf16* dst, long long n) {
    long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (i >= n) return;
    const u8* b = src + (i / 32) * 18;
    int j = (int)(i % 32);
    int q = j < 16 ? (b[2 + j] & 0xf) : (b[2 + j - 16] >> 4);
    dst[i] = f32_to_bf16(read_f16(b) * (float)(q - 8));
}

// Q4_1: f16 scale, f16 min, 16 bytes; value q * d + m.
extern "C" __global__ void dequant_q4_1(const u8* src, bf16* dst, long long n) {
    long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (i >= n) return;
    const u8* b = src + (i / 32) * 20;
    int j = (int)(i % 32);
    int q = j < 16 ? (b[4 + j] & 0xf) : (b[4 + j - 16] >> 4);
    dst[i] = f32_to_bf16(read_f16(b) * (float)q + read_f16(b + 2));
}

// The 6-bit scale and min of sub-block j of a Q4_K block (llama.cpp's
// get_scale_min_k4).
__device__ __forceinline__ void scale_min_k4(int j, const u8* q, int* d, int* m) {
    if (j < 4) {
        *d = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *d = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
        *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

// Q4_K: 256 weights = f16 d, f16 dmin, 12 bytes of scales, 128 bytes of
// nibbles; 8 sub-blocks of 32, each value d*sc*q - dmin*m.
extern "C" __global__ void dequant_q4_k(const u8* src, bf16* dst, long long n) {
    long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (i >= n) return;
    const u8* b = src + (i / 256) * 144;
    int k = (int)(i % 256);
    int chunk = k / 64, within = k % 64;
    int sub = chunk * 2 + (within >= 32 ? 1 : 0);
    int sc, m;
    scale_min_k4(sub, b + 4, &sc, &m);
    const u8* qs = b + 16 + chunk * 32;
    int q = within < 32 ? (qs[within] & 0xF) : (qs[within - 32] >> 4);
    dst[i] = f32_to_bf16(read_f16(b) * (float)sc * (float)q - read_f16(b + 2) * (float)m);
}

// Q6_K: 256 weights = 128 bytes low 4 bits, 64 bytes high 2 bits, 16 int8
// scales, f16 d; value d * scale * (q - 32).
extern "C" __global__ void dequant_q6_k(const u8* src, bf16* dst, long long n) {
    long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (i >= n) return;
    const u8* b = src + (i / 256) * 210;
    const u8* ql = b;
    const u8* qh = b + 128;
    const signed char* sc = (const signed char*)(b + 192);
    float d = read_f16(b + 208);
    int k = (int)(i % 256);
    int half = k / 128, r = k % 128;
    int l = r % 32, part = r / 32;
    const u8* ql_h = ql + half * 64;
    const u8* qh_h = qh + half * 32;
    const signed char* sc_h = sc + half * 8;
    int low, high;
    switch (part) {
        case 0: low = ql_h[l] & 0xF; high = (qh_h[l] >> 0) & 3; break;
        case 1: low = ql_h[l + 32] & 0xF; high = (qh_h[l] >> 2) & 3; break;
        case 2: low = ql_h[l] >> 4; high = (qh_h[l] >> 4) & 3; break;
        default: low = ql_h[l + 32] >> 4; high = (qh_h[l] >> 6) & 3; break;
    }
    int q = (low | (high << 4)) - 32;
    int s = sc_h[l / 16 + part * 2];
    dst[i] = f32_to_bf16(d * (float)s * (float)q);
}

// Deterministic pseudo-random bf16 weights in [-scale, scale) (for
// benchmark shapes with no model file).
extern "C" __global__ void fill_random_bf16(bf16* dst, long long n, unsigned int seed, float scale) {
    long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (i >= n) return;
    unsigned long long x = (unsigned long long)i * 0x9E3779B97F4A7C15ull + seed;
    x ^= x >> 33; x *= 0xff51afd7ed558ccdull; x ^= x >> 33; x *= 0xc4ceb9fe1a85ec53ull; x ^= x >> 33;
    float u = (float)(x >> 40) * (1.0f / 16777216.0f);
    dst[i] = f32_to_bf16((2.0f * u - 1.0f) * scale);
}

// ---- The forward pass ---------------------------------------------------

// x[t] = table[tokens[t]] (one block per token).
extern "C" __global__ void embed(const bf16* table, const int* tokens, float* x, int dim) {
    const bf16* row = table + (long long)tokens[blockIdx.x] * dim;
    float* out = x + (long long)blockIdx.x * dim;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) out[i] = bf16_to_f32(row[i]);
}

// out[t] = bf16(x[t] / rms(x[t]) * w) (one block per row).
extern "C" __global__ void rms_norm(const float* x, const float* w, bf16* out, int dim, float eps) {
    const float* row = x + (long long)blockIdx.x * dim;
    float sum = 0.0f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) sum += row[i] * row[i];
    float scale = rsqrtf(block_sum(sum) / (float)dim + eps);
    bf16* o = out + (long long)blockIdx.x * dim;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) o[i] = f32_to_bf16(row[i] * scale * w[i]);
}

// The same, f32 out (the final norm before the logits product).
extern "C" __global__ void rms_norm_f32(const float* x, const float* w, float* out, int dim, float eps) {
    const float* row = x + (long long)blockIdx.x * dim;
    float sum = 0.0f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) sum += row[i] * row[i];
    float scale = rsqrtf(block_sum(sum) / (float)dim + eps);
    float* o = out + (long long)blockIdx.x * dim;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) o[i] = row[i] * scale * w[i];
}

// x[t][i] += bias[i].
extern "C" __global__ void add_bias(float* x, const float* bias, int cols, long long n) {
    long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (i < n) x[i] += bias[i % cols];
}

// Rotates every head of row t by position positions[t]. halves = 0: pairs
// (2i, 2i+1) (GGUF llama); 1: pairs (i, i + head_dim/2) (qwen2).
// One block per row, one thread per pair of each head.
extern "C" __global__ void rope(float* x, const int* positions, const float* frequencies,
                                int heads, int head_dim, int halves) {
    float* row = x + (long long)blockIdx.x * heads * head_dim;
    int half = head_dim / 2;
    float pos = (float)positions[blockIdx.x];
    for (int p = threadIdx.x; p < heads * half; p += blockDim.x) {
        int head = p / half, i = p % half;
        float s, c;
        sincosf(pos * frequencies[i], &s, &c);
        int a = halves ? i : 2 * i, b = halves ? i + half : 2 * i + 1;
        float* h = row + head * head_dim;
        float x0 = h[a], x1 = h[b];
        h[a] = x0 * c - x1 * s;
        h[b] = x0 * s + x1 * c;
    }
}

__device__ __forceinline__ long long kv_offset(int block, int layer, int layers, int values,
                                               int slot, int kv_dim) {
    return ((((long long)block * layers + layer) * 2 + values) * BLOCK_TOKENS + slot) * kv_dim;
}

// Stores row t's key and value at slots[t] (block * BLOCK_TOKENS + slot).
extern "C" __global__ void kv_write(const float* k, const float* v, float* pool, const int* slots,
                                    int layer, int layers, int kv_dim) {
    int t = blockIdx.x;
    int block = slots[t] / BLOCK_TOKENS, slot = slots[t] % BLOCK_TOKENS;
    float* keys = pool + kv_offset(block, layer, layers, 0, slot, kv_dim);
    float* values = pool + kv_offset(block, layer, layers, 1, slot, kv_dim);
    for (int i = threadIdx.x; i < kv_dim; i += blockDim.x) {
        keys[i] = k[(long long)t * kv_dim + i];
        values[i] = v[(long long)t * kv_dim + i];
    }
}

// Causal attention of row t, head h (grid: rows x heads; one thread per
// dimension of the head, blockDim.x = head_dim rounded up to 32). Row t sees
// positions 0..=positions[t] of its sequence, whose blocks are
// tables[table_start[t] ...]. Online softmax in f32; the output is bf16 for
// the following product.
extern "C" __global__ void attention(const float* q, const float* pool, const int* tables,
                                     const int* table_start, const int* positions, bf16* out,
                                     int heads, int kv_heads, int head_dim, int layer, int layers,
                                     float scale) {
    int t = blockIdx.x, h = blockIdx.y, d = threadIdx.x;
    int kv_dim = kv_heads * head_dim;
    int kvh = h / (heads / kv_heads);
    bool active = d < head_dim;
    float qd = active ? q[((long long)t * heads + h) * head_dim + d] : 0.0f;
    float max_score = __int_as_float(0xff800000), total = 0.0f, acc = 0.0f;  // -inf
    const int* table = tables + table_start[t];
    for (int p = 0; p <= positions[t]; ++p) {
        int block = table[p / BLOCK_TOKENS], slot = p % BLOCK_TOKENS;
        const float* key = pool + kv_offset(block, layer, layers, 0, slot, kv_dim) + kvh * head_dim;
        float score = block_sum(active ? qd * key[d] : 0.0f) * scale;
        float next_max = fmaxf(max_score, score);
        float correction = __expf(max_score - next_max);
        float weight = __expf(score - next_max);
        const float* value = pool + kv_offset(block, layer, layers, 1, slot, kv_dim) + kvh * head_dim;
        acc = acc * correction + (active ? weight * value[d] : 0.0f);
        total = total * correction + weight;
        max_score = next_max;
    }
    if (active) out[((long long)t * heads + h) * head_dim + d] = f32_to_bf16(acc / total);
}

// out = bf16(silu(gate) * up).
extern "C" __global__ void silu_mul(const float* gate, const float* up, bf16* out, long long n) {
    long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (i >= n) return;
    float g = gate[i];
    out[i] = f32_to_bf16(g / (1.0f + __expf(-g)) * up[i]);
}

// x += y.
extern "C" __global__ void add_into(float* x, const float* y, long long n) {
    long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (i < n) x[i] += y[i];
}

// out[i] = x[rows[i]] (the rows whose logits are wanted).
extern "C" __global__ void gather_rows(const float* x, const int* rows, float* out, int dim) {
    const float* row = x + (long long)rows[blockIdx.x] * dim;
    float* o = out + (long long)blockIdx.x * dim;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) o[i] = row[i];
}

// f32 -> bf16.
extern "C" __global__ void to_bf16(const float* x, bf16* out, long long n) {
    long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (i < n) out[i] = f32_to_bf16(x[i]);
}
