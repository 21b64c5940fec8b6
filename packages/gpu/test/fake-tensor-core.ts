import type { GpuContext } from '../src/index.ts';

/**
 * A context shaped like the H200 through Dawn/Vulkan (subgroup matrices, fixed 32-wide subgroups, 48 KiB of
 * workgroup memory) for rule tests that choose configs and routes without GPU work.
 */
export function fakeTensorCoreContext(subgroup = 32): GpuContext {
  return {
    features: new Set(['chromium-experimental-subgroup-matrix', 'shader-f16', 'subgroups']),
    hasF16: true,
    hasSubgroups: true,
    subgroupMatrix: [{ componentType: 'f16', resultComponentType: 'f32', M: 16, N: 16, K: 16 }],
    adapterInfo: { subgroupMinSize: subgroup, subgroupMaxSize: subgroup },
    limits: {
      maxComputeInvocationsPerWorkgroup: 1024,
      maxComputeWorkgroupStorageSize: 49152,
      maxComputeWorkgroupSizeX: 1024,
      maxComputeWorkgroupsPerDimension: 65535,
      maxStorageBufferBindingSize: 2 ** 31,
    },
  } as unknown as GpuContext;
}

/** The real context as the mma planners see it: subgroup matrices (f16 -> f32 16x16x16) and fixed 32-wide subgroups. */
export function tensorCoreView(ctx: GpuContext): GpuContext {
  const features = new Set([...ctx.features, 'chromium-experimental-subgroup-matrix']);
  return new Proxy(ctx, {
    get(target, prop, receiver) {
      if (prop === 'features') return features;
      if (prop === 'subgroupMatrix') return [{ componentType: 'f16', resultComponentType: 'f32', M: 16, N: 16, K: 16 }];
      if (prop === 'adapterInfo') return { ...target.adapterInfo, subgroupMinSize: 32, subgroupMaxSize: 32 };
      return Reflect.get(target, prop, receiver);
    },
  });
}
