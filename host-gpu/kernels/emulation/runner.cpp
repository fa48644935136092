// Runs the kernels of kernels/llama.cu on the CPU (cuda_on_cpu.h) for the
// tests' kernel checks (host-gpu/tests/kernel_emulation.rs), one launch per
// request on stdin, the buffers back on stdout.
//
// Request: u32 name length, name; u32 grid x, grid y, threads; u32 argument
// count; per argument a kind byte (0 f32 buffer, 1 u16 buffer, 2 i32
// buffer, 3 byte buffer: then u64 byte length and the bytes; 4 i32, 5 i64,
// 6 u32, 7 f32: then the value). Reply: a status byte (0 ran; 1 refused,
// then u32 length and the reason), then every buffer again, in order, as
// u64 byte length and bytes. Little-endian throughout.
#include "cuda_on_cpu.h"

#include "../llama.cu"

#include <cstdio>
#include <functional>
#include <map>
#include <string>

namespace {

struct Arg {
    uint8_t kind = 0;
    std::vector<uint8_t> bytes;  // buffers
    int32_t i32 = 0;
    int64_t i64 = 0;
    uint32_t u32 = 0;
    float f32 = 0;
};

bool read_exact(void* out, size_t n) { return std::fread(out, 1, n, stdin) == n; }

template <typename T>
bool read_value(T& out) { return read_exact(&out, sizeof(T)); }

void write_exact(const void* data, size_t n) { std::fwrite(data, 1, n, stdout); }

using Args = std::vector<Arg>;
template <typename T>
T* buffer(Args& a, size_t i) { return reinterpret_cast<T*>(a[i].bytes.data()); }

struct Kernel {
    // Argument kinds, as in the request: f (f32 buffer), h (u16 buffer),
    // n (i32 buffer), b (byte buffer), i (i32), l (i64), u (u32), s (f32).
    std::string signature;
    std::function<void(Args&)> call;
};

std::map<std::string, Kernel> kernels() {
    std::map<std::string, Kernel> k;
    k["dequant_f32"] = {"fhl", [](Args& a) { dequant_f32(buffer<float>(a, 0), buffer<bf16>(a, 1), a[2].i64); }};
    k["dequant_f16"] = {"hhl", [](Args& a) { dequant_f16(buffer<unsigned short>(a, 0), buffer<bf16>(a, 1), a[2].i64); }};
    k["dequant_q8_0"] = {"bhl", [](Args& a) { dequant_q8_0(buffer<u8>(a, 0), buffer<bf16>(a, 1), a[2].i64); }};
    k["dequant_q4_0"] = {"bhl", [](Args& a) { dequant_q4_0(buffer<u8>(a, 0), buffer<bf16>(a, 1), a[2].i64); }};
    k["dequant_q4_1"] = {"bhl", [](Args& a) { dequant_q4_1(buffer<u8>(a, 0), buffer<bf16>(a, 1), a[2].i64); }};
    k["dequant_q4_k"] = {"bhl", [](Args& a) { dequant_q4_k(buffer<u8>(a, 0), buffer<bf16>(a, 1), a[2].i64); }};
    k["dequant_q6_k"] = {"bhl", [](Args& a) { dequant_q6_k(buffer<u8>(a, 0), buffer<bf16>(a, 1), a[2].i64); }};
    k["fill_random_bf16"] = {"hlus", [](Args& a) { fill_random_bf16(buffer<bf16>(a, 0), a[1].i64, a[2].u32, a[3].f32); }};
    k["embed"] = {"hnfi", [](Args& a) { embed(buffer<bf16>(a, 0), buffer<int>(a, 1), buffer<float>(a, 2), a[3].i32); }};
    k["rms_norm"] = {"ffhis", [](Args& a) {
        rms_norm(buffer<float>(a, 0), buffer<float>(a, 1), buffer<bf16>(a, 2), a[3].i32, a[4].f32);
    }};
    k["rms_norm_rows"] = {"fnfhis", [](Args& a) {
        rms_norm_rows(buffer<float>(a, 0), buffer<int>(a, 1), buffer<float>(a, 2), buffer<bf16>(a, 3), a[4].i32, a[5].f32);
    }};
    k["add_bias"] = {"ffil", [](Args& a) { add_bias(buffer<float>(a, 0), buffer<float>(a, 1), a[2].i32, a[3].i64); }};
    k["rope"] = {"fnfiiii", [](Args& a) {
        rope(buffer<float>(a, 0), buffer<int>(a, 1), buffer<float>(a, 2), a[3].i32, a[4].i32, a[5].i32, a[6].i32);
    }};
    k["kv_write"] = {"ffniiiii", [](Args& a) {
        kv_write(buffer<float>(a, 0), buffer<float>(a, 1), buffer<int>(a, 2), a[3].i32, a[4].i32, a[5].i32, a[6].i32, a[7].i32);
    }};
    k["attention"] = {"ffnnnhiiiiisi", [](Args& a) {
        attention(buffer<float>(a, 0), buffer<float>(a, 1), buffer<int>(a, 2), buffer<int>(a, 3), buffer<int>(a, 4),
                  buffer<bf16>(a, 5), a[6].i32, a[7].i32, a[8].i32, a[9].i32, a[10].i32, a[11].f32, a[12].i32);
    }};
    k["silu_mul"] = {"fhil", [](Args& a) { silu_mul(buffer<float>(a, 0), buffer<bf16>(a, 1), a[2].i32, a[3].i64); }};
    k["argmax_rows"] = {"fin", [](Args& a) { argmax_rows(buffer<float>(a, 0), a[1].i32, buffer<int>(a, 2)); }};
    return k;
}

const char KINDS[] = "fhnbilus";

void refuse(const std::string& reason) {
    uint8_t status = 1;
    uint32_t n = reason.size();
    write_exact(&status, 1);
    write_exact(&n, 4);
    write_exact(reason.data(), n);
}

}  // namespace

int main() {
    auto table = kernels();
    for (;;) {
        uint32_t name_length;
        if (!read_value(name_length)) return 0;
        std::string name(name_length, '\0');
        uint32_t grid_x, grid_y, threads, count;
        if (!read_exact(name.data(), name_length) || !read_value(grid_x) || !read_value(grid_y) ||
            !read_value(threads) || !read_value(count))
            return 1;
        Args args(count);
        std::string signature;
        for (auto& arg : args) {
            if (!read_value(arg.kind) || arg.kind > 7) return 1;
            signature += KINDS[arg.kind];
            if (arg.kind <= 3) {
                uint64_t n;
                if (!read_value(n)) return 1;
                arg.bytes.resize(n);
                if (!read_exact(arg.bytes.data(), n)) return 1;
            } else if (arg.kind == 4) {
                if (!read_value(arg.i32)) return 1;
            } else if (arg.kind == 5) {
                if (!read_value(arg.i64)) return 1;
            } else if (arg.kind == 6) {
                if (!read_value(arg.u32)) return 1;
            } else if (!read_value(arg.f32)) {
                return 1;
            }
        }
        auto kernel = table.find(name);
        if (kernel == table.end()) {
            refuse("no kernel `" + name + "`");
        } else if (kernel->second.signature != signature) {
            refuse("`" + name + "` takes (" + kernel->second.signature + "), not (" + signature + ")");
        } else if (threads == 0 || threads > 1024 || threads % 32 != 0) {
            refuse("blocks of " + std::to_string(threads) + " threads");
        } else {
            emulation::launch(dim3{grid_x, grid_y, 1}, dim3{threads, 1, 1},
                              [&] { kernel->second.call(args); });
            uint8_t status = 0;
            write_exact(&status, 1);
        }
        for (auto& arg : args) {
            if (arg.kind <= 3) {
                uint64_t n = arg.bytes.size();
                write_exact(&n, 8);
                write_exact(arg.bytes.data(), n);
            }
        }
        std::fflush(stdout);
    }
}
