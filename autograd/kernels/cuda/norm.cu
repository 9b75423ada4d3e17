// Group normalisation, forward and backward, optionally fused with a following SiLU, for
// the (N, C, M) layout of autograd/kernels/norm.py in any memory order: the element
// strides (sn, sc, sm) of n, c and m are arguments, and every array of one launch (x, y,
// grad, dx) has those strides (C-contiguous (C*M, M, 1) or channels-last (M*C, 1, C)).
// C is split into G groups of C/G channels; one block normalises one (n, g) group:
//   xhat = (x - mean) * rstd,  rstd = 1 / sqrt(var + eps),  y = xhat * weight[c] + bias[c]
//   (silu: out = y * sigmoid(y))
// Sums are taken in double in a fixed order (a tree in shared memory), so results are
// deterministic; mean and rstd are written as (N, G) arrays of REAL.
// Launch: N * G blocks of NORM_THREADS (256) threads.
//
// Backward, with dy = grad (silu: grad * silu'(y), y recomputed from x):
//   sum_dy[n, c] = sum_m dy,  sum_dy_xhat[n, c] = sum_m dy * xhat   (double, (N, C))
//   dx = rstd * (w dy - mean_g(w dy) - xhat * mean_g(w dy xhat))
// The caller sums sum_dy / sum_dy_xhat over n for dbias / dweight.

#define NORM_THREADS 256

__device__ __forceinline__ REAL sigmoid_of(REAL y) {
    return REAL(1) / (REAL(1) + exp(-y));
}

// dy, the gradient at the norm's output y = xhat w + b: the upstream gradient itself, or
// with silu, grad * silu'(y) = grad * s (1 + y (1 - s)), s = sigmoid(y), y recomputed.
__device__ __forceinline__ double output_gradient(REAL grad, double xhat, REAL w, REAL b,
                                                  int silu) {
    if (!silu) return grad;
    const REAL value = (REAL)(xhat * w + b);
    const REAL s = sigmoid_of(value);
    return (double)(grad * s * (REAL(1) + value * (REAL(1) - s)));
}

// Walks one group's (C/G channels) x (M positions) elements in memory order (the dimension
// with the smaller stride innermost, so a warp reads consecutive addresses): thread t of
// the block visits elements t, t + blockDim.x, ... of that order, without divisions.
struct GroupWalk {
    long long inner, outer, inner_size, outer_size, inner_stride, outer_stride;
    long long step_inner, step_outer;
    bool channels_inner;

    __device__ GroupWalk(long long channels, long long m, long long sc, long long sm) {
        channels_inner = m == 1 || (channels > 1 && sc < sm);
        inner_size = channels_inner ? channels : m;
        outer_size = channels_inner ? m : channels;
        inner_stride = channels_inner ? sc : sm;
        outer_stride = channels_inner ? sm : sc;
        inner = threadIdx.x % inner_size;
        outer = threadIdx.x / inner_size;
        step_inner = blockDim.x % inner_size;
        step_outer = blockDim.x / inner_size;
    }
    __device__ bool valid() const { return outer < outer_size; }
    __device__ long long offset() const { return inner * inner_stride + outer * outer_stride; }
    __device__ long long channel() const { return channels_inner ? inner : outer; }
    __device__ void next() {
        inner += step_inner;
        outer += step_outer;
        if (inner >= inner_size) {
            inner -= inner_size;
            ++outer;
        }
    }
};

// Sums a and b over each team of `team` consecutive threads (team: a power of two that
// divides blockDim.x) and hands every thread its team's totals. Every thread of the block
// must call it (it synchronises the block).
__device__ void team_sums(double& a, double& b, int team, double* shared_a, double* shared_b) {
    const int t = threadIdx.x, lane = t % team;
    shared_a[t] = a;
    shared_b[t] = b;
    __syncthreads();
    for (int s = team / 2; s > 0; s /= 2) {
        if (lane < s) {
            shared_a[t] += shared_a[t + s];
            shared_b[t] += shared_b[t + s];
        }
        __syncthreads();
    }
    a = shared_a[t - lane];
    b = shared_b[t - lane];
    __syncthreads();  // the slots are free for the next call
}

extern "C" __global__ void group_norm_forward(
        const REAL* x, const REAL* weight, const REAL* bias, REAL* y, REAL* mean, REAL* rstd,
        long long channels, long long m, long long groups, long long sn, long long sc,
        long long sm, double eps, int silu) {
    __shared__ double shared_a[NORM_THREADS], shared_b[NORM_THREADS];
    const long long row = blockIdx.x, n = row / groups, g = row % groups;
    const long long per_group = channels / groups, first = g * per_group;
    const double count = (double)(per_group * m);
    const long long base = n * sn + first * sc;  // element (n, first, 0)

    double total = 0.0, unused = 0.0;
    for (GroupWalk e(per_group, m, sc, sm); e.valid(); e.next()) total += x[base + e.offset()];
    team_sums(total, unused, blockDim.x, shared_a, shared_b);
    const double mu = total / count;

    double squares = 0.0;
    for (GroupWalk e(per_group, m, sc, sm); e.valid(); e.next()) {
        const double d = x[base + e.offset()] - mu;
        squares += d * d;
    }
    team_sums(squares, unused, blockDim.x, shared_a, shared_b);
    const double r = rsqrt(squares / count + eps);
    if (threadIdx.x == 0) {
        mean[row] = (REAL)mu;
        rstd[row] = (REAL)r;
    }

    for (GroupWalk e(per_group, m, sc, sm); e.valid(); e.next()) {
        const long long c = first + e.channel(), at = base + e.offset();
        const REAL value = (REAL)((x[at] - mu) * r * weight[c] + bias[c]);
        y[at] = silu ? value * sigmoid_of(value) : value;
    }
}

// team: threads that share one channel in the first pass (a power of two dividing
// blockDim.x; the launcher picks about blockDim.x / (C/G), at most M rounded up).
extern "C" __global__ void group_norm_backward(
        const REAL* grad, const REAL* x, const REAL* mean, const REAL* rstd,
        const REAL* weight, const REAL* bias, REAL* dx, double* sum_dy, double* sum_dy_xhat,
        long long channels, long long m, long long groups, long long sn, long long sc,
        long long sm, int silu, int team) {
    __shared__ double shared_a[NORM_THREADS], shared_b[NORM_THREADS];
    const long long row = blockIdx.x, n = row / groups, g = row % groups;
    const long long per_group = channels / groups, first = g * per_group;
    const double count = (double)(per_group * m);
    const long long base = n * sn + first * sc;
    const double mu = mean[row], r = rstd[row];
    const int lane = threadIdx.x % team, teams = blockDim.x / team;

    // Pass 1: each team sums dy and dy * xhat over one channel's m positions.
    for (long long channel0 = 0; channel0 < per_group; channel0 += teams) {
        const long long channel = channel0 + threadIdx.x / team;
        double s_dy = 0.0, s_dy_xhat = 0.0;
        if (channel < per_group) {
            const long long c = first + channel;
            for (long long i = lane; i < m; i += team) {
                const long long at = base + channel * sc + i * sm;
                const double xhat = (x[at] - mu) * r;
                const double dy = output_gradient(grad[at], xhat, weight[c], bias[c], silu);
                s_dy += dy;
                s_dy_xhat += dy * xhat;
            }
        }
        team_sums(s_dy, s_dy_xhat, team, shared_a, shared_b);
        if (channel < per_group && lane == 0) {
            sum_dy[n * channels + first + channel] = s_dy;
            sum_dy_xhat[n * channels + first + channel] = s_dy_xhat;
        }
    }
    __syncthreads();  // the per-channel sums (global memory) are visible to the block

    // Pass 2: the group's means of w dy and w dy xhat.
    double w_dy = 0.0, w_dy_xhat = 0.0;
    for (long long channel = threadIdx.x; channel < per_group; channel += blockDim.x) {
        const long long c = first + channel;
        w_dy += weight[c] * sum_dy[n * channels + c];
        w_dy_xhat += weight[c] * sum_dy_xhat[n * channels + c];
    }
    team_sums(w_dy, w_dy_xhat, blockDim.x, shared_a, shared_b);
    const double mean_dxhat = w_dy / count, mean_dxhat_xhat = w_dy_xhat / count;

    // Pass 3: dx, element-wise.
    for (GroupWalk e(per_group, m, sc, sm); e.valid(); e.next()) {
        const long long c = first + e.channel(), at = base + e.offset();
        const double xhat = (x[at] - mu) * r;
        const double dy = output_gradient(grad[at], xhat, weight[c], bias[c], silu);
        dx[at] = (REAL)(r * (weight[c] * dy - mean_dxhat - xhat * mean_dxhat_xhat));
    }
}
