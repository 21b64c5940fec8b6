import { writeFileSync } from 'node:fs';
import { generateDenseBackwardKvMma, generateDenseBackwardQueryMma, generateDenseForwardMma } from '../../packages/wgsl/src/index.ts';
const specs = [
  { dim: 64, dimV: 64, causal: false, chunk: 16, tight: true },
  { dim: 32, dimV: 16, causal: true, varlen: true, chunk: 32 },
  { dim: 128, dimV: 48, causal: false, chunk: 16, tight: true, accumulate: true, partial: true },
] as const;
const out: string[] = [];
for (const s of specs) {
  out.push(generateDenseForwardMma(s as never).code, generateDenseBackwardQueryMma(s as never).code, generateDenseBackwardKvMma(s as never).code);
  out.push(generateDenseForwardMma({ ...s, split: true } as never).code, generateDenseForwardMma({ ...s, merge: true } as never).code);
}
writeFileSync(process.argv[2] as string, out.join('\n=====\n'));
