/**
 * Low-level ops that mirror NATTEN's seed C++ bindings (spec §3, seed-api.md): outputs are passed in
 * and written in place. The CPU reference ops work on host tensors; `gpu.*` work on GPU tensors.
 * Also available as the `natten-web/ops` subpath.
 */
export {
  avBackward,
  avForward,
  cpuBackend,
  fusedBackward,
  fusedForward,
  na1dAvBackward,
  na1dAvForward,
  na1dBackward,
  na1dForward,
  na1dQkBackward,
  na1dQkForward,
  na2dAvBackward,
  na2dAvForward,
  na2dBackward,
  na2dForward,
  na2dQkBackward,
  na2dQkForward,
  na3dAvBackward,
  na3dAvForward,
  na3dBackward,
  na3dForward,
  na3dQkBackward,
  na3dQkForward,
  qkBackward,
  qkForward,
} from '@natten-web/cpu';
export * as gpu from './gpu-ops.ts';
