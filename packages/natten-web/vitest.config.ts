import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    pool: 'forks',
    include: ['test/**/*.test.ts'],
    // GPU test files each hold a device; one file at a time keeps lavapipe off both cores at once.
    fileParallelism: false,
    testTimeout: 60_000,
  },
});
