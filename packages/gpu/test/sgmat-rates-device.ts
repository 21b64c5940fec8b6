/**
 * Device script (not a test): what the pieces of a tensor-core attention step cost on this adapter. A subgroup loops
 * over the forward's chunk step with parts switched on and off: S = Q K^T (4 multiplies at head dim 64), S stored to
 * workgroup memory (row stride and layout chosen), a scalar exp2 pass writing P (f16), P reloaded, O += P V (4
 * multiplies); K and V fragments loaded from workgroup memory per step or held; `rb` row blocks of 16 queries per
 * subgroup sharing each loaded K/V fragment. No barriers unless `bar` (the real kernels take them per chunk). Prints
 * ns per 16-row step per SM and the rate of the multiplies the step keeps (the compiler drops S's where nothing
 * reads S). docs/performance.md ("What a step costs on this stack", session 25) has the H200's readings.
 *
 * How many workgroups an SM holds is counted by `mma-device.mjs --mode occupancy` instead: a first version of this
 * script timed chains of dependent loads, which the L2's throughput bounded, not their latency, so it read the
 * same for every workgroup size and memory.
 *
 * Bundle with `tools/device/bundle.sh packages/gpu/test/sgmat-rates-device.ts` and run on the device.
 */
import { type GeneratedKernel, MMA_HEADER } from '@natten-web/wgsl';
import { type DispatchCommand, timeDispatch } from '../src/index.ts';
import { openDevice } from './device-forward-problems.ts';

const { ctx, warmer } = await openDevice();
const SMS = 132;

const range = (n: number): number[] => Array.from({ length: n }, (_, i) => i);
const buf = (bytes: number): GPUBuffer => ctx.device.createBuffer({ size: bytes, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC });

async function time(commands: DispatchCommand[]): Promise<number> {
  const t = await timeDispatch(ctx, commands, { warmup: 2, iterations: 9, ...(warmer ? { warmer } : {}) });
  return t.medianNs / 1e3;
}

// ---- step costs
interface Step {
  readonly rb: 1 | 2 | 4;
  readonly kload: boolean;
  readonly vload: boolean;
  readonly sround: boolean;
  /**
   * How S goes to P with `sround`: scalar8 (eight scalar reads and writes per lane), vec4 (two vec4 reads, eight f16
   * writes), store (S stored, P loaded, no pass), storeonly (S stored, P not loaded), loadonly (P loaded, S kept live
   * by one more multiply instead of a store). Absent = scalar8.
   */
  readonly how?: 'scalar8' | 'vec4' | 'store' | 'storeonly' | 'loadonly';
  readonly bar: boolean;
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
${load}`;
  }
}

function stepKernel(s: Step, iters: number): GeneratedKernel {
  const LEFT = `subgroup_matrix_left<f16, ${F}, ${F}>`;
  const RIGHT = `subgroup_matrix_right<f16, ${F}, ${F}>`;
  const RESULT = `subgroup_matrix_result<f32, ${F}, ${F}>`;
  const WG = 32 * s.subgroups;
  const sWords = s.subgroups * s.rb * F * (s.lds ?? F);
  const pHalves = s.subgroups * s.rb * F * F;
  const kvHalves = CHUNKS * CHUNK_HALVES;
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

{
  const ITERS = 512;
  const fsink = buf(1 << 20);
  const base: Step = { rb: 1, kload: true, vload: true, sround: true, bar: false, subgroups: 4 };
  // Every variant docs/performance.md cites, in one run.
  const variants: [string, Step][] = [
    ['mma only (held fragments)', { ...base, kload: false, vload: false, sround: false }],
    ['S store only, stride 16', { ...base, how: 'storeonly' }],
    ['S store only, stride 18', { ...base, how: 'storeonly', lds: 18 }],
    ['S store only, stride 20', { ...base, how: 'storeonly', lds: 20 }],
    ['S store only, stride 24', { ...base, how: 'storeonly', lds: 24 }],
    ['S store only, stride 32', { ...base, how: 'storeonly', lds: 32 }],
    ['S store only, col-major 16', { ...base, how: 'storeonly', colMajor: true }],
    ['S store only, col-major 20', { ...base, how: 'storeonly', lds: 20, colMajor: true }],
    ['P load only', { ...base, how: 'loadonly' }],
    ['S store + P load', { ...base, how: 'store' }],
    ['S store + vec4 pass + P load', { ...base, how: 'vec4' }],
    ['S store + scalar8 pass + P load', { ...base, how: 'scalar8' }],
    ['vec4, + 2 barriers', { ...base, how: 'vec4', bar: true }],
    ['rb2 S store + P load', { ...base, rb: 2, how: 'store' }],
    ['rb2 vec4', { ...base, rb: 2, how: 'vec4' }],
    ['vec4, 2 subgroups', { ...base, how: 'vec4', subgroups: 2 }],
    ['vec4, 8 subgroups', { ...base, how: 'vec4', subgroups: 8 }],
  ];
  // The multiplies a step keeps per row block: S's four are dropped where nothing reads S (no round trip), and
  // `loadonly` adds one that keeps S alive.
  const kept = (s: Step): number => (!s.sround ? 4 : s.how === 'loadonly' ? 9 : 8);
  console.log(`---- step costs (${ITERS} steps per subgroup, head dim 64, 16 keys per step; ns per subgroup step = time / (steps x subgroups per SM-wave))`);
  for (const [label, s] of variants) {
    const groups = SMS * 16;
    const t = await time([{ kernel: stepKernel(s, ITERS), buffers: [fsink], workgroups: [groups, 1, 1] }]);
    const mmas = groups * s.subgroups * ITERS * kept(s) * s.rb;
    const tflops = (mmas * 2 * F * F * F) / (t * 1e-6) / 1e12;
    // Per 16 query rows: the time per SM over the row-block steps each SM ran.
    const perRowStep = (t * 1e3) / ((groups * s.subgroups * s.rb * ITERS) / SMS);
    console.log(`${label.padEnd(32)} ${t.toFixed(1).padStart(9)} us  ${tflops.toFixed(1).padStart(6)} TFLOP/s  ${perRowStep.toFixed(2).padStart(6)} ns per 16-row step per SM  smem ${stepKernel(s, ITERS).workgroupBytes} B`);
  }
}
ctx.destroy();
setTimeout(() => process.exit(0), 2000).unref();
