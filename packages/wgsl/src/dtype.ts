import type { DType } from '@natten-web/core';
import { NattenUnsupportedError } from '@natten-web/core';

/** GPU dtypes: storage in f32 or f16 (f16 needs the `shader-f16` feature); math always in f32. */
export type GpuDType = 'float32' | 'float16';

export function isGpuDType(d: DType): d is GpuDType {
  return d === 'float32' || d === 'float16';
}

export function checkGpuDType(op: string, d: DType): GpuDType {
  if (!isGpuDType(d)) {
    throw new NattenUnsupportedError(`${op}: dtype ${d} is not supported on WebGPU (WGSL has no f64); use float32 or float16, or the cpu backend`);
  }
  return d;
}

/** WGSL storage element type. */
export function wgslType(d: GpuDType): 'f32' | 'f16' {
  return d === 'float16' ? 'f16' : 'f32';
}

/** `enable f16;` when needed. */
export function enableDirectives(d: GpuDType, extra: readonly string[] = []): string {
  const lines: string[] = [];
  if (d === 'float16') lines.push('enable f16;');
  for (const e of extra) lines.push(`enable ${e};`);
  return lines.length ? `${lines.join('\n')}\n` : '';
}

/** The device features a kernel over tensors of dtype `d` needs: `shader-f16` for float16 (the pair of `enableDirectives`). */
export function dtypeFeatures(d: GpuDType): string[] {
  return d === 'float16' ? ['shader-f16'] : [];
}
