/**
 * The conformance smoke subset under Deno's WebGPU (wgpu + naga), so WGSL that only Dawn/Tint accepts is caught:
 * one quick case per (op, rank, dtype) of the shared suite (`@natten-web/testkit`), every seed op x rank 1-3 x
 * f32/f16, on the WebGPU backend against the CPU reference, with the suite's tolerances. f16 cases run only
 * when the adapter offers `shader-f16` (lavapipe through wgpu does). Run: tools/deno-smoke/run.sh tools/deno-smoke/conformance.ts
 */
import { cpuBackend } from '@natten-web/cpu';
import { createGpuBackend, GpuContext } from '@natten-web/gpu';
import { buildCases, type NaCase, runNaCase } from '@natten-web/testkit';
import { check, runChecksAndExit } from './harness.ts';

const ctx = await GpuContext.create();
const a = ctx.adapterInfo;
console.log(`WebGPU adapter: vendor=${a.vendor} device=${a.device} description="${a.description}" features=${[...ctx.features].join(',')} runtime=deno wgpu`);
const backend = createGpuBackend(ctx);
const dtypes = ctx.hasF16 ? (['float32', 'float16'] as const) : (['float32'] as const);
const picked = new Map<string, NaCase>();
for (const c of buildCases({ size: 'quick', dtypes: [...dtypes] })) {
  const slot = `${c.op}/${c.rank}/${c.dtype}`;
  if (!picked.has(slot)) picked.set(slot, c);
}
for (const c of picked.values()) {
  check(c.key, async () => {
    const r = await runNaCase(backend, c, { reference: cpuBackend });
    if (!r.ok) throw new Error(r.message);
  });
}
await runChecksAndExit();
