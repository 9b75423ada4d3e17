// Element-wise sigmoid and SiLU, forward and backward, on contiguous arrays of n REALs.
//   sigmoid(x) = 1 / (1 + exp(-x));  silu(x) = x sigmoid(x);  silu'(x) = s (1 + x (1 - s))
// exp(-x) = inf for very negative x gives s = 0, the limit: nothing becomes NaN.

#define GRID_STRIDE_LOOP(i, n) \
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < (n); \
         i += (long long)blockDim.x * gridDim.x)

__device__ __forceinline__ REAL sigmoid_of(REAL x) {
    return REAL(1) / (REAL(1) + exp(-x));
}

extern "C" __global__ void sigmoid_forward(const REAL* x, REAL* out, long long n) {
    GRID_STRIDE_LOOP(i, n) { out[i] = sigmoid_of(x[i]); }
}

extern "C" __global__ void silu_forward(const REAL* x, REAL* out, long long n) {
    GRID_STRIDE_LOOP(i, n) { out[i] = x[i] * sigmoid_of(x[i]); }
}

extern "C" __global__ void silu_backward(const REAL* x, const REAL* grad, REAL* out,
                                         long long n) {
    GRID_STRIDE_LOOP(i, n) {
        REAL s = sigmoid_of(x[i]);
        out[i] = grad[i] * s * (REAL(1) + x[i] * (REAL(1) - s));
    }
}
