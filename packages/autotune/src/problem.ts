/**
 * The problems the autotuner tunes: a fused forward or backward call described by its shapes and NA parameters
 * (no tensors). Built from a plain description through core's validators, so a bad description throws the same
 * `NattenArgumentError` a real call would, before any GPU work.
 */
import {
  checkFusedBackward,
  checkFusedForward,
  type DType,
  type FusedProblem,
  lseShape,
  type NaParams,
  type NaRank,
  NattenArgumentError,
  rpbShape,
  type TensorLike,
} from '@natten-web/core';
import { checkGpuDType, FUSED_BACKWARD_TILES, FUSED_FORWARD_TILES, type GpuDType } from '@natten-web/wgsl';

/** The fields of a fused problem the autotuner reads (core's `FusedProblem` satisfies it). */
export interface ForwardTuneProblem {
  readonly rank: NaRank;
  readonly dtype: DType;
  readonly batch: number;
  readonly spatial: readonly number[];
  readonly heads: number;
  readonly headsKv: number;
  readonly dim: number;
  readonly dimV: number;
  readonly params: NaParams;
  readonly hasRpb: boolean;
  readonly hasLse: boolean;
}

/** A backward problem: the forward's fields plus whether d_rpb is computed. */
export interface BackwardTuneProblem extends ForwardTuneProblem {
  readonly hasGradRpb: boolean;
}

/** A problem as a person writes it (CLI, tests, apps); `describeForward` / `describeBackward` validate it. */
export interface ProblemDescription {
  readonly rank: NaRank;
  readonly batch?: number;
  /** Token extents per spatial axis. */
  readonly spatial: readonly number[];
  readonly heads?: number;
  /** Key/value heads (GQA when smaller than heads); default heads. */
  readonly headsKv?: number;
  readonly dim: number;
  /** Value head dim; default dim. */
  readonly dimV?: number;
  readonly kernelSize: number | readonly number[];
  readonly dilation?: number | readonly number[];
  readonly stride?: number | readonly number[];
  readonly isCausal?: boolean | readonly boolean[];
  readonly dtype?: 'float32' | 'float16';
  /** With a relative positional bias (forward and backward). */
  readonly rpb?: boolean;
  /** Forward stores the logsumexp (default true: training and merges need it). */
  readonly lse?: boolean;
  /** Backward computes d_rpb (default: rpb). */
  readonly gradRpb?: boolean;
}

const like = (shape: readonly number[], dtype: DType): TensorLike => ({ shape, dtype });

function tensors(d: ProblemDescription) {
  const dtype = d.dtype ?? 'float32';
  const batch = d.batch ?? 1;
  const heads = d.heads ?? 1;
  const headsKv = d.headsKv ?? heads;
  const dimV = d.dimV ?? d.dim;
  return {
    dtype,
    query: like([batch, ...d.spatial, heads, d.dim], dtype),
    key: like([batch, ...d.spatial, headsKv, d.dim], dtype),
    value: like([batch, ...d.spatial, headsKv, dimV], dtype),
    output: like([batch, ...d.spatial, heads, dimV], dtype),
    lse: like(lseShape(batch, d.spatial, heads), 'float32'),
    params: { kernelSize: d.kernelSize, dilation: d.dilation, stride: d.stride, isCausal: d.isCausal },
  };
}

function gpuOnly<P extends { dtype: DType }>(op: string, p: P): P & { dtype: GpuDType } {
  return { ...p, dtype: checkGpuDType(op, p.dtype) };
}

/** Validate a forward description with core's `checkFusedForward` (this backend's tile table). */
export function describeForward(d: ProblemDescription): FusedProblem & { dtype: GpuDType } {
  const op = `autotune: na${d.rank}d_forward`;
  const t = tensors(d);
  const p0 = checkFusedForward(op, d.rank, { query: t.query, key: t.key, value: t.value, output: t.output, ...t.params }, FUSED_FORWARD_TILES);
  const rpb = d.rpb ? like(rpbShape(p0.heads, p0.params), t.dtype) : undefined;
  const logsumexp = (d.lse ?? true) ? t.lse : undefined;
  const p = checkFusedForward(op, d.rank, { query: t.query, key: t.key, value: t.value, output: t.output, rpb, logsumexp, ...t.params }, FUSED_FORWARD_TILES);
  return gpuOnly(op, p);
}

/** Validate a backward description with core's `checkFusedBackward` (this backend's tile table). */
export function describeBackward(d: ProblemDescription): BackwardTuneProblem & { dtype: GpuDType } {
  const op = `autotune: na${d.rank}d_backward`;
  const f = describeForward({ ...d, lse: true });
  const t = tensors(d);
  const rpb = d.rpb ? like(rpbShape(f.heads, f.params), t.dtype) : undefined;
  const gradRpb = (d.gradRpb ?? d.rpb) ? rpb : undefined;
  if (d.gradRpb && !d.rpb) throw new NattenArgumentError(`${op}: gradRpb=true needs rpb=true (d_rpb is the gradient of a bias the forward used)`);
  const p = checkFusedBackward(
    op,
    d.rank,
    {
      query: t.query,
      key: t.key,
      value: t.value,
      output: t.output,
      gradOutput: t.output,
      logsumexp: t.lse,
      gradQuery: t.query,
      gradKey: t.key,
      gradValue: t.value,
      rpb,
      gradRpb,
      ...t.params,
    },
    FUSED_BACKWARD_TILES,
  );
  return gpuOnly(op, p);
}

/** The forward problem of a backward one (tuning a backward first runs the forward to get O and the LSE). */
export function forwardOf(p: BackwardTuneProblem): ForwardTuneProblem {
  return { ...p, hasLse: true };
}

/**
 * Parse the CLI's problem syntax: `na2d 1x128x128x8x64 K=7 f16`, i.e. the op (`na1d`/`na2d`/`na3d`), the query
 * shape `batch x spatial... x heads x dim`, then `key=value` options: `K` (kernel size), `d`/`dilation`,
 * `s`/`stride`, `causal` (`1`, `0`, or per axis `1,0`), `kv` (key/value heads), `dv` (value dim), and flags
 * `f16`/`f32`, `rpb`, `nolse`.
 */
export function parseProblem(text: string): ProblemDescription {
  const bad = (rule: string): never => {
    throw new NattenArgumentError(`natten-web-tune: --problem '${text}': ${rule}`);
  };
  const words = text.trim().split(/\s+/);
  const opWord = words[0] ?? '';
  const m = /^na([123])d$/.exec(opWord);
  if (!m) return bad(`the first word must be na1d, na2d or na3d, got '${opWord}'`);
  const rank = Number(m[1]) as NaRank;
  const shape = (words[1] ?? '').split('x').map(Number);
  if (shape.length !== rank + 3 || shape.some((n) => !Number.isInteger(n) || n < 1)) {
    return bad(`the shape must be batch x ${rank} spatial extent(s) x heads x head_dim (${rank + 3} positive integers joined by 'x'), got '${words[1] ?? ''}'`);
  }
  const ints = (key: string, v: string): number[] => {
    const xs = v.split(',').map(Number);
    if (xs.some((n) => !Number.isInteger(n) || n < 1)) bad(`${key}=${v} must be a positive integer or a comma-separated list`);
    return xs;
  };
  const perAxis = (xs: number[]): number | number[] => (xs.length === 1 ? (xs[0] as number) : xs);
  let out: ProblemDescription = {
    rank,
    batch: shape[0] as number,
    spatial: shape.slice(1, 1 + rank),
    heads: shape[1 + rank] as number,
    dim: shape[2 + rank] as number,
    kernelSize: 0,
  };
  let haveK = false;
  for (const w of words.slice(2)) {
    const [k, v] = w.includes('=') ? (w.split('=', 2) as [string, string]) : [w, ''];
    switch (k) {
      case 'K':
      case 'k':
      case 'kernel':
        out = { ...out, kernelSize: perAxis(ints(k, v)) };
        haveK = true;
        break;
      case 'd':
      case 'dilation':
        out = { ...out, dilation: perAxis(ints(k, v)) };
        break;
      case 's':
      case 'stride':
        out = { ...out, stride: perAxis(ints(k, v)) };
        break;
      case 'kv':
        out = { ...out, headsKv: ints(k, v)[0] as number };
        break;
      case 'dv':
        out = { ...out, dimV: ints(k, v)[0] as number };
        break;
      case 'causal': {
        const bs = (v === '' ? '1' : v).split(',').map((x) => (x === '1' || x === 'true' ? true : x === '0' || x === 'false' ? false : bad(`causal=${v} must be 1, 0 or a per-axis list of them`)));
        out = { ...out, isCausal: bs.length === 1 ? (bs[0] as boolean) : bs };
        break;
      }
      case 'f16':
      case 'float16':
        out = { ...out, dtype: 'float16' };
        break;
      case 'f32':
      case 'float32':
        out = { ...out, dtype: 'float32' };
        break;
      case 'rpb':
        out = { ...out, rpb: true };
        break;
      case 'nolse':
        out = { ...out, lse: false };
        break;
      default:
        bad(`unknown option '${w}' (known: K=, d=, s=, causal=, kv=, dv=, f16, f32, rpb, nolse)`);
    }
  }
  if (!haveK) bad('K=<kernel size> is required');
  return out;
}

/** One line describing a problem, for progress output and cache listings. */
export function formatProblem(p: ForwardTuneProblem): string {
  const pr = p.params;
  const parts = [
    `na${p.rank}d`,
    [p.batch, ...p.spatial, p.heads, p.dim].join('x'),
    `K=${pr.kernelSize.join(',')}`,
  ];
  if (pr.dilation.some((x) => x !== 1)) parts.push(`d=${pr.dilation.join(',')}`);
  if (pr.stride.some((x) => x !== 1)) parts.push(`s=${pr.stride.join(',')}`);
  if (pr.isCausal.some(Boolean)) parts.push(`causal=${pr.isCausal.map((c) => (c ? 1 : 0)).join(',')}`);
  if (p.headsKv !== p.heads) parts.push(`kv=${p.headsKv}`);
  if (p.dimV !== p.dim) parts.push(`dv=${p.dimV}`);
  parts.push(p.dtype === 'float16' ? 'f16' : 'f32');
  if (p.hasRpb) parts.push('rpb');
  if (!p.hasLse) parts.push('nolse');
  return parts.join(' ');
}
