// A GPU on the CPU: device memory, the kernels of host-gpu/kernels/llama.cu (run by
// cuda_on_cpu.h) and the half-precision product (f16, or bf16 when
// compiled with SOVRA_HALF_BF16, as the kernels are), driven over stdin/stdout by the
// tests (gpu-check/tests/emulated/mod.rs implements sovra's `Gpu` trait with
// it, so the CUDA backend's own code runs in CI).
//
// Requests (little-endian), each answered by a status byte (0 done; 1
// refused, then u32 length and the reason), READ then by the bytes:
//   1 ALLOC  u64 id, u64 bytes           zeroed memory; address = id << 40
//   2 FREE   u64 id
//   3 WRITE  u64 address, u64 n, n bytes
//   4 READ   u64 address, u64 n
//   5 LAUNCH u32 name length, name, u32 grid x, grid y, threads, u32 count,
//            per argument a kind byte (8 address u64, 4 i32, 5 i64, 6 u32,
//            7 f32) and the value
//   6 GEMM   u64 w, rows, cols, x, n, y, u8 accumulate
//            y[n x rows] (+)= x[n x cols] . w^T, w and x halves, y f32
#include "cuda_on_cpu.h"

#include "../../../host-gpu/kernels/llama.cu"

#include <cstdio>
#include <functional>
#include <map>
#include <string>
#include <unordered_map>

namespace {

std::unordered_map<uint64_t, std::vector<uint8_t>> memory;

bool read_exact(void* out, size_t n) { return std::fread(out, 1, n, stdin) == n; }

template <typename T>
bool read_value(T& out) { return read_exact(&out, sizeof(T)); }

void write_exact(const void* data, size_t n) { std::fwrite(data, 1, n, stdout); }

void done() {
    uint8_t status = 0;
    write_exact(&status, 1);
}

void refuse(const std::string& reason) {
    uint8_t status = 1;
    uint32_t n = reason.size();
    write_exact(&status, 1);
    write_exact(&n, 4);
    write_exact(reason.data(), n);
}

// The host pointer of a device address with `bytes` from it, or null.
uint8_t* resolve(uint64_t address, uint64_t bytes) {
    auto found = memory.find(address >> 40);
    uint64_t offset = address & ((1ull << 40) - 1);
    if (found == memory.end() || offset + bytes > found->second.size()) return nullptr;
    return found->second.data() + offset;
}

struct Arg {
    uint8_t kind = 0;
    uint64_t address = 0;
    int32_t i32 = 0;
    int64_t i64 = 0;
    uint32_t u32 = 0;
    float f32 = 0;
};

using Args = std::vector<Arg>;

template <typename T>
T* ptr(Args& a, size_t i) { return reinterpret_cast<T*>(resolve(a[i].address, 0)); }

struct Kernel {
    // p: an address; i i32, l i64, u u32, s f32.
    std::string signature;
    std::function<void(Args&)> call;
    // Its threads wait for each other (block sums, shuffles): fibers.
    bool cooperative = false;
};

std::map<std::string, Kernel> kernels() {
    std::map<std::string, Kernel> k;
    k["dequant_f32"] = {"ppl", [](Args& a) { dequant_f32(ptr<float>(a, 0), ptr<half_t>(a, 1), a[2].i64); }};
    k["dequant_f16"] = {"ppl", [](Args& a) { dequant_f16(ptr<unsigned short>(a, 0), ptr<half_t>(a, 1), a[2].i64); }};
    k["dequant_bf16"] = {"ppl", [](Args& a) { dequant_bf16(ptr<bf16>(a, 0), ptr<half_t>(a, 1), a[2].i64); }};
    k["dequant_q8_0"] = {"ppl", [](Args& a) { dequant_q8_0(ptr<u8>(a, 0), ptr<half_t>(a, 1), a[2].i64); }};
    k["dequant_q4_0"] = {"ppl", [](Args& a) { dequant_q4_0(ptr<u8>(a, 0), ptr<half_t>(a, 1), a[2].i64); }};
    k["dequant_q4_1"] = {"ppl", [](Args& a) { dequant_q4_1(ptr<u8>(a, 0), ptr<half_t>(a, 1), a[2].i64); }};
    k["dequant_q4_k"] = {"ppl", [](Args& a) { dequant_q4_k(ptr<u8>(a, 0), ptr<half_t>(a, 1), a[2].i64); }};
    k["dequant_q6_k"] = {"ppl", [](Args& a) { dequant_q6_k(ptr<u8>(a, 0), ptr<half_t>(a, 1), a[2].i64); }};
    k["fill_random_half"] = {"plus", [](Args& a) { fill_random_half(ptr<half_t>(a, 0), a[1].i64, a[2].u32, a[3].f32); }};
    k["embed"] = {"pppi", [](Args& a) { embed(ptr<half_t>(a, 0), ptr<int>(a, 1), ptr<float>(a, 2), a[3].i32); }};
    k["rms_norm"] = {"pppis", [](Args& a) {
        rms_norm(ptr<float>(a, 0), ptr<float>(a, 1), ptr<half_t>(a, 2), a[3].i32, a[4].f32);
    }, true};
    k["rms_norm_rows"] = {"ppppis", [](Args& a) {
        rms_norm_rows(ptr<float>(a, 0), ptr<int>(a, 1), ptr<float>(a, 2), ptr<half_t>(a, 3), a[4].i32, a[5].f32);
    }, true};
    k["add_bias"] = {"ppil", [](Args& a) { add_bias(ptr<float>(a, 0), ptr<float>(a, 1), a[2].i32, a[3].i64); }};
    k["rope"] = {"pppiiii", [](Args& a) {
        rope(ptr<float>(a, 0), ptr<int>(a, 1), ptr<float>(a, 2), a[3].i32, a[4].i32, a[5].i32, a[6].i32);
    }};
    k["kv_write"] = {"pppiiiii", [](Args& a) {
        kv_write(ptr<float>(a, 0), ptr<float>(a, 1), ptr<int>(a, 2), a[3].i32, a[4].i32, a[5].i32, a[6].i32, a[7].i32);
    }};
    k["attention"] = {"ppppppiiiiisi", [](Args& a) {
        attention(ptr<float>(a, 0), ptr<float>(a, 1), ptr<int>(a, 2), ptr<int>(a, 3), ptr<int>(a, 4), ptr<half_t>(a, 5),
                  a[6].i32, a[7].i32, a[8].i32, a[9].i32, a[10].i32, a[11].f32, a[12].i32);
    }, true};
    k["silu_mul"] = {"ppil", [](Args& a) { silu_mul(ptr<float>(a, 0), ptr<half_t>(a, 1), a[2].i32, a[3].i64); }};
    k["argmax_rows"] = {"pip", [](Args& a) { argmax_rows(ptr<float>(a, 0), a[1].i32, ptr<int>(a, 2)); }, true};
    return k;
}


bool launch(const std::map<std::string, Kernel>& table) {
    uint32_t name_length;
    if (!read_value(name_length)) return false;
    std::string name(name_length, '\0');
    uint32_t grid_x, grid_y, threads, count;
    if (!read_exact(name.data(), name_length) || !read_value(grid_x) || !read_value(grid_y) ||
        !read_value(threads) || !read_value(count))
        return false;
    Args args(count);
    std::string signature;
    bool addresses_valid = true;
    for (auto& arg : args) {
        if (!read_value(arg.kind)) return false;
        switch (arg.kind) {
            case 8:
                if (!read_value(arg.address)) return false;
                addresses_valid &= resolve(arg.address, 0) != nullptr;
                signature += 'p';
                break;
            case 4: if (!read_value(arg.i32)) return false; signature += 'i'; break;
            case 5: if (!read_value(arg.i64)) return false; signature += 'l'; break;
            case 6: if (!read_value(arg.u32)) return false; signature += 'u'; break;
            case 7: if (!read_value(arg.f32)) return false; signature += 's'; break;
            default: return false;
        }
    }
    auto kernel = table.find(name);
    if (kernel == table.end()) {
        refuse("no kernel `" + name + "`");
    } else if (kernel->second.signature != signature) {
        refuse("`" + name + "` takes (" + kernel->second.signature + "), not (" + signature + ")");
    } else if (!addresses_valid) {
        refuse("`" + name + "` was given an address outside every allocation");
    } else if (threads == 0 || threads > 1024 || threads % 32 != 0 || grid_x == 0 || grid_y == 0) {
        refuse("a grid of " + std::to_string(grid_x) + "x" + std::to_string(grid_y) + " blocks of " +
               std::to_string(threads) + " threads");
    } else {
        dim3 grid{grid_x, grid_y, 1}, block{threads, 1, 1};
        auto call = [&] { kernel->second.call(args); };
        if (kernel->second.cooperative) {
            emulation::launch(grid, block, call);
        } else {
            emulation::launch_independent(grid, block, call);
        }
        done();
    }
    return true;
}

bool gemm() {
    uint64_t w, rows, cols, x, n, y;
    uint8_t accumulate;
    if (!read_value(w) || !read_value(rows) || !read_value(cols) || !read_value(x) || !read_value(n) ||
        !read_value(y) || !read_value(accumulate))
        return false;
    auto* pw = reinterpret_cast<uint16_t*>(resolve(w, rows * cols * 2));
    auto* px = reinterpret_cast<uint16_t*>(resolve(x, n * cols * 2));
    auto* py = reinterpret_cast<float*>(resolve(y, n * rows * 4));
    if (!pw || !px || !py) {
        refuse("a product's operand lies outside its allocation");
        return true;
    }
    for (uint64_t t = 0; t < n; ++t) {
        for (uint64_t r = 0; r < rows; ++r) {
            float sum = 0.0f;
            for (uint64_t k = 0; k < cols; ++k) sum += from_half(pw[r * cols + k]) * from_half(px[t * cols + k]);
            py[t * rows + r] = accumulate ? py[t * rows + r] + sum : sum;
        }
    }
    done();
    return true;
}

}  // namespace

int main() {
    auto table = kernels();
    for (;;) {
        uint8_t command;
        if (!read_value(command)) return 0;
        bool ok = true;
        switch (command) {
            case 1: {
                uint64_t id, bytes;
                ok = read_value(id) && read_value(bytes);
                if (ok) {
                    memory[id].assign(bytes, 0);
                    done();
                }
                break;
            }
            case 2: {
                uint64_t id;
                ok = read_value(id);
                if (ok) {
                    memory.erase(id);
                    done();
                }
                break;
            }
            case 3: {
                uint64_t address, n;
                ok = read_value(address) && read_value(n);
                if (ok) {
                    std::vector<uint8_t> bytes(n);
                    ok = read_exact(bytes.data(), n);
                    uint8_t* to = resolve(address, n);
                    if (!ok) break;
                    if (!to) {
                        refuse("a write outside its allocation");
                    } else {
                        std::memcpy(to, bytes.data(), n);
                        done();
                    }
                }
                break;
            }
            case 4: {
                uint64_t address, n;
                ok = read_value(address) && read_value(n);
                if (ok) {
                    uint8_t* from = resolve(address, n);
                    if (!from) {
                        refuse("a read outside its allocation");
                    } else {
                        done();
                        write_exact(from, n);
                    }
                }
                break;
            }
            case 5: ok = launch(table); break;
            case 6: ok = gemm(); break;
            default: ok = false;
        }
        if (!ok) return 1;
        std::fflush(stdout);
    }
}
