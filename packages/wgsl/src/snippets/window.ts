/**
 * WGSL window math, one function pair per spatial axis, with K and causal baked in and
 * L (length), d (dilation) and s (stride) passed at run time. Mirrors core's `window.ts` exactly
 * (spec §2.2, §2.3, §2.7, §7.5); all values are i32 in original token coordinates.
 *
 * For axis a it emits:
 *   fn na_window_{a}(x, L, d, s) -> vec2<i32>   // (coordinate of the key in slot 0, number of valid slots); slot t = start + t*d
 *   fn na_inverse_{a}(j, L, d, s) -> vec2<i32>  // queries attending key j: first, first+d, ... < end (exact)
 */
export function windowFunctions(kernelSize: readonly number[], causal: readonly boolean[]): string {
  const parts: string[] = [
    `fn na_group_len(L: i32, d: i32, g: i32) -> i32 { return (L - g + d - 1) / d; }`,
  ];
  kernelSize.forEach((K, a) => {
    const rl = Math.floor(K / 2);
    const rr = K - 1 - rl;
    const c = causal[a] === true;
    const startBody = c
      ? `  let leader = min((i / s) * s + s - 1, n - 1);
  let st = max(leader - ${K - 1}, 0);
  let cnt = min(i - st + 1, ${K});`
      : `  let leader = min((i / s) * s + s / 2, n - 1);
  let st = clamp(leader - ${rl}, 0, n - ${K});
  let cnt = ${K};`;
    const invBody = c
      ? `  let first = jj;
  var end = (jj + ${K}) / s;
  if (jj + ${K} >= n) { end = end + 1; }
  end = min(end * s, n);`
      : `  let cc = s - s / 2 - 1;
  var first = 0;
  if (jj >= ${K}) { first = ((jj - ${rr} + cc) / s) * s; }
  var end = n;
  if (jj < n - ${K}) { end = min(((jj + ${rl + 1} + cc) / s) * s, n); }`;
    parts.push(`fn na_window_${a}(x: i32, L: i32, d: i32, s: i32) -> vec2<i32> {
  let g = x % d;
  let i = x / d;
  let n = na_group_len(L, d, g);
${startBody}
  return vec2<i32>(st * d + g, cnt);
}
fn na_inverse_${a}(j: i32, L: i32, d: i32, s: i32) -> vec2<i32> {
  let g = j % d;
  let jj = j / d;
  let n = na_group_len(L, d, g);
${invBody}
  return vec2<i32>(first * d + g, end * d + g);
}`);
  });
  return `${parts.join('\n')}\n`;
}
