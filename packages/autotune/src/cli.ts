/**
 * `natten-web-tune`: tune problems and manage the cache from a shell.
 *
 *   natten-web-tune --problem "na2d 1x128x128x8x64 K=7 f16" [--backward] [--dry-run] [--max-ms 20000]
 *   natten-web-tune --list
 *   natten-web-tune --export table.json | --import table.json | --clear
 * Options: --cache <file> (else NATTEN_WEB_AUTOTUNE_CACHE, else the user cache dir), --mode, --reps, --warmup,
 * --warm-clocks, --json (machine-readable output).
 */
import { parseArgs } from 'node:util';
import type { GpuContext } from '@natten-web/gpu';
import { type CacheOption, defaultCachePath, fileStore, parseTable } from './cache.ts';
import { AUTOTUNE_MODES, type AutotuneMode, createAutotuner, formatDryRun } from './autotuner.ts';
import { describeBackward, describeForward, parseProblem } from './problem.ts';

export const CLI_USAGE = `usage: natten-web-tune [options]
  --problem "<na1d|na2d|na3d> BxL..xHxD K=<k> [d=..] [s=..] [causal=1,0] [kv=H] [dv=D] [f16|f32] [rpb] [nolse]"
                     tune this problem (repeatable) and store the winner
  --backward         tune the backward pass instead of the forward (--both for both)
  --both             tune forward and backward
  --dry-run          list the configs that would be timed, with estimated cost; no GPU work
  --list             show the cache
  --export <file>    write the cache as a table (ship it with an app)
  --import <file>    merge a table into the cache
  --clear            empty the cache
  --cache <file>     cache file (default: $NATTEN_WEB_AUTOTUNE_CACHE, else the user cache dir)
  --max-ms <ms>      time budget per tuning (default 20000)
  --max-candidates <n>  time at most n configs after pruning (default 24; 0 = no cap; the idle and occupancy rules still apply)
  --reps <n>         timed runs per candidate (default 5); --warmup <n> untimed runs (default 1)
  --warm-clocks <auto|on|off>  keep the GPU at its boost clock while timing (default auto: on for hardware
                     adapters, off for software ones such as lavapipe)
  --json             machine-readable output`;

export interface CliIo {
  readonly out: (s: string) => void;
  readonly err: (s: string) => void;
  /** Creates the GPU context (only commands that need the device call it). */
  readonly context: () => Promise<GpuContext>;
}

export async function runCli(argv: readonly string[], io: CliIo): Promise<number> {
  let values: ReturnType<typeof parse>['values'];
  function parse(a: readonly string[]) {
    return parseArgs({
      args: [...a],
      options: {
        problem: { type: 'string', multiple: true },
        backward: { type: 'boolean' },
        both: { type: 'boolean' },
        'dry-run': { type: 'boolean' },
        list: { type: 'boolean' },
        export: { type: 'string' },
        import: { type: 'string' },
        clear: { type: 'boolean' },
        cache: { type: 'string' },
        mode: { type: 'string' },
        'max-ms': { type: 'string' },
        reps: { type: 'string' },
        warmup: { type: 'string' },
        'max-candidates': { type: 'string' },
        'warm-clocks': { type: 'string' },
        json: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
      allowPositionals: false,
    });
  }
  try {
    values = parse(argv.filter((a) => a !== '--')).values;
  } catch (e) {
    io.err(`natten-web-tune: ${(e as Error).message}\n${CLI_USAGE}`);
    return 2;
  }
  if (values.help) {
    io.out(CLI_USAGE);
    return 0;
  }
  const num = (name: string, v: string | undefined): number | undefined => {
    if (v === undefined) return undefined;
    const n = Number(v);
    if (!Number.isFinite(n) || n < 0) throw new Error(`--${name} ${v} must be a number >= 0`);
    return n;
  };
  const warn = (m: string): void => io.err(m);
  try {
    const cachePath = await defaultCachePath(values.cache);
    const store = fileStore(cachePath, { warn });
    const cache: CacheOption = store;
    const problems = values.problem ?? [];
    const passes: ('forward' | 'backward')[] = values.both ? ['forward', 'backward'] : values.backward ? ['backward'] : ['forward'];
    const mode = values.mode ?? 'tune';
    if (!(AUTOTUNE_MODES as readonly string[]).includes(mode)) throw new Error(`--mode ${mode} is not one of ${AUTOTUNE_MODES.join(', ')}`);
    const did = { any: false };

    if (values.import !== undefined) {
      const fs = await import('node:fs/promises');
      const t = parseTable(await fs.readFile(values.import, 'utf8'), values.import, warn);
      if (!t) return 1;
      await store.merge(t.entries);
      io.out(`imported ${Object.keys(t.entries).length} entries from ${values.import} into ${cachePath}`);
      did.any = true;
    }
    if (values.clear) {
      await store.clear();
      io.out(`cleared ${cachePath}`);
      did.any = true;
    }
    // Parse and validate every problem before touching the device.
    const parsed = problems.map((text) => {
      const desc = parseProblem(text);
      for (const pass of passes) {
        if (pass === 'forward') describeForward(desc);
        else describeBackward(desc);
      }
      return { text, desc };
    });
    const maxCandidates = num('max-candidates', values['max-candidates']);
    const warmText = values['warm-clocks'] ?? 'auto';
    if (warmText !== 'auto' && warmText !== 'on' && warmText !== 'off') throw new Error(`--warm-clocks ${warmText} is not one of auto, on, off`);
    const warmClocks = warmText === 'auto' ? 'auto' : warmText === 'on';
    if (parsed.length > 0) {
      const ctx = await io.context();
      const tuner = createAutotuner({
        ctx,
        mode: mode as AutotuneMode,
        cache,
        warn,
        maxTuneMs: num('max-ms', values['max-ms']),
        reps: num('reps', values.reps),
        warmup: num('warmup', values.warmup),
        progress: values.json ? false : true,
        warmClocks,
        space: maxCandidates === undefined ? {} : { maxCandidates: maxCandidates === 0 ? Number.POSITIVE_INFINITY : maxCandidates },
      });
      for (const { text, desc } of parsed) {
        for (const pass of passes) {
          // The pass's problem, described (and validated) once.
          const job = pass === 'forward' ? ({ pass, problem: describeForward(desc) } as const) : ({ pass, problem: describeBackward(desc) } as const);
          if (values['dry-run']) {
            const r = job.pass === 'forward' ? tuner.dryRun(job.problem, 'forward') : tuner.dryRun(job.problem, 'backward');
            io.out(values.json ? JSON.stringify(r) : formatDryRun(r));
            continue;
          }
          // A pass the default runs on the tensor cores tunes those configs (what `config: 'auto'` then uses).
          const r =
            job.pass === 'forward'
              ? ((await tuner.tuneForwardMma(job.problem)) ?? (await tuner.tuneForward(job.problem)))
              : ((await tuner.tuneBackwardMma(job.problem)) ?? (await tuner.tuneBackward(job.problem)));
          if (values.json) {
            io.out(JSON.stringify({ op: pass, problem: text, config: r.config, medianNs: r.medianNs, method: r.method, timed: r.timed, candidates: r.candidates, truncated: r.truncated, elapsedMs: r.elapsedMs }));
          } else {
            io.out(
              `${pass} ${text}: ${r.label}  ${(r.medianNs / 1e3).toFixed(1)} us (${r.method}; ${r.timed}/${r.candidates} candidates${r.truncated ? ', budget cut' : ''}; ${(r.elapsedMs / 1000).toFixed(1)} s) -> ${cachePath}`,
            );
          }
        }
      }
      did.any = true;
    }
    if (values.list) {
      const t = await store.load();
      const entries = Object.entries(t.entries);
      if (values.json) io.out(JSON.stringify(t));
      else {
        io.out(`${cachePath}: ${entries.length} entr${entries.length === 1 ? 'y' : 'ies'}`);
        for (const [, e] of entries) {
          io.out(`  ${e.op.replace('na-fused-', '')}  ${e.problem}  ${JSON.stringify(e.config)}  ${(e.medianNs / 1e3).toFixed(1)} us  [${e.adapter}] ${e.tunedAt}`);
        }
      }
      did.any = true;
    }
    if (values.export !== undefined) {
      const fs = await import('node:fs/promises');
      const t = await store.load();
      await fs.writeFile(values.export, `${JSON.stringify(t, null, 1)}\n`);
      io.out(`exported ${Object.keys(t.entries).length} entries to ${values.export}`);
      did.any = true;
    }
    if (!did.any) {
      io.err(values['dry-run'] ? 'natten-web-tune: --dry-run needs --problem' : CLI_USAGE);
      return 2;
    }
    return 0;
  } catch (e) {
    io.err(`natten-web-tune: ${(e as Error).message}`);
    return 1;
  }
}
