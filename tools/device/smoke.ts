/**
 * Device-machine smoke test: Dawn's `webgpu` package with the NVIDIA toggles, adapter report, a tiny
 * compute shader, destroy. Bundled to `.devkit/smoke.mjs` by tools/device/bundle.sh (webgpu external,
 * resolved from `.devkit/node_modules/webgpu`). Exit code 0 only when the compute result is exact.
 */
import { create } from 'webgpu';
import { describeAdapter, formatAdapterLine, formatAdapterReport, runTinyCompute } from '../src/webgpu-probe.ts';

const FLAGS = ['enable-dawn-features=allow_unsafe_apis,vulkan_enable_f16_on_nvidia'];

// Keep the Dawn instance reachable for the whole run: if it is collected while an adapter or device
// lives, the process aborts at random (toolchain notes).
const gpu: GPU = create(FLAGS);

async function main(): Promise<number> {
  const t0 = performance.now();
  const adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' });
  if (adapter === null) {
    console.error('smoke: requestAdapter() returned null (no Vulkan loader or driver? see tools/device/README.md)');
    return 1;
  }
  const report = describeAdapter(adapter);
  console.log(formatAdapterLine(report, `node ${process.version} dawn webgpu`));
  console.log(formatAdapterReport(report));
  const device = await adapter.requestDevice();
  try {
    const check = await runTinyCompute(device);
    const ms = (performance.now() - t0).toFixed(0);
    if (!check.ok) {
      console.error(`smoke: compute MISMATCH at ${JSON.stringify(check.mismatch)} (${ms} ms)`);
      return 1;
    }
    console.log(`smoke: compute ok (${check.count} values exact, ${ms} ms from requestAdapter)`);
    return 0;
  } finally {
    device.destroy();
  }
}

const code = await main();
process.exitCode = code;
// A live Dawn device can keep the event loop busy on NVIDIA (device.md); never hang the device run.
setTimeout(() => process.exit(code), 2000).unref();
