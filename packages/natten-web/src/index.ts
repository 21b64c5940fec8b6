export {
  attention,
  type AttentionFunction,
  type AttentionOptions,
  attentionBackward,
  mergeAttentions,
} from './attention.ts';
export {
  na1dAv,
  na1dAvBackward,
  na1dQk,
  na1dQkBackward,
  na2dAv,
  na2dAvBackward,
  na2dQk,
  na2dQkBackward,
  na3dAv,
  na3dAvBackward,
  na3dQk,
  na3dQkBackward,
  type NaAvBackwardFunction,
  type NaAvFunction,
  type NaBmmOptions,
  type NaQkBackwardFunction,
  type NaQkFunction,
  type NaQkOptions,
} from './bmm.ts';
export { type BackwardConfig, type ForwardConfig, type KernelConfig, type KernelConfigOption } from './config.ts';
export {
  type AttentionWithLse,
  na1d,
  na1dBackward,
  na2d,
  na2dBackward,
  na3d,
  na3dBackward,
  type NaBackwardFunction,
  type NaBackwardOptions,
  type NaBackwardResult,
  type NaFunction,
  type NaOptions,
} from './functional.ts';
export {
  NeighborhoodAttention1D,
  NeighborhoodAttention2D,
  NeighborhoodAttention3D,
  type NeighborhoodAttentionOptions,
  type WeightValue,
} from './modules.ts';
export * as ops from './ops.ts';
export {
  type AdapterSummary,
  type BackendInfo,
  type BackendName,
  configure,
  dispose,
  getBackend,
  info,
  type RuntimeOptions,
  setBackend,
  batch,
  synchronize,
  useDevice,
} from './runtime.ts';
export { type AnyTensor, fromGpuBuffer, isGpuTensor, isHostTensor, type OutputOf, toGpu, toHost } from './tensors.ts';
export { VERSION } from './version.ts';
export {
  cast,
  compareTensors,
  type DType,
  formatShape,
  fromValues,
  NattenArgumentError,
  NattenError,
  NattenNotImplementedError,
  NattenUnsupportedError,
  type NaRank,
  type Dims,
  type DimsOrScalar,
  type BoolDimsOrScalar,
  numel,
  randn,
  randu,
  type Tensor,
  tensor,
  toFloat64Values,
  zeros,
} from '@natten-web/core';
export { GpuContext, type GpuTensor, NattenDeviceError, NattenShaderError } from '@natten-web/gpu';
