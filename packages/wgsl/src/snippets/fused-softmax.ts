/**
 * Online-softmax pieces for the fused kernels, in the base-2 domain (logits pre-multiplied by
 * `scale * log2(e)`, `exp2` everywhere). Accumulators are f32 whatever the storage type.
 *
 * Lazy rescaling (kernels.md §3): the running max `m` only moves when a logit exceeds it by more than
 * `FUSED_LAZY_RESCALE` (log2 units). Until then p = exp2(s - m) <= 2^FUSED_LAZY_RESCALE, which f32 holds
 * exactly enough, so most keys skip the O rescale. The result is exact either way: O = o / l and
 * lse = ln2 * (m + log2(l)) hold for any m <= true max + FUSED_LAZY_RESCALE.
 *
 * No inf/NaN literals: the initial max is the finite sentinel -1e30 (`FUSED_NEG`), and exp2(-1e30 - s)
 * underflows to exactly 0, so the first real key zeroes the (already zero) accumulators.
 */

/** Finite "minus infinity" for f32 logits. */
export const FUSED_NEG = '-1.0e30';

/** Rescale threshold in log2 units. */
export const FUSED_LAZY_RESCALE = 8;

/**
 * Declarations of the per-invocation softmax state: `m_run`, `l_run`, and the output accumulator as dv4
 * separate vec4 variables `o_0 .. o_{dv4-1}` (not an array: some drivers keep private arrays in local memory).
 */
export function softmaxStateDecl(dv4: number, suffix = ''): string {
  const o = Array.from({ length: dv4 }, (_, c) => `  var o${suffix}_${c} = vec4<f32>(0.0);`).join('\n');
  return `  var m_run${suffix}: f32 = ${FUSED_NEG};
  var l_run${suffix}: f32 = 0.0;
${o}`;
}

/**
 * Fold one logit `sc` (log2 domain) with value row `v_row(c)` (a WGSL expression builder giving the
 * c-th vec4 of the value row as vec4<f32>) into the state. Unrolled over the dv4 vec4s.
 */
export function softmaxUpdate(dv4: number, vRow: (c: number) => string, indent = '        '): string {
  const accum: string[] = [];
  for (let c = 0; c < dv4; c++) accum.push(`${indent}o_${c} = fma(pv, ${vRow(c)}, o_${c});`);
  return `${softmaxWeight(dv4, '', indent, 'let p')}
${indent}let pv = vec4<f32>(p);
${accum.join('\n')}`;
}

/**
 * The weight half of an update, for kernels that fold several states with one value row (suffix `_j` names the
 * state `m_run_j`, `l_run_j`, `o_j_c` and the logit `sc_j`): the lazy rescale of the state when `sc` exceeds its
 * max by more than `FUSED_LAZY_RESCALE`, then `<assign> = exp2(sc - m)` (for example `let p` or `p_1`) added to l.
 */
export function softmaxWeight(dv4: number, suffix: string, indent: string, assign = `p${suffix}`): string {
  const rescale: string[] = [];
  for (let c = 0; c < dv4; c++) rescale.push(`${indent}  o${suffix}_${c} = o${suffix}_${c} * alpha;`);
  const p = assign.startsWith('let ') ? assign.slice(4) : assign;
  return `${indent}if (sc${suffix} > m_run${suffix} + ${FUSED_LAZY_RESCALE}.0) {
${indent}  let alpha = exp2(m_run${suffix} - sc${suffix});
${indent}  l_run${suffix} = l_run${suffix} * alpha;
${rescale.join('\n')}
${indent}  m_run${suffix} = sc${suffix};
${indent}}
${indent}${assign} = exp2(sc${suffix} - m_run${suffix});
${indent}l_run${suffix} = l_run${suffix} + ${p};`;
}

/**
 * The weight half of an update for `n` logits `sc_0 .. sc_{n-1}` folded together into one state (`m_run`, `l_run`,
 * `o_c`): one lazy rescale against their max, then `let p_u = exp2(sc_u - m_run)` for each, all added to l. Every
 * p_u <= 2^FUSED_LAZY_RESCALE afterwards, as with one logit at a time.
 */
export function softmaxWeights(dv4: number, n: number, indent: string): string {
  const rescale: string[] = [];
  for (let c = 0; c < dv4; c++) rescale.push(`${indent}  o_${c} = o_${c} * alpha;`);
  let mx = 'sc_0';
  for (let u = 1; u < n; u++) mx = `max(${mx}, sc_${u})`;
  const ps = Array.from({ length: n }, (_, u) => `${indent}let p_${u} = exp2(sc_${u} - m_run);`).join('\n');
  const sum = Array.from({ length: n }, (_, u) => `p_${u}`).join(' + ');
  return `${indent}let s_max = ${mx};
${indent}if (s_max > m_run + ${FUSED_LAZY_RESCALE}.0) {
${indent}  let alpha = exp2(m_run - s_max);
${indent}  l_run = l_run * alpha;
${rescale.join('\n')}
${indent}  m_run = s_max;
${indent}}
${ps}
${indent}l_run = l_run + (${sum});`;
}

/** Natural-log LSE from the state: ln2 * (m + log2(l)). */
export function softmaxLse(suffix = ''): string {
  return `(m_run${suffix} + log2(l_run${suffix})) * 0.6931471805599453`;
}
