/**
 * Subgroup-matrix emulation for adapters without `chromium-experimental-subgroup-matrix` (lavapipe in CI), so the
 * tensor-core kernels' logic (indexing, masking, softmax, chunk skipping, rescale, epilogue) runs against the CPU
 * reference without the device.
 *
 * In the kernels' layout the two lanes of a query row own fragment row (lane % 32) / 2 of every 16-row fragment,
 * and every other row of a left or result fragment belongs to other lanes. So an invocation here holds only its
 * own row of a left or result matrix (`array<T, 16>`): loads read that row, stores write it, and a
 * multiply-accumulate adds that row of A times B. A right matrix is kept as a reference (offset, column-major flag,
 * stride, source array) and read from workgroup memory when it is multiplied, which is exact because the kernels
 * multiply a right fragment before the next barrier that could overwrite its source. Per query row this is the
 * computation the kernel does on a subgroup; what it does not test is the hardware's matrix layout, which the
 * device scripts check (packages/gpu/test/mma-device.ts).
 *
 * `emulateSubgroupMatrix(code, views)` rewrites a kernel: `views` names each (matrix kind, workgroup array) pair the
 * kernel loads or stores, so one loader per pair can be emitted (WGSL has no generic pointers); without it they are
 * read from the kernel's text (`matrixViews`).
 */

/** The fields of a generated kernel (`@natten-web/wgsl`'s GeneratedKernel) the emulation reads and rewrites. */
export interface KernelText {
  readonly key: string;
  readonly code: string;
  readonly features: readonly string[];
}

type Kind = 'left' | 'right' | 'result';

/** The problem of an emulated tensor-core test case (heads 2, batch 1, Dv = D, no dilation, non-causal unless set). */
export interface EmulatedProblem {
  readonly name: string;
  readonly spatial: number[];
  readonly kernelSize: number[];
  readonly heads?: number;
  readonly headsKv?: number;
  readonly dim: number;
  readonly dimV?: number;
  readonly dilation?: number[];
  readonly causal?: boolean[];
  readonly batch?: number;
}

/** An emulated case's rank and sizes with the defaults applied. */
export function emulatedSizes(c: EmulatedProblem): { rank: 1 | 2 | 3; B: number; H: number; Hk: number; Dv: number } {
  const H = c.heads ?? 2;
  return { rank: c.spatial.length as 1 | 2 | 3, B: c.batch ?? 1, H, Hk: c.headsKv ?? H, Dv: c.dimV ?? c.dim };
}

export interface MatrixViews {
  /** Workgroup arrays each kind is loaded from. */
  readonly loads: readonly (readonly [Kind, string])[];
  /** Workgroup arrays result matrices are stored to. */
  readonly stores: readonly string[];
}

const elem = (k: Kind): string => (k === 'result' ? 'f32' : 'f16');

/** The (kind, workgroup array) pairs a kernel loads and the arrays it stores result matrices to, read from its text. */
export function matrixViews(code: string): MatrixViews {
  const loads = new Map<string, readonly [Kind, string]>();
  for (const m of code.matchAll(/subgroupMatrixLoad<subgroup_matrix_(left|right|result)<[^>]*>, (?:row|col)_major>\(&(\w+), /g)) {
    loads.set(`${m[1]}:${m[2]}`, [m[1] as Kind, m[2] as string]);
  }
  const stores = new Set<string>();
  for (const m of code.matchAll(/subgroupMatrixStore<(?:row|col)_major>\(&(\w+), /g)) stores.add(m[1] as string);
  return { loads: [...loads.values()], stores: [...stores] };
}

export function emulateSubgroupMatrix(code: string, views: MatrixViews = matrixViews(code)): string {
  const out = code
    .replace('enable chromium_experimental_subgroup_matrix;\n', '')
    .replace('diagnostic(off, chromium.subgroup_matrix_uniformity);\n', '')
    .replace(/subgroupMatrixLoad<subgroup_matrix_(left|right|result)<[^>]*>, (row|col)_major>\(&(\w+), /g, 'sm_load_$1_$3_$2(')
    .replace(/subgroupMatrixStore<(row|col)_major>\(&(\w+), /g, 'sm_store_$2_$1(')
    .replace(/subgroupMatrixMultiplyAccumulate\(/g, 'sm_mma(')
    .replace(/subgroup_matrix_left<f16, 16, 16>/g, 'sm_left')
    .replace(/subgroup_matrix_right<f16, 16, 16>/g, 'sm_right')
    .replace(/subgroup_matrix_result<f32, 16, 16>/g, 'sm_result')
    // The owner row of a store comes from the invocation index the kernel already has.
    .replace(/@builtin\(local_invocation_index\) (\w+): u32\) \{\n/, '@builtin(local_invocation_index) $1: u32) {\n  sm_lid = $1;\n');
  const rights = views.loads.filter(([k]) => k === 'right').map(([, arr]) => arr);
  // One loader and storer per (array, layout): the layout is a template argument of the builtins.
  const layouts = [
    ['row', 'false'],
    ['col', 'true'],
  ] as const;
  const loaders = views.loads.flatMap(([k, arr]) =>
    layouts.map(([l, cm]) =>
      k === 'right'
        ? `fn sm_load_right_${arr}_${l}(o: u32, ld: u32) -> sm_right { return vec4<u32>(o, select(0u, 1u, ${cm}), ld, ${rights.indexOf(arr)}u); }`
        : `fn sm_load_${k}_${arr}_${l}(o: u32, ld: u32) -> sm_${k} {
  let i = (sm_lid % 32u) / 2u;
  var m: sm_${k};
  for (var j = 0u; j < sm_n(); j++) { m[j] = ${elem(k)}(${arr}[select(o + i * ld + j, o + j * ld + i, ${cm})]); }
  return m;
}`,
    ),
  );
  const storers = views.stores.flatMap((arr) =>
    layouts.map(
      ([l, cm]) => `fn sm_store_${arr}_${l}(o: u32, v: sm_result, ld: u32) {
  let i = (sm_lid % 32u) / 2u;
  for (var j = 0u; j < sm_n(); j++) { ${arr}[select(o + i * ld + j, o + j * ld + i, ${cm})] = v[j]; }
}`,
    ),
  );
  // Element (k, j) of a right matrix reference, from whichever array it points into.
  const rightAt = `fn sm_right_at(b: sm_right, k: u32, j: u32) -> f32 {
  let e = select(b.x + k * b.z + j, b.x + j * b.z + k, b.y == 1u);
${rights.map((arr, i) => `  if (b.w == ${i}u) { return f32(${arr}[e]); }`).join('\n')}
  return 0.0;
}`;
  return `${out}
// ---- subgroup-matrix emulation (tests only): this invocation's row of left/result matrices, right matrices by reference
alias sm_left = array<f16, 16>;
alias sm_right = vec4<u32>;
alias sm_result = array<f32, 16>;
var<private> sm_lid: u32;
// 16, from a value the shader compiler cannot fold, so it keeps these loops rolled (lavapipe's LLVM otherwise
// unrolls every emulated multiply and takes minutes to compile a kernel).
fn sm_n() -> u32 { return 16u + (sm_lid >> 31u); }
${rightAt}
fn sm_mma(a: sm_left, b: sm_right, c: sm_result) -> sm_result {
  var r = c;
  for (var j = 0u; j < sm_n(); j++) {
    var acc = r[j];
    for (var k = 0u; k < sm_n(); k++) { acc = acc + f32(a[k]) * sm_right_at(b, k, j); }
    r[j] = acc;
  }
  return r;
}
${loaders.join('\n')}
${storers.join('\n')}
`;
}

/** A generated kernel with its matrix builtins emulated (its own cache key; no subgroup-matrix feature needed). */
export function emulatedKernel<K extends KernelText>(kernel: K): K {
  return {
    ...kernel,
    key: `${kernel.key}:emulated`,
    code: emulateSubgroupMatrix(kernel.code),
    features: kernel.features.filter((f) => f !== 'chromium-experimental-subgroup-matrix'),
  };
}

/**
 * A context shaped like the H200 through Dawn/Vulkan (subgroup matrices, fixed 32-wide subgroups, 48 KiB of
 * workgroup memory) for rule tests that choose configs and routes without GPU work (cast it to `GpuContext`).
 */
export function fakeTensorCoreContext(subgroup = 32): unknown {
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
  };
}

/** A real context as the mma planners see it: subgroup matrices (f16 -> f32 16x16x16) and fixed 32-wide subgroups. */
export function tensorCoreView<C extends { readonly features: ReadonlySet<string>; readonly adapterInfo: object }>(ctx: C): C {
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

/**
 * `tensorCoreView` whose dispatches run every subgroup-matrix kernel through the emulation (`emulatedKernel`), so
 * code that plans and dispatches tensor-core kernels itself (the autotuner) runs on this adapter.
 */
export function emulatingTensorCoreView<C extends { readonly features: ReadonlySet<string>; readonly adapterInfo: object }>(ctx: C): C {
  const swap = (commands: readonly { readonly kernel: KernelText }[]) =>
    commands.map((c) => (c.kernel.features.includes('chromium-experimental-subgroup-matrix') ? { ...c, kernel: emulatedKernel(c.kernel) } : c));
  return new Proxy(tensorCoreView(ctx), {
    get(target, prop, receiver) {
      if (prop === 'dispatch' || prop === 'prepare') {
        const f = Reflect.get(target, prop, receiver) as (commands: unknown, op?: string) => Promise<unknown>;
        return (commands: readonly { readonly kernel: KernelText }[], op?: string) => f.call(receiver, swap(commands), op);
      }
      return Reflect.get(target, prop, receiver);
    },
  });
}
