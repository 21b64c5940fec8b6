import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { checkWorkspace, formatReport, isDeepImport, packageOf } from '../src/check-deps.ts';
import { defaultRoot } from '../src/workspace.ts';

interface PkgSpec {
  readonly dir: string;
  readonly name: string;
  readonly dependencies?: Record<string, string>;
  readonly peerDependencies?: Record<string, string>;
  readonly devDependencies?: Record<string, string>;
  readonly files?: Record<string, string>;
}

const roots: string[] = [];

/** Writes a throwaway workspace with the same layout as ours and returns its root. */
function workspace(pkgs: readonly PkgSpec[]): string {
  const root = mkdtempSync(join(tmpdir(), 'check-deps-'));
  roots.push(root);
  writeFileSync(
    join(root, 'pnpm-workspace.yaml'),
    'packages:\n  - "packages/*"\n  - "tools"\n  - "bench"\n  - "examples/*"\npmOnFail: ignore\n',
  );
  for (const pkg of pkgs) {
    const dir = join(root, pkg.dir);
    mkdirSync(dir, { recursive: true });
    const { files, dir: _dir, ...manifest } = pkg;
    writeFileSync(join(dir, 'package.json'), JSON.stringify(manifest, null, 2));
    for (const [file, text] of Object.entries(files ?? {})) {
      mkdirSync(dirname(join(dir, file)), { recursive: true });
      writeFileSync(join(dir, file), text);
    }
  }
  return root;
}

const core: PkgSpec = { dir: 'packages/core', name: '@natten-web/core', files: { 'src/index.ts': 'export const x = 1;\n' } };

function messages(root: string): string[] {
  return checkWorkspace(root).violations.map((v) => `${v.where}: ${v.message}`);
}

afterEach(() => {
  for (const root of roots.splice(0)) rmSync(root, { recursive: true, force: true });
});

describe('check-deps on this repository', () => {
  it('finds no violation in the real workspace', () => {
    const report = checkWorkspace(defaultRoot());
    expect(formatReport(report)).toMatch(/: OK$/);
    expect(report.violations).toEqual([]);
    expect(report.packages).toBeGreaterThanOrEqual(3);
    expect(report.sourceFiles).toBeGreaterThan(0);
  });
});

describe('check-deps rules', () => {
  it('accepts every edge of the STYLE.md §2 table, and devDependency edges of any kind', () => {
    const root = workspace([
      core,
      { dir: 'packages/cpu', name: '@natten-web/cpu', peerDependencies: { '@natten-web/core': 'workspace:^' }, devDependencies: { '@natten-web/testkit': 'workspace:*' } },
      { dir: 'packages/wgsl', name: '@natten-web/wgsl', peerDependencies: { '@natten-web/core': 'workspace:^' } },
      { dir: 'packages/gpu', name: '@natten-web/gpu', dependencies: { '@natten-web/wgsl': 'workspace:^' }, peerDependencies: { '@natten-web/core': 'workspace:^' }, devDependencies: { '@natten-web/cpu': 'workspace:*' } },
      { dir: 'packages/autotune', name: '@natten-web/autotune', dependencies: { '@natten-web/gpu': 'workspace:^', '@natten-web/wgsl': 'workspace:^' }, peerDependencies: { '@natten-web/core': 'workspace:^' } },
      { dir: 'packages/natten-web', name: 'natten-web', dependencies: { '@natten-web/core': 'workspace:^', '@natten-web/cpu': 'workspace:^', '@natten-web/gpu': 'workspace:^', '@natten-web/autotune': 'workspace:^', '@natten-web/wgsl': 'workspace:^' } },
      { dir: 'packages/testkit', name: '@natten-web/testkit', dependencies: { '@natten-web/core': 'workspace:*', '@natten-web/cpu': 'workspace:*' } },
      { dir: 'tools', name: '@natten-web/tools', dependencies: { 'natten-web': 'workspace:*', '@natten-web/gpu': 'workspace:*' } },
      { dir: 'bench', name: '@natten-web/bench', dependencies: { '@natten-web/gpu': 'workspace:*' } },
      { dir: 'examples/node-dawn', name: 'example-node-dawn', dependencies: { 'natten-web': 'workspace:*' }, files: { 'main.ts': "import { na2d } from 'natten-web';\nexport { na2d };\n" } },
    ]);
    const report = checkWorkspace(root);
    expect(report.violations).toEqual([]);
    expect(report.internalEdges).toBe(18);
  });

  it('rejects a forbidden dependency edge and names the allowed set', () => {
    const root = workspace([core, { dir: 'packages/gpu', name: '@natten-web/gpu', dependencies: { '@natten-web/cpu': 'workspace:^' } }]);
    expect(messages(root)).toEqual([
      'packages/gpu/package.json: dependencies edge @natten-web/gpu -> @natten-web/cpu is not allowed (STYLE.md §2: @natten-web/gpu may depend on @natten-web/core, @natten-web/wgsl)',
    ]);
  });

  it('rejects a peerDependency edge out of core', () => {
    const root = workspace([{ ...core, peerDependencies: { '@natten-web/wgsl': 'workspace:^' } }]);
    expect(messages(root)).toEqual([
      'packages/core/package.json: peerDependencies edge @natten-web/core -> @natten-web/wgsl is not allowed (STYLE.md §2: @natten-web/core may depend on no @natten-web package)',
    ]);
  });

  it('lets examples depend on natten-web only', () => {
    const root = workspace([core, { dir: 'examples/browser-vite', name: 'example-browser', dependencies: { '@natten-web/core': 'workspace:*' } }]);
    expect(messages(root)).toEqual([
      'examples/browser-vite/package.json: dependencies edge example-browser -> @natten-web/core is not allowed (STYLE.md §2: example-browser may depend on natten-web)',
    ]);
  });

  it('rejects an internal package missing from the table', () => {
    const root = workspace([core, { dir: 'packages/extra', name: '@natten-web/extra' }]);
    expect(messages(root)).toEqual([
      'packages/extra/package.json: @natten-web/extra is not in the STYLE.md §2 table; add its row to tools/src/check-deps.ts first',
    ]);
  });

  it('rejects deep imports through the package name, in any source file', () => {
    const root = workspace([
      core,
      {
        dir: 'packages/testkit',
        name: '@natten-web/testkit',
        files: {
          'src/a.ts': "import { x } from '@natten-web/core/src/index.ts';\nexport { x };\n",
          'test/b.test.ts': "export const load = () => import('natten-web/dist/index.js');\n",
          'test/ok.test.ts': "// import '@natten-web/core/src/index.ts' in a comment is not an import\nexport const s = \"from '@natten-web/core/dist/x.js'\";\nexport const t = `import '@natten-web/core/src/y.ts'`;\n",
        },
      },
    ]);
    expect(messages(root)).toEqual([
      'packages/testkit/src/a.ts:1: deep import "@natten-web/core/src/index.ts"; import "@natten-web/core" (its public entry point) instead',
      'packages/testkit/test/b.test.ts:1: deep import "natten-web/dist/index.js"; import "natten-web" (its public entry point) instead',
    ]);
  });

  it('rejects a relative import into another package', () => {
    const root = workspace([
      core,
      { dir: 'packages/cpu', name: '@natten-web/cpu', files: { 'src/index.ts': "export { x } from '../../core/src/index.ts';\n" } },
    ]);
    expect(messages(root)).toEqual([
      'packages/cpu/src/index.ts:1: relative import "../../core/src/index.ts" reaches into @natten-web/core; import "@natten-web/core" (its public entry point) instead',
    ]);
  });

  it('rejects a src import the table forbids, even when it is only a devDependency', () => {
    const root = workspace([
      core,
      {
        dir: 'packages/gpu',
        name: '@natten-web/gpu',
        devDependencies: { '@natten-web/cpu': 'workspace:*' },
        files: {
          'src/fallback.ts': "import type { CpuBackend } from '@natten-web/cpu';\nexport type B = CpuBackend;\n",
          'test/oracle.test.ts': "import { naRef } from '@natten-web/cpu';\nexport { naRef };\n",
        },
      },
    ]);
    expect(messages(root)).toEqual([
      'packages/gpu/src/fallback.ts:1: src imports "@natten-web/cpu", but @natten-web/gpu may depend on @natten-web/core, @natten-web/wgsl (STYLE.md §2)',
    ]);
  });

  it('keeps core, cpu and wgsl free of DOM and WebGPU', () => {
    const root = workspace([
      {
        ...core,
        files: {
          'src/index.ts': '/** Unlike navigator.gpu, this needs no GPUDevice or document. */\nexport const note = "navigator";\n',
          'src/bad.ts': "export function f(d: GPUDevice): unknown {\n  return [d, navigator.gpu, globalThis['document']];\n}\n",
        },
      },
      {
        dir: 'packages/wgsl',
        name: '@natten-web/wgsl',
        files: {
          'src/a.ts': "import { create } from 'webgpu';\nexport { create };\n",
          'src/b.ts': '/// <reference types="@webgpu/types" />\nexport const b = 1;\n',
        },
      },
      { dir: 'packages/gpu', name: '@natten-web/gpu', files: { 'src/device.ts': "import { create } from 'webgpu';\nexport const g = (d: GPUDevice) => [d, navigator, create];\n" } },
    ]);
    expect(messages(root)).toEqual([
      'packages/core/src/bad.ts:1: "GPUDevice" in @natten-web/core; core, cpu and wgsl must stay free of DOM and WebGPU (STYLE.md §2)',
      'packages/core/src/bad.ts:2: "navigator" in @natten-web/core; core, cpu and wgsl must stay free of DOM and WebGPU (STYLE.md §2)',
      'packages/core/src/bad.ts:2: "document" in @natten-web/core; core, cpu and wgsl must stay free of DOM and WebGPU (STYLE.md §2)',
      'packages/wgsl/src/a.ts:1: @natten-web/wgsl imports "webgpu"; core, cpu and wgsl must not use WebGPU (STYLE.md §2)',
      'packages/wgsl/src/b.ts:1: @natten-web/wgsl imports "@webgpu/types"; core, cpu and wgsl must not use WebGPU (STYLE.md §2)',
    ]);
  });

  it('exits 1 with a report line per violation when run as a script', async () => {
    const { spawnSync } = await import('node:child_process');
    const root = workspace([{ ...core, dependencies: { 'natten-web': 'workspace:*' } }]);
    const script = join(defaultRoot(), 'tools', 'src', 'check-deps.ts');
    const tsx = join(defaultRoot(), 'node_modules', '.bin', 'tsx');
    const run = spawnSync(tsx, [script, root], { encoding: 'utf8' });
    expect(run.status).toBe(1);
    expect(run.stdout).toContain('check-deps: packages/core/package.json: dependencies edge @natten-web/core -> natten-web is not allowed');
    expect(run.stdout).toMatch(/1 packages, 1 internal edges, 1 source files: 1 violation\(s\)/);
  });
});

describe('specifier helpers', () => {
  it('splits scoped and unscoped specifiers', () => {
    expect(packageOf('@natten-web/core/src/x.ts')).toBe('@natten-web/core');
    expect(packageOf('natten-web/dist/index.js')).toBe('natten-web');
    expect(packageOf('webgpu')).toBe('webgpu');
  });

  it('flags src and dist subpaths of our packages only', () => {
    expect(isDeepImport('@natten-web/gpu/src/device.ts')).toBe(true);
    expect(isDeepImport('@natten-web/gpu/dist')).toBe(true);
    expect(isDeepImport('natten-web/src/index.ts')).toBe(true);
    expect(isDeepImport('@natten-web/gpu/node')).toBe(false);
    expect(isDeepImport('@natten-web/gpu')).toBe(false);
    expect(isDeepImport('natten-webby/src/x')).toBe(false);
    expect(isDeepImport('other/src/x')).toBe(false);
  });
});
