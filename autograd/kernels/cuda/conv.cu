// im2col and col2im for channels-last images, the layout of autograd/kernels/conv.py:
//   x (N, H, W, C) and cols (N * ho * wo, kh * kw * C), both C-contiguous, where row
//   (n, oy, ox) of cols holds, tap (i, j) then channel c, the input value at
//     iy = oy * sh - ph + i * dh,  ix = ox * sw - pw + j * dw
//   (pad_value where that is outside the image).
// im2col: one thread per element of cols (consecutive threads write consecutive columns
// and read consecutive channels). col2im, its adjoint, is written as a gather: one thread
// per input value (n, iy, ix, c) adds up the column entries of every (output pixel, tap)
// that read it, so no two threads write one value: no atomics, and a fixed summation order
// (deterministic).

#define GRID_STRIDE_LOOP(i, n) \
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < (n); \
         i += (long long)blockDim.x * gridDim.x)

extern "C" __global__ void im2col(const REAL* x, REAL* cols, long long n, long long h,
                                  long long w, long long c, long long kh, long long kw,
                                  long long sh, long long sw, long long ph, long long pw,
                                  long long dh, long long dw, long long ho, long long wo,
                                  REAL pad_value) {
    // Flat indices are 64-bit; positions within one image or one row are ints (the
    // launcher checks they fit), for 32-bit divisions.
    const int width = (int)(kh * kw * c), channels = (int)c, kernel_w = (int)kw;
    const int pixels = (int)(ho * wo), out_w = (int)wo;
    GRID_STRIDE_LOOP(e, n * pixels * (long long)width) {
        const long long row = e / width;
        const int column = (int)(e - row * width);
        const int tap = column / channels, channel = column - tap * channels;
        const int i = tap / kernel_w, j = tap - i * kernel_w;
        const long long image = row / pixels;
        const int pixel = (int)(row - image * pixels);
        const int oy = pixel / out_w, ox = pixel - oy * out_w;
        const long long iy = oy * sh - ph + i * dh, ix = ox * sw - pw + j * dw;
        const bool inside = iy >= 0 && iy < h && ix >= 0 && ix < w;
        cols[e] = inside ? x[((image * h + iy) * w + ix) * c + channel] : pad_value;
    }
}

extern "C" __global__ void col2im(const REAL* cols, REAL* x, long long n, long long h,
                                  long long w, long long c, long long kh, long long kw,
                                  long long sh, long long sw, long long ph, long long pw,
                                  long long dh, long long dw, long long ho, long long wo) {
    const int width = (int)(kh * kw * c), channels = (int)c, in_w = (int)w;
    const int plane = (int)(h * w);
    const int stride_y = (int)sh, stride_x = (int)sw, out_h = (int)ho, out_w = (int)wo;
    GRID_STRIDE_LOOP(e, n * plane * (long long)channels) {
        const long long position = e / channels;  // (image, iy, ix)
        const int channel = (int)(e - position * channels);
        const long long image = position / plane;
        const int within = (int)(position - image * plane);
        const int iy = within / in_w, ix = within - iy * in_w;
        REAL total = REAL(0);
        for (int i = 0; i < (int)kh; ++i) {
            // The output row oy with oy * sh = iy + ph - i * dh, when there is one.
            const int ty = iy + (int)ph - i * (int)dh;
            if (ty < 0 || ty % stride_y != 0 || ty / stride_y >= out_h) continue;
            const int oy = ty / stride_y;
            for (int j = 0; j < (int)kw; ++j) {
                const int tx = ix + (int)pw - j * (int)dw;
                if (tx < 0 || tx % stride_x != 0 || tx / stride_x >= out_w) continue;
                const int ox = tx / stride_x;
                total += cols[((image * out_h + oy) * out_w + ox) * width
                              + (i * (int)kw + j) * channels + channel];
            }
        }
        x[e] = total;
    }
}
