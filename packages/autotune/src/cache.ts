/**
 * The tuning cache: which config won for (adapter, package version, op, problem class). Tables are plain JSON
 * (`TuneTable`), so a team can export a tuned table and ship it with an app.
 *
 * Key: adapter identity (vendor, architecture, device, description) + autotune version + op + dtype + rank +
 * shape class + every kernel parameter. Shape class: the spatial extents, heads, KV heads (GQA ratio) and head
 * dims are exact, because they decide which tiles are valid and how much of each tile is idle; the batch is
 * bucketed to the next power of two, because it only multiplies the number of workgroups (one entry per
 * batch size would re-tune every batch a model sees). A cached config is re-validated against the exact problem
 * before use.
 *
 * Stores: memory; a JSON file in Node (`env-paths('natten-web').cache/autotune.json`, or
 * `NATTEN_WEB_AUTOTUNE_CACHE`, or an explicit path), written under a lock file through a temp file + rename,
 * merged with what is on disk at write time, so concurrent processes keep each other's entries; IndexedDB
 * (idb-keyval) or localStorage in browsers. A corrupt file or one from another schema / package version is
 * ignored with a warning, never an error.
 */
import type { MmaBackwardConfig, MmaForwardConfig } from '@natten-web/gpu';
import type { FusedBackwardConfig, FusedForwardConfig } from '@natten-web/wgsl';
import type { BackwardTuneProblem, ForwardTuneProblem } from './problem.ts';

/** Schema of the cache file / exported table. Bump when `TuneTable` changes shape. */
export const CACHE_SCHEMA = 1;
/** This package's version (a test keeps it equal to package.json); part of every key and of the file header. */
export const AUTOTUNE_VERSION = '0.1.0';
export const TABLE_PACKAGE = '@natten-web/autotune';

/** What was tuned: the plain fused forward or backward, or the tensor-core (mma) forward's or backward's config. */
export type TuneOp = 'na-fused-forward' | 'na-fused-backward' | 'na-fused-forward-mma' | 'na-fused-backward-mma';

export interface AdapterIdentity {
  readonly vendor: string;
  readonly architecture: string;
  readonly device: string;
  readonly description: string;
}

export interface TuneEntry {
  readonly op: TuneOp;
  /** The problem, as `formatProblem` writes it (for listings). */
  readonly problem: string;
  /** `vendor/architecture/device/description`. */
  readonly adapter: string;
  readonly config: FusedForwardConfig | FusedBackwardConfig | MmaForwardConfig | MmaBackwardConfig;
  /** Median time of the winner (ns) and how it was measured. */
  readonly medianNs: number;
  readonly method: 'gpu-timestamps' | 'wall-clock';
  /** Candidates timed / in the space. */
  readonly timed: number;
  readonly candidates: number;
  /** True when the time budget stopped tuning before every candidate was timed. */
  readonly truncated: boolean;
  readonly tunedAt: string;
}

export interface TuneTable {
  readonly schema: number;
  readonly package: string;
  readonly version: string;
  readonly entries: Readonly<Record<string, TuneEntry>>;
}

export type Warn = (message: string) => void;

export function adapterLabel(a: AdapterIdentity): string {
  return [a.vendor, a.architecture, a.device, a.description].map((s) => s || '-').join('/');
}

const nextPow2 = (n: number): number => 2 ** Math.ceil(Math.log2(Math.max(1, n)));
const list = (xs: readonly (number | boolean)[]): string => xs.map((x) => (typeof x === 'boolean' ? (x ? 1 : 0) : x)).join(',');

/** The cache key of a problem (see the module comment for what is exact and what is bucketed). */
export function cacheKey(adapter: AdapterIdentity, op: TuneOp, p: ForwardTuneProblem | BackwardTuneProblem): string {
  const pr = p.params;
  const gradRpb = 'hasGradRpb' in p ? (p.hasGradRpb ? 1 : 0) : '-';
  return [
    op,
    `adapter=${adapterLabel(adapter)}`,
    `v${AUTOTUNE_VERSION}`,
    p.dtype,
    `rank=${p.rank}`,
    `batch<=${nextPow2(p.batch)}`,
    `spatial=${p.spatial.join('x')}`,
    `heads=${p.heads}/${p.headsKv}`,
    `dim=${p.dim}/${p.dimV}`,
    `K=${list(pr.kernelSize)}`,
    `d=${list(pr.dilation)}`,
    `s=${list(pr.stride)}`,
    `causal=${list(pr.isCausal)}`,
    `rpb=${p.hasRpb ? 1 : 0}`,
    `lse=${p.hasLse ? 1 : 0}`,
    `gradRpb=${gradRpb}`,
  ].join('|');
}

export function emptyTable(): TuneTable {
  return { schema: CACHE_SCHEMA, package: TABLE_PACKAGE, version: AUTOTUNE_VERSION, entries: {} };
}

function isObject(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}

const isIntList = (x: unknown): boolean => Array.isArray(x) && x.length >= 1 && x.length <= 3 && x.every((n) => Number.isInteger(n) && n >= 1);

function validEntry(key: string, e: unknown): e is TuneEntry {
  if (!isObject(e) || !isObject(e.config)) return false;
  const c = e.config;
  if (!isIntList(c.queryTile)) return false;
  if (e.op === 'na-fused-forward-mma') {
    if (c.path !== 'mma' || !Number.isInteger(c.keyChunk) || !Number.isInteger(c.subgroups)) return false;
  } else if (!isIntList(c.keyTile)) {
    return false;
  } else if (e.op === 'na-fused-backward-mma') {
    if (c.path !== 'mma' || !Number.isInteger(c.querySubgroups) || !Number.isInteger(c.keySubgroups) || !Number.isInteger(c.chunk)) return false;
  } else if (e.op === 'na-fused-forward') {
    if (c.path !== 'plain' || (c.stage !== 'f32' && c.stage !== 'f16')) return false;
    if (c.lanes !== undefined && !Number.isInteger(c.lanes)) return false;
  } else if (e.op === 'na-fused-backward') {
    if (!isIntList(c.numSplitsKey) || typeof c.computeDeltaWithTorch !== 'boolean') return false;
    if (c.lanes !== undefined && !Number.isInteger(c.lanes)) return false;
  } else {
    return false;
  }
  return key.startsWith(`${e.op}|`) && typeof e.medianNs === 'number';
}

/**
 * Parse a table (file contents, an imported object). Returns undefined (with a warning) for anything that is not a
 * table of this schema and package version; drops (with one warning) individual malformed entries.
 */
export function parseTable(data: unknown, source: string, warn: Warn): TuneTable | undefined {
  let obj: unknown = data;
  if (typeof data === 'string') {
    try {
      obj = JSON.parse(data);
    } catch (e) {
      warn(`natten-web autotune: ignoring ${source}: not valid JSON (${(e as Error).message}); it will be rewritten on the next tune`);
      return undefined;
    }
  }
  if (!isObject(obj) || obj.package !== TABLE_PACKAGE || !isObject(obj.entries)) {
    warn(`natten-web autotune: ignoring ${source}: not a ${TABLE_PACKAGE} table`);
    return undefined;
  }
  if (obj.schema !== CACHE_SCHEMA || obj.version !== AUTOTUNE_VERSION) {
    warn(
      `natten-web autotune: ignoring ${source}: it was written by ${TABLE_PACKAGE} ${String(obj.version)} (schema ${String(obj.schema)}), this is ${AUTOTUNE_VERSION} (schema ${CACHE_SCHEMA}); stale tunings are not reused`,
    );
    return undefined;
  }
  const entries: Record<string, TuneEntry> = {};
  let bad = 0;
  for (const [k, e] of Object.entries(obj.entries)) {
    if (validEntry(k, e)) entries[k] = e;
    else bad++;
  }
  if (bad > 0) warn(`natten-web autotune: ${source}: ignored ${bad} malformed entr${bad === 1 ? 'y' : 'ies'}`);
  return { schema: CACHE_SCHEMA, package: TABLE_PACKAGE, version: AUTOTUNE_VERSION, entries };
}

/** Where tuning results persist. `load` never throws on bad data (it warns and returns an empty table). */
export interface TuneStore {
  /** `memory`, `file:/path`, `indexeddb:key`, `localstorage:key`. */
  readonly location: string;
  load(): Promise<TuneTable>;
  /** Add entries, keeping whatever else the store holds (also what other processes wrote meanwhile). */
  merge(entries: Readonly<Record<string, TuneEntry>>): Promise<void>;
  /** Remove every entry. */
  clear(): Promise<void>;
}

export function memoryStore(initial: TuneTable = emptyTable()): TuneStore {
  let entries: Record<string, TuneEntry> = { ...initial.entries };
  return {
    location: 'memory',
    load: async () => ({ ...emptyTable(), entries: { ...entries } }),
    merge: async (add) => {
      entries = { ...entries, ...add };
    },
    clear: async () => {
      entries = {};
    },
  };
}

export function isNode(): boolean {
  const p = (globalThis as { process?: { versions?: { node?: string } } }).process;
  return typeof p?.versions?.node === 'string';
}

function envVar(name: string): string | undefined {
  const env = (globalThis as { process?: { env?: Record<string, string | undefined> } }).process?.env;
  const v = env?.[name];
  return v === undefined || v === '' ? undefined : v;
}

/**
 * Import a Node-only module through a variable specifier, so browser bundlers never try to resolve or bundle it
 * (the same trick `@natten-web/gpu` uses for Dawn's `webgpu`). Only called on Node code paths.
 */
function nodeImport<T>(specifier: string): Promise<T> {
  return import(/* @vite-ignore */ specifier) as Promise<T>;
}
type Fs = typeof import('node:fs/promises');
type Path = typeof import('node:path');
type EnvPaths = typeof import('env-paths');

/** The Node cache file: the explicit path, else `NATTEN_WEB_AUTOTUNE_CACHE`, else the user cache dir. */
export async function defaultCachePath(explicit?: string): Promise<string> {
  if (explicit) return explicit;
  const fromEnv = envVar('NATTEN_WEB_AUTOTUNE_CACHE');
  if (fromEnv) return fromEnv;
  const [{ default: envPaths }, path] = await Promise.all([nodeImport<EnvPaths>('env-paths'), nodeImport<Path>('node:path')]);
  return path.join(envPaths('natten-web', { suffix: '' }).cache, 'autotune.json');
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export interface FileStoreOptions {
  readonly warn?: Warn;
  /** A lock older than this is considered abandoned (ms, default 10 000). */
  readonly staleLockMs?: number;
}

/** A JSON file store (Node). Writes: lock file, re-read + merge, temp file, rename. */
export function fileStore(file: string, options: FileStoreOptions = {}): TuneStore {
  const warn = options.warn ?? ((m: string) => console.warn(m));
  const staleLockMs = options.staleLockMs ?? 10_000;
  const fsp = (): Promise<Fs> => nodeImport<Fs>('node:fs/promises');

  async function read(): Promise<TuneTable> {
    const fs = await fsp();
    let text: string;
    try {
      text = await fs.readFile(file, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return emptyTable();
      warn(`natten-web autotune: cannot read ${file} (${(e as Error).message}); using an empty cache`);
      return emptyTable();
    }
    return parseTable(text, file, warn) ?? emptyTable();
  }

  async function withLock<T>(fn: () => Promise<T>): Promise<T> {
    const fs = await fsp();
    const { dirname } = await nodeImport<Path>('node:path');
    await fs.mkdir(dirname(file), { recursive: true });
    const lock = `${file}.lock`;
    const deadline = Date.now() + 4 * staleLockMs;
    let held = false;
    while (!held) {
      try {
        const fh = await fs.open(lock, 'wx');
        await fh.writeFile(String(process.pid));
        await fh.close();
        held = true;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
        try {
          const st = await fs.stat(lock);
          if (Date.now() - st.mtimeMs > staleLockMs) {
            await fs.rm(lock, { force: true });
            continue;
          }
        } catch {
          continue; // released between open and stat
        }
        if (Date.now() > deadline) throw new Error(`natten-web autotune: could not lock ${lock} within ${4 * staleLockMs} ms`);
        await sleep(5 + Math.random() * 20);
      }
    }
    try {
      return await fn();
    } finally {
      await fs.rm(lock, { force: true });
    }
  }

  async function write(table: TuneTable): Promise<void> {
    const fs = await fsp();
    const tmp = `${file}.${process.pid}.${Math.random().toString(36).slice(2)}.tmp`;
    await fs.writeFile(tmp, `${JSON.stringify(table, null, 1)}\n`);
    await fs.rename(tmp, file);
  }

  return {
    location: `file:${file}`,
    load: read,
    merge: (add) =>
      withLock(async () => {
        const disk = await read();
        await write({ ...emptyTable(), entries: { ...disk.entries, ...add } });
      }),
    clear: () => withLock(() => write(emptyTable())),
  };
}

const BROWSER_KEY = 'natten-web-autotune';

/** Browser store: IndexedDB through idb-keyval when available, else localStorage, else memory. */
export function browserStore(options: { readonly warn?: Warn } = {}): TuneStore {
  const warn = options.warn ?? ((m: string) => console.warn(m));
  const g = globalThis as { indexedDB?: unknown; localStorage?: Storage };
  if (g.indexedDB !== undefined) {
    const idb = (): Promise<typeof import('idb-keyval')> => import('idb-keyval');
    const load = async (): Promise<TuneTable> => {
      const raw: unknown = await (await idb()).get(BROWSER_KEY);
      return raw === undefined ? emptyTable() : (parseTable(raw, `indexeddb:${BROWSER_KEY}`, warn) ?? emptyTable());
    };
    return {
      location: `indexeddb:${BROWSER_KEY}`,
      load,
      merge: async (add) => {
        const { update } = await idb();
        await update(BROWSER_KEY, (raw: unknown) => {
          const cur = raw === undefined ? emptyTable() : (parseTable(raw, `indexeddb:${BROWSER_KEY}`, warn) ?? emptyTable());
          return { ...emptyTable(), entries: { ...cur.entries, ...add } };
        });
      },
      clear: async () => (await idb()).del(BROWSER_KEY),
    };
  }
  const ls = g.localStorage;
  if (ls !== undefined) {
    const load = async (): Promise<TuneTable> => {
      const raw = ls.getItem(BROWSER_KEY);
      return raw === null ? emptyTable() : (parseTable(raw, `localstorage:${BROWSER_KEY}`, warn) ?? emptyTable());
    };
    return {
      location: `localstorage:${BROWSER_KEY}`,
      load,
      merge: async (add) => {
        const cur = await load();
        ls.setItem(BROWSER_KEY, JSON.stringify({ ...emptyTable(), entries: { ...cur.entries, ...add } }));
      },
      clear: async () => ls.removeItem(BROWSER_KEY),
    };
  }
  return memoryStore();
}

/** What the `cache` option accepts: a store, `'memory'`, `'persistent'` (file in Node, IndexedDB in browsers), or a file path. */
export type CacheOption = TuneStore | 'memory' | 'persistent' | { readonly path: string };

export async function resolveStore(option: CacheOption | undefined, warn: Warn): Promise<TuneStore> {
  if (option === undefined || option === 'persistent') {
    return isNode() ? fileStore(await defaultCachePath(), { warn }) : browserStore({ warn });
  }
  if (option === 'memory') return memoryStore();
  if ('path' in option) return fileStore(option.path, { warn });
  return option;
}
