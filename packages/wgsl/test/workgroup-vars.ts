/** Test helper: the workgroup variables a kernel's WGSL declares, with their sizes in bytes (NaN for unknown types). */
const BYTES: Record<string, number> = { f16: 2, f32: 4, u32: 4, i32: 4, 'vec4<i32>': 16, 'vec4<u32>': 16, 'vec4<f32>': 16 };

export function workgroupVars(code: string): { name: string; bytes: number }[] {
  return [...code.matchAll(/var<workgroup> (\w+): ([^;]+);/g)].map((m) => {
    const type = m[2] as string;
    const arr = /^array<([\w<>]+), (\d+)>$/.exec(type);
    return { name: m[1] as string, bytes: arr ? (BYTES[arr[1] as string] ?? Number.NaN) * Number(arr[2]) : (BYTES[type] ?? Number.NaN) };
  });
}
