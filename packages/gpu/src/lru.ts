/**
 * A string-keyed map that keeps its most recently used entries: past `maxEntries` entries, or past `maxWeight` of
 * their weights, the least recently used go first, each through `onEvict`. The context's uniform buffers and bind
 * groups and the ops' memoised plans and kernels live in these, so a long-running app meeting many shapes stays
 * bounded.
 */
export class LruCache<V> {
  private readonly entries = new Map<string, { readonly value: V; readonly weight: number }>();
  private total = 0;

  constructor(private readonly limits: { readonly maxEntries: number; readonly maxWeight?: number; readonly onEvict?: (value: V) => void }) {}

  get size(): number {
    return this.entries.size;
  }

  /** The summed weights of the entries kept. */
  get weight(): number {
    return this.total;
  }

  /** The entry's value (now the most recently used), or undefined. */
  get(key: string): V | undefined {
    const e = this.entries.get(key);
    if (!e) return undefined;
    this.entries.delete(key);
    this.entries.set(key, e);
    return e.value;
  }

  /** Keep `value` under `key` unless its weight alone is over `maxWeight`, then drop the oldest entries past the limits. */
  set(key: string, value: V, weight = 0): void {
    if (this.limits.maxWeight !== undefined && weight > this.limits.maxWeight) return;
    this.entries.set(key, { value, weight });
    this.total += weight;
    while (this.entries.size > this.limits.maxEntries || (this.limits.maxWeight !== undefined && this.total > this.limits.maxWeight)) {
      const [oldest, e] = this.entries.entries().next().value as [string, { value: V; weight: number }];
      this.entries.delete(oldest);
      this.total -= e.weight;
      this.limits.onEvict?.(e.value);
    }
  }

  /** The value under `key`, computed and kept on a miss (a throw keeps nothing). */
  getOrCompute(key: string, compute: () => V): V {
    if (this.entries.has(key)) return this.get(key) as V;
    const value = compute();
    this.set(key, value);
    return value;
  }

  /** Drop every entry, each through `onEvict`. */
  clear(): void {
    for (const e of this.entries.values()) this.limits.onEvict?.(e.value);
    this.entries.clear();
    this.total = 0;
  }
}
