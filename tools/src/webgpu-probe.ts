/**
 * Environment probe shared by the device smoke (Dawn in Node), the Deno/wgpu smoke and the tools GPU test.
 * It depends on nothing but the WebGPU API, so a bundle of it runs wherever `navigator.gpu` or Dawn exists.
 * Deliberately independent of @natten-web/gpu: it checks the machine, not our runtime.
 */

/** Dawn's extra `adapter.info` fields (not in @webgpu/types). */
interface DawnAdapterInfoExtras {
  readonly subgroupMinSize?: number;
  readonly subgroupMaxSize?: number;
  readonly isFallbackAdapter?: boolean;
  readonly subgroupMatrixConfigs?: Iterable<object>;
}

export interface SubgroupMatrixConfigReport {
  readonly componentType: string;
  readonly resultComponentType: string;
  readonly M: number;
  readonly N: number;
  readonly K: number;
}

export interface AdapterReport {
  readonly vendor: string;
  readonly architecture: string;
  readonly device: string;
  readonly description: string;
  readonly isFallbackAdapter: boolean | undefined;
  readonly subgroupMinSize: number | undefined;
  readonly subgroupMaxSize: number | undefined;
  readonly features: readonly string[];
  readonly limits: Readonly<Record<string, number>>;
  readonly subgroupMatrixConfigs: readonly SubgroupMatrixConfigReport[];
}

/** The limits of the WebGPU spec (read one by one: native limit objects may not enumerate). */
export const LIMIT_NAMES = [
  'maxTextureDimension1D',
  'maxTextureDimension2D',
  'maxTextureDimension3D',
  'maxTextureArrayLayers',
  'maxBindGroups',
  'maxBindGroupsPlusVertexBuffers',
  'maxBindingsPerBindGroup',
  'maxDynamicUniformBuffersPerPipelineLayout',
  'maxDynamicStorageBuffersPerPipelineLayout',
  'maxSampledTexturesPerShaderStage',
  'maxSamplersPerShaderStage',
  'maxStorageBuffersPerShaderStage',
  'maxStorageTexturesPerShaderStage',
  'maxUniformBuffersPerShaderStage',
  'maxUniformBufferBindingSize',
  'maxStorageBufferBindingSize',
  'minUniformBufferOffsetAlignment',
  'minStorageBufferOffsetAlignment',
  'maxVertexBuffers',
  'maxBufferSize',
  'maxVertexAttributes',
  'maxVertexBufferArrayStride',
  'maxInterStageShaderVariables',
  'maxColorAttachments',
  'maxColorAttachmentBytesPerSample',
  'maxComputeWorkgroupStorageSize',
  'maxComputeInvocationsPerWorkgroup',
  'maxComputeWorkgroupSizeX',
  'maxComputeWorkgroupSizeY',
  'maxComputeWorkgroupSizeZ',
  'maxComputeWorkgroupsPerDimension',
] as const;

function readString(obj: object, key: string): string {
  const value: unknown = Reflect.get(obj, key);
  return value === undefined || value === null ? '' : String(value);
}

function readNumber(obj: object, key: string): number | undefined {
  const value: unknown = Reflect.get(obj, key);
  return typeof value === 'number' ? value : undefined;
}

/** Reads `adapter.info`, features, limits and subgroup-matrix configs field by field. */
export function describeAdapter(adapter: GPUAdapter): AdapterReport {
  const info: GPUAdapterInfo & DawnAdapterInfoExtras = adapter.info;
  const limits: Record<string, number> = {};
  for (const name of LIMIT_NAMES) {
    const value = readNumber(adapter.limits, name);
    if (value !== undefined) limits[name] = value;
  }
  const configs: SubgroupMatrixConfigReport[] = [];
  for (const c of info.subgroupMatrixConfigs ?? []) {
    configs.push({
      componentType: readString(c, 'componentType'),
      resultComponentType: readString(c, 'resultComponentType'),
      M: readNumber(c, 'M') ?? 0,
      N: readNumber(c, 'N') ?? 0,
      K: readNumber(c, 'K') ?? 0,
    });
  }
  const fallback: unknown = Reflect.get(info, 'isFallbackAdapter') ?? Reflect.get(adapter, 'isFallbackAdapter');
  return {
    vendor: info.vendor,
    architecture: info.architecture,
    device: info.device,
    description: info.description,
    isFallbackAdapter: typeof fallback === 'boolean' ? fallback : undefined,
    subgroupMinSize: info.subgroupMinSize,
    subgroupMaxSize: info.subgroupMaxSize,
    features: [...adapter.features].map(String).sort(),
    limits,
    subgroupMatrixConfigs: configs,
  };
}

/** One line, the form CI greps for (`WebGPU adapter: ...`). */
export function formatAdapterLine(r: AdapterReport, runtime: string): string {
  const subgroups = r.subgroupMinSize === undefined ? 'n/a' : `${r.subgroupMinSize}..${r.subgroupMaxSize ?? '?'}`;
  return (
    `WebGPU adapter: vendor=${r.vendor || '?'} architecture=${r.architecture || '?'} device=${r.device || '?'} ` +
    `description="${r.description}" fallback=${String(r.isFallbackAdapter ?? 'n/a')} subgroups=${subgroups} runtime=${runtime}`
  );
}

/** Every field of the report, one per line, for the smoke scripts. */
export function formatAdapterReport(r: AdapterReport): string {
  const lines = [
    `features: ${r.features.join(' ')}`,
    ...Object.entries(r.limits).map(([k, v]) => `limit ${k}: ${v}`),
    r.subgroupMatrixConfigs.length === 0
      ? 'subgroupMatrixConfigs: none'
      : `subgroupMatrixConfigs: ${r.subgroupMatrixConfigs.length}`,
    ...r.subgroupMatrixConfigs.map(
      (c) => `  ${c.componentType} -> ${c.resultComponentType} M=${c.M} N=${c.N} K=${c.K}`,
    ),
  ];
  return lines.join('\n');
}

export interface ComputeCheck {
  readonly ok: boolean;
  readonly count: number;
  /** First mismatch, if any. */
  readonly mismatch?: { readonly index: number; readonly expected: number; readonly actual: number };
}

/** The spec's flag values, so the probe needs no GPUBufferUsage/GPUMapMode globals (Dawn in Node has none by default). */
const USAGE = { MAP_READ: 0x1, COPY_SRC: 0x4, COPY_DST: 0x8, STORAGE: 0x80 } as const;
const MAP_MODE_READ = 0x1;

const TINY_SHADER = /* wgsl */ `
@group(0) @binding(0) var<storage, read> src: array<f32>;
@group(0) @binding(1) var<storage, read_write> dst: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = gid.x;
  if (i >= arrayLength(&dst)) { return; }
  dst[i] = src[i] * 2.0 + f32(i % 7u);
}
`;

/** Runs `dst[i] = src[i] * 2 + i % 7` on `count` floats and compares with the same formula on the CPU. */
export async function runTinyCompute(device: GPUDevice, count = 1000): Promise<ComputeCheck> {
  const input = new Float32Array(count);
  for (let i = 0; i < count; i += 1) input[i] = (i * 37) % 101 - 50.25;
  const bytes = input.byteLength;
  device.pushErrorScope('validation');
  const module = device.createShaderModule({ code: TINY_SHADER, label: 'tools/tiny' });
  const pipeline = await device.createComputePipelineAsync({ layout: 'auto', compute: { module, entryPoint: 'main' } });
  const src = device.createBuffer({ size: bytes, usage: USAGE.STORAGE | USAGE.COPY_DST });
  const dst = device.createBuffer({ size: bytes, usage: USAGE.STORAGE | USAGE.COPY_SRC });
  const read = device.createBuffer({ size: bytes, usage: USAGE.MAP_READ | USAGE.COPY_DST });
  device.queue.writeBuffer(src, 0, input);
  const bindGroup = device.createBindGroup({
    layout: pipeline.getBindGroupLayout(0),
    entries: [
      { binding: 0, resource: { buffer: src } },
      { binding: 1, resource: { buffer: dst } },
    ],
  });
  const encoder = device.createCommandEncoder();
  const pass = encoder.beginComputePass();
  pass.setPipeline(pipeline);
  pass.setBindGroup(0, bindGroup);
  pass.dispatchWorkgroups(Math.ceil(count / 64));
  pass.end();
  encoder.copyBufferToBuffer(dst, 0, read, 0, bytes);
  device.queue.submit([encoder.finish()]);
  const error = await device.popErrorScope();
  if (error !== null) throw new Error(`WebGPU validation error in the tiny compute shader: ${error.message}`);
  await read.mapAsync(MAP_MODE_READ);
  const output = new Float32Array(read.getMappedRange().slice(0));
  read.unmap();
  for (const b of [src, dst, read]) b.destroy();
  for (let i = 0; i < count; i += 1) {
    const expected = Math.fround(Math.fround((input[i] ?? 0) * 2) + (i % 7));
    const actual = output[i] ?? Number.NaN;
    if (actual !== expected) return { ok: false, count, mismatch: { index: i, expected, actual } };
  }
  return { ok: true, count };
}
