import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { bundleEntry } from '../src/bundle.ts';
import { defaultRoot } from '../src/workspace.ts';

const root = defaultRoot();
const deno = join(root, 'tools', 'node_modules', '@deno', 'linux-x64-glibc', 'deno');
const tmp = mkdtempSync(join(tmpdir(), 'tools-deno-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

function runDeno(bundle: string): ReturnType<typeof spawnSync> & { stdout: string; stderr: string } {
  return spawnSync(deno, ['run', '--allow-all', '--unstable-webgpu', bundle], {
    encoding: 'utf8',
    timeout: 60_000,
    env: { ...process.env, DENO_NO_UPDATE_CHECK: '1', NO_COLOR: '1' },
  });
}

describe('Deno / wgpu portability runner', () => {
  it('runs the bundled smoke: wgpu finds an adapter and a compute shader is exact', async () => {
    const out = join(tmp, 'smoke.mjs');
    await bundleEntry(join(root, 'tools', 'deno-smoke', 'smoke.ts'), out, 'deno');
    const run = runDeno(out);
    console.log(run.stdout.split('\n').find((l) => l.startsWith('WebGPU adapter:'))?.replace(/^/, '[tools] ') ?? '');
    expect(run.stdout).toContain('2 passed, 0 failed');
    expect(run.status).toBe(0);
    expect(run.stdout).toMatch(/^WebGPU adapter: .* runtime=deno \d+\.\d+\.\d+ wgpu$/m);
  });

  it('runs the conformance smoke subset under wgpu: every seed op x rank 1-3 x f32/f16 against the CPU reference', async () => {
    const out = join(tmp, 'conformance.mjs');
    await bundleEntry(join(root, 'tools', 'deno-smoke', 'conformance.ts'), out, 'deno');
    const run = spawnSync(deno, ['run', '--allow-all', '--unstable-webgpu', out], {
      encoding: 'utf8',
      timeout: 540_000,
      env: { ...process.env, DENO_NO_UPDATE_CHECK: '1', NO_COLOR: '1' },
    });
    const summary = run.stdout.split('\n').filter((l) => l.startsWith('FAIL') || /passed, \d+ failed/.test(l));
    console.log(`[tools] deno conformance smoke: ${summary.join(' | ')}`);
    expect(run.stdout, run.stderr).toContain('36 passed, 0 failed');
    expect(run.status).toBe(0);
  }, 600_000);

  it('exits with the number of failed checks', async () => {
    const entry = join(tmp, 'failing.ts');
    const harness = join(root, 'tools', 'deno-smoke', 'harness.ts');
    writeFileSync(
      entry,
      `import { check, runChecksAndExit } from ${JSON.stringify(harness)};\n` +
        "check('passes', () => {});\n" +
        "check('throws', () => { throw new Error('expected failure'); });\n" +
        "check('rejects', async () => { throw new Error('expected rejection'); });\n" +
        'await runChecksAndExit();\n',
    );
    const out = join(tmp, 'failing.mjs');
    await bundleEntry(entry, out, 'deno');
    const run = runDeno(out);
    expect(run.status).toBe(2);
    expect(run.stdout).toContain('FAIL throws: Error: expected failure');
    expect(run.stdout).toContain('1 passed, 2 failed');
  });

  it('refuses to bundle Node-only imports for Deno', async () => {
    const entry = join(tmp, 'node-only.ts');
    writeFileSync(entry, "import { create } from 'webgpu';\nconsole.log(create);\n");
    await expect(bundleEntry(entry, join(tmp, 'node-only.mjs'), 'deno', 'silent')).rejects.toThrow(/webgpu/);
  });
});
