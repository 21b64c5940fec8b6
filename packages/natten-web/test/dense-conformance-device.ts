/**
 * Device script (not a test): the dense conformance suite (@natten-web/testkit's `DENSE_CASES`) through the
 * umbrella's WebGPU path on a real adapter, where it takes the tensor cores (float32 as the split), against the
 * testkit's f64 oracle with the suite's tolerances. Bundle with
 * `tools/device/bundle.sh packages/natten-web/test/dense-conformance-device.ts`; prints one line per case, exits
 * with the number of failures.
 */
import { DENSE_CASES, runDenseCase } from '@natten-web/testkit';
import { dispose, info, setBackend } from '../src/index.ts';
import { gpuDenseBackend } from './dense-backends.ts';

setBackend('webgpu');
const i = await info();
console.log(`adapter: ${i.adapter?.vendor} ${i.adapter?.device} features=${i.features.join(',')}`);
let failures = 0;
for (const dtype of ['float32', 'float16'] as const) {
  for (const c of DENSE_CASES) {
    const results = await runDenseCase(gpuDenseBackend, c, dtype);
    const ok = results.every((r) => r.ok);
    if (!ok) failures++;
    const worst = results.map((r) => r.message.split(':')[0] + ' ' + r.worst.toExponential(1)).join(', ');
    console.log(`${ok ? 'ok  ' : 'FAIL'} ${dtype} ${c.name.padEnd(48)} ${ok ? worst : results.filter((r) => !r.ok).map((r) => r.message).join('; ')}`);
  }
}
console.log(`dense conformance on the device: ${DENSE_CASES.length * 2 - failures} passed, ${failures} failed`);
await dispose();
setTimeout(() => process.exit(failures), 500).unref();
