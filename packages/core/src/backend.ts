import type {
  AvBackwardArgs,
  AvForwardArgs,
  FusedBackwardArgs,
  FusedForwardArgs,
  QkBackwardArgs,
  QkForwardArgs,
} from './checks.ts';
import type { NaRank } from './tuples.ts';

/** The seed's op families (spec §3), one name per family; each exists for rank 1, 2 and 3. */
export const OP_FAMILIES = ['forward', 'backward', 'qk_forward', 'qk_backward', 'av_forward', 'av_backward'] as const;
export type OpFamily = (typeof OP_FAMILIES)[number];

/** NATTEN's name for an op: `na2d_qk_forward`. */
export function opName(rank: NaRank, family: OpFamily): string {
  return `na${rank}d_${family}`;
}

/**
 * What every backend implements, on host tensors, outputs written in place (seed semantics).
 * CPU runs synchronously inside the promise; GPU uploads, dispatches and reads back.
 * Argument objects are the same ones core validates (`checkFusedForward`, ...).
 */
export interface NaBackend {
  readonly name: string;
  fusedForward(rank: NaRank, args: FusedForwardArgs): Promise<void>;
  fusedBackward(rank: NaRank, args: FusedBackwardArgs): Promise<void>;
  qkForward(rank: NaRank, args: QkForwardArgs): Promise<void>;
  qkBackward(rank: NaRank, args: QkBackwardArgs): Promise<void>;
  avForward(rank: NaRank, args: AvForwardArgs): Promise<void>;
  avBackward(rank: NaRank, args: AvBackwardArgs): Promise<void>;
  /** Release resources (GPU device, pools). */
  dispose?(): Promise<void> | void;
}
