import { GpuContext } from '../src/index.ts';

let shared: Promise<GpuContext> | undefined;

/**
 * One GPU context per test file. A missing adapter fails (never skips) unless NATTEN_WEB_GPU_OPTIONAL=1
 * (never set in CI). Logs the adapter once so every run shows what it ran on.
 */
export function gpuContext(): Promise<GpuContext> {
  shared ??= GpuContext.create().then((ctx) => {
    const a = ctx.adapterInfo;
    console.log(
      `[natten-web gpu] adapter: ${a.vendor} / ${a.architecture} / ${a.device} (${a.description}) fallback=${a.isFallbackAdapter} features=${[...ctx.features].join(',')}`,
    );
    return ctx;
  });
  return shared;
}

/**
 * NATTEN_WEB_EXTENDED=1 runs the exhaustive sweeps (every enumerated config of every sample problem). CI runs
 * the default tier: every config of the 1-D sample problem, plus the shared conformance suite; on lavapipe each
 * new kernel variant costs seconds of LLVM compile time, so the full sweep is for GPUs and nightly runs.
 */
export const EXTENDED = (globalThis as { process?: { env?: Record<string, string | undefined> } }).process?.env?.NATTEN_WEB_EXTENDED === '1';

/** The device limits config selection reads, as a plain object (to override one in a fake context). */
export function limitsOf(ctx: GpuContext): Record<string, number> {
  const l = ctx.limits as unknown as Record<string, number>;
  return {
    maxComputeWorkgroupStorageSize: l.maxComputeWorkgroupStorageSize as number,
    maxComputeInvocationsPerWorkgroup: l.maxComputeInvocationsPerWorkgroup as number,
    maxComputeWorkgroupSizeX: l.maxComputeWorkgroupSizeX as number,
    maxComputeWorkgroupsPerDimension: l.maxComputeWorkgroupsPerDimension as number,
    maxStorageBufferBindingSize: l.maxStorageBufferBindingSize as number,
  };
}
