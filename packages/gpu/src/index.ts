export {
  type AcquiredDevice,
  type AcquireOptions,
  type AdapterReport,
  acquireDevice,
  DAWN_NODE_FLAGS,
  DAWN_TOGGLES_ENV,
  dawnNodeFlags,
  describeAdapter,
  getGpu,
  OPTIONAL_FEATURES,
  type SubgroupMatrixConfig,
  subgroupMatrixConfigs,
} from './device.ts';
export {
  type ClearRange,
  type DispatchCommand,
  foldWorkgroups,
  GpuContext,
  type GpuTensor,
  type PassTimestamps,
  type PreparedDispatch,
} from './context.ts';
export { BufferPool, type BufferPoolOptions, type BufferPoolStats, bucketSize } from './pool.ts';
export { median, timeDispatch, type TimingMethod, type TimingOptions, type TimingResult } from './timing.ts';
export { ClockWarmer, type ClockWarmerOptions } from './clocks.ts';
export { NattenDeviceError, NattenShaderError } from './errors.ts';
export { createGpuBackend, fusedBackwardMmaOnHost, fusedForwardMmaOnHost } from './backend.ts';
export { defineGpuOp, type GpuOp, kernelLimits } from './ops/op.ts';
export { checkFusedForwardGpu, type FusedForwardOp, fusedForward, fusedKernelLimits, planFusedForward } from './ops/na-fused-forward.ts';
export {
  backwardKernelLimits,
  buildFusedBackward,
  fusedBackward,
  type FusedBackwardCommands,
  type FusedBackwardOp,
  type FusedBackwardSelection,
  fusedBackwardWithConfig,
  selectFusedBackward,
} from './ops/na-fused-backward.ts';
export { qkBackward, qkBackwardPlan, qkForward, qkForwardPlan } from './ops/na-qk.ts';
export type { GpuOpPlan } from './ops/op.ts';
export { avBackward, avBackwardPlan, avForward, avForwardPlan } from './ops/na-av.ts';
export { bmmMmaUnfit, type BmmOptions, type BmmPath } from './ops/na-bmm.ts';
export { checkNaiveFusedForward, naiveFusedForward, planNaiveFusedForward } from './ops/na-naive.ts';
export {
  checkFusedBackwardMma,
  defaultBackwardMma,
  defaultMmaBackwardConfig,
  fusedBackwardMma,
  type MmaBackwardConfig,
  mmaBackwardCommands,
  type MmaBackwardKernels,
  type MmaBackwardScratch,
  mmaBackwardScratch,
  mmaBackwardConfigFits,
  mmaBackwardFlags,
  mmaBackwardProblemFit,
  mmaBackwardTile,
  mmaBackwardTwins,
} from './ops/na-fused-backward-mma.ts';
export {
  defaultForwardMma,
  defaultMmaConfig,
  enumerateMmaConfigs,
  mmaConfigFits,
  mmaForwardTwins,
  MMA_LARGE_WINDOW,
  MMA_MIN_WINDOW_USE,
  MMA_MIN_WORKGROUPS,
  MMA_F16_MIN_WORKGROUPS,
  MMA_F16_NARROW_HEAD_DIM,
  MMA_F16_WIDE_HEAD_DIM,
  MMA_SPLIT_MIN_WORKGROUPS,
  mmaWindowUse,
  packedCoordsFit,
  paddingIsFree,
  keyBoxRowsBound,
  residentWorkgroups,
  mmaWorkgroups,
  fusedForwardMma,
  mmaAvailability,
  mmaConfigCost,
  type MmaForwardConfig,
  mmaForwardFlags,
  mmaProblemFit,
  checkFusedForwardMma,
  planFusedForwardMma,
} from './ops/na-fused-forward-mma.ts';
export {
  defaultSgmatConfig,
  enumerateSgmatConfigs,
  fusedForwardSgmat,
  planFusedForwardSgmat,
  sgmatAvailability,
  sgmatConfigCost,
  type SgmatForwardConfig,
  sgmatProblemFit,
} from './ops/na-fused-forward-sgmat.ts';
export {
  defaultTileForwardConfig,
  enumerateTileForwardConfigs,
  fusedForwardTile,
  planFusedForwardTile,
  type TileForwardConfig,
  tileForwardConfigProblem,
} from './ops/na-fused-forward-tile.ts';
export { linear, type LinearArgs, linearCommand, type LinearOptions } from './ops/linear.ts';
export {
  type AttentionMergeArgs,
  attentionMerge,
  attentionMergeCommands,
  type DenseBackwardArgs,
  type DenseForwardArgs,
  type DenseOptions,
  denseBackward,
  denseBackwardPlan,
  denseForward,
  denseForwardPlan,
  denseForwardUnfit,
} from './ops/dense.ts';
