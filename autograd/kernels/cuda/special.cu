// The error functions element-wise on contiguous arrays of n REALs, by CUDA's own erf and
// erfc (float or double overloads, within a few ulp; erfc keeps its relative accuracy in
// the upper tail, where 1 - erf(x) would round to 0).

#define GRID_STRIDE_LOOP(i, n) \
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < (n); \
         i += (long long)blockDim.x * gridDim.x)

extern "C" __global__ void erf_forward(const REAL* x, REAL* out, long long n) {
    GRID_STRIDE_LOOP(i, n) { out[i] = erf(x[i]); }
}

extern "C" __global__ void erfc_forward(const REAL* x, REAL* out, long long n) {
    GRID_STRIDE_LOOP(i, n) { out[i] = erfc(x[i]); }
}
