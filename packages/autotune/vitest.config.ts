import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    pool: 'forks',
    include: ['test/**/*.test.ts'],
    // GPU tests share one device per file; run files one at a time so lavapipe's 2 cores are not oversubscribed.
    fileParallelism: false,
    testTimeout: 60_000,
  },
});
