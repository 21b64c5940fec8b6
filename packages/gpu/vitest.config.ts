import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    pool: 'forks',
    include: ['test/**/*.test.ts'],
    // One device per test file; two files at a time: lavapipe compiles each pipeline on one core (LLVM), so a
    // second file keeps the other core busy (toolchain notes: two GPU files in parallel are stable on Dawn 0.6.2).
    fileParallelism: true,
    maxWorkers: 2,
    testTimeout: 60_000,
  },
});
