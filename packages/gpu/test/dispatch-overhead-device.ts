/**
 * Device script (not a test): what one dispatch costs on its own, apart from its work. Kernels that return at once
 * (no-ops), timed the two ways the library times (back-to-back in one command buffer: `timeDispatch`; one submission
 * behind a warm dispatch: `ctx.profile`, as the benchmark), varying one thing at a time: the grid, the workgroup
 * memory declared, a uniform buffer, a storage write (which makes Dawn put a barrier before the next dispatch that
 * writes the buffer), and how many dispatches share a pass. Bundle with `tools/device/bundle.sh
 * packages/gpu/test/dispatch-overhead-device.ts` and run there; prints one line per variant (us, median). The
 * one-submission column of the two-dispatch rows runs them in two passes (`ctx.dispatch` has no one-pass mode).
 */
import type { GeneratedKernel } from '@natten-web/wgsl';
import { uniformDecl } from '@natten-web/wgsl';
import { type DispatchCommand, timeDispatch } from '../src/index.ts';
import { openDevice } from './device-forward-problems.ts';

const { ctx, warmer } = await openDevice();

interface Noop {
  readonly wg: number;
  readonly bytes: number;
  readonly uniform: boolean;
  readonly write: boolean;
}

function noopKernel(n: Noop): GeneratedKernel {
  const uniforms = n.uniform ? [{ name: 'flag', type: 'u32' as const }, { name: 'pad', type: 'u32' as const }] : [];
  const words = n.bytes / 4;
  // Workgroup memory needs a use with a side effect to stay in the pipeline, so those kernels bind the buffer writable.
  const rw = n.write || words > 0;
  const code = `// noop wg${n.wg} b${n.bytes} u${n.uniform} w${n.write}
@group(0) @binding(0) var<storage, ${rw ? 'read_write' : 'read'}> buf: array<u32>;
${n.uniform ? uniformDecl(uniforms, 1) : ''}
${words > 0 ? `var<workgroup> sh: array<u32, ${words}>;` : ''}
@compute @workgroup_size(${n.wg})
fn main(@builtin(workgroup_id) w: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let never = buf[0] == 0xdeadbeefu${n.uniform ? ' || params.flag == 7u' : ''};
${words > 0 ? `  if (never) { sh[lid % ${words}u] = lid; }\n  workgroupBarrier();\n  if (never) { buf[1 + lid] = sh[(lid + 1u) % ${words}u]; }` : ''}
${n.write ? '  if (lid == 0u) { buf[2u + w.x % 1000u] = w.x; }' : '  _ = never;'}
}
`;
  return {
    key: `noop-${n.wg}-${n.bytes}-${n.uniform}-${n.write}`,
    code,
    entryPoint: 'main',
    workgroupSize: [n.wg, 1, 1],
    bindings: [{ name: 'buf', access: rw ? 'read_write' : 'read' }],
    uniforms,
    workgroupBytes: n.bytes,
    features: [],
  };
}

const buffers = [0, 1].map(() => ctx.device.createBuffer({ size: 1 << 16, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC }));
const cmd = (n: Noop, groups: number, which = 0): DispatchCommand => ({
  kernel: noopKernel(n),
  buffers: [buffers[which] as GPUBuffer],
  workgroups: [groups, 1, 1],
  ...(n.uniform ? { uniforms: { flag: 0, pad: 0 } } : {}),
});

const base: Noop = { wg: 128, bytes: 0, uniform: false, write: false };
const variants: { label: string; commands: DispatchCommand[]; onePass?: boolean }[] = [
  { label: '1 wg x 32', commands: [cmd({ ...base, wg: 32 }, 1)] },
  { label: '512 wg x 128', commands: [cmd(base, 512)] },
  { label: '1024 wg x 64', commands: [cmd({ ...base, wg: 64 }, 1024)] },
  { label: '4096 wg x 128', commands: [cmd(base, 4096)] },
  { label: '512 wg x 128, 11 KiB (writable binding)', commands: [cmd({ ...base, bytes: 11264 }, 512)] },
  { label: '1024 wg x 64, 11 KiB (writable binding)', commands: [cmd({ ...base, wg: 64, bytes: 11264 }, 1024)] },
  { label: '512 wg x 128, writable binding, no write', commands: [cmd({ ...base, bytes: 4 }, 512)] },
  { label: '512 wg x 128, uniform', commands: [cmd({ ...base, uniform: true }, 512)] },
  { label: '512 wg x 128, write', commands: [cmd({ ...base, write: true }, 512)] },
  { label: '512 wg, all (11K, uniform, write)', commands: [cmd({ wg: 128, bytes: 11264, uniform: true, write: true }, 512)] },
  { label: '2 x 512 wg read, 2 passes', commands: [cmd(base, 512), cmd(base, 512)] },
  { label: '2 x 512 wg read, 1 pass', commands: [cmd(base, 512), cmd(base, 512)], onePass: true },
  { label: '2 x 512 wg write same, 2 passes', commands: [cmd({ ...base, write: true }, 512), cmd({ ...base, write: true }, 512)] },
  { label: '2 x 512 wg write other, 1 pass', commands: [cmd({ ...base, write: true }, 512, 0), cmd({ ...base, write: true }, 512, 1)], onePass: true },
  { label: '4 x 512 wg read, 1 pass', commands: [cmd(base, 512), cmd(base, 512), cmd(base, 512), cmd(base, 512)], onePass: true },
  { label: 'bwd-like: fwd 512x128 + dq 512x128 + dkv 1024x64 (all)', commands: [cmd({ wg: 128, bytes: 11264, uniform: true, write: true }, 512), cmd({ wg: 128, bytes: 11264, uniform: true, write: true }, 512), cmd({ wg: 64, bytes: 11264, uniform: true, write: true }, 1024)] },
];

for (const v of variants) {
  const t = await timeDispatch(ctx, v.commands, { warmup: 3, iterations: 50, ...(warmer ? { warmer } : {}), ...(v.onePass ? { onePass: true } : {}) });
  // One submission per run behind a warm dispatch, as the benchmark times an op (ctx.profile).
  const samples: number[] = [];
  if (warmer) await warmer.warm(200);
  for (let i = 0; i < 30; i++) {
    warmer?.queue();
    const p = await ctx.profile(() => ctx.dispatch(v.commands, 'noop'));
    if (p.gpuNs !== undefined) samples.push(p.gpuNs / 1e3);
  }
  samples.sort((a, b) => a - b);
  const prof = samples.length > 0 ? (samples[samples.length >> 1] as number).toFixed(2) : '-';
  console.log(`${v.label.padEnd(58)} back-to-back ${(t.medianNs / 1e3).toFixed(2).padStart(7)} us   one submission ${prof.padStart(7)} us`);
}
ctx.destroy();
setTimeout(() => process.exit(0), 2000).unref();
