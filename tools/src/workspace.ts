import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

/** The fields of a package.json that the tools read. */
export interface Manifest {
  readonly name?: string;
  readonly private?: boolean;
  readonly scripts?: Readonly<Record<string, string>>;
  readonly dependencies?: Readonly<Record<string, string>>;
  readonly peerDependencies?: Readonly<Record<string, string>>;
  readonly optionalDependencies?: Readonly<Record<string, string>>;
  readonly devDependencies?: Readonly<Record<string, string>>;
}

/** One workspace member: its folder relative to the root (posix separators) and its manifest. */
export interface WorkspaceMember {
  readonly name: string;
  readonly dir: string;
  readonly absDir: string;
  readonly manifest: Manifest;
}

/** The repository root: the folder of this package's parent that holds pnpm-workspace.yaml. */
export function defaultRoot(): string {
  return resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
}

/**
 * The `packages:` patterns of pnpm-workspace.yaml. Only the block-list form is read
 * (`packages:` followed by `  - "pattern"` lines), which is the form this repo uses.
 */
export function readWorkspacePatterns(root: string): string[] {
  const file = join(root, 'pnpm-workspace.yaml');
  const lines = readFileSync(file, 'utf8').split(/\r?\n/);
  const patterns: string[] = [];
  let inPackages = false;
  for (const line of lines) {
    if (/^packages:\s*$/.test(line)) {
      inPackages = true;
      continue;
    }
    if (!inPackages) continue;
    const item = /^\s+-\s+(['"]?)([^'"#]+?)\1\s*(#.*)?$/.exec(line);
    if (item?.[2] !== undefined) {
      patterns.push(item[2]);
      continue;
    }
    if (/^\S/.test(line)) break;
  }
  if (patterns.length === 0) {
    throw new Error(`${file}: no "packages:" list found`);
  }
  return patterns;
}

/** Expands `dir`, `dir/*` and `!dir` patterns (the only forms pnpm-workspace.yaml uses here). */
function expandPattern(root: string, pattern: string): string[] {
  const clean = pattern.replace(/\/+$/, '');
  if (clean.endsWith('/*')) {
    const base = clean.slice(0, -2);
    const absBase = join(root, base);
    if (!existsSync(absBase)) return [];
    return readdirSync(absBase)
      .filter((entry) => statSync(join(absBase, entry)).isDirectory())
      .map((entry) => `${base}/${entry}`);
  }
  if (clean.includes('*')) {
    throw new Error(`pnpm-workspace.yaml: pattern "${pattern}" is not supported by tools/src/workspace.ts`);
  }
  return [clean];
}

/** Every workspace member that has a package.json, sorted by folder. */
export function listWorkspace(root: string = defaultRoot()): WorkspaceMember[] {
  const included = new Set<string>();
  const excluded = new Set<string>();
  for (const pattern of readWorkspacePatterns(root)) {
    if (pattern.startsWith('!')) {
      for (const dir of expandPattern(root, pattern.slice(1))) excluded.add(dir);
    } else {
      for (const dir of expandPattern(root, pattern)) included.add(dir);
    }
  }
  const members: WorkspaceMember[] = [];
  for (const dir of [...included].sort()) {
    if (excluded.has(dir)) continue;
    const absDir = join(root, dir);
    const manifestPath = join(absDir, 'package.json');
    if (!existsSync(manifestPath)) continue;
    const manifest = JSON.parse(readFileSync(manifestPath, 'utf8')) as Manifest;
    members.push({ name: manifest.name ?? dir, dir, absDir, manifest });
  }
  return members;
}

/** Path of `file` relative to `root`, with posix separators (for messages). */
export function relPath(root: string, file: string): string {
  return relative(root, file).split(sep).join('/');
}

/** True when the module at `metaUrl` is the script node was started with. */
export function isMain(metaUrl: string): boolean {
  const entry = process.argv[1];
  return entry !== undefined && pathToFileURL(resolve(entry)).href === metaUrl;
}
