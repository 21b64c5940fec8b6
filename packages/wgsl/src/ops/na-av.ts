/**
 * Generators behind `na{1,2,3}d_av_forward` / `na{1,2,3}d_av_backward` (spec §3.6, §3.7, §7.4).
 * - forward: NN kernel on (attn, value); invalid slots are never read;
 * - backward: PN kernel in gradient mode on (d_out, value) for d_attn (0 in invalid slots), IN kernel on
 *   (attn, d_out) for d_value.
 */
import type { GeneratedKernel } from '../kernel.ts';
import { type BmmOpSpec, bmmKernel, bmmSpec, bmmSplitSlots } from './na-qk.ts';

/** av_forward: `out = sum_{valid t} attn[x,t] v_{n_t(x)}`. Bindings: attn, value, output. */
export function generateAvForward(op: BmmOpSpec): GeneratedKernel {
  return bmmKernel(bmmSpec(op, 'nn', { scales: bmmSplitSlots('av_forward', 'attn', 'value') }));
}

/** av_backward, d_attn[x,t] = <dO_x, v_{n_t(x)}>, 0 for invalid slots. Bindings: grad_out, value, grad_attn. */
export function generateAvBackwardAttn(op: BmmOpSpec): GeneratedKernel {
  return bmmKernel(bmmSpec(op, 'pn', { fill: 'zero', scales: bmmSplitSlots('av_backward', 'grad_output', 'value') }));
}

/** av_backward, dV_j = sum_{x: j in N(x)} attn[x, t(x,j)] dO_x. Bindings: attn, grad_out, grad_value. */
export function generateAvBackwardValue(op: BmmOpSpec): GeneratedKernel {
  return bmmKernel(bmmSpec(op, 'in', { scales: bmmSplitSlots('av_backward', 'attn', 'grad_output') }));
}
