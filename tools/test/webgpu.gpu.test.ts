import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, realpathSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { create } from 'webgpu';
import { afterAll, describe, expect, it } from 'vitest';
import { bundleEntry } from '../src/bundle.ts';
import { describeAdapter, formatAdapterLine, runTinyCompute } from '../src/webgpu-probe.ts';
import { defaultRoot } from '../src/workspace.ts';

// Module level on purpose: Dawn's instance must outlive every adapter and device (toolchain notes).
const gpu: GPU = create([]);
const tmp = mkdtempSync(join(tmpdir(), 'tools-gpu-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe('Dawn (webgpu in Node) on this machine', () => {
  it('gives an adapter and runs a compute shader exactly', async () => {
    const adapter = await gpu.requestAdapter();
    expect(adapter, 'no WebGPU adapter: install backports Mesa (shared/notes/toolchain.md)').not.toBeNull();
    if (adapter === null) return;
    const report = describeAdapter(adapter);
    console.log(`[tools] ${formatAdapterLine(report, `node ${process.version} dawn webgpu`)}`);
    expect(report.features.length).toBeGreaterThan(0);
    expect(report.limits.maxStorageBufferBindingSize).toBeGreaterThanOrEqual(128 * 1024 * 1024);
    const device = await adapter.requestDevice();
    try {
      expect(await runTinyCompute(device)).toEqual({ ok: true, count: 1000 });
    } finally {
      device.destroy();
    }
  });
});

describe('device kit bundle', () => {
  it('runs the bundled device smoke with webgpu resolved from node_modules beside the bundle', async () => {
    const out = join(tmp, 'kit', 'smoke.mjs');
    await bundleEntry(join(defaultRoot(), 'tools', 'device', 'smoke.ts'), out, 'node');
    const bundled = readFileSync(out, 'utf8');
    expect(bundled).toContain('from "webgpu"');
    expect(bundled).not.toContain('dawn.node');
    mkdirSync(join(tmp, 'kit', 'node_modules'), { recursive: true });
    symlinkSync(realpathSync(join(defaultRoot(), 'tools', 'node_modules', 'webgpu')), join(tmp, 'kit', 'node_modules', 'webgpu'));
    const run = spawnSync(process.execPath, [out], { cwd: tmp, encoding: 'utf8', timeout: 60_000 });
    expect(run.stderr).not.toMatch(/Error/);
    expect(run.status).toBe(0);
    expect(run.stdout).toMatch(/^WebGPU adapter: vendor=\S+ architecture=/m);
    expect(run.stdout).toMatch(/^limit maxComputeInvocationsPerWorkgroup: \d+$/m);
    expect(run.stdout).toMatch(/^subgroupMatrixConfigs: /m);
    expect(run.stdout).toContain('smoke: compute ok (1000 values exact');
  });
});
