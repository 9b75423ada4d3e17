// Fused softmax over the last axis of a contiguous (rows, length) array of REALs, forward and
// backward; one block per row (a grid-stride loop over rows), blockDim a power of two.
//   y = exp(x - max x) / sum exp(x - max x);   dx = y (g - sum(g y))
// Sums accumulate in double whatever REAL is (as the numba kernels of kernels/softmax.py).
// A row whose entries are all -inf gets `empty_value` everywhere (0 for attention, NaN as
// PyTorch's softmax): exp(-inf - (-inf)) would be NaN.

#define MAX_THREADS 256  // the most threads per block the launcher uses (a power of two)

// Tree reductions in shared memory over the block's threads (blockDim.x a power of two, at
// most MAX_THREADS), leaving the result in every thread. The last barrier keeps `shared`
// from being overwritten by the next reduction while a thread still reads shared[0].
__device__ REAL block_max(REAL v, double* shared) {
    shared[threadIdx.x] = (double)v;
    __syncthreads();
    for (unsigned half = blockDim.x >> 1; half > 0; half >>= 1) {
        if (threadIdx.x < half && shared[threadIdx.x + half] > shared[threadIdx.x]) {
            shared[threadIdx.x] = shared[threadIdx.x + half];
        }
        __syncthreads();
    }
    const REAL result = (REAL)shared[0];
    __syncthreads();
    return result;
}

__device__ double block_sum(double v, double* shared) {
    shared[threadIdx.x] = v;
    __syncthreads();
    for (unsigned half = blockDim.x >> 1; half > 0; half >>= 1) {
        if (threadIdx.x < half) shared[threadIdx.x] += shared[threadIdx.x + half];
        __syncthreads();
    }
    const double result = shared[0];
    __syncthreads();
    return result;
}

extern "C" __global__ void softmax_forward(const REAL* x, REAL* out, long long rows,
                                           long long length, REAL empty_value) {
    __shared__ double shared[MAX_THREADS];
    for (long long r = blockIdx.x; r < rows; r += gridDim.x) {
        const REAL* row = x + r * length;
        REAL* out_row = out + r * length;
        REAL peak = row[0];
        for (long long j = threadIdx.x; j < length; j += blockDim.x) {
            peak = row[j] > peak ? row[j] : peak;
        }
        peak = block_max(peak, shared);
        if (isinf(peak) && peak < REAL(0)) {  // the same for the whole block
            for (long long j = threadIdx.x; j < length; j += blockDim.x) {
                out_row[j] = empty_value;
            }
            continue;
        }
        double total = 0.0;
        for (long long j = threadIdx.x; j < length; j += blockDim.x) {
            REAL e = exp(row[j] - peak);
            out_row[j] = e;
            total += (double)e;
        }
        const double inverse = 1.0 / block_sum(total, shared);
        for (long long j = threadIdx.x; j < length; j += blockDim.x) {
            out_row[j] = (REAL)((double)out_row[j] * inverse);  // each thread its own entries
        }
    }
}

extern "C" __global__ void softmax_backward(const REAL* grad, const REAL* y, REAL* grad_x,
                                            long long rows, long long length) {
    __shared__ double shared[MAX_THREADS];
    for (long long r = blockIdx.x; r < rows; r += gridDim.x) {
        const long long start = r * length;
        double dot = 0.0;
        for (long long j = threadIdx.x; j < length; j += blockDim.x) {
            dot += (double)grad[start + j] * (double)y[start + j];
        }
        dot = block_sum(dot, shared);
        for (long long j = threadIdx.x; j < length; j += blockDim.x) {
            grad_x[start + j] = (REAL)((double)y[start + j] * ((double)grad[start + j] - dot));
        }
    }
}
