import { defineConfig } from 'vite';

// The demo is a plain static page: `vite` serves it in dev, `vite build` bundles it into dist/,
// `vite preview` serves dist/. WebGPU needs a secure context, which http://localhost is.
export default defineConfig({
  root: import.meta.dirname,
  clearScreen: false,
  server: { host: 'localhost' },
  preview: { host: 'localhost' },
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    target: 'es2022',
    reportCompressedSize: false,
  },
});
