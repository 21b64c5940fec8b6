/**
 * `box_divmod` (the mma kernels' key-box decoding by float reciprocal, `fastDivide`) against integer division: every
 * quotient and remainder exact for n below MMA_FAST_DIVIDE_ROWS (2^21) and any divisor, at the edges (multiples of the
 * divisor and their neighbours, the top of the range) and at random, also with the reciprocal a few ulp off (as an
 * approximate GPU division may give it).
 */
import { BOX_DIVMOD_FN, MMA_FAST_DIVIDE_ROWS } from '@natten-web/wgsl';
import { afterAll, describe, expect, it } from 'vitest';
import { gpuContext } from './setup.ts';

afterAll(async () => (await gpuContext()).destroy());

const code = `@group(0) @binding(0) var<storage, read_write> io: array<vec4<u32>>;
${BOX_DIVMOD_FN}
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
  let i = id.x;
  if (i >= arrayLength(&io)) { return; }
  let n = io[i].x;
  let w = io[i].y;
  // As the kernels compute it (the reciprocal of the box width once, then per row), and with that reciprocal
  // 3 ulp low and 3 ulp high: GPUs may divide approximately (WGSL allows 2.5 ulp), and the correction step must
  // absorb it either way.
  let inv = 1.0 / f32(w);
  let d = box_divmod(n, w, inv);
  let lo = box_divmod(n, w, bitcast<f32>(bitcast<u32>(inv) - 3u));
  let hi = box_divmod(n, w, bitcast<f32>(bitcast<u32>(inv) + 3u));
  let same = all(lo == d) && all(hi == d);
  io[i] = vec4<u32>(select(0xffffffffu, n, same), w, d.x, d.y);
}
`;

describe('box_divmod (float-reciprocal box decoding)', () => {
  it('equals integer division and remainder below 2^21 for every divisor tried, the reciprocal exact or 3 ulp off', async () => {
    const ctx = await gpuContext();
    const top = MMA_FAST_DIVIDE_ROWS - 1;
    // Small and large widths, powers of two and their neighbours, and every width up to 64 (some reciprocals round
    // down in f32, some up).
    const divisors = [...Array.from({ length: 64 }, (_, i) => i + 1), 100, 127, 129, 255, 257, 511, 1000, 1023, 1025, 4095, 65535, 1 << 20, top];
    let seed = 12345;
    const rand = (m: number): number => {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      return seed % m;
    };
    const pairs: [number, number][] = [];
    for (const w of divisors) {
      for (let n = 0; n < 64; n++) pairs.push([n, w]);
      for (let j = 0; j < 400; j++) {
        const k = rand(Math.floor(top / w) + 1);
        for (const n of [k * w - 1, k * w, k * w + 1]) if (n >= 0 && n <= top) pairs.push([n, w]);
      }
      for (let j = 0; j < 200; j++) pairs.push([rand(top + 1), w]);
      pairs.push([top, w], [top - 1, w]);
    }
    const data = new Uint32Array(pairs.length * 4);
    pairs.forEach(([n, w], i) => data.set([n, w, 0, 0], 4 * i));
    const buffer = ctx.device.createBuffer({ size: data.byteLength, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST });
    ctx.device.queue.writeBuffer(buffer, 0, data);
    const kernel = { key: 'box-divmod-test', code, entryPoint: 'main', workgroupSize: [64, 1, 1] as [number, number, number], bindings: [{ name: 'io', access: 'read_write' as const }], uniforms: [], workgroupBytes: 0, features: [] };
    await ctx.dispatch([{ kernel, buffers: [buffer], workgroups: [Math.ceil(pairs.length / 64), 1, 1] }]);
    const staging = ctx.device.createBuffer({ size: data.byteLength, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    const enc = ctx.device.createCommandEncoder();
    enc.copyBufferToBuffer(buffer, 0, staging, 0, data.byteLength);
    ctx.device.queue.submit([enc.finish()]);
    await staging.mapAsync(GPUMapMode.READ);
    const got = new Uint32Array(staging.getMappedRange().slice(0));
    staging.unmap();
    staging.destroy();
    buffer.destroy();
    const wrong: string[] = [];
    pairs.forEach(([n, w], i) => {
      const q = Math.floor(n / w);
      if (got[4 * i] !== n || got[4 * i + 2] !== q || got[4 * i + 3] !== n - q * w) wrong.push(`${n} / ${w}: got ${got[4 * i + 2]} r ${got[4 * i + 3]}${got[4 * i] !== n ? ' (not the same with the reciprocal 3 ulp off)' : ''}`);
    });
    expect(pairs.length).toBeGreaterThan(50000);
    expect(wrong.slice(0, 5)).toEqual([]);
  });
});
