/**
 * Timing probes of the tensor-core forward for the device script (`mma-device.ts --mode probe`; not tests): the
 * default forward's text patched to isolate one cost each, timed next to the unpatched kernel in the same process.
 * Most probes give wrong results; they only time. Session 12's readings (H200) are in docs/device-results.md.
 * - `pad1k` .. `pad8k`: that many more bytes of workgroup memory, declared and never touched in practice
 *   (occupancy: how many workgroups fit in the SM's shared memory).
 * - `regs16` / `regs32`: 16 / 32 more floats kept live across the walk (register pressure).
 * - `v-over-k`: V staged over K, so the staging area's V half is not declared (less workgroup memory, same work).
 * - `kc-free`: the key coordinates computed from the column instead of loaded from workgroup memory.
 * - `no-mask`: no per-element mask. `no-fetch`: staged values made from the key row instead of global loads.
 * - `no-stage`: no staging stores (the fetch goes with them). `no-s-mma` / `no-pv`: no S = Q K^T / O += P V.
 * - `no-flag`: no rescale decision (its two barriers). `no-end-barrier`: no barrier at the end of a step.
 * - `no-exp`, `no-s-read`, `no-p-store`, `no-s`: the softmax's exponentials, its S reads, its P stores, all of S
 *   (store, multiplies, K loads and reads); not yet run on a device.
 * - `no-walk`: no chunk step (the prologue, Q gather and epilogue alone); `one-chunk`: at most one step, so
 *   (unpatched - one-chunk) / (steps - 1) is a step's cost; `no-out`: the epilogue without its global writes
 *   (its scratch rounds and barriers stay); `empty`: the workgroup returns after its prologue's decode
 *   (`empty-first`: before it, session 16);
 *   `no-q-load`: the Q gather without its global loads; `no-epilogue`: no epilogue (scratch rounds, writes, LSE).
 *   Session 14. A probe name joined with '+' applies each patch in turn (`--probes no-walk+no-epilogue`).
 * - `half-frags`: the walk's right-fragment loads of head-dim columns 32..63 made loads of columns 0..31 (head dim
 *   64 and up); `no-s-store`: no matrix store of S (or dP); `s24`: S and dP rows of 24 floats (session 25).
 * The memory and register probes and the walk's length (`no-walk`, `one-chunk`) also apply to the backward's kernels
 * (`BACKWARD_PROBES`).
 */
import type { GeneratedKernel } from '@natten-web/wgsl';
import type { DispatchCommand } from '../src/index.ts';

export interface Probe {
  readonly patch: (code: string) => string;
  /** Workgroup bytes the patch adds (the kernel's declared total is raised by as much), or their count from the text. */
  readonly bytes?: number | ((code: string) => number);
}

/** The workgroup bytes a probe adds to kernel text `code`. */
export function probeBytes(probe: Probe, code: string): number {
  return typeof probe.bytes === 'function' ? probe.bytes(code) : (probe.bytes ?? 0);
}

/** Command `c` with its kernel text patched by `probe` (keyed `#probe-${name}`), its declared workgroup bytes adjusted. */
export function probedCommand(c: DispatchCommand, name: string, probe: Probe): DispatchCommand {
  return { ...c, kernel: { ...c.kernel, key: `${c.kernel.key}#probe-${name}`, code: probe.patch(c.kernel.code), workgroupBytes: c.kernel.workgroupBytes + probeBytes(probe, c.kernel.code) } };
}

/** The probe of a name, or of names joined with '+' (each patch in turn, their bytes added); undefined if unknown. */
export function probeOf(name: string): Probe | undefined {
  const parts = name.split('+').map((n) => PROBES[n]);
  if (parts.some((x) => x === undefined)) return undefined;
  const ps = parts as Probe[];
  if (ps.length === 1) return ps[0];
  return { patch: (c) => ps.reduce((code, x) => x.patch(code), c), bytes: (c) => ps.reduce((sum, x) => sum + probeBytes(x, c), 0) };
}


const pad = (bytes: number): Probe => ({ patch: (c) => padWorkgroup(c, bytes), bytes });

export const PROBES: Record<string, Probe> = {
  pad1k: pad(1024),
  pad2k: pad(2048),
  pad4k: pad(4096),
  pad8k: pad(8192),
  regs16: { patch: (c) => liveRegisters(c, 4) },
  regs32: { patch: (c) => liveRegisters(c, 8) },
  'v-over-k': { patch: (c) => vOverK(c) },
  // Packed coordinates (a vec4<u32> of four keys per read) or a vec4<i32> per key, as the kernel declares them.
  'kc-free': {
    patch: (c) => {
      const packed = c.includes('var<workgroup> kc_sh: array<vec4<u32>');
      return c.replace(/kc_sh\[([^\]]+)\]/g, (m, i: string) =>
        m.includes('st_row') ? m : packed ? `(vec4<u32>(${i}) * vec4<u32>(65537u, 131073u, 65538u, 196609u))` : `vec4<i32>(i32(${i}) >> 2, i32(${i}) & 3, i32(${i}) >> 1, 0)`,
      );
    },
  },
  'no-mask': { patch: (c) => c.replace(/x(\d+) = select\(vec4<f32>\(MASKED\), x\1, [^;]*\);/g, '') },
  // Each keeps one cached read of its buffer, so that the binding stays in the kernel's layout.
  'no-fetch': {
    patch: (c) =>
      c.replace(
        /load_([kv])\(krow \* HEAD_DIM(_V)?, ([^)]+)\)/g,
        (_m, k: string, _v, i: string) => `(vec4<f16>(f16(krow & 7u), f16(${i}), 0.0, 1.0) + ${k === 'k' ? 'key' : 'value'}[0] * f16(0.0))`,
      ),
  },
  'no-stage': { patch: (c) => c.replace(/\{ kv_sh\[st_row \* LD[KV][^}]*\}/g, '{}').replace(/\{ kv_sh\[\d+u \+ st_row \* LD[KV][^}]*\}/g, '{}') },
  'no-s-mma': { patch: (c) => c.replace(/\n\s*s = subgroupMatrixMultiplyAccumulate\(q_\d+, [^\n]*/g, '') },
  'no-pv': { patch: (c) => c.replace(/\n\s*o_\d+ = subgroupMatrixMultiplyAccumulate\(p_0, [^\n]*/g, '') },
  'no-flag': { patch: (c) => c.replace('workgroupUniformLoad(&flag).x == step', 'false') },
  // The softmax's parts (session 13, for the next device call): no exponentials (P = x - m), no S reads (logits made
  // from the column), no P stores (P V multiplies stale P), no S at all (no store, so no K loads and no S multiplies,
  // and no reads: stale logits could set off rescales and time those instead).
  'no-exp': { patch: (c) => c.replace(/exp2\(x(\d+) - vec4<f32>\(m\)\)/g, '(x$1 - vec4<f32>(m))') },
  'no-s-read': { patch: (c) => noSRead(c) },
  'no-p-store': { patch: (c) => c.replace(/\n(\s*)p_sh\[prow \+ cc\d+[^\n]*/g, '') },
  'no-s': { patch: (c) => noSRead(c).replace(/\n\s*subgroupMatrixStore<row_major>\(&s_sh, rbase \* LDS \+ \d+u, s, LDS\);/g, '') },
  // The walk's length, bounded by a uniform that is never zero, so the compiler keeps the loop and the epilogue.
  // (The forward's and dq's loop runs `ch < n_chunks`, the dkv kernel's `it < n_steps`.)
  'no-walk': { patch: (c) => c.replace('ch < n_chunks;', 'ch < select(n_chunks, 0u, params.total_wg != 0u);').replace('it < n_steps;', 'it < select(n_steps, 0u, params.total_wg != 0u);') },
  'one-chunk': {
    patch: (c) => c.replace('ch < n_chunks;', 'ch < min(n_chunks, select(0u, 1u, params.total_wg != 0u));').replace('it < n_steps;', 'it < min(n_steps, select(0u, 1u, params.total_wg != 0u));'),
  },
  'no-out': { patch: (c) => c.replace(/\n(\s*)output\[orow/g, '\n$1if (params.total_wg == 0u) { output[orow').replace(/(if \(params\.total_wg == 0u\) \{ output\[orow[^\n]*;)/g, '$1 }') },
  'empty': { patch: (c) => c.replace(/(\n {2}let tok_base = [^\n]*\n)/, '$1  if (params.total_wg != 0u) { return; }\n') },
  // Returns before the decode (the dispatch alone): `empty` minus this is the decode and the box's window math.
  'empty-first': { patch: (c) => c.replace(/(\n {2}if \(wid >= params\.total_wg\) \{ return; \}\n)/, '$1  if (params.total_wg != 0u) { return; }\n') },
  'no-q-load': { patch: (c) => c.replace(/load_q\(select\(0u, [^;]*, in_q\), c\)/g, '(query[0] * 0.0 + vec4<f16>(f16(c)))') },
  'no-epilogue': {
    patch: (c) => c.replace(/(\n {2}\/\/ ---- epilogue[^\n]*\n)([\s\S]*)\n\}\n$/, '$1  if (params.total_wg == 0u) {\n$2\n  }\n}\n'),
  },
  // Session 25: the walk's right-fragment loads (K, V in the forward; Q, dO, their transposes in the backward) halved:
  // the loads of head-dim columns 32..63 read columns 0..31 instead (identical loads the compiler merges), the
  // fragment traffic per row that two 16-row blocks per subgroup would save. `no-s-store`: the walk's matrix stores
  // of S (and dP) left out (the softmax reads stale values).
  'half-frags': { patch: (c) => halfFrags(c) },
  'no-s-store': { patch: (c) => c.replace(/\n\s*subgroupMatrixStore<row_major>\(&(s_sh|dp_sh), rbase \* LDS \+ \d+u, (s|acc), LDS\);/g, '') },
  // S (and dP) scratch rows of chunk + 8 floats (from chunk or chunk + 4): a layout whose matrix stores ran 15% faster
  // in sgmat-rates-device.ts (stride 24 against 16 or 20). Correct results; more workgroup memory.
  s24: { patch: (c) => sPad8(c).code, bytes: (c) => sPad8(c).bytes },
  'no-end-barrier': { patch: (c) => c.replace(/\n {4}workgroupBarrier\(\);\n {2}\}\n\n {2}\/\/ ---- epilogue/, '\n  }\n\n  // ---- epilogue') },
};

/** The walk's right-fragment loads of columns 32..63 (of a 64-wide head dim) made loads of columns 0..31. */
function halfFrags(code: string): string {
  return code.replace(/(subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>, (?:col|row)_major>\(&(?:kv_sh|st), [^;]*?\+ )(32|48)u, (LD[KV])\)/g, (_m, head: string, col: string, ld: string) => `${head}${Number(col) - 32}u, ${ld})`);
}

/** The f32 scratch rows (`LDS`) widened to a multiple of 16 plus 8 floats, and the bytes that adds. */
function sPad8(code: string): { code: string; bytes: number } {
  const m = /const LDS: u32 = (\d+)u;/.exec(code);
  if (!m) return { code, bytes: 0 };
  const lds = Number(m[1]);
  const wide = Math.floor(lds / 16) * 16 + 8;
  if (wide === lds) return { code, bytes: 0 };
  let bytes = 0;
  const out = code.replace(m[0], `const LDS: u32 = ${wide}u;`).replace(/var<workgroup> (s_sh|dp_sh): array<f32, (\d+)>;/g, (_x, name: string, n: string) => {
    const rows = Number(n) / lds;
    bytes += 4 * rows * (wide - lds);
    return `var<workgroup> ${name}: array<f32, ${rows * wide}>;`;
  });
  return { code: out, bytes };
}

/** The softmax's S reads replaced by values made from the column (bounded, so no rescales follow). */
function noSRead(code: string): string {
  return code.replace(/vec4<f32>\(s_sh\[srow \+ cc(\d+)\], s_sh\[srow \+ cc\1 \+ 1u\], s_sh\[srow \+ cc\1 \+ 2u\], s_sh\[srow \+ cc\1 \+ 3u\]\)/g, 'vec4<f32>(f32(cc$1) * 0.01, 0.02, 0.03, 0.04)');
}

/** `bytes` more workgroup memory, written only when a uniform that is never zero is zero (so it stays declared). */
function padWorkgroup(code: string, bytes: number): string {
  const n = bytes / 16;
  return code
    .replace(/\n@compute/, `\nvar<workgroup> pad_sh: array<vec4<u32>, ${n}>;\n@compute`)
    .replace(/(@builtin\(local_invocation_index\) lid: u32\) \{\n)/, `$1  if (params.total_wg == 0u) { pad_sh[lid % ${n}u] = vec4<u32>(lid); }\n`);
}

/** V staged over K (wrong results, the same instructions): the staging area's V half is not declared. */
function vOverK(code: string): string {
  const voff = /kv_sh\[(\d+)u \+ st_row \* LDV/.exec(code)?.[1];
  if (voff === undefined) return code;
  return code
    .replace(`var<workgroup> kv_sh: array<f16, ${2 * Number(voff)}>;`, `var<workgroup> kv_sh: array<f16, ${voff}>;`)
    .replaceAll(`kv_sh[${voff}u + st_row * LDV`, 'kv_sh[st_row * LDV')
    .replaceAll(`&kv_sh, ${voff}u + `, '&kv_sh, ');
}

/**
 * `n` vec4<f32> values kept live across the walk (register pressure): declared before its loop (the forward's and
 * dq's chunk loop, the dkv kernel's step loop), updated at the top of every step and tested there against a value
 * they never reach, which would write a workgroup variable (so none is dropped). (Session 12's forward readings
 * updated them after the step counter and tested them once after the walk: the same live range.)
 */
function liveRegisters(code: string, n: number): string {
  const ids = Array.from({ length: n }, (_, i) => i);
  const loop = /\n( *)for \(var (ch|it) = 0u; \2 < (n_chunks|n_steps); \2\+\+\) \{\n/;
  const m = loop.exec(code);
  if (!m) return code;
  const [whole, ind, v] = m as unknown as [string, string, string];
  const decls = ids.map((i) => `${ind}var jk${i} = vec4<f32>(f32(lid + ${i}u));`).join('\n');
  const body = [
    ...ids.map((i) => `${ind}  jk${i} = fma(jk${i}, vec4<f32>(1.0001), ${i === 0 ? `vec4<f32>(f32(${v}))` : `jk${i - 1}`});`),
    `${ind}  if (dot(${ids.map((i) => `jk${i}`).join(' + ')}, vec4<f32>(1.0)) == 1.25e-30) { probe_sink.x = 1u; }`,
  ].join('\n');
  return code
    .replace(/\n@compute/, '\nvar<workgroup> probe_sink: vec4<u32>;\n@compute')
    .replace(whole, `\n${decls}${whole}${body}\n`);
}

/**
 * The probes that apply to the backward's dq and dkv kernels alone (`mma-device.mjs --mode bprobe`): workgroup
 * memory and live registers.
 */
export const BACKWARD_PROBES = ['pad1k', 'pad2k', 'pad4k', 'regs16', 'regs32', 'no-walk', 'one-chunk', 'half-frags', 'no-s-store', 's24'] as const;

/**
 * A residency counter (`mma-device.mjs --mode occupancy`): the kernel's text with one more storage binding `occ`
 * (binding index `k` = its storage bindings, the uniform block moves to k + 1; the command appends a 16-byte buffer)
 * where invocation 0 of each workgroup increments occ[0] on entry, raises occ[1] to the count it saw, and decrements
 * occ[0] on every exit. occ[1] after a dispatch of many waves is how many workgroups were resident at once (the
 * first wave fills every slot): divided by the SM count, the workgroups per SM the kernel's registers and
 * workgroup memory allow. The kernel's results are unchanged.
 */
export function countResidency(code: string, k: number): string {
  const exit = 'if (lid == 0u) { atomicSub(&occ[0], 1u); }';
  const decl = `@group(0) @binding(${k}) var<storage, read_write> occ: array<atomic<u32>>;`;
  const uniform = `@group(0) @binding(${k}) var<uniform>`;
  const withDecl = code.includes(uniform) ? code.replace(uniform, `${decl}\n@group(0) @binding(${k + 1}) var<uniform>`) : code.replace(/\n@compute/, `\n${decl}\n@compute`);
  const start = withDecl.search(/\nfn main\(/);
  if (start < 0) return code;
  const open = withDecl.indexOf('{\n', start) + 2;
  const close = withDecl.lastIndexOf('}');
  const body = withDecl.slice(open, close).replace(/\breturn;/g, `{ ${exit} return; }`);
  return `${withDecl.slice(0, open)}  if (lid == 0u) { let occ_c = atomicAdd(&occ[0], 1u) + 1u; atomicMax(&occ[1], occ_c); }\n${body}  ${exit}\n${withDecl.slice(close)}`;
}

/**
 * A kernel that only sits resident (`--mode occupancy`'s ceiling rows): `threads` invocations, `bytes` of workgroup
 * memory (touched), a dependent integer loop of `iters` steps, and the residency counter of `countResidency`.
 */
export function residencyKernel(threads: number, bytes: number, iters: number): GeneratedKernel {
  const n = Math.max(1, bytes / 16);
  const pad = bytes > 0;
  const code = `@group(0) @binding(0) var<storage, read_write> occ: array<atomic<u32>>;
${pad ? `var<workgroup> pad_sh: array<vec4<u32>, ${n}>;` : ''}
@compute @workgroup_size(${threads})
fn main(@builtin(local_invocation_index) lid: u32) {
  if (lid == 0u) { let occ_c = atomicAdd(&occ[0], 1u) + 1u; atomicMax(&occ[1], occ_c); }
  var x = lid;
${pad ? `  for (var i = lid; i < ${n}u; i += ${threads}u) { pad_sh[i] = vec4<u32>(i); }\n  workgroupBarrier();\n  x = pad_sh[(lid * 7u) % ${n}u].x;` : ''}
  for (var i = 0u; i < ${iters}u; i++) { x = x * 1664525u + 1013904223u; }
  if (x == 7u) { atomicAdd(&occ[2], 1u); }
  workgroupBarrier();
  if (lid == 0u) { atomicSub(&occ[0], 1u); }
}
`;
  return { key: `occ-ceiling-${threads}-${bytes}-${iters}`, code, entryPoint: 'main', workgroupSize: [threads, 1, 1], bindings: [{ name: 'occ', access: 'read_write' }], uniforms: [], workgroupBytes: bytes, features: [] };
}
