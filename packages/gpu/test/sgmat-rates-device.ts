/**
 * Device script (not a test): what the pieces of a tensor-core attention step cost on this adapter, and how many
 * workgroups an SM holds at a given amount of workgroup memory. Two probes:
 *
 * - `residency`: workgroups of 128 invocations that each chase a chain of dependent loads (latency-bound, so a
 *   workgroup's time does not depend on how many share the SM), with W bytes of workgroup memory declared; the grid's
 *   time over one workgroup's time is the number of waves, so grid / (SMs x waves) is the workgroups an SM holds.
 * - `step`: a subgroup's loop over the forward's chunk step with parts switched on and off: S = Q K^T (4 multiplies at
 *   head dim 64), S stored to workgroup memory, a scalar exp2 pass writing P (f16), P reloaded, O += P V (4
 *   multiplies); K and V fragments loaded from workgroup memory per step or held; `rb` row blocks of 16 queries per
 *   subgroup sharing each loaded K/V fragment. No barriers unless `bar` (the real kernels take them per chunk).
 *   Prints ns per subgroup step and the matrix rate.
 *
 * Bundle with `tools/device/bundle.sh packages/gpu/test/sgmat-rates-device.ts` and run on the device.
 */
import type { GeneratedKernel } from '@natten-web/wgsl';
import { MMA_HEADER } from '@natten-web/wgsl';
import { type DispatchCommand, timeDispatch } from '../src/index.ts';
import { openDevice } from './device-forward-problems.ts';

const { ctx, warmer } = await openDevice();
const SMS = 132;

const range = (n: number): number[] => Array.from({ length: n }, (_, i) => i);
const buf = (bytes: number): GPUBuffer => ctx.device.createBuffer({ size: bytes, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC });

// ---- residency
const CHAIN = 1 << 20;
const chain = buf(CHAIN * 4);
{
  const idx = new Uint32Array(CHAIN);
  for (let i = 0; i < CHAIN; i++) idx[i] = (i * 7919 + 104729) % CHAIN;
  ctx.device.queue.writeBuffer(chain, 0, idx);
}
const sink = buf(1 << 22);

function chaseKernel(bytes: number, steps: number, wg: number): GeneratedKernel {
  const words = Math.max(1, bytes / 4);
  return {
    key: `chase-${bytes}-${steps}-${wg}`,
    code: `@group(0) @binding(0) var<storage, read> chain: array<u32>;
@group(0) @binding(1) var<storage, read_write> sink: array<u32>;
var<workgroup> sh: array<u32, ${words}>;
@compute @workgroup_size(${wg})
fn main(@builtin(workgroup_id) w: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  sh[(lid * 97u) % ${words}u] = lid;
  workgroupBarrier();
  var j = (w.x * ${wg}u + lid + sh[(lid * 13u + 5u) % ${words}u]) % ${CHAIN}u;
  for (var s = 0u; s < ${steps}u; s++) { j = chain[j]; }
  sink[(w.x * ${wg}u + lid) % ${(1 << 20) - 1}u] = j;
}
`,
    entryPoint: 'main',
    workgroupSize: [wg, 1, 1],
    bindings: [
      { name: 'chain', access: 'read' },
      { name: 'sink', access: 'read_write' },
    ],
    uniforms: [],
    workgroupBytes: words * 4,
    features: [],
  };
}

async function time(commands: DispatchCommand[]): Promise<number> {
  const t = await timeDispatch(ctx, commands, { warmup: 2, iterations: 9, ...(warmer ? { warmer } : {}) });
  return t.medianNs / 1e3;
}

const mode = process.argv[2] ?? 'all';
if (mode === 'all' || mode === 'residency') {
  console.log('---- residency (128 invocations per workgroup, chase of 400 dependent loads)');
  const STEPS = 400;
  for (const wg of [128, 64]) {
    const one = await time([{ kernel: chaseKernel(4, STEPS, wg), buffers: [chain, sink], workgroups: [SMS, 1, 1] }]);
    for (const kib of [0, 4, 8, 11, 12, 16, 20, 24, 32, 40, 48]) {
      const bytes = Math.max(4, kib * 1024 - (kib === 48 ? 16 : 0));
      const groups = SMS * 48;
      const t = await time([{ kernel: chaseKernel(bytes, STEPS, wg), buffers: [chain, sink], workgroups: [groups, 1, 1] }]);
      const waves = t / one;
      console.log(`wg ${wg} smem ${String(kib).padStart(2)} KiB: one wave ${one.toFixed(1)} us, grid of ${groups} ${t.toFixed(1)} us = ${waves.toFixed(2)} waves -> ${(48 / waves).toFixed(2)} workgroups per SM`);
    }
  }
}

// ---- step costs
interface Step {
  readonly rb: 1 | 2 | 4;
  readonly kload: boolean;
  readonly vload: boolean;
  readonly sround: boolean;
  /** How S goes to P with `sround`: scalar8 (eight scalar reads and writes per lane), vec4 (two vec4 reads, one 16-byte write), store (S stored, P loaded, no pass), storeonly, loadonly. Absent = scalar8. */
  readonly how?: 'scalar8' | 'vec4' | 'store' | 'storeonly' | 'loadonly';
  readonly bar: boolean;
  /** Workgroup memory declared beyond what the step uses (bytes). */
  readonly pad: number;
  readonly subgroups: number;
  /** S scratch row stride in floats (default 16) and the store's layout. */
  readonly lds?: number;
  readonly colMajor?: boolean;
}
const F = 16;
const LDK = 72; // staged row stride in halves (64 + 8 padding), as the kernels
const CHUNK_HALVES = 2 * F * LDK; // K then V rows of one 16-key chunk
const CHUNKS = 2;
function roundTrip(how: NonNullable<Step['how']>, b: number, rb: number, lds = F, colMajor = false): string {
  const LEFT = `subgroup_matrix_left<f16, ${F}, ${F}>`;
  const sOff = `${b * F * F}u + sg * ${rb * F * F}u`;
  const sOffS = `${b * F * lds}u + sg * ${rb * F * lds}u`;
  const store = `    subgroupMatrixStore<${colMajor ? 'col_major' : 'row_major'}>(&ss, ${sOffS}, s_${b}, ${lds}u);`;
  const load = `    let p_${b} = subgroupMatrixLoad<${LEFT}, row_major>(&ps, ${sOff}, ${F}u);`;
  const base = `let base = ${sOff} + (lane / 2u) * ${F}u + (lane % 2u) * 8u;`;
  switch (how) {
    case 'storeonly':
      return `${store}\n    let p_${b} = q_${b}_${b % 4};`;
    case 'loadonly':
      return `    o_${b}_3 = subgroupMatrixMultiplyAccumulate(q_${b}_0, k_0, s_${b});\n${load}`;
    case 'store':
      return `${store}\n${load}`;
    case 'scalar8':
      return `${store}
    {
      ${base}
      for (var e = 0u; e < 8u; e++) {
        ps[base + e] = f16(exp2(ss[base + e] - mrow));
      }
    }
${load}`;
    case 'vec4':
      return `${store}
    {
      ${base}
      let x0 = vec4<f32>(ss[base], ss[base + 1u], ss[base + 2u], ss[base + 3u]);
      let x1 = vec4<f32>(ss[base + 4u], ss[base + 5u], ss[base + 6u], ss[base + 7u]);
      let p0 = exp2(x0 - vec4<f32>(mrow));
      let p1 = exp2(x1 - vec4<f32>(mrow));
      let h0 = vec4<f16>(p0);
      let h1 = vec4<f16>(p1);
      ps[base] = h0.x; ps[base + 1u] = h0.y; ps[base + 2u] = h0.z; ps[base + 3u] = h0.w;
      ps[base + 4u] = h1.x; ps[base + 5u] = h1.y; ps[base + 6u] = h1.z; ps[base + 7u] = h1.w;
    }
${load.replace('&ps,', '&ps,')}`;
  }
}

function stepKernel(s: Step, iters: number): GeneratedKernel {
  const LEFT = `subgroup_matrix_left<f16, ${F}, ${F}>`;
  const RIGHT = `subgroup_matrix_right<f16, ${F}, ${F}>`;
  const RESULT = `subgroup_matrix_result<f32, ${F}, ${F}>`;
  const WG = 32 * s.subgroups;
  const sWords = s.subgroups * s.rb * F * (s.lds ?? F);
  const pHalves = s.subgroups * s.rb * F * F;
  const kvHalves = CHUNKS * CHUNK_HALVES + s.pad / 2;
  const blocks = range(s.rb);
  const step = `
    let c = (it % ${CHUNKS}u) * ${CHUNK_HALVES}u;
${range(4)
  .map((kk) => (s.kload ? `    let k_${kk} = subgroupMatrixLoad<${RIGHT}, col_major>(&kv, c + ${kk * F}u, ${LDK}u);` : `    let k_${kk} = k0_${kk};`))
  .join('\n')}
${blocks
  .map(
    (b) => `    var s_${b} = ${RESULT}();
${range(4)
  .map((kk) => `    s_${b} = subgroupMatrixMultiplyAccumulate(q_${b}_${kk}, k_${kk}, s_${b});`)
  .join('\n')}`,
  )
  .join('\n')}
${blocks
  .map((b) =>
    s.sround
      ? roundTrip(s.how ?? 'scalar8', b, s.rb, s.lds ?? F, s.colMajor === true)
      : `    let p_${b} = q_${b}_${b % 4};`,
  )
  .join('\n')}
${s.bar ? '    workgroupBarrier();' : ''}
${range(4)
  .map(
    (n) => `    {
${s.vload ? `      let v = subgroupMatrixLoad<${RIGHT}, row_major>(&kv, c + ${F * LDK + n * F}u, ${LDK}u);` : `      let v = k0_${n};`}
${blocks.map((b) => `      o_${b}_${n} = subgroupMatrixMultiplyAccumulate(p_${b}, v, o_${b}_${n});`).join('\n')}
    }`,
  )
  .join('\n')}
${s.bar ? '    workgroupBarrier();' : ''}`;
  const code = `${MMA_HEADER}
@group(0) @binding(0) var<storage, read_write> sink: array<f32>;
var<workgroup> kv: array<f16, ${kvHalves}>;
var<workgroup> ss: array<f32, ${sWords}>;
var<workgroup> ps: array<f16, ${pHalves}>;
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) w: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let sg = lid / 32u;
  let lane = lid % 32u;
  for (var i = lid; i < ${kvHalves}u; i += ${WG}u) { kv[i] = f16(f32((i * 37u + w.x) % 64u) * 0.015625 - 0.5); }
  workgroupBarrier();
  let mrow = sink[0];
${blocks.flatMap((b) => range(4).map((kk) => `  let q_${b}_${kk} = subgroupMatrixLoad<${LEFT}, row_major>(&kv, ${(b * F * LDK + kk * F) % (CHUNK_HALVES - F * LDK)}u, ${LDK}u);`)).join('\n')}
${range(4)
  .map((kk) => `  let k0_${kk} = subgroupMatrixLoad<${RIGHT}, col_major>(&kv, ${kk * F}u, ${LDK}u);`)
  .join('\n')}
${blocks.flatMap((b) => range(4).map((n) => `  var o_${b}_${n} = ${RESULT}();`)).join('\n')}
  for (var it = 0u; it < ${iters}u; it++) {${step}
  }
${blocks.flatMap((b) => range(4).map((n) => `  subgroupMatrixStore<row_major>(&sink, 16u + ((w.x * ${s.subgroups}u + sg) % 256u) * 256u, o_${b}_${n}, 16u);`)).join('\n')}
}
`;
  return {
    key: `step-${JSON.stringify(s)}-${iters}`,
    code,
    entryPoint: 'main',
    workgroupSize: [WG, 1, 1],
    bindings: [{ name: 'sink', access: 'read_write' }],
    uniforms: [],
    workgroupBytes: kvHalves * 2 + sWords * 4 + pHalves * 2,
    features: ['shader-f16', 'subgroups', 'chromium-experimental-subgroup-matrix'],
  };
}

if (mode === 'all' || mode === 'step') {
  const ITERS = 512;
  const fsink = buf(1 << 20);
  const base: Step = { rb: 1, kload: true, vload: true, sround: true, bar: false, pad: 0, subgroups: 4 };
  const variants: [string, Step][] = [
    ['mma only (held fragments)', { ...base, kload: false, vload: false, sround: false }],
    ['S store only, stride 16', { ...base, how: 'storeonly' }],
    ['S store only, stride 20', { ...base, how: 'storeonly', lds: 20 }],
    ['S store only, stride 24', { ...base, how: 'storeonly', lds: 24 }],
    ['S store only, stride 32', { ...base, how: 'storeonly', lds: 32 }],
    ['S store only, stride 18', { ...base, how: 'storeonly', lds: 18 }],
    ['S store only, col-major 16', { ...base, how: 'storeonly', colMajor: true }],
    ['S store only, col-major 20', { ...base, how: 'storeonly', lds: 20, colMajor: true }],
    ['S store + P load, stride 20', { ...base, how: 'store', lds: 20 }],
    ['S store only, stride 16, 2 subgroups', { ...base, how: 'storeonly', subgroups: 2 }],
    ['S store only, stride 20, 2 subgroups', { ...base, how: 'storeonly', lds: 20, subgroups: 2 }],
  ];
  console.log(`---- step costs (${ITERS} steps per subgroup, head dim 64, 16 keys per step; ns per subgroup step = time / (steps x subgroups per SM-wave))`);
  for (const [label, s] of variants) {
    const groups = SMS * 16;
    const t = await time([{ kernel: stepKernel(s, ITERS), buffers: [fsink], workgroups: [groups, 1, 1] }]);
    const mmas = groups * s.subgroups * ITERS * 8 * s.rb;
    const tflops = (mmas * 2 * F * F * F) / (t * 1e-6) / 1e12;
    // Per 16 query rows: the time per SM over the row-block steps each SM ran.
    const perRowStep = (t * 1e3) / ((groups * s.subgroups * s.rb * ITERS) / SMS);
    console.log(`${label.padEnd(32)} ${t.toFixed(1).padStart(9)} us  ${tflops.toFixed(1).padStart(6)} TFLOP/s  ${perRowStep.toFixed(2).padStart(6)} ns per 16-row step per SM  smem ${stepKernel(s, ITERS).workgroupBytes} B`);
  }
}
ctx.destroy();
setTimeout(() => process.exit(0), 2000).unref();
