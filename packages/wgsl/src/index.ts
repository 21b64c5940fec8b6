export {
  canonicalJson,
  type GeneratedKernel,
  kernelKey,
  packUniforms,
  type StorageBinding,
  storageDecls,
  type UniformField,
  type UniformType,
  uniformDecl,
} from './kernel.ts';
export { checkGpuDType, enableDirectives, type GpuDType, isGpuDType, wgslType } from './dtype.ts';
export { windowFunctions } from './snippets/window.ts';
export { generateWindowProbe, type WindowProbeSpec } from './ops/window-probe.ts';
