import type {
  AvBackwardArgs,
  AvForwardArgs,
  FusedBackwardArgs,
  FusedForwardArgs,
  NaBackend,
  NaRank,
  QkBackwardArgs,
  QkForwardArgs,
  Tensor,
} from '@natten-web/core';
import { checkGpuDType } from '@natten-web/wgsl';
import type { GpuContext, GpuTensor } from './context.ts';
import { avBackward, avForward } from './ops/na-av.ts';
import { fusedBackward } from './ops/na-fused-backward.ts';
import { checkFusedBackwardMma, fusedBackwardMma, type MmaBackwardConfig } from './ops/na-fused-backward-mma.ts';
import { fusedForward } from './ops/na-fused-forward.ts';
import { checkFusedForwardMma, fusedForwardMma, type MmaForwardConfig } from './ops/na-fused-forward-mma.ts';
import { qkBackward, qkForward } from './ops/na-qk.ts';

export type HostArgs = Record<string, unknown>;

/** Host-tensor fields of an args object (anything with shape, dtype and data). */
function tensorFields(args: HostArgs): string[] {
  return Object.keys(args).filter((k) => {
    const v = args[k] as Partial<Tensor> | null | undefined;
    return v !== null && v !== undefined && typeof v === 'object' && Array.isArray(v.shape) && typeof v.dtype === 'string' && 'data' in v;
  });
}

/**
 * Run a GPU op on host tensors: validate on the host first (no GPU work for bad input), upload every tensor
 * argument (outputs too, so accumulating outputs keep their contents), run, read the outputs back in place.
 */
export async function onGpu<A extends HostArgs>(
  ctx: GpuContext,
  op: string,
  args: A,
  outputs: readonly string[],
  validate: () => void,
  run: (gpuArgs: HostArgs) => Promise<void>,
): Promise<void> {
  validate();
  const fields = tensorFields(args);
  for (const f of fields) checkGpuDType(op, (args[f] as Tensor).dtype);
  const uploaded = new Map<string, GpuTensor>();
  try {
    for (const f of fields) uploaded.set(f, ctx.upload(args[f] as Tensor, `${op}.${f}`));
    const gpuArgs: HostArgs = { ...args };
    for (const [f, g] of uploaded) gpuArgs[f] = g;
    await run(gpuArgs);
    for (const f of outputs) {
      const g = uploaded.get(f);
      if (g) await ctx.readInto(g, args[f] as Tensor);
    }
  } finally {
    for (const g of uploaded.values()) ctx.freeTensor(g);
  }
}

/**
 * The tensor-core (mma) forward with a given config on host tensors, as the backend's `fusedForward` runs the
 * default path: validated on the host first (no GPU work for bad input or a config that cannot run), uploaded, run,
 * read back in place. For callers that chose the config themselves (the umbrella's `config: 'auto'`).
 */
export function fusedForwardMmaOnHost(ctx: GpuContext, rank: NaRank, args: FusedForwardArgs, config: MmaForwardConfig): Promise<void> {
  return onGpu(
    ctx,
    `na${rank}d_forward`,
    args as unknown as HostArgs,
    ['output', 'logsumexp'],
    () => {
      checkFusedForwardMma(ctx, rank, args, config);
    },
    (g) => fusedForwardMma(ctx, rank, g as unknown as FusedForwardArgs<GpuTensor>, config),
  );
}

/** The tensor-core (mma) backward with a given config on host tensors (as `fusedForwardMmaOnHost`). */
export function fusedBackwardMmaOnHost(ctx: GpuContext, rank: NaRank, args: FusedBackwardArgs, config: MmaBackwardConfig): Promise<void> {
  return onGpu(
    ctx,
    `na${rank}d_backward`,
    args as unknown as HostArgs,
    ['gradQuery', 'gradKey', 'gradValue', 'gradRpb'],
    () => {
      checkFusedBackwardMma(ctx, rank, args, config);
    },
    (g) => fusedBackwardMma(ctx, rank, g as unknown as FusedBackwardArgs<GpuTensor>, config),
  );
}

/** The WebGPU backend as a `NaBackend` on host tensors (used by the conformance suite and the umbrella). */
export function createGpuBackend(ctx: GpuContext): NaBackend {
  return {
    name: 'webgpu',
    fusedForward: (rank: NaRank, args: FusedForwardArgs) =>
      onGpu(ctx, `na${rank}d_forward`, args as unknown as HostArgs, ['output', 'logsumexp'], () => fusedForward.check(ctx, rank, args), (g) =>
        fusedForward(ctx, rank, g as unknown as FusedForwardArgs<GpuTensor>),
      ),
    fusedBackward: (rank: NaRank, args: FusedBackwardArgs) =>
      onGpu(
        ctx,
        `na${rank}d_backward`,
        args as unknown as HostArgs,
        ['gradQuery', 'gradKey', 'gradValue', 'gradRpb'],
        () => fusedBackward.check(ctx, rank, args),
        (g) => fusedBackward(ctx, rank, g as unknown as FusedBackwardArgs<GpuTensor>),
      ),
    qkForward: (rank: NaRank, args: QkForwardArgs) =>
      onGpu(ctx, `na${rank}d_qk_forward`, args as unknown as HostArgs, ['attn'], () => qkForward.check(ctx, rank, args), (g) =>
        qkForward(ctx, rank, g as unknown as QkForwardArgs<GpuTensor>),
      ),
    qkBackward: (rank: NaRank, args: QkBackwardArgs) =>
      onGpu(
        ctx,
        `na${rank}d_qk_backward`,
        args as unknown as HostArgs,
        ['gradQuery', 'gradKey', 'gradRpb'],
        () => qkBackward.check(ctx, rank, args),
        (g) => qkBackward(ctx, rank, g as unknown as QkBackwardArgs<GpuTensor>),
      ),
    avForward: (rank: NaRank, args: AvForwardArgs) =>
      onGpu(ctx, `na${rank}d_av_forward`, args as unknown as HostArgs, ['output'], () => avForward.check(ctx, rank, args), (g) =>
        avForward(ctx, rank, g as unknown as AvForwardArgs<GpuTensor>),
      ),
    avBackward: (rank: NaRank, args: AvBackwardArgs) =>
      onGpu(
        ctx,
        `na${rank}d_av_backward`,
        args as unknown as HostArgs,
        ['gradAttn', 'gradValue'],
        () => avBackward.check(ctx, rank, args),
        (g) => avBackward(ctx, rank, g as unknown as AvBackwardArgs<GpuTensor>),
      ),
    dispose: () => ctx.destroy(),
  };
}
