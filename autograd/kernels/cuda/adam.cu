// One fused Adam / AdamW step on the n contiguous REALs of a parameter, in place, in
// PyTorch's order of operations (that of autograd/kernels/adam.py's reference):
//   g = -grad (maximize) or grad;   p *= decay_factor (AdamW)  or  g += wd p (Adam, L2)
//   m += (g - m) (1 - b1);          v = v b2 + ((1 - b2) g) g;   v_max = max(v_max, v)
//   p -= (step_size m) / (sqrt(v or v_max) / bias_correction2_sqrt + eps)
// Every operation is rounded on its own, to nearest (the __f*_rn / __d*_rn intrinsics never
// contract into a fused multiply-add nor take fast-math shortcuts), as NumPy and CuPy's
// element-wise kernels round them, so the step gives the reference's numbers bit for bit.
// The scalars (1 - b1, 1 - lr wd, step_size...) come from the host already in REAL.

#define GRID_STRIDE_LOOP(i, n) \
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < (n); \
         i += (long long)blockDim.x * gridDim.x)

__device__ __forceinline__ float mul_rn(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ double mul_rn(double a, double b) { return __dmul_rn(a, b); }
__device__ __forceinline__ float add_rn(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ double add_rn(double a, double b) { return __dadd_rn(a, b); }
__device__ __forceinline__ float sub_rn(float a, float b) { return __fsub_rn(a, b); }
__device__ __forceinline__ double sub_rn(double a, double b) { return __dsub_rn(a, b); }
__device__ __forceinline__ float div_rn(float a, float b) { return __fdiv_rn(a, b); }
__device__ __forceinline__ double div_rn(double a, double b) { return __ddiv_rn(a, b); }
__device__ __forceinline__ float sqrt_rn(float a) { return __fsqrt_rn(a); }
__device__ __forceinline__ double sqrt_rn(double a) { return __dsqrt_rn(a); }

// NumPy's maximum: NaN if either is NaN.
__device__ __forceinline__ REAL nan_maximum(REAL a, REAL b) {
    return (isnan(a) || a > b) ? a : b;
}

// decay_mode: 0 no weight decay, 1 Adam's L2 term (g += weight_decay p), 2 AdamW's
// decoupled decay (p *= decay_factor). max_exp_avg_sq is read and written only with
// amsgrad (pass any array of n REALs otherwise).
extern "C" __global__ void adam_step(REAL* param, const REAL* grad, REAL* exp_avg,
                                     REAL* exp_avg_sq, REAL* max_exp_avg_sq, long long n,
                                     REAL decay_factor, REAL weight_decay,
                                     REAL one_minus_beta1, REAL beta2, REAL one_minus_beta2,
                                     REAL step_size, REAL bias_correction2_sqrt, REAL eps,
                                     int decay_mode, int amsgrad, int maximize) {
    GRID_STRIDE_LOOP(i, n) {
        REAL p = param[i];
        REAL g = maximize ? -grad[i] : grad[i];
        if (decay_mode == 2) {
            p = mul_rn(p, decay_factor);
        } else if (decay_mode == 1) {
            g = add_rn(g, mul_rn(weight_decay, p));
        }
        REAL m = exp_avg[i];
        m = add_rn(m, mul_rn(sub_rn(g, m), one_minus_beta1));
        REAL v = mul_rn(exp_avg_sq[i], beta2);
        v = add_rn(v, mul_rn(mul_rn(one_minus_beta2, g), g));
        exp_avg[i] = m;
        exp_avg_sq[i] = v;
        REAL second = v;
        if (amsgrad) {
            second = nan_maximum(max_exp_avg_sq[i], v);
            max_exp_avg_sq[i] = second;
        }
        REAL denom = add_rn(div_rn(sqrt_rn(second), bias_correction2_sqrt), eps);
        param[i] = sub_rn(p, div_rn(mul_rn(step_size, m), denom));
    }
}
