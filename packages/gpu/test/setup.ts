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
