// The CUDA kernels (through emu/shim.h) against plain references written
// from the layouts' definitions: GEMV within summation error, dequantization
// exact, for int4 groups (32/64/128, act-order, a narrower last group), Q4_0
// and Q8_0, through both the shared-memory and the global-memory GEMV.
// Run by scripts/cuda_emulate.sh; exit status 1 on any mismatch.
#include "shim.h"
#include <cstdio>
#include <random>
#include "kernels_cpu.inc"  // kernels.cu, made host C++ by scripts/cuda_emulate.sh
typedef unsigned short u16;
static std::mt19937_64 rng(7);
static float uni() { return std::uniform_real_distribution<float>(-1, 1)(rng); }
static uint16_t f2h(float f) { // round-to-nearest for normal range, enough for scales
    uint32_t b; memcpy(&b, &f, 4); uint32_t s = (b >> 16) & 0x8000; int e = ((b >> 23) & 255) - 127 + 15; uint32_t m = b & 0x7fffff;
    if (e <= 0) return s; uint32_t r = (e << 10) | (m >> 13); if (m & 0x1000) r++; return s | r;
}
static int fails = 0;
static void check(const char* what, double got, double want, double tol) {
    if (!(std::fabs(got - want) <= tol)) { if (fails < 10) printf("FAIL %s: got %.9g want %.9g tol %.3g\n", what, got, want, tol); fails++; }
}
// smem bytes as the Rust side computes
static size_t smem_of(int cols) { return (size_t)cols / 32 * 36 * 4; }

static void test_int4(int rows, int cols, int group, bool act, bool shared) {
    int nb = cols / 32, groups = (cols + group - 1) / group;
    std::vector<uint8_t> codes(rows * cols); for (auto& c : codes) c = rng() % 16;  // stored order
    std::vector<uint8_t> qs(rows * cols / 2);
    for (int r = 0; r < rows; r++) for (int b = 0; b < nb; b++) for (int j = 0; j < 16; j++)
        qs[r * cols / 2 + b * 16 + j] = codes[r * cols + b * 32 + j] | (codes[r * cols + b * 32 + j + 16] << 4);
    std::vector<float> params(rows * 2 * groups);
    for (int r = 0; r < rows; r++) for (int g = 0; g < groups; g++) {
        float s = 0.01f + 0.05f * std::fabs(uni()), z = 7.5f + 4 * uni();
        params[2 * r * groups + g] = s; params[(2 * r + 1) * groups + g] = -s * z; }
    std::vector<uint32_t> perm(cols); for (int j = 0; j < cols; j++) perm[j] = j;
    if (act) std::shuffle(perm.begin(), perm.end(), rng);
    std::vector<float> x(cols); for (auto& v : x) v = uni();
    std::vector<float> y(rows, -1.f);
    const uint32_t* pp = act ? perm.data() : nullptr;
    std::vector<float> xg(cols); for (int j = 0; j < cols; j++) xg[j] = x[perm[j]];
    unsigned grid = (unsigned)(((rows + 3) / 4 * 32 + 255) / 256);
    if (shared)
        launch(grid, 256, smem_of(cols), [&] { tp_int4_gemv_s((const uint4*)qs.data(), params.data(), pp, x.data(), y.data(), rows, cols, group); });
    else
        launch(grid, 256, 0, [&] { tp_int4_gemv_g((const uint4*)qs.data(), params.data(), nullptr, xg.data(), y.data(), rows, cols, group); });
    std::vector<float> deq(rows * cols, NAN);
    unsigned g2 = (unsigned)((rows * nb + 255) / 256);
    launch(g2, 256, 0, [&] { tp_int4_dequant((const uint4*)qs.data(), params.data(), pp, deq.data(), rows, cols, group); });
    for (int r = 0; r < rows; r++) {
        double want = 0, mag = 0;
        for (int j = 0; j < cols; j++) {
            int g = j / group; float s = params[2 * r * groups + g], m = params[(2 * r + 1) * groups + g];
            float w = s * (float)codes[r * cols + j] + m;
            want += (double)w * x[perm[j]]; mag += std::fabs((double)w * x[perm[j]]);
            if (deq[r * cols + perm[j]] != w) { if (fails < 10) printf("FAIL int4 dequant r%d j%d %g vs %g\n", r, j, deq[r * cols + perm[j]], w); fails++; }
        }
        check("int4 gemv", y[r], want, 2e-5 * mag + 1e-6);
    }
    printf("int4 %dx%d g%d act=%d %s ok so far (fails %d)\n", rows, cols, group, act, shared ? "smem" : "global", fails);
}

static void test_ggml(bool q8, int rows, int cols, bool shared) {
    int nb = cols / 32, cb = q8 ? 32 : 16;
    std::vector<uint8_t> qs(rows * nb * cb); for (auto& c : qs) c = rng() & 255;
    std::vector<uint16_t> d(rows * nb); for (auto& v : d) v = f2h(0.001f + 0.02f * std::fabs(uni()));
    std::vector<float> x(cols); for (auto& v : x) v = uni();
    std::vector<float> y(rows, -1.f), deq(rows * cols, NAN);
    int per = q8 ? 2 : 4;
    unsigned grid = (unsigned)(((rows + per - 1) / per * 32 + 255) / 256);
    size_t sm = shared ? smem_of(cols) : 0;
    if (q8) {
        if (shared) launch(grid, 256, sm, [&] { tp_q8_0_gemv_s((const uint4*)qs.data(), d.data(), x.data(), y.data(), rows, cols); });
        else launch(grid, 256, 0, [&] { tp_q8_0_gemv_g((const uint4*)qs.data(), d.data(), x.data(), y.data(), rows, cols); });
        launch((rows * nb + 255) / 256, 256, 0, [&] { tp_q8_0_dequant((const uint4*)qs.data(), d.data(), deq.data(), rows, cols); });
    } else {
        if (shared) launch(grid, 256, sm, [&] { tp_q4_0_gemv_s((const uint4*)qs.data(), d.data(), x.data(), y.data(), rows, cols); });
        else launch(grid, 256, 0, [&] { tp_q4_0_gemv_g((const uint4*)qs.data(), d.data(), x.data(), y.data(), rows, cols); });
        launch((rows * nb + 255) / 256, 256, 0, [&] { tp_q4_0_dequant((const uint4*)qs.data(), d.data(), deq.data(), rows, cols); });
    }
    for (int r = 0; r < rows; r++) {
        double want = 0, mag = 0;
        for (int b = 0; b < nb; b++) {
            float s = half_to_float(d[r * nb + b]);
            for (int j = 0; j < 32; j++) {
                const uint8_t* blk = &qs[(size_t)(r * nb + b) * cb];
                int q = q8 ? (int)(int8_t)blk[j] : (j < 16 ? (blk[j] & 15) : (blk[j - 16] >> 4)) - 8;
                float w = s * (float)q;
                int c = b * 32 + j;
                want += (double)w * x[c]; mag += std::fabs((double)w * x[c]);
                if (deq[r * cols + c] != w) { if (fails < 10) printf("FAIL %s dequant r%d c%d %g vs %g\n", q8 ? "q8" : "q4", r, c, deq[r * cols + c], w); fails++; }
            }
        }
        check(q8 ? "q8 gemv" : "q4 gemv", y[r], want, 2e-5 * mag + 1e-6);
    }
    printf("%s %dx%d %s ok so far (fails %d)\n", q8 ? "Q8_0" : "Q4_0", rows, cols, shared ? "smem" : "global", fails);
}

int main() {
    int shapes[][2] = {{1, 32}, {7, 256}, {100, 576}, {37, 1024}, {70, 4096}};
    for (auto& sh : shapes) for (int shared = 0; shared < 2; shared++) {
        for (int g : {32, 64, 128}) if (g <= sh[1]) for (int act = 0; act < 2; act++) test_int4(sh[0], sh[1], g, act, shared);
        test_ggml(false, sh[0], sh[1], shared); test_ggml(true, sh[0], sh[1], shared);
    }
    printf("%s (%d failures)\n", fails ? "FAILED" : "ALL OK", fails);
    return fails != 0;
}
