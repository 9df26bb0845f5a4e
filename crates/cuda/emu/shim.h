// Host shim for crates/cuda/src/kernels.cu: runs the CUDA kernels on the CPU,
// one std::thread per CUDA thread, with real block barriers (__syncthreads)
// and warp exchanges (__shfl_xor_sync), so the kernels' indexing, layouts,
// shared-memory staging and reductions can be checked on a machine without
// a GPU. Not a performance model. Used by scripts/cuda_emulate.sh.
#include <cstdint>
#include <cstring>
#include <cmath>
#include <algorithm>
#include <barrier>
#include <thread>
#include <vector>
#include <functional>
using std::min;
struct alignas(16) uint4 { unsigned int x, y, z, w; };
struct alignas(16) float4 { float x, y, z, w; };
struct dim3 { unsigned x = 0, y = 0, z = 0; };
thread_local dim3 threadIdx, blockIdx;
dim3 blockDim;
thread_local float4* x_shared;
thread_local std::barrier<>* block_bar;
thread_local std::barrier<>* warp_bar;
thread_local float* warp_buf;
#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(a, b)
static inline float half_to_float(uint16_t h) {
    uint32_t s = (h >> 15) & 1, e = (h >> 10) & 31, m = h & 1023;
    float v;
    if (e == 0) v = std::ldexp((float)m, -24);
    else if (e == 31) v = m ? NAN : INFINITY;
    else v = std::ldexp((float)(m | 1024), (int)e - 25);
    return s ? -v : v;
}
static inline unsigned __byte_perm(unsigned x, unsigned y, unsigned s) {
    uint64_t v = ((uint64_t)y << 32) | x; unsigned r = 0;
    for (int i = 0; i < 4; i++) { unsigned sel = (s >> (4 * i)) & 7; r |= (unsigned)((v >> (8 * sel)) & 0xff) << (8 * i); }
    return r;
}
static inline float __int_as_float(unsigned v) { float f; memcpy(&f, &v, 4); return f; }
template <class T> static inline T __ldg(const T* p) { return *p; }
template <class T> static inline T __ldcs(const T* p) { return *p; }
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline void __syncthreads() { block_bar->arrive_and_wait(); }
static inline float __shfl_xor_sync(unsigned, float v, int o) {
    int lane = threadIdx.x & 31;
    warp_buf[lane] = v; warp_bar->arrive_and_wait();
    float r = warp_buf[lane ^ o]; warp_bar->arrive_and_wait();
    return r;
}
static inline long long clock64() { return 0; }
// Runs `k` over `grid` blocks of `threads`, with `smem` bytes of dynamic shared memory.
static void launch(unsigned grid, unsigned threads, size_t smem, std::function<void()> k) {
    blockDim.x = threads;
    for (unsigned b = 0; b < grid; b++) {
        std::vector<float4> sm(smem / 16 + 1);
        std::barrier<> bb(threads);
        std::vector<std::barrier<>*> wb; std::vector<std::vector<float>> bufs;
        for (unsigned w = 0; w < threads / 32; w++) { wb.push_back(new std::barrier<>(32)); bufs.emplace_back(32); }
        std::vector<std::thread> ts;
        for (unsigned t = 0; t < threads; t++) ts.emplace_back([&, t] {
            threadIdx.x = t; blockIdx.x = b; x_shared = sm.data(); block_bar = &bb;
            warp_bar = wb[t / 32]; warp_buf = bufs[t / 32].data();
            k();
        });
        for (auto& t : ts) t.join();
        for (auto p : wb) delete p;
    }
}
