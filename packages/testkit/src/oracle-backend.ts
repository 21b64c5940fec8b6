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
  buildMask,
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
      const geometry = geometryOf(p.params, p.spatial);
      const r = oracleFusedForward(
        { batch: p.batch, heads: p.heads, headsKv: p.headsKv, dim: p.dim, dimV: p.dimV, scale: p.scale, geometry },
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
      const geometry = geometryOf(p.params, p.spatial);
      const r = oracleFusedBackward(
        { batch: p.batch, heads: p.heads, headsKv: p.headsKv, dim: p.dim, dimV: p.dimV, scale: p.scale, geometry },
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
      if (args.gradRpb && r.gradRpb) {
        const prev = v(args.gradRpb);
        write(args.gradRpb, r.gradRpb.map((x, i) => x + (prev[i] as number)));
      }
    },
    async qkForward(rank, args) {
      const p = checkQkForward(opName(rank, 'qk_forward'), rank, args);
      const geometry = geometryOf(p.params, p.spatial);
      write(args.attn, oracleQkForward({ batch: p.batch, heads: p.heads, dim: p.dim, geometry }, v(args.query), v(args.key), args.rpb ? v(args.rpb) : undefined));
    },
    async qkBackward(rank, args) {
      const p = checkQkBackward(opName(rank, 'qk_backward'), rank, args);
      const geometry = geometryOf(p.params, p.spatial);
      const r = oracleQkBackward({ batch: p.batch, heads: p.heads, dim: p.dim, geometry }, v(args.gradAttn), v(args.query), v(args.key), !!args.gradRpb);
      write(args.gradQuery, r.gradQuery);
      write(args.gradKey, r.gradKey);
      if (args.gradRpb && r.gradRpb) {
        // Accumulates, like NATTEN's qk backward (spec §3.5).
        const prev = v(args.gradRpb);
        write(args.gradRpb, r.gradRpb.map((x, i) => x + (prev[i] as number)));
      }
    },
    async avForward(rank, args) {
      const p = checkAvForward(opName(rank, 'av_forward'), rank, args);
      const geometry = geometryOf(p.params, p.spatial);
      write(args.output, oracleAvForward({ batch: p.batch, heads: p.heads, dim: p.dim, geometry }, v(args.attn), v(args.value)));
    },
    async avBackward(rank, args) {
      const p = checkAvBackward(opName(rank, 'av_backward'), rank, args);
      const geometry = geometryOf(p.params, p.spatial);
      const mask = buildMask(geometry);
      const r = oracleAvBackward({ batch: p.batch, heads: p.heads, dim: p.dim, geometry }, v(args.gradOutput), v(args.attn), v(args.value), mask);
      write(args.gradAttn, r.gradAttn);
      write(args.gradValue, r.gradValue);
    },
  };
}
