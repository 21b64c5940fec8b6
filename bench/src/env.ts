/** The env block of a results file: adapter, features, limits, versions, git commit, date. */
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DAWN_TOGGLES_ENV, type GpuContext } from '@natten-web/gpu';
import type { BenchEnv } from './results.ts';

const LIMIT_NAMES = [
  'maxBufferSize',
  'maxStorageBufferBindingSize',
  'maxStorageBuffersPerShaderStage',
  'maxUniformBufferBindingSize',
  'maxComputeWorkgroupStorageSize',
  'maxComputeInvocationsPerWorkgroup',
  'maxComputeWorkgroupSizeX',
  'maxComputeWorkgroupSizeY',
  'maxComputeWorkgroupSizeZ',
  'maxComputeWorkgroupsPerDimension',
] as const;

/** Build info written next to the device bundle by bench/device/build.sh (the device has no git). */
interface BuildInfo {
  readonly commit: string;
}

function readBuildInfo(): BuildInfo | undefined {
  try {
    const p = fileURLToPath(new URL('./bench-build.json', import.meta.url));
    if (!existsSync(p)) return undefined;
    const o = JSON.parse(readFileSync(p, 'utf8')) as Partial<BuildInfo>;
    return typeof o.commit === 'string' ? { commit: o.commit } : undefined;
  } catch {
    return undefined;
  }
}

/** `abc1234` or `abc1234+dirty` from git, else the bundle's build info, else NATTEN_WEB_COMMIT, else `unknown`. */
export function gitCommit(): string {
  const info = readBuildInfo();
  if (info) return info.commit;
  const head = spawnSync('git', ['rev-parse', '--short=12', 'HEAD'], { encoding: 'utf8' });
  if (!head.error && head.status === 0) {
    const dirty = spawnSync('git', ['status', '--porcelain', '--untracked-files=no'], { encoding: 'utf8' });
    return `${head.stdout.trim()}${dirty.status === 0 && dirty.stdout.trim() !== '' ? '+dirty' : ''}`;
  }
  return process.env.NATTEN_WEB_COMMIT ?? 'unknown';
}

export function webgpuVersion(): string {
  try {
    const require = createRequire(import.meta.url);
    const p = require.resolve('webgpu/package.json');
    return String((JSON.parse(readFileSync(p, 'utf8')) as { version?: string }).version ?? 'unknown');
  } catch {
    return 'unknown';
  }
}

export function collectEnv(ctx: GpuContext, date: Date): BenchEnv {
  const toggles = process.env[DAWN_TOGGLES_ENV]?.trim();
  const limits: Record<string, number> = {};
  const src = ctx.limits as unknown as Record<string, unknown>;
  for (const name of LIMIT_NAMES) {
    const v = src[name];
    if (typeof v === 'number') limits[name] = v;
  }
  const a = ctx.adapterInfo;
  return {
    date: date.toISOString(),
    adapter: {
      vendor: a.vendor,
      architecture: a.architecture,
      device: a.device,
      description: a.description,
      isFallbackAdapter: a.isFallbackAdapter,
      subgroupMinSize: a.subgroupMinSize,
      subgroupMaxSize: a.subgroupMaxSize,
    },
    features: [...ctx.features].sort(),
    limits,
    subgroupMatrix: ctx.subgroupMatrix.map((c) => `${c.componentType}->${c.resultComponentType} ${c.M}x${c.N}x${c.K}`),
    node: process.version,
    webgpu: webgpuVersion(),
    commit: gitCommit(),
    platform: `${process.platform}-${process.arch}`,
    ...(toggles ? { dawnToggles: toggles } : {}),
  };
}

/** File-name slug of an adapter: `nvidia-h100-80gb-hbm3`, `llvmpipe`. */
export function adapterSlug(env: Pick<BenchEnv, 'adapter'>): string {
  const a = env.adapter;
  const raw = a.description || a.device || a.architecture || a.vendor || 'adapter';
  const slug = raw
    .toLowerCase()
    .replace(/\(.*$/, '')
    .replace(/[^a-z0-9]+/g, '-')
    .replace(/^-+|-+$/g, '')
    .slice(0, 40);
  return slug || 'adapter';
}

/** The repository root: the nearest folder at or above the working directory holding pnpm-workspace.yaml, else the working directory. */
export function repoRoot(start = process.cwd()): string {
  let dir = resolve(start);
  for (;;) {
    if (existsSync(join(dir, 'pnpm-workspace.yaml'))) return dir;
    const up = dirname(dir);
    if (up === dir) return resolve(start);
    dir = up;
  }
}

/**
 * Run a bench entry point: an error prints with its stack and sets the exit code; the process leaves shortly after
 * the work is done (a live Dawn handle can keep it up after `destroy()`).
 */
export async function runMain(main: () => Promise<void>): Promise<void> {
  try {
    await main();
  } catch (e) {
    console.error(e instanceof Error ? (e.stack ?? e.message) : String(e));
    process.exitCode = 1;
  }
  setTimeout(() => process.exit(), 2000).unref();
}
