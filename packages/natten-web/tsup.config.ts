import { defineConfig } from 'tsup';

export default defineConfig({
  entry: ['src/index.ts', 'src/ops.ts'],
  format: ['esm'],
  dts: true,
  clean: true,
  sourcemap: true,
  target: 'es2022',
  // Dawn's loader must stay a real import so it finds its native binary next to itself.
  external: ['webgpu'],
});
