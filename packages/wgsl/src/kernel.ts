/**
 * The plain-data contract between code generation (this package) and the runtime (@natten-web/gpu).
 * A generator is a pure function: spec in, `GeneratedKernel` out. No GPU objects here.
 */

/** WGSL scalar types a uniform field may have. */
export type UniformType = 'u32' | 'i32' | 'f32';

export interface UniformField {
  readonly name: string;
  readonly type: UniformType;
}

/** One storage binding, in binding order (group 0, binding = index). Inputs first, then outputs. */
export interface StorageBinding {
  readonly name: string;
  readonly access: 'read' | 'read_write';
}

export interface GeneratedKernel {
  /** Stable cache key derived from the spec: `family/vGEN:{canonical json}`. */
  readonly key: string;
  readonly code: string;
  readonly entryPoint: string;
  readonly workgroupSize: readonly [number, number, number];
  /** Storage bindings at @binding(0..n-1); the uniform buffer, if any, follows at @binding(n). */
  readonly bindings: readonly StorageBinding[];
  /** Fields of the uniform struct, in order (each 4 bytes); empty means no uniform binding. */
  readonly uniforms: readonly UniformField[];
  /** Bytes of workgroup memory the kernel declares (for limit checks). */
  readonly workgroupBytes: number;
  /** Device features the shader needs (`shader-f16`, `subgroups`, ...). */
  readonly features: readonly string[];
}

/** Canonical JSON: object keys sorted recursively, so equal specs give equal strings. */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value);
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  const entries = Object.entries(value as Record<string, unknown>)
    .filter(([, v]) => v !== undefined)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
}

/** The key is derived from the spec, never hand-built (STYLE §4 rule 4). Bump `gen` when emitted text changes. */
export function kernelKey(family: string, gen: number, spec: unknown): string {
  return `${family}/v${gen}:${canonicalJson(spec)}`;
}

/** Pack uniform values (by field name) into an ArrayBuffer laid out as the WGSL struct (4 bytes per field, padded to 16). */
export function packUniforms(fields: readonly UniformField[], values: Readonly<Record<string, number>>): ArrayBuffer {
  const bytes = Math.max(16, Math.ceil((fields.length * 4) / 16) * 16);
  const buf = new ArrayBuffer(bytes);
  const view = new DataView(buf);
  fields.forEach((f, i) => {
    const v = values[f.name];
    if (v === undefined || Number.isNaN(v)) throw new Error(`packUniforms: missing value for uniform '${f.name}'`);
    if (f.type === 'f32') view.setFloat32(i * 4, v, true);
    else if (f.type === 'i32') view.setInt32(i * 4, v, true);
    else {
      if (v < 0 || !Number.isInteger(v) || v > 0xffffffff) throw new Error(`packUniforms: uniform '${f.name}'=${v} is not a u32`);
      view.setUint32(i * 4, v, true);
    }
  });
  return buf;
}

/** WGSL declaration of the uniform struct and its binding. */
export function uniformDecl(fields: readonly UniformField[], binding: number, structName = 'Params', varName = 'params'): string {
  if (fields.length === 0) return '';
  const body = fields.map((f) => `  ${f.name}: ${f.type},`).join('\n');
  return `struct ${structName} {\n${body}\n}\n@group(0) @binding(${binding}) var<uniform> ${varName}: ${structName};\n`;
}

/** WGSL declarations of storage bindings: `@group(0) @binding(i) var<storage, access> name: array<T>;`. */
export function storageDecls(bindings: readonly (StorageBinding & { readonly elem: string })[]): string {
  return bindings
    .map((b, i) => `@group(0) @binding(${i}) var<storage, ${b.access}> ${b.name}: array<${b.elem}>;`)
    .join('\n');
}
