import { NattenDeviceError } from './errors.ts';

/** Optional features we ask for when the adapter has them. */
export const OPTIONAL_FEATURES = [
  'shader-f16',
  'subgroups',
  'timestamp-query',
  'chromium-experimental-subgroup-matrix',
] as const;

/** Limits we raise to the adapter maximum (defaults are far lower: 128 MiB bindings, 16 KiB workgroup memory). */
const RAISED_LIMITS = [
  'maxStorageBufferBindingSize',
  'maxBufferSize',
  'maxComputeWorkgroupStorageSize',
  'maxComputeInvocationsPerWorkgroup',
  'maxComputeWorkgroupSizeX',
  'maxComputeWorkgroupSizeY',
  'maxComputeWorkgroupSizeZ',
  'maxStorageBuffersPerShaderStage',
  'maxComputeWorkgroupsPerDimension',
] as const;

/** Dawn toggles for Node: f16 on NVIDIA needs `vulkan_enable_f16_on_nvidia`; unsafe APIs expose subgroup matrices. */
export const DAWN_NODE_FLAGS = [
  'enable-dawn-features=allow_unsafe_apis,vulkan_enable_f16_on_nvidia',
  'disable-dawn-features=timestamp_quantization',
];

/** Environment variable naming extra Dawn toggles to enable in Node (comma-separated, e.g. `disable_workgroup_init`). */
export const DAWN_TOGGLES_ENV = 'NATTEN_WEB_DAWN_TOGGLES';

/**
 * The flags Node's Dawn instance is created with: `DAWN_NODE_FLAGS`, plus the toggles named in `extra` (the value of
 * `NATTEN_WEB_DAWN_TOGGLES`) appended to the enabled ones. Each must be a Dawn toggle name (lower case, digits and
 * underscores); anything else throws, naming the variable and the entry.
 */
export function dawnNodeFlags(extra: string | undefined): string[] {
  const names = (extra ?? '')
    .split(',')
    .map((t) => t.trim())
    .filter((t) => t !== '');
  for (const t of names) {
    if (!/^[a-z0-9_]+$/.test(t)) throw new NattenDeviceError(`${DAWN_TOGGLES_ENV}: '${t}' is not a Dawn toggle name (lower case letters, digits and underscores)`);
  }
  if (names.length === 0) return [...DAWN_NODE_FLAGS];
  return DAWN_NODE_FLAGS.map((f) => (f.startsWith('enable-dawn-features=') ? `${f},${names.join(',')}` : f));
}

// Dawn's instance must stay reachable while any adapter/device lives (toolchain notes: GC of the
// instance aborts the process). Module-level on purpose.
let nodeGpu: GPU | undefined;

async function nodeGpuInstance(): Promise<GPU | undefined> {
  if (nodeGpu) return nodeGpu;
  const isNode = typeof process !== 'undefined' && typeof process.versions?.node === 'string';
  if (!isNode) return undefined;
  const moduleName = 'webgpu';
  let mod: { create: (flags: string[]) => GPU; globals?: Record<string, unknown> };
  try {
    mod = (await import(/* @vite-ignore */ moduleName)) as typeof mod;
  } catch (cause) {
    throw new NattenDeviceError(
      "WebGPU in Node needs Dawn's `webgpu` package (npm i webgpu@0.6.2); it could not be loaded",
      { cause },
    );
  }
  if (mod.globals) Object.assign(globalThis, mod.globals);
  nodeGpu = mod.create(dawnNodeFlags(process.env[DAWN_TOGGLES_ENV]));
  return nodeGpu;
}

/** `navigator.gpu` in browsers/Deno, Dawn in Node, or undefined. */
export async function getGpu(explicit?: GPU): Promise<GPU | undefined> {
  if (explicit) return explicit;
  const nav = (globalThis as { navigator?: { gpu?: GPU } }).navigator;
  if (nav?.gpu) return nav.gpu;
  return nodeGpuInstance();
}

export interface AdapterReport {
  readonly vendor: string;
  readonly architecture: string;
  readonly device: string;
  readonly description: string;
  readonly isFallbackAdapter: boolean;
  readonly subgroupMinSize: number | undefined;
  readonly subgroupMaxSize: number | undefined;
}

export function describeAdapter(adapter: GPUAdapter): AdapterReport {
  const info = adapter.info as GPUAdapterInfo & {
    subgroupMinSize?: number;
    subgroupMaxSize?: number;
    isFallbackAdapter?: boolean;
  };
  return {
    vendor: info.vendor,
    architecture: info.architecture,
    device: info.device,
    description: info.description,
    isFallbackAdapter: info.isFallbackAdapter ?? false,
    subgroupMinSize: info.subgroupMinSize,
    subgroupMaxSize: info.subgroupMaxSize,
  };
}

export interface SubgroupMatrixConfig {
  readonly componentType: string;
  readonly resultComponentType: string;
  readonly M: number;
  readonly N: number;
  readonly K: number;
}

/** Read `adapter.info.subgroupMatrixConfigs` field by field (JSON.stringify of Dawn's native objects gives `{}`). */
export function subgroupMatrixConfigs(adapter: GPUAdapter): SubgroupMatrixConfig[] {
  const raw = (adapter.info as unknown as { subgroupMatrixConfigs?: Iterable<Record<string, unknown>> }).subgroupMatrixConfigs;
  if (!raw) return [];
  const out: SubgroupMatrixConfig[] = [];
  for (const c of raw) {
    out.push({
      componentType: String(c.componentType),
      resultComponentType: String(c.resultComponentType),
      M: Number(c.M),
      N: Number(c.N),
      K: Number(c.K),
    });
  }
  return out;
}

export interface AcquireOptions {
  /** A `GPU` object to use instead of navigator.gpu / Dawn. */
  readonly gpu?: GPU;
  readonly powerPreference?: GPUPowerPreference;
  /** Do not request these optional features even if present (e.g. to test fallback paths). */
  readonly disableFeatures?: readonly string[];
}

export interface AcquiredDevice {
  readonly adapter: GPUAdapter;
  readonly device: GPUDevice;
  readonly adapterInfo: AdapterReport;
  readonly features: ReadonlySet<string>;
  readonly subgroupMatrix: readonly SubgroupMatrixConfig[];
}

/** Find an adapter and request a device with its maximum limits and our optional features. */
export async function acquireDevice(options: AcquireOptions = {}): Promise<AcquiredDevice> {
  const gpu = await getGpu(options.gpu);
  if (!gpu) {
    throw new NattenDeviceError('WebGPU is not available: no navigator.gpu and not running in Node with the `webgpu` package');
  }
  const adapter = await gpu.requestAdapter(options.powerPreference ? { powerPreference: options.powerPreference } : undefined);
  if (!adapter) {
    throw new NattenDeviceError(
      'WebGPU found no adapter. On Linux without a GPU install Mesa lavapipe (mesa-vulkan-drivers >= 25, see docs/getting-started.md); in Chromium use --enable-unsafe-webgpu',
    );
  }
  const disabled = new Set(options.disableFeatures ?? []);
  const requiredFeatures = OPTIONAL_FEATURES.filter((f) => adapter.features.has(f) && !disabled.has(f)) as GPUFeatureName[];
  const requiredLimits: Record<string, number> = {};
  const limits = adapter.limits as unknown as Record<string, number>;
  for (const name of RAISED_LIMITS) {
    const v = limits[name];
    if (typeof v === 'number') requiredLimits[name] = v;
  }
  const device = await adapter.requestDevice({ requiredFeatures, requiredLimits });
  return {
    adapter,
    device,
    adapterInfo: describeAdapter(adapter),
    features: new Set(requiredFeatures),
    subgroupMatrix: requiredFeatures.includes('chromium-experimental-subgroup-matrix' as GPUFeatureName) ? subgroupMatrixConfigs(adapter) : [],
  };
}
