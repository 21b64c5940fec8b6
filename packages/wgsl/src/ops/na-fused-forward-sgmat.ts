/**
 * Fused neighborhood-attention forward on tensor cores, through WebGPU subgroup matrices
 * (`chromium-experimental-subgroup-matrix`, f16 x f16 -> f32, 16x16x16 fragments). kernels.md §3.
 *
 * Decomposition (generation 2):
 * - One workgroup is exactly one subgroup, so every barrier is cheap and every workgroup-uniform value is
 *   subgroup-uniform. It owns a multi-D query patch (batch, head, dilation group, patch over group coordinates)
 *   of 16 * MB queries: MB row blocks of 16, each an M = 16 fragment row. Q is staged once through workgroup
 *   memory and kept in registers as MB * D/16 left fragments for the whole walk.
 * - The walk covers the union of the patch's windows, a box in group coordinates: its rows (every axis but the
 *   last) one by one, and along the last axis runs of 16 consecutive keys. 16 consecutive keys of one row are
 *   equally strided in memory (dilation * heads_kv * D elements apart), so K^T and V fragments load straight
 *   from the storage buffers: no staging, no index math per element. A row block skips the matrix work of a
 *   box row none of its queries needs.
 * - Per step (G fragments = 32 or 64 keys): S = Q K^T (f32) goes to workgroup memory; each query row's lanes
 *   mask it with the row's exact window (a range test per axis), run the online softmax in base 2 with lazy
 *   rescaling (the max moves only when a logit exceeds it by more than 2^8), and write P (f16); then
 *   O += P V on subgroup matrices, O living in result fragments (registers) for the whole walk. The rare
 *   rescale of O goes through a 16x16 scratch, decided workgroup-uniformly through `workgroupUniformLoad`,
 *   which is also the step's second barrier.
 * - Keys past the box (the last fragment's tail) are masked; their loads stay inside the bound buffers or are
 *   handled by WebGPU's robust buffer access, and P = 0 there.
 * The subgroup size is read from the adapter and baked (the path needs subgroupMinSize == subgroupMaxSize).
 * f16 inputs only, D and Dv multiples of 16.
 */
import { formatShape, NattenArgumentError, type NaRank, product } from '@natten-web/core';
import { type GeneratedKernel, kernelKey, type StorageBinding, uniformDecl } from '../kernel.ts';
import { rpbIndexExpr, rpbWindowProblem, tokenOf } from '../snippets/fused-index.ts';
import { windowFunctions } from '../snippets/window.ts';
import { forwardTileOrigin, fusedForwardBindings, fusedForwardUniformFields } from './na-fused-forward.ts';

const FAMILY = 'na-fused-forward-sgmat';
/** Bump when the emitted text changes for an unchanged spec. */
const GEN = 6;

/** Fragment size (M = N = K) this path uses. */
export const SGMAT_FRAGMENT = 16;
/** Query patch products (16 * row blocks) this path compiles. */
export const SGMAT_QUERY_PATCHES = [16, 32] as const;
/** Keys per softmax step this path compiles. */
export const SGMAT_KEY_STEPS = [32, 64] as const;

export interface FusedForwardSgmatSpec {
  readonly rank: NaRank;
  readonly kernelSize: readonly number[];
  readonly causal: readonly boolean[];
  readonly dim: number;
  readonly dimV: number;
  /** Query patch per axis over dilation-group coordinates; product 16 or 32 (one or two 16-row blocks). */
  readonly queryTile: readonly number[];
  /** Keys per softmax step: 32 or 64 (two or four 16-key fragments). */
  readonly keyChunk: number;
  /** The adapter's (fixed) subgroup size: 16, 32 or 64. The workgroup is one subgroup. */
  readonly subgroupSize: number;
  readonly hasRpb: boolean;
  readonly hasLse: boolean;
  /** Diagnostic: gather K (and V) fragments through workgroup memory instead of loading them from storage. */
  readonly gather?: 'k' | 'kv';
  /**
   * Experimental (not yet measured on a device): decide once per workgroup whether every fragment of its walk
   * lies inside the K/V buffers and, if so, walk with plain fragment loads (no per-fragment guard, no call
   * holding a barrier between the loads, so the compiler may overlap them).
   */
  readonly directWalk?: boolean;
  /** Experimental: skip the matrix work of a row block for box rows none of its queries needs (uniform test). */
  readonly skipRows?: boolean;
  /**
   * Timing diagnostic only (wrong results, never used by an op): `no-softmax` keeps S = Q K^T and O += P V but
   * drops the mask/softmax between them, `no-pv` drops O += P V, `fixed-kv` loads every K/V fragment from the
   * first key (cache hits), so the differences to the full kernel show where the time goes.
   */
  readonly probe?: 'no-softmax' | 'no-pv' | 'fixed-kv';
}

const F = SGMAT_FRAGMENT;

interface Layout {
  bq: number;
  mb: number;
  lpr: number;
  ldq: number;
  lds: number;
  ldp: number;
  ldo: number;
}

function layout(spec: FusedForwardSgmatSpec): Layout {
  const bq = product(spec.queryTile);
  return {
    bq,
    mb: bq / F,
    lpr: spec.subgroupSize / F,
    ldq: spec.dim + 8,
    lds: spec.keyChunk + 4,
    ldp: spec.keyChunk + 8,
    ldo: F + 4,
  };
}

/** Workgroup memory the kernel declares, in bytes. */
export function fusedForwardSgmatWorkgroupBytes(spec: FusedForwardSgmatSpec): number {
  const l = layout(spec);
  return 2 * l.bq * l.ldq + 4 * l.bq * l.lds + 2 * l.bq * l.ldp + 4 * l.bq * l.ldo + 4 * l.bq + 16 + 2 * F * (F + 8);
}

/** Why a spec cannot be generated, or undefined. */
export function fusedForwardSgmatSpecProblem(spec: FusedForwardSgmatSpec): string | undefined {
  const bq = product(spec.queryTile);
  if (spec.queryTile.length !== spec.rank || spec.kernelSize.length !== spec.rank || spec.causal.length !== spec.rank) {
    return `kernelSize, causal and queryTile need ${spec.rank} entries`;
  }
  if (!(SGMAT_QUERY_PATCHES as readonly number[]).includes(bq)) return `query tile product ${bq} must be 16 or 32`;
  if (spec.queryTile.some((t) => !Number.isInteger(t) || t < 1)) return `query tile ${formatShape(spec.queryTile)} has a factor < 1`;
  if (!(SGMAT_KEY_STEPS as readonly number[]).includes(spec.keyChunk)) return `key chunk ${spec.keyChunk} must be 32 or 64`;
  if (spec.dim % F !== 0 || spec.dimV % F !== 0) return `head dims ${spec.dim}/${spec.dimV} must be multiples of ${F}`;
  if (spec.dim > 256 || spec.dimV > 256) return `head dims ${spec.dim}/${spec.dimV} must be <= 256`;
  if (![16, 32, 64].includes(spec.subgroupSize)) return `subgroup size ${spec.subgroupSize} must be 16, 32 or 64`;
  return rpbWindowProblem(spec);
}

/** The 16-query row block of a query patch: the patch's first 16 queries in row-major order, as a per-axis shape. */
export function sgmatBlockShape(queryTile: readonly number[]): number[] {
  const out = queryTile.map(() => 1);
  let left = F;
  for (let a = queryTile.length - 1; a >= 0 && left > 1; a--) {
    out[a] = Math.min(queryTile[a] as number, left);
    left /= out[a] as number;
  }
  return out;
}

/** Storage bindings: query, key, value, [rpb], output, [logsumexp] (the plain path's order). */
export function fusedForwardSgmatBindings(spec: Pick<FusedForwardSgmatSpec, 'hasRpb' | 'hasLse'>): StorageBinding[] {
  return fusedForwardBindings(spec);
}

const range = (n: number): number[] => Array.from({ length: n }, (_, i) => i);

export function generateFusedForwardSgmat(spec: FusedForwardSgmatSpec): GeneratedKernel {
  const why = fusedForwardSgmatSpecProblem(spec);
  if (why !== undefined) throw new NattenArgumentError(`generateFusedForwardSgmat: ${why} (spec ${formatShape(spec.queryTile)})`);
  const key = kernelKey(FAMILY, GEN, spec);
  const r = spec.rank;
  const last = r - 1;
  const axes = range(r);
  const outer = range(last);
  const Lay = layout(spec);
  const { mb: MB, lpr: LPR } = Lay;
  const D = spec.dim;
  const Dv = spec.dimV;
  const D16 = D / F;
  const DV16 = Dv / F;
  const BK = spec.keyChunk;
  const G = BK / F;
  const SG = spec.subgroupSize;
  const blocks = range(MB);
  const uniforms = fusedForwardUniformFields(r);
  const bindings = fusedForwardSgmatBindings(spec);
  const elem: Record<string, string> = {
    query: 'vec4<f16>',
    key: 'f16',
    value: 'f16',
    rpb: 'f16',
    output: 'vec4<f16>',
    logsumexp: 'f32',
  };
  const decls = bindings
    .map((b, i) => `@group(0) @binding(${i}) var<storage, ${b.access}> ${b.name}: array<${elem[b.name] ?? 'f16'}>;`)
    .join('\n');
  const tokOf = (x: (a: number) => string): string => tokenOf(r, x);
  const rpbIdx = (b: number): string => rpbIndexExpr(spec.kernelSize, (a) => `${a === last ? 'kc' : `kr_${a}`} - qi_${b}_${a}`);
  const shuffles: string[] = [];
  for (let m = 1; m < LPR; m *= 2) shuffles.push(`${m}u`);
  const reduce = (v: string, op: (x: string, y: string) => string, ind: string): string =>
    shuffles.map((m) => `${ind}${v} = ${op(v, `subgroupShuffleXor(${v}, ${m})`)};`).join('\n');
  const LEFT = `subgroup_matrix_left<f16, ${F}, ${F}>`;
  const RIGHT = `subgroup_matrix_right<f16, ${F}, ${F}>`;
  // A right-fragment loader straight from storage, with the gathered fallback for a fragment that would run
  // past the end of its buffer (or always, for the `gather` diagnostic).
  const fragmentLoader = (name: string, buffer: string, colMajor: boolean, alwaysGather: boolean): string => `fn ${name}(base: u32, stride: u32, lane: u32) -> ${RIGHT} {
  let n = arrayLength(&${buffer});
  if (${alwaysGather ? 'false && ' : ''}base + ${F - 1}u * stride + ${F}u <= n) { return subgroupMatrixLoad<${RIGHT}, ${colMajor ? 'col_major' : 'row_major'}>(&${buffer}, base, stride); }
  workgroupBarrier();
  for (var e = lane; e < ${F * F}u; e += ${SG}u) {
    let idx = base + (e / ${F}u) * stride + e % ${F}u;
    var v = f16(0.0);
    if (idx < n) { v = ${buffer}[idx]; }
    t_sh[(e / ${F}u) * ${F + 8}u + e % ${F}u] = v;
  }
  workgroupBarrier();
  return subgroupMatrixLoad<${RIGHT}, ${colMajor ? 'col_major' : 'row_major'}>(&t_sh, 0u, ${F + 8}u);
}`;
  const RESULT = `subgroup_matrix_result<f32, ${F}, ${F}>`;
  const decompose = (target: string, src: string, tile: (a: number) => string, base: (a: number) => string, ind: string): string => {
    const lines = [`${ind}var ${target}_rest = ${src};`];
    for (const a of axes.slice().reverse()) {
      lines.push(`${ind}let ${target}_${a} = ${base(a)} + i32(${target}_rest % ${tile(a)});`);
      if (a > 0) lines.push(`${ind}${target}_rest = ${target}_rest / ${tile(a)};`);
    }
    return lines.join('\n');
  };

  // ---- per-row-block pieces
  const rowSetup = blocks
    .map((b) => {
      const qd = decompose(`qi_${b}`, `${b * F}u + rl`, (a) => `QUERY_TILE_${a}`, (a) => `qf_${a}`, '  ');
      return `${qd}
  let valid_${b} = ${axes.map((a) => `qi_${b}_${a} < n_${a}`).join(' && ')};
${axes.map((a) => `  var ws_${b}_${a} = 0;\n  var we_${b}_${a} = 0;`).join('\n')}
  if (valid_${b}) {
${axes
  .map(
    (a) => `    let w_${b}_${a} = na_window_${a}(qi_${b}_${a} * params.dil_${a} + g_${a}, params.len_${a}, params.dil_${a}, params.str_${a});
    ws_${b}_${a} = (w_${b}_${a}.x - g_${a}) / params.dil_${a};
    we_${b}_${a} = ws_${b}_${a} + w_${b}_${a}.y;`,
  )
  .join('\n')}
  }
  var m_${b}: f32 = NEG;
  var l_${b}: f32 = 0.0;`;
    })
    .join('\n');
  const qFragDecl = blocks
    .flatMap((b) => range(D16).map((kk) => `  let q_${b}_${kk} = subgroupMatrixLoad<${LEFT}, row_major>(&q_sh, ${b * F * Lay.ldq + kk * F}u, LDQ);`))
    .join('\n');
  const oDecl = blocks.flatMap((b) => range(DV16).map((c) => `  var o_${b}_${c} = ${RESULT}();`)).join('\n');
  const guard = (b: number, stmt: string): string => (spec.skipRows && needed ? `if (need_${b}) { ${stmt} }` : stmt);
  const sBlock = (loadK: (offset: string) => string): string => `          let ktok = ${tokOf((a) => (a === last ? `(c0 + i32(gi * ${F}u)) * params.dil_${a} + g_${a}` : `kr_${a} * params.dil_${a} + g_${a}`))};
          let kbase = ${spec.probe === 'fixed-kv' ? '(0u * ktok + hk) * HEAD_DIM' : '((tok_base + ktok) * params.heads_kv + hk) * HEAD_DIM'};
${blocks.map((b) => `          var s_${b} = ${RESULT}();`).join('\n')}
${range(D16)
  .map(
    (kk) => `          {
            let kt = ${loadK(`kbase + ${kk * F}u`)};
${blocks.map((b) => `            ${guard(b, `s_${b} = subgroupMatrixMultiplyAccumulate(q_${b}_${kk}, kt, s_${b});`)}`).join('\n')}
          }`,
  )
  .join('\n')}
${blocks.map((b) => `          ${guard(b, `subgroupMatrixStore<row_major>(&s_sh, ${b * F}u * LDS + gi * ${F}u, s_${b}, LDS);`)}`).join('\n')}`;
  const softmax = blocks
    .map(
      (b) => `        {
          let row = ${b * F}u + rl;
          let rin = valid_${b}${outer.map((a) => ` && kr_${a} >= ws_${b}_${a} && kr_${a} < we_${b}_${a}`).join('')};
          var cmax = NEG;
          if (rin) {
            for (var j = hf; j < ncols; j += LANES_PER_ROW) {
              let kc = c0 + i32(j);
              if (kc >= ws_${b}_${last} && kc < we_${b}_${last}) {
                var s = s_sh[row * LDS + j] * params.scale_log2;
${spec.hasRpb ? `                s = s + f32(rpb[${rpbIdx(b)}]) * LOG2E;\n` : ''}                cmax = max(cmax, s);
              }
            }
          }
${reduce('cmax', (x, y) => `max(${x}, ${y})`, '          ')}
          var alpha = 1.0;
          if (cmax > m_${b} + 8.0) {
            if (l_${b} > 0.0) { alpha = exp2(m_${b} - cmax); }
            m_${b} = cmax;
          }
          if (alpha != 1.0) { flag.x = step; }
          if (hf == 0u) { alpha_sh[row] = alpha; }
          var psum = 0.0;
          for (var j = hf; j < ncols; j += LANES_PER_ROW) {
            let kc = c0 + i32(j);
            var p = 0.0;
            if (rin && kc >= ws_${b}_${last} && kc < we_${b}_${last}) {
              var s = s_sh[row * LDS + j] * params.scale_log2;
${spec.hasRpb ? `              s = s + f32(rpb[${rpbIdx(b)}]) * LOG2E;\n` : ''}              p = exp2(s - m_${b});
            }
            p_sh[row * LDP + j] = f16(p);
            psum = psum + p;
          }
${reduce('psum', (x, y) => `${x} + ${y}`, '          ')}
          l_${b} = l_${b} * alpha + psum;
        }`,
    )
    .join('\n');
  // Rescale and epilogue move one result fragment per row block at a time through the 16-wide scratch.
  const viaScratch = (body: (b: number, c: number) => string): string =>
    range(DV16)
      .map(
        (c) => `${blocks.map((b) => `    subgroupMatrixStore<row_major>(&o_sh, ${b * F}u * LDO, o_${b}_${c}, LDO);`).join('\n')}
    workgroupBarrier();
${blocks.map((b) => body(b, c)).join('\n')}
    workgroupBarrier();`,
      )
      .join('\n');
  const rescale = viaScratch(
    (b, c) => `    {
      let row = ${b * F}u + rl;
      let a = alpha_sh[row];
      for (var j = hf; j < ${F}u; j += LANES_PER_ROW) { o_sh[row * LDO + j] = o_sh[row * LDO + j] * a; }
    }
    workgroupBarrier();
    o_${b}_${c} = subgroupMatrixLoad<${RESULT}, row_major>(&o_sh, ${b * F}u * LDO, LDO);`,
  ).replace(/^/gm, '      ');
  const epilogue = viaScratch(
    (b, c) => `    if (valid_${b}) {
      let row = ${b * F}u + rl;
      let qtok = ${tokOf((a) => `qi_${b}_${a} * params.dil_${a} + g_${a}`)};
      let obase = ((tok_base + qtok) * params.heads + h) * ${Dv / 4}u + ${c * 4}u;
      let inv_l = 1.0 / l_${b};
      for (var j = hf; j < 4u; j += LANES_PER_ROW) {
        let o = row * LDO + 4u * j;
        output[obase + j] = vec4<f16>(vec4<f32>(o_sh[o], o_sh[o + 1u], o_sh[o + 2u], o_sh[o + 3u]) * inv_l);
      }
    }`,
  );
  const pvBlock = (loadV: (offset: string) => string): string => `          let vtok = ${tokOf((a) => (a === last ? `(c0 + i32(gi * ${F}u)) * params.dil_${a} + g_${a}` : `kr_${a} * params.dil_${a} + g_${a}`))};
          let vbase = ${spec.probe === 'fixed-kv' ? '(0u * vtok + hk) * HEAD_DIM_V' : '((tok_base + vtok) * params.heads_kv + hk) * HEAD_DIM_V'};
${blocks
  .map((b) =>
    spec.skipRows && needed
      ? `          var p_${b} = ${LEFT}();\n          if (need_${b}) { p_${b} = subgroupMatrixLoad<${LEFT}, row_major>(&p_sh, ${b * F}u * LDP + gi * ${F}u, LDP); }`
      : `          let p_${b} = subgroupMatrixLoad<${LEFT}, row_major>(&p_sh, ${b * F}u * LDP + gi * ${F}u, LDP);`,
  )
  .join('\n')}
${range(DV16)
  .map(
    (c) => `          {
            let vf = ${loadV(`vbase + ${c * F}u`)};
${blocks.map((b) => `            ${guard(b, `o_${b}_${c} = subgroupMatrixMultiplyAccumulate(p_${b}, vf, o_${b}_${c});`)}`).join('\n')}
          }`,
  )
  .join('\n')}`;
  const rowsOuter = outer.length === 0 ? '1u' : `u32(${outer.map((a) => `bw_${a}`).join(' * ')})`;
  const rowDecompose =
    outer.length === 0
      ? ''
      : (() => {
          const lines = ['      var rr = i32(ro);'];
          for (const a of outer.slice().reverse()) {
            lines.push(a === 0 ? `      let kr_0 = bs_0 + rr;` : `      let kr_${a} = bs_${a} + rr % bw_${a};\n      rr = rr / bw_${a};`);
          }
          return lines.join('\n');
        })();

  // ---- optional per-block row skipping: each row block's union window over the outer axes, from workgroup-uniform
  // values (windows are monotone in the query, so the block's first and last coordinates bound it).
  const needed = outer.length > 0 && (MB > 1 || spec.rank > 1);
  const bshape = sgmatBlockShape(spec.queryTile);
  const coordOf = (i: number): number[] => {
    const c = new Array<number>(r).fill(0);
    let rest = i;
    for (let a = r - 1; a >= 0; a--) {
      c[a] = rest % (spec.queryTile[a] as number);
      rest = Math.floor(rest / (spec.queryTile[a] as number));
    }
    return c;
  };
  const blockUnion =
    spec.skipRows && needed
      ? blocks
          .map((b) => {
            const first = coordOf(b * F);
            const lastC = first.map((x, a) => x + (bshape[a] as number) - 1);
            return `  let bvalid_${b} = ${axes.map((a) => `qf_${a} + ${first[a]} < n_${a}`).join(' && ')};
${outer
  .map(
    (a) => `  let blo_${b}_${a} = (na_window_${a}((qf_${a} + ${first[a]}) * params.dil_${a} + g_${a}, params.len_${a}, params.dil_${a}, params.str_${a}).x - g_${a}) / params.dil_${a};
  let bwl_${b}_${a} = na_window_${a}(min(qf_${a} + ${lastC[a]}, n_${a} - 1) * params.dil_${a} + g_${a}, params.len_${a}, params.dil_${a}, params.str_${a});
  let bhi_${b}_${a} = (bwl_${b}_${a}.x - g_${a}) / params.dil_${a} + bwl_${b}_${a}.y;`,
  )
  .join('\n')}`;
          })
          .join('\n')
      : '';
  const needDecl =
    spec.skipRows && needed
      ? `${blocks.map((b) => `      let need_${b} = bvalid_${b} && ${outer.map((a) => `kr_${a} >= blo_${b}_${a} && kr_${a} < bhi_${b}_${a}`).join(' && ')};`).join('\n')}\n`
      : '';
  const guardedK = (o: string): string => `load_kt(${o}, kstride, lane)`;
  const guardedV = (o: string): string => `load_v(${o}, vstride, lane)`;
  const directK = (o: string): string => `subgroupMatrixLoad<${RIGHT}, col_major>(&key, ${o}, kstride)`;
  const directV = (o: string): string => `subgroupMatrixLoad<${RIGHT}, row_major>(&value, ${o}, vstride)`;
  const walk = (loadK: (o: string) => string, loadV: (o: string) => string): string => `  for (var ro = 0u; ro < nrows; ro++) {
${rowDecompose}
${needDecl}    for (var f0 = 0u; f0 < nfrag; f0 += FRAGS_PER_STEP) {
      let nfs = min(FRAGS_PER_STEP, nfrag - f0);
      let ncols = nfs * ${F}u;
      let c0 = bs_${last} + i32(f0 * ${F}u);
      step = step + 1u;
      // ---- S = Q K^T, K^T fragments straight from the key buffer
      for (var gi = 0u; gi < nfs; gi++) {
${sBlock(loadK).replace(/^ {10}/gm, '        ')}
      }
${
  spec.probe === 'no-softmax'
    ? ''
    : `      workgroupBarrier();
      // ---- exact-window mask + online softmax (base 2, lazy rescale) on this lane's columns
${softmax.replace(/^ {8}/gm, '      ')}
      if (workgroupUniformLoad(&flag).x == step) {
${rescale}
      }
`
}${
  spec.probe === 'no-pv'
    ? ''
    : `      // ---- O += P V, V fragments straight from the value buffer
      for (var gi = 0u; gi < nfs; gi++) {
${pvBlock(loadV).replace(/^ {10}/gm, '        ')}
      }`
}
    }
  }`;
  // The last fragment of the last box row has the largest offset in both buffers (tokens grow with every coordinate).
  const lastTok = tokOf((a) => (a === last ? `(bs_${a} + i32((nfrag - 1u) * ${F}u)) * params.dil_${a} + g_${a}` : `(bs_${a} + bw_${a} - 1) * params.dil_${a} + g_${a}`));
  const walkCode = spec.directWalk
    ? `  let last_tok = ${lastTok};
  let direct = ((tok_base + last_tok) * params.heads_kv + hk) * HEAD_DIM + ${(D16 - 1) * F}u + ${F - 1}u * kstride + ${F}u <= arrayLength(&key)
    && ((tok_base + last_tok) * params.heads_kv + hk) * HEAD_DIM_V + ${(DV16 - 1) * F}u + ${F - 1}u * vstride + ${F}u <= arrayLength(&value);
  if (direct) {
${walk(directK, directV).replace(/^/gm, '  ')}
  } else {
${walk(guardedK, guardedV).replace(/^/gm, '  ')}
  }`
    : walk(guardedK, guardedV);

  const code = `// ${key}
enable f16;
enable subgroups;
enable chromium_experimental_subgroup_matrix;
diagnostic(off, chromium_experimental.subgroup_matrix_uniformity);
diagnostic(off, subgroup_uniformity);
const RANK: u32 = ${r}u;
${axes.map((a) => `const KERNEL_SIZE_${a}: i32 = ${spec.kernelSize[a]};\nconst IS_CAUSAL_${a}: bool = ${spec.causal[a] ? 'true' : 'false'};\nconst QUERY_TILE_${a}: u32 = ${spec.queryTile[a]}u;`).join('\n')}
const HEAD_DIM: u32 = ${D}u;
const HEAD_DIM_V: u32 = ${Dv}u;
const BQ: u32 = ${Lay.bq}u;
const ROW_BLOCKS: u32 = ${MB}u;
const KEY_STEP: u32 = ${BK}u;
const FRAGS_PER_STEP: u32 = ${G}u;
const SUBGROUP_SIZE: u32 = ${SG}u;
const LANES_PER_ROW: u32 = ${LPR}u;
const LDQ: u32 = ${Lay.ldq}u;
const LDS: u32 = ${Lay.lds}u;
const LDP: u32 = ${Lay.ldp}u;
const LDO: u32 = ${Lay.ldo}u;
const LOG2E: f32 = 1.4426950408889634;
const NEG: f32 = -1.0e30;

${decls}
${uniformDecl(uniforms, bindings.length)}
${windowFunctions(spec.kernelSize, spec.causal)}
var<workgroup> q_sh: array<f16, ${Lay.bq * Lay.ldq}>;
var<workgroup> s_sh: array<f32, ${Lay.bq * Lay.lds}>;
var<workgroup> p_sh: array<f16, ${Lay.bq * Lay.ldp}>;
var<workgroup> o_sh: array<f32, ${Lay.bq * Lay.ldo}>;
var<workgroup> alpha_sh: array<f32, ${Lay.bq}>;
// A vec4 so that every workgroup variable stays a multiple of 16 bytes: the matrix stores into workgroup
// memory misplace data when a variable starts off a 16-byte boundary (seen on NVIDIA through Dawn/Vulkan).
var<workgroup> flag: vec4<u32>;
var<workgroup> t_sh: array<f16, ${F * (F + 8)}>;

// Fragment loads straight from storage; a fragment that would run past the end of its buffer (only at the
// very end of the tensor) is gathered through workgroup memory with zeros past the end instead, so no load
// ever depends on out-of-bounds behaviour. Both branches are workgroup-uniform (one subgroup per workgroup).
${fragmentLoader('load_kt', 'key', true, spec.gather !== undefined)}
${fragmentLoader('load_v', 'value', false, spec.gather === 'kv')}

@compute @workgroup_size(${SG})
fn main(@builtin(workgroup_id) wg_id: vec3<u32>, @builtin(num_workgroups) wg_num: vec3<u32>, @builtin(subgroup_invocation_id) lane: u32, @builtin(local_invocation_index) lid: u32) {
${forwardTileOrigin(r)}  let tok_base = b * params.tokens;
  let kstride = u32(params.dil_${last}) * params.heads_kv * HEAD_DIM;
  let vstride = u32(params.dil_${last}) * params.heads_kv * HEAD_DIM_V;

  // The rescale flag starts at zero by this store, not by Dawn's zero-initialization (which Node may turn off).
  if (lid == 0u) { flag = vec4<u32>(0u); }
  // ---- Q patch staged once (raw f16; the scale is applied to S), rows outside the group are zero
  for (var e = lid; e < BQ * ${D / 4}u; e += SUBGROUP_SIZE) {
    let row = e / ${D / 4}u;
    let c = e % ${D / 4}u;
${decompose('sq', 'row', (a) => `QUERY_TILE_${a}`, (a) => `qf_${a}`, '    ')}
    var v = vec4<f16>(0.0);
    if (${axes.map((a) => `sq_${a} < n_${a}`).join(' && ')}) {
      let qtok = ${tokOf((a) => `sq_${a} * params.dil_${a} + g_${a}`)};
      v = query[((tok_base + qtok) * params.heads + h) * ${D / 4}u + c];
    }
    let o = row * LDQ + 4u * c;
    q_sh[o] = v.x;
    q_sh[o + 1u] = v.y;
    q_sh[o + 2u] = v.z;
    q_sh[o + 3u] = v.w;
  }
  workgroupBarrier();
${qFragDecl}

  // ---- this lane's query row in each row block, its exact window, the block's union over outer axes
  let rl = lane / LANES_PER_ROW;
  let hf = lane % LANES_PER_ROW;
${rowSetup}
${oDecl}${blockUnion ? `\n${blockUnion}` : ''}

  let nfrag = (u32(bw_${last}) + ${F - 1}u) / ${F}u;
  let nrows = ${rowsOuter};
  var step = 0u;
${walkCode}

  // ---- epilogue: O / l (f16) through the scratch, natural-log LSE (f32)
${epilogue}
${spec.hasLse ? blocks.map((b) => `  if (valid_${b} && hf == 0u) {\n    let qtok = ${tokOf((a) => `qi_${b}_${a} * params.dil_${a} + g_${a}`)};\n    logsumexp[(tok_base + qtok) * params.heads + h] = (m_${b} + log2(l_${b})) * 0.6931471805599453;\n  }`).join('\n') : ''}
}
`;
  return {
    key,
    code,
    entryPoint: 'main',
    workgroupSize: [SG, 1, 1],
    bindings,
    uniforms,
    workgroupBytes: fusedForwardSgmatWorkgroupBytes(spec),
    features: ['shader-f16', 'subgroups', 'chromium-experimental-subgroup-matrix'],
  };
}
