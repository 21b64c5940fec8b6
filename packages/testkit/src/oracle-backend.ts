import {
  checkAvBackward,
  checkAvForward,
  checkFusedBackward,
  checkFusedForward,
  checkQkBackward,
  checkQkForward,
  type DataArray,
  fromFloat64,
  type NaBackend,
  type NaParams,
  opName,
  type Tensor,
  toFloat64Values,
} from '@natten-web/core';
import {
  type OracleBmmProblem,
  type OracleFusedProblem,
  type OracleGeometry,
  oracleAvBackward,
  oracleAvForward,
  oracleFusedBackward,
  oracleFusedForward,
  oracleQkBackward,
  oracleQkForward,
} from './oracle.ts';

function write(t: Tensor, values: Float64Array): void {
  (t.data as DataArray).set(fromFloat64(values, t.dtype) as DataArray);
}

function geometryOf(params: NaParams, spatial: readonly number[]): OracleGeometry {
  return { spatial, kernelSize: params.kernelSize, dilation: params.dilation, stride: params.stride, isCausal: params.isCausal };
}

const v = toFloat64Values;

/** Adds `delta` into `t`: d_rpb accumulates, like NATTEN's backward kernels (spec §3.5). */
function accumulate(t: Tensor, delta: Float64Array): void {
  const prev = v(t);
  write(t, delta.map((x, i) => x + (prev[i] as number)));
}

interface ValidatedProblem {
  readonly batch: number;
  readonly heads: number;
  readonly dim: number;
  readonly params: NaParams;
  readonly spatial: readonly number[];
}

function bmmProblem(p: ValidatedProblem): OracleBmmProblem {
  return { batch: p.batch, heads: p.heads, dim: p.dim, geometry: geometryOf(p.params, p.spatial) };
}

function fusedProblem(p: ValidatedProblem & { readonly headsKv: number; readonly dimV: number; readonly scale: number }): OracleFusedProblem {
  return { ...bmmProblem(p), headsKv: p.headsKv, dimV: p.dimV, scale: p.scale };
}

/**
 * A `NaBackend` made of the dense oracle (O(N^2), f64 internally, any dtype on the outside).
 * Arguments go through core's validators. For small problems only: tests of the testkit itself
 * and a ground truth for property tests.
 */
export function createOracleBackend(name = 'oracle'): NaBackend {
  return {
    name,
    async fusedForward(rank, args) {
      const p = checkFusedForward(opName(rank, 'forward'), rank, args);
      const r = oracleFusedForward(
        fusedProblem(p),
        v(args.query),
        v(args.key),
        v(args.value),
        args.rpb ? v(args.rpb) : undefined,
      );
      write(args.output, r.output);
      if (args.logsumexp) write(args.logsumexp, r.lse);
    },
    async fusedBackward(rank, args) {
      const p = checkFusedBackward(opName(rank, 'backward'), rank, args);
      const r = oracleFusedBackward(
        fusedProblem(p),
        v(args.query),
        v(args.key),
        v(args.value),
        v(args.output),
        v(args.gradOutput),
        v(args.logsumexp),
        args.rpb ? v(args.rpb) : undefined,
      );
      write(args.gradQuery, r.gradQuery);
      write(args.gradKey, r.gradKey);
      write(args.gradValue, r.gradValue);
      if (args.gradRpb && r.gradRpb) accumulate(args.gradRpb, r.gradRpb);
    },
    async qkForward(rank, args) {
      const p = checkQkForward(opName(rank, 'qk_forward'), rank, args);
      write(args.attn, oracleQkForward(bmmProblem(p), v(args.query), v(args.key), args.rpb ? v(args.rpb) : undefined));
    },
    async qkBackward(rank, args) {
      const p = checkQkBackward(opName(rank, 'qk_backward'), rank, args);
      const r = oracleQkBackward(bmmProblem(p), v(args.gradAttn), v(args.query), v(args.key), !!args.gradRpb);
      write(args.gradQuery, r.gradQuery);
      write(args.gradKey, r.gradKey);
      if (args.gradRpb && r.gradRpb) accumulate(args.gradRpb, r.gradRpb);
    },
    async avForward(rank, args) {
      const p = checkAvForward(opName(rank, 'av_forward'), rank, args);
      write(args.output, oracleAvForward(bmmProblem(p), v(args.attn), v(args.value)));
    },
    async avBackward(rank, args) {
      const p = checkAvBackward(opName(rank, 'av_backward'), rank, args);
      const r = oracleAvBackward(bmmProblem(p), v(args.gradOutput), v(args.attn), v(args.value));
      write(args.gradAttn, r.gradAttn);
      write(args.gradValue, r.gradValue);
    },
  };
}
