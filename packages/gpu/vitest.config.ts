import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    pool: 'forks',
    include: ['test/**/*.test.ts'],
    // One device per test file; two files at a time: lavapipe compiles each pipeline on one core (LLVM), so a
    // second file keeps the other core busy (toolchain notes: two GPU files in parallel are stable on Dawn 0.6.2).
    fileParallelism: true,
    maxWorkers: 2,
    // The emulated tensor-core kernels (mma*.gpu.test.ts, dense.gpu.test.ts, conformance-mma) compile for over a
    // minute each on lavapipe when Mesa's shader cache (~/.cache/mesa_shader_cache_db) is empty: with it moved away
    // (session 24), ten of them ran past the old 60 s limit, and the gpu package alone ran past 25 minutes. With the
    // cache warm they take 1-30 s. A hang still ends at this limit.
    testTimeout: 240_000,
  },
});
