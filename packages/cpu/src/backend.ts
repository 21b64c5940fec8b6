import type { NaBackend } from '@natten-web/core';
import { avBackward, avForward } from './ops/na-av.ts';
import { fusedBackward, fusedForward } from './ops/na-fused.ts';
import { qkBackward, qkForward } from './ops/na-qk.ts';

/**
 * The CPU reference backend: every op of core's `NaBackend`, for rank 1, 2 and 3, on host tensors.
 * Each method validates with core's `check*` functions, computes synchronously in f64 and returns a
 * resolved promise; a validation error becomes a rejected promise.
 */
export const cpuBackend: NaBackend = {
  name: 'cpu',
  async fusedForward(rank, args) {
    fusedForward(rank, args);
  },
  async fusedBackward(rank, args) {
    fusedBackward(rank, args);
  },
  async qkForward(rank, args) {
    qkForward(rank, args);
  },
  async qkBackward(rank, args) {
    qkBackward(rank, args);
  },
  async avForward(rank, args) {
    avForward(rank, args);
  },
  async avBackward(rank, args) {
    avBackward(rank, args);
  },
};
