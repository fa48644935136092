// CUDA kernels of the llama forward pass (sovra-gpu's CUDA backend).
//
// Compiled at run time by NVRTC for the device's architecture (sm_90 on
// Hopper); no CUDA headers are needed. Activations are f32; matrix products
// (cuBLAS) read 16-bit halves, so the kernels that feed a product write
// them, and weights are decoded to them once at load by `dequant_*`. The
// half is f16 (ten bits of mantissa: SmolLM2's logits within 0.2% of the
// exact ones, where bf16's seven give 2.5%), or bf16 when compiled with
// SOVRA_HALF_BF16 defined (f32's range, for models whose activations pass
// f16's 65504).
//
// The KV cache is a pool of blocks of BLOCK_TOKENS positions, laid out like
// the CPU backend's: block -> layer -> {keys, values} -> slot -> kv_dim.

#define BLOCK_TOKENS 16

typedef unsigned short f16;
typedef unsigned short bf16;
typedef unsigned char u8;

__device__ __forceinline__ float bf16_to_f32(bf16 v) {
    return __uint_as_float(((unsigned int)v) << 16);
}

// IEEE half precision, rounded to nearest even: overflow to infinity,
// subnormals kept, NaN stays NaN.
__device__ __forceinline__ f16 f32_to_f16(float f) {
    unsigned int x = __float_as_uint(f);
    unsigned int sign = (x >> 16) & 0x8000u;
    unsigned int magnitude = x & 0x7fffffffu;
    if (magnitude > 0x7f800000u) return (f16)(sign | 0x7e00u);
    // 65520 and above round to infinity (65504 is the largest half).
    if (magnitude >= 0x477ff000u) return (f16)(sign | 0x7c00u);
    if (magnitude < 0x38800000u) {
        // Below 2^-14: a subnormal half, in units of 2^-24 (rintf: to even).
        return (f16)(sign | (unsigned int)rintf(__uint_as_float(magnitude) * 16777216.0f));
    }
    unsigned int rounded = magnitude + 0xfffu + ((magnitude >> 13) & 1u);
    return (f16)(sign | ((rounded - 0x38000000u) >> 13));
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

// The half the products read (see the top of this file).
typedef unsigned short half_t;
#ifdef SOVRA_HALF_BF16
__device__ __forceinline__ half_t to_half(float f) { return f32_to_bf16(f); }
__device__ __forceinline__ float from_half(half_t h) { return bf16_to_f32(h); }
#else
__device__ __forceinline__ half_t to_half(float f) { return f32_to_f16(f); }
__device__ __forceinline__ float from_half(half_t h) { return f16_to_f32(h); }
#endif

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

// ---- Weight decoding (once, at load): GGUF blocks -> half rows ----------

// F32 -> half.
extern "C" __global__ void dequant_f32(const float* src, half_t* dst, long long n) {
    long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (i < n) dst[i] = to_half(src[i]);
}

// F16 -> half.
extern "C" __global__ void dequant_f16(const unsigned short* src, half_t* dst, long long n) {
    long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (i < n) dst[i] = to_half(f16_to_f32(src[i]));
}

// BF16 -> half.
extern "C" __global__ void dequant_bf16(const bf16* src, half_t* dst, long long n) {
    long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (i < n) dst[i] = to_half(bf16_to_f32(src[i]));
}

// Q8_0: 32 weights = f16 scale + 32 int8. One thread per weight.
extern "C" __global__ void dequant_q8_0(const u8* src, half_t* dst, long long n) {
    long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (i >= n) return;
    const u8* b = src + (i / 32) * 34;
    float d = read_f16(b);
    dst[i] = to_half(d * (float)(signed char)b[2 + (i % 32)]);
}

// Q4_0: f16 scale + 16 bytes; weight j < 16 is the low nibble of byte j,
// j >= 16 the high nibble of byte j - 16; value (q - 8) * d.
extern "C" __global__ void dequant_q4_0(const u8* src, half_t* dst, long long n) {
    long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (i >= n) return;
    const u8* b = src + (i / 32) * 18;
    int j = (int)(i % 32);
    int q = j < 16 ? (b[2 + j] & 0xf) : (b[2 + j - 16] >> 4);
    dst[i] = to_half(read_f16(b) * (float)(q - 8));
}

// Q4_1: f16 scale, f16 min, 16 bytes; value q * d + m.
extern "C" __global__ void dequant_q4_1(const u8* src, half_t* dst, long long n) {
    long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (i >= n) return;
    const u8* b = src + (i / 32) * 20;
    int j = (int)(i % 32);
    int q = j < 16 ? (b[4 + j] & 0xf) : (b[4 + j - 16] >> 4);
    dst[i] = to_half(read_f16(b) * (float)q + read_f16(b + 2));
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
extern "C" __global__ void dequant_q4_k(const u8* src, half_t* dst, long long n) {
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
    dst[i] = to_half(read_f16(b) * (float)sc * (float)q - read_f16(b + 2) * (float)m);
}

// Q6_K: 256 weights = 128 bytes low 4 bits, 64 bytes high 2 bits, 16 int8
// scales, f16 d; value d * scale * (q - 32).
extern "C" __global__ void dequant_q6_k(const u8* src, half_t* dst, long long n) {
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
    dst[i] = to_half(d * (float)s * (float)q);
}

// Deterministic pseudo-random half weights in [-scale, scale) (for
// benchmark shapes with no model file).
extern "C" __global__ void fill_random_half(half_t* dst, long long n, unsigned int seed, float scale) {
    long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (i >= n) return;
    unsigned long long x = (unsigned long long)i * 0x9E3779B97F4A7C15ull + seed;
    x ^= x >> 33; x *= 0xff51afd7ed558ccdull; x ^= x >> 33; x *= 0xc4ceb9fe1a85ec53ull; x ^= x >> 33;
    float u = (float)(x >> 40) * (1.0f / 16777216.0f);
    dst[i] = to_half((2.0f * u - 1.0f) * scale);
}

// ---- The forward pass ---------------------------------------------------

// x[t] = table[tokens[t]] (one block per token).
extern "C" __global__ void embed(const half_t* table, const int* tokens, float* x, int dim) {
    const half_t* row = table + (long long)tokens[blockIdx.x] * dim;
    float* out = x + (long long)blockIdx.x * dim;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) out[i] = from_half(row[i]);
}

// out[t] = half(x[t] / rms(x[t]) * w) (one block per row).
extern "C" __global__ void rms_norm(const float* x, const float* w, half_t* out, int dim, float eps) {
    const float* row = x + (long long)blockIdx.x * dim;
    float sum = 0.0f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) sum += row[i] * row[i];
    float scale = rsqrtf(block_sum(sum) / (float)dim + eps);
    half_t* o = out + (long long)blockIdx.x * dim;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) o[i] = to_half(row[i] * scale * w[i]);
}

// The final norm of the rows whose logits are wanted: out[i] =
// half(x[rows[i]] / rms * w) (one block per wanted row).
extern "C" __global__ void rms_norm_rows(const float* x, const int* rows, const float* w, half_t* out,
                                         int dim, float eps) {
    const float* row = x + (long long)rows[blockIdx.x] * dim;
    float sum = 0.0f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) sum += row[i] * row[i];
    float scale = rsqrtf(block_sum(sum) / (float)dim + eps);
    half_t* o = out + (long long)blockIdx.x * dim;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) o[i] = to_half(row[i] * scale * w[i]);
}

// x[t][i] += bias[i].
extern "C" __global__ void add_bias(float* x, const float* bias, int cols, long long n) {
    long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (i < n) x[i] += bias[i % cols];
}

// Rotates the first `heads` heads of row t (rows `stride` apart) by
// position positions[t]: the query and key heads, which lead each row of the
// fused q|k|v product. halves = 0: pairs (2i, 2i+1) (GGUF llama); 1: pairs
// (i, i + head_dim/2) (qwen2). One block per row, one thread per pair.
extern "C" __global__ void rope(float* x, const int* positions, const float* frequencies,
                                int heads, int head_dim, int halves, int stride) {
    float* row = x + (long long)blockIdx.x * stride;
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

// Stores row t's key and value (at k_at and k_at + kv_dim of the q|k|v row,
// rows `stride` apart) at slots[t] (block * BLOCK_TOKENS + slot).
extern "C" __global__ void kv_write(const float* qkv, float* pool, const int* slots, int layer,
                                    int layers, int kv_dim, int stride, int k_at) {
    int t = blockIdx.x;
    int block = slots[t] / BLOCK_TOKENS, slot = slots[t] % BLOCK_TOKENS;
    float* keys = pool + kv_offset(block, layer, layers, 0, slot, kv_dim);
    float* values = pool + kv_offset(block, layer, layers, 1, slot, kv_dim);
    const float* k = qkv + (long long)t * stride + k_at;
    const float* v = k + kv_dim;
    for (int i = threadIdx.x; i < kv_dim; i += blockDim.x) {
        keys[i] = k[i];
        values[i] = v[i];
    }
}

// Warps that share one (row, head) of attention, each taking every
// ATTENTION_WARPS-th position.
#define ATTENTION_WARPS 4
// Largest head_dim: each lane holds up to this / 32 dimensions.
#define MAX_HEAD_DIM 256

__device__ __forceinline__ float warp_sum(float v) {
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
    return v;
}

// Causal attention of row t, head h (grid: rows x heads; ATTENTION_WARPS
// warps per block). Row t sees positions 0..=positions[t] of its sequence,
// whose blocks are tables[table_start[t] ...]; its query heads lead its row
// of the q|k|v product (rows `stride` apart). Each warp keeps an online
// softmax over its positions (lane l holds dimensions l, l+32, ...; dot
// products by warp shuffles, no block barrier per position); the warps'
// partial results are merged at the end. f32 throughout; the output is a half
// for the following product.
extern "C" __global__ void attention(const float* qkv, const float* pool, const int* tables,
                                     const int* table_start, const int* positions, half_t* out,
                                     int heads, int kv_heads, int head_dim, int layer, int layers,
                                     float scale, int stride) {
    const int PER_LANE = MAX_HEAD_DIM / 32;
    __shared__ float warp_max[ATTENTION_WARPS], warp_total[ATTENTION_WARPS];
    __shared__ float warp_acc[ATTENTION_WARPS][MAX_HEAD_DIM];
    int t = blockIdx.x, h = blockIdx.y;
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    int kv_dim = kv_heads * head_dim;
    int kvh = h / (heads / kv_heads);
    const float* q = qkv + (long long)t * stride + h * head_dim;
    float qd[PER_LANE], acc[PER_LANE];
    for (int j = 0; j < PER_LANE; ++j) {
        int d = lane + 32 * j;
        qd[j] = d < head_dim ? q[d] : 0.0f;
        acc[j] = 0.0f;
    }
    float max_score = __int_as_float(0xff800000), total = 0.0f;  // -inf, 0
    const int* table = tables + table_start[t];
    int last = positions[t];
    for (int p = warp; p <= last; p += ATTENTION_WARPS) {
        int block = table[p / BLOCK_TOKENS], slot = p % BLOCK_TOKENS;
        const float* key = pool + kv_offset(block, layer, layers, 0, slot, kv_dim) + kvh * head_dim;
        const float* value = pool + kv_offset(block, layer, layers, 1, slot, kv_dim) + kvh * head_dim;
        float dot = 0.0f;
        for (int j = 0; j < PER_LANE; ++j) {
            int d = lane + 32 * j;
            if (d < head_dim) dot += qd[j] * key[d];
        }
        float score = warp_sum(dot) * scale;
        float next_max = fmaxf(max_score, score);
        float correction = __expf(max_score - next_max);
        float weight = __expf(score - next_max);
        for (int j = 0; j < PER_LANE; ++j) {
            int d = lane + 32 * j;
            acc[j] = acc[j] * correction + (d < head_dim ? weight * value[d] : 0.0f);
        }
        total = total * correction + weight;
        max_score = next_max;
    }
    // Merge the warps: a warp that saw no position has total 0 and max -inf
    // (one that saw a NaN score keeps it, as the CPU would).
    if (lane == 0) {
        warp_max[warp] = max_score;
        warp_total[warp] = total;
    }
    for (int j = 0; j < PER_LANE; ++j) {
        int d = lane + 32 * j;
        if (d < head_dim) warp_acc[warp][d] = acc[j];
    }
    __syncthreads();
    float overall = warp_max[0];
    for (int w = 1; w < ATTENTION_WARPS; ++w) overall = fmaxf(overall, warp_max[w]);
    float denominator = 0.0f;
    for (int w = 0; w < ATTENTION_WARPS; ++w)
        if (warp_total[w] != 0.0f) denominator += warp_total[w] * __expf(warp_max[w] - overall);
    half_t* o = out + ((long long)t * heads + h) * head_dim;
    for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
        float sum = 0.0f;
        for (int w = 0; w < ATTENTION_WARPS; ++w)
            if (warp_total[w] != 0.0f) sum += warp_acc[w][d] * __expf(warp_max[w] - overall);
        o[d] = to_half(sum / denominator);
    }
}

// out[t][i] = half(silu(gate) * up), gate and up side by side in each row
// of the fused gate|up product (2 * ff wide).
extern "C" __global__ void silu_mul(const float* gate_up, half_t* out, int ff, long long n) {
    long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (i >= n) return;
    long long t = i / ff, j = i % ff;
    const float* row = gate_up + t * 2 * ff;
    float g = row[j];
    out[i] = to_half(g / (1.0f + __expf(-g)) * row[ff + j]);
}

// out[r] = the index of row r's largest logit, ordered as Rust's
// f32::total_cmp orders them, the first on ties (the host sampler's greedy
// choice exactly). blockDim.x = ARGMAX_THREADS.
#define ARGMAX_THREADS 1024
extern "C" __global__ void argmax_rows(const float* logits, int vocab, int* out) {
    __shared__ int keys[ARGMAX_THREADS];
    __shared__ int indices[ARGMAX_THREADS];
    const float* row = logits + (long long)blockIdx.x * vocab;
    int best_key = (int)0x80000000, best = 0x7fffffff;
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
        int bits = __float_as_int(row[i]);
        int key = bits ^ (int)(((unsigned int)(bits >> 31)) >> 1);
        if (key > best_key || (key == best_key && i < best)) {
            best_key = key;
            best = i;
        }
    }
    keys[threadIdx.x] = best_key;
    indices[threadIdx.x] = best;
    __syncthreads();
    for (int half = blockDim.x / 2; half > 0; half >>= 1) {
        if (threadIdx.x < half) {
            int key = keys[threadIdx.x + half], index = indices[threadIdx.x + half];
            if (key > keys[threadIdx.x] || (key == keys[threadIdx.x] && index < indices[threadIdx.x])) {
                keys[threadIdx.x] = key;
                indices[threadIdx.x] = index;
            }
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) out[blockIdx.x] = indices[0];
}
