/**
 * `linear` on GPU tensors: `y = x W^T + b` (PyTorch's `nn.Linear`, W `[out, in]`), f32 accumulation, for the
 * modules' projections (`@natten-web/wgsl`'s `generateLinear`). With three outputs the columns are split into
 * them in thirds (the qkv projection writing q, k and v).
 */
import { formatShape, NattenArgumentError } from '@natten-web/core';
import { checkGpuDType, generateLinear, LINEAR_TILE } from '@natten-web/wgsl';
import type { DispatchCommand, GpuContext, GpuTensor } from '../context.ts';
import { callKey, memoKernel, memoPerContext, requireF16Feature } from './op.ts';

export interface LinearArgs {
  /** `[..., in]`, or any shape of whole rows of `in` values (the attention's `[..., heads, head_dim]`). */
  readonly input: GpuTensor;
  /** `[out, in]`. */
  readonly weight: GpuTensor;
  /** `[out]`, or null. */
  readonly bias: GpuTensor | null;
  /**
   * One tensor `[..., out]`, or three `[..., out / 3]` (the columns in thirds), with `input`'s leading dims; any
   * reshape of those (row-major: q as `[..., heads, head_dim]`).
   */
  readonly outputs: readonly GpuTensor[];
}

const OP = 'linear';

/** Validate on shapes and dtypes (throws naming the argument); the plan's size-only parts, memoised. */
function checkLinear(ctx: GpuContext, args: LinearArgs): { rows: number; nIn: number; nOut: number; parts: 1 | 3; dtype: 'float32' | 'float16' } {
  return memoPerContext(ctx, 'linear-check', callKey(1, args), () => {
    const { input, weight, bias, outputs } = args;
    const dtype = checkGpuDType(OP, input.dtype);
    requireF16Feature(ctx, OP, dtype);
    if (weight.shape.length !== 2 || (weight.shape[0] as number) < 1 || (weight.shape[1] as number) < 1) {
      throw new NattenArgumentError(`${OP}: weight must be [out, in] with out, in >= 1, got ${formatShape(weight.shape)}`);
    }
    const [nOut, nIn] = weight.shape as [number, number];
    if (input.numel % nIn !== 0) {
      throw new NattenArgumentError(`${OP}: input ${formatShape(input.shape)} does not hold whole rows of in=${nIn} values (weight ${formatShape(weight.shape)}); its last dim is normally in`);
    }
    if (bias && (bias.shape.length !== 1 || bias.shape[0] !== nOut)) throw new NattenArgumentError(`${OP}: bias must be [out] = [${nOut}], got ${formatShape(bias.shape)}`);
    for (const [name, t] of [['weight', weight], ['bias', bias]] as const) {
      if (t && t.dtype !== dtype) throw new NattenArgumentError(`${OP}: ${name} is ${t.dtype} but input is ${dtype}; pass one dtype`);
    }
    if (outputs.length !== 1 && outputs.length !== 3) throw new NattenArgumentError(`${OP}: outputs must be one tensor or three (the columns in thirds), got ${outputs.length}`);
    const parts = outputs.length as 1 | 3;
    if (nOut % parts !== 0) throw new NattenArgumentError(`${OP}: out=${nOut} does not split into ${parts} equal parts`);
    const rows = input.numel / nIn;
    outputs.forEach((t, p) => {
      const name = parts === 1 ? 'output' : `outputs[${p}]`;
      if (t.dtype !== dtype) throw new NattenArgumentError(`${OP}: ${name} is ${t.dtype} but input is ${dtype}`);
      // Any shape of that many elements: rows of out / parts values in row-major order (q as [..., heads, head_dim]).
      if (t.numel !== rows * (nOut / parts)) {
        throw new NattenArgumentError(`${OP}: ${name} must hold ${rows} rows x ${nOut / parts} columns (out / ${parts}) = ${rows * (nOut / parts)} values, got ${formatShape(t.shape)}`);
      }
    });
    const colTiles = Math.ceil(nOut / LINEAR_TILE);
    if (colTiles > ctx.limits.maxComputeWorkgroupsPerDimension) {
      throw new NattenArgumentError(`${OP}: out=${nOut} needs ${colTiles} workgroups of ${LINEAR_TILE} columns, over this device's ${ctx.limits.maxComputeWorkgroupsPerDimension}`);
    }
    return { rows, nIn, nOut, parts, dtype };
  });
}

/** The dispatch of a `linear` call (validated; no GPU work). */
export function linearCommand(ctx: GpuContext, args: LinearArgs): DispatchCommand {
  const { rows, nIn, nOut, parts, dtype } = checkLinear(ctx, args);
  const kernel = memoKernel('linear', { dtype, bias: args.bias !== null, parts }, generateLinear);
  const rowTiles = Math.ceil(rows / LINEAR_TILE);
  return {
    kernel,
    buffers: [args.input.buffer, args.weight.buffer, ...(args.bias ? [args.bias.buffer] : []), ...args.outputs.map((t) => t.buffer)],
    uniforms: { rows, n_in: nIn, n_out: nOut, part: nOut / parts, row_tiles: rowTiles },
    workgroups: [Math.ceil(nOut / LINEAR_TILE), Math.min(rowTiles, ctx.limits.maxComputeWorkgroupsPerDimension), 1],
  };
}

/** `y = x W^T + b` on GPU tensors (outputs written in place). */
export async function linear(ctx: GpuContext, args: LinearArgs): Promise<void> {
  await ctx.dispatch([linearCommand(ctx, args)], OP);
}
