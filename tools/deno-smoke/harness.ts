/**
 * A minimal check runner for bundles that run outside vitest (Deno/wgpu, and anything else with
 * `navigator.gpu`): register checks with `check(name, fn)`, then `await runChecksAndExit()`. Every check
 * runs in order; the exit code is the number of failed checks (0 = all passed), capped at 125.
 */
type CheckFn = () => Promise<void> | void;

const checks: { readonly name: string; readonly run: CheckFn }[] = [];

export function check(name: string, run: CheckFn): void {
  checks.push({ name, run });
}

/** Runs every registered check and returns the number that threw. */
export async function runChecks(log: (line: string) => void = console.log): Promise<number> {
  let failures = 0;
  for (const { name, run } of checks) {
    const t0 = performance.now();
    try {
      await run();
      log(`ok   ${name} (${(performance.now() - t0).toFixed(0)} ms)`);
    } catch (err) {
      failures += 1;
      log(`FAIL ${name}: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
    }
  }
  log(`${checks.length - failures} passed, ${failures} failed`);
  return failures;
}

/** Exits the process (Deno or Node) with `code`. */
export function exitWith(code: number): void {
  const deno: unknown = Reflect.get(globalThis, 'Deno');
  const denoExit: unknown = typeof deno === 'object' && deno !== null ? Reflect.get(deno, 'exit') : undefined;
  if (typeof denoExit === 'function') {
    Reflect.apply(denoExit, deno, [code]);
    return;
  }
  const proc: unknown = Reflect.get(globalThis, 'process');
  const procExit: unknown = typeof proc === 'object' && proc !== null ? Reflect.get(proc, 'exit') : undefined;
  if (typeof procExit === 'function') Reflect.apply(procExit, proc, [code]);
}

export async function runChecksAndExit(): Promise<void> {
  exitWith(Math.min(await runChecks(), 125));
}
