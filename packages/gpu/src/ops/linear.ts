/**
 * `linear` on GPU tensors: `y = x W^T + b` (PyTorch's `nn.Linear`, W `[out, in]`), f32 accumulation, for the
 * modules' projections (`@natten-web/wgsl`'s `generateLinear`). With three outputs the columns are split into
 * them in thirds (the qkv projection writing q, k and v).
 */
import { formatShape, NattenArgumentError } from '@natten-web/core';
import { checkGpuDType, generateLinear, generateLinearMma, LINEAR_MMA_ROWS, LINEAR_TILE } from '@natten-web/wgsl';
import type { DispatchCommand, GpuContext, GpuTensor } from '../context.ts';
import { mmaAvailability } from './na-fused-forward-mma.ts';
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

/** Which kernel runs a `linear` call. */
export interface LinearOptions {
  /**
   * `'auto'` (default): the tensor-core kernel (`generateLinearMma`) for float16 tensors with `in` a multiple of 8
   * where the adapter has f16 subgroup matrices and 32-wide subgroups, else the tiled kernel (`generateLinear`).
   * `'mma'` requires the tensor-core kernel (throws saying why it cannot run); `'tiled'` forces the other.
   */
  readonly path?: 'auto' | 'mma' | 'tiled';
  /**
   * Tensor-core kernel only: column fragments per subgroup (`frags`, 16 columns each) and row fragments (`rowFrags`:
   * 1, the 4 subgroups in a column, a block of 16 * frags columns; 2, the subgroups 2 x 2, a block of 128 columns,
   * frags 4). Default by `out`.
   */
  readonly frags?: 4 | 8;
  readonly rowFrags?: 1 | 2;
}

const OP = 'linear';

/** Why the tensor-core kernel cannot run this call, or undefined. */
function linearMmaUnfit(ctx: GpuContext, dtype: string, nIn: number): string | undefined {
  const avail = mmaAvailability(ctx);
  if ('why' in avail) return avail.why;
  if (dtype !== 'float16') return `it needs float16 tensors, not ${dtype}`;
  if (nIn % 8 !== 0) return `in=${nIn} must be a multiple of 8 (16-byte rows)`;
  return undefined;
}

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
export function linearCommand(ctx: GpuContext, args: LinearArgs, options: LinearOptions = {}): DispatchCommand {
  const { rows, nIn, nOut, parts, dtype } = checkLinear(ctx, args);
  const path = options.path ?? 'auto';
  if (path !== 'auto' && path !== 'mma' && path !== 'tiled') throw new NattenArgumentError(`${OP}: path must be 'auto', 'mma' or 'tiled', got ${String(path)}`);
  if (options.frags !== undefined && options.frags !== 4 && options.frags !== 8) throw new NattenArgumentError(`${OP}: frags must be 4 or 8, got ${String(options.frags)}`);
  if (options.rowFrags !== undefined && options.rowFrags !== 1 && options.rowFrags !== 2) throw new NattenArgumentError(`${OP}: rowFrags must be 1 or 2, got ${String(options.rowFrags)}`);
  if (options.rowFrags === 2 && options.frags === 8) throw new NattenArgumentError(`${OP}: rowFrags 2 takes frags 4, got frags 8`);
  const unfit = path === 'tiled' ? 'tiled' : linearMmaUnfit(ctx, dtype, nIn);
  if (path === 'mma' && unfit !== undefined) throw new NattenArgumentError(`${OP}: path 'mma' (tensor cores) cannot run this call: ${unfit}`);
  const buffers = [args.input.buffer, args.weight.buffer, ...(args.bias ? [args.bias.buffer] : []), ...args.outputs.map((t) => t.buffer)];
  if (unfit === undefined) {
    // Blocks of 64 x 64 unless they make 4096 or more workgroups; then 64 x 128 with the subgroups 2 x 2 (each right
    // fragment feeds two multiplies). H200: narrow blocks 10-15% faster on the modules' projections (300-1200
    // workgroups), wide ones 1.1-1.15x faster on an MLP and large GEMMs (docs/device-results.md, session 22).
    const wide = options.rowFrags === undefined && options.frags === undefined && Math.ceil(nOut / 64) * Math.ceil(rows / LINEAR_MMA_ROWS) >= 4096;
    const rowFrags = options.rowFrags ?? (wide ? 2 : 1);
    const frags = options.frags ?? 4;
    const part = nOut / parts;
    const kernel = memoKernel('linear-mma', { bias: args.bias !== null, parts, frags, rowFrags, wideOut: part % 8 === 0 }, generateLinearMma);
    const rowTiles = Math.ceil(rows / LINEAR_MMA_ROWS);
    return {
      kernel,
      buffers,
      uniforms: { rows, n_in8: nIn / 8, n_out: nOut, part, row_tiles: rowTiles },
      workgroups: [Math.ceil(nOut / (16 * frags * rowFrags)), Math.min(rowTiles, ctx.limits.maxComputeWorkgroupsPerDimension), 1],
    };
  }
  const kernel = memoKernel('linear', { dtype, bias: args.bias !== null, parts }, generateLinear);
  const rowTiles = Math.ceil(rows / LINEAR_TILE);
  return {
    kernel,
    buffers,
    uniforms: { rows, n_in: nIn, n_out: nOut, part: nOut / parts, row_tiles: rowTiles },
    workgroups: [Math.ceil(nOut / LINEAR_TILE), Math.min(rowTiles, ctx.limits.maxComputeWorkgroupsPerDimension), 1],
  };
}

/** `y = x W^T + b` on GPU tensors (outputs written in place). */
export async function linear(ctx: GpuContext, args: LinearArgs, options?: LinearOptions): Promise<void> {
  await ctx.dispatch([linearCommand(ctx, args, options)], OP);
}
