import { fakeTensorCoreContext as fake, tensorCoreView as view } from '@natten-web/testkit';
import type { GpuContext } from '../src/index.ts';

/** `@natten-web/testkit`'s H200-shaped context (subgroup matrices, 32-wide subgroups, 48 KiB) as a `GpuContext`. */
export function fakeTensorCoreContext(subgroup = 32): GpuContext {
  return fake(subgroup) as GpuContext;
}

/** The real context as the mma planners see it (`@natten-web/testkit`'s `tensorCoreView`). */
export function tensorCoreView(ctx: GpuContext): GpuContext {
  return view(ctx);
}
