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
export {
  canonicalKeyTile,
  checkFusedForwardSpec,
  defaultFusedForwardConfig,
  enumerateFusedForwardConfigs,
  FUSED_FORWARD_KEY_CHUNKS,
  FUSED_FORWARD_QUERY_TILES,
  FUSED_FORWARD_TILES,
  type FusedForwardConfig,
  type FusedForwardPath,
  type FusedForwardProblem,
  type FusedForwardSpec,
  type FusedKernelLimits,
  type FusedStage,
  fusedForwardBindings,
  fusedForwardConfigProblem,
  fusedForwardDispatch,
  fusedForwardSpec,
  fusedForwardUniformFields,
  fusedForwardWorkgroupBytes,
  generateFusedForward,
  tileShapes,
} from './ops/na-fused-forward.ts';
export { FUSED_LAZY_RESCALE, FUSED_NEG, softmaxLse, softmaxStateDecl, softmaxUpdate } from './snippets/fused-softmax.ts';
