/**
 * The torch baselines: `bench/baselines/torch_na.py` run once for the whole set, in the same run and on the
 * same machine as our kernels, before them (so the two never share the GPU). Its stdout has one JSON line per
 * problem; they are read as they come, so a timeout keeps the results finished so far.
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { BenchDType, TorchProblem } from './cases.ts';

export interface TorchResult {
  readonly name: string;
  readonly dtype: BenchDType;
  readonly backward: boolean;
  readonly flexMs?: number;
  readonly sdpaMs?: number;
  readonly flexError?: string;
  readonly sdpaError?: string;
  readonly error?: string;
  readonly blockMaskSeconds?: number;
}

export interface TorchRun {
  readonly results: readonly TorchResult[];
  readonly env?: { readonly torch: string; readonly gpu: string } | undefined;
  /** Why torch did not run, or what went wrong (timeout, exit code). */
  readonly note?: string | undefined;
}

/** `python -c 'import torch; assert torch.cuda.is_available()'`, plus the versions when it works. */
export function probeTorch(python: string): { ok: true; torch: string; gpu: string } | { ok: false; why: string } {
  const r = spawnSync(
    python,
    ['-c', 'import torch; assert torch.cuda.is_available(); print(torch.__version__); print(torch.cuda.get_device_name(0))'],
    { encoding: 'utf8', timeout: 120_000 },
  );
  if (r.error) return { ok: false, why: `${python} could not run (${r.error.message})` };
  if (r.status !== 0) {
    const last = (r.stderr ?? '').trim().split('\n').pop() ?? '';
    return { ok: false, why: `torch with CUDA is not available (${python}: ${last || `exit ${r.status}`})` };
  }
  const [torch = '?', gpu = '?'] = r.stdout.trim().split('\n');
  return { ok: true, torch, gpu };
}

function parseLine(line: string): TorchResult | undefined {
  const s = line.trim();
  if (!s.startsWith('{')) return undefined;
  try {
    const o = JSON.parse(s) as Partial<TorchResult>;
    if (typeof o.name !== 'string' || (o.dtype !== 'float16' && o.dtype !== 'float32')) return undefined;
    return o as TorchResult;
  } catch {
    return undefined;
  }
}

export async function runTorch(
  python: string,
  script: string,
  problems: readonly TorchProblem[],
  timeoutMs: number,
  onResult: (r: TorchResult) => void,
): Promise<TorchRun> {
  const probe = probeTorch(python);
  if (!probe.ok) return { results: [], note: probe.why };
  const dir = mkdtempSync(join(tmpdir(), 'natten-bench-'));
  const inPath = join(dir, 'problems.json');
  const outPath = join(dir, 'torch-results.json');
  writeFileSync(inPath, JSON.stringify(problems));
  const results: TorchResult[] = [];
  let stderrTail = '';
  const code = await new Promise<number | string>((resolveRun) => {
    const child = spawn(python, [script, inPath, outPath], { stdio: ['ignore', 'pipe', 'pipe'] });
    let buf = '';
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (chunk: string) => {
      buf += chunk;
      let nl = buf.indexOf('\n');
      while (nl >= 0) {
        const r = parseLine(buf.slice(0, nl));
        buf = buf.slice(nl + 1);
        if (r) {
          results.push(r);
          onResult(r);
        }
        nl = buf.indexOf('\n');
      }
    });
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk: string) => {
      stderrTail = (stderrTail + chunk).slice(-2000);
    });
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      resolveRun(`timed out after ${Math.round(timeoutMs / 1000)} s`);
    }, timeoutMs);
    child.on('error', (e) => {
      clearTimeout(timer);
      resolveRun(`could not start: ${e.message}`);
    });
    child.on('close', (status) => {
      clearTimeout(timer);
      const r = parseLine(buf);
      if (r) {
        results.push(r);
        onResult(r);
      }
      resolveRun(status ?? -1);
    });
  });
  rmSync(dir, { recursive: true, force: true });
  const env = { torch: probe.torch, gpu: probe.gpu };
  if (code === 0) return { results, env };
  const tail = stderrTail.trim().split('\n').slice(-3).join(' | ');
  return { results, env, note: `torch_na.py ${typeof code === 'number' ? `exited with ${code}` : code}${tail ? `: ${tail}` : ''}` };
}
