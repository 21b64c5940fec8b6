/**
 * Validation of the lane split shared by the plain fused forward and backward: `lanes` = T invocations share one
 * row (a query, or a key in the dK/dV kernel), each owning every T-th vec4 column of its registers, with the
 * head-dim dot products summed over the T lanes by subgroup shuffles.
 */
import { FUSED_LANE_CHOICES } from '@natten-web/core';

/** Why `lanes` cannot split these head dims (or is not a compiled lane count), or undefined. */
export function lanesDimProblem(lanes: number, dim: number, dimV: number): string | undefined {
  if (!(FUSED_LANE_CHOICES as readonly number[]).includes(lanes)) return `lanes ${lanes} is not one of ${FUSED_LANE_CHOICES.join(', ')}`;
  if (lanes > 1 && (dim % (4 * lanes) !== 0 || dimV % (4 * lanes) !== 0)) {
    return `lanes=${lanes} gives each lane whole vec4 columns, so head dims must be multiples of ${4 * lanes}; got head_dim=${dim}, value head_dim=${dimV}`;
  }
  return undefined;
}

/** The device facts a lane split needs (`subgroupMinSize` present only where the device has subgroups). */
export interface LaneLimits {
  readonly maxComputeInvocationsPerWorkgroup: number;
  readonly maxComputeWorkgroupSizeX: number;
  readonly subgroupMinSize?: number;
}

/**
 * Why a lane split cannot run on a device, or undefined: head dims (`lanesDimProblem`), then for T > 1 the
 * `subgroups` feature, T <= the minimum subgroup size (the T lanes of a `per` row share one subgroup), and for
 * each workgroup (`[what, tile product]`) an invocation count T * product that is a multiple of the minimum
 * subgroup size and fits the device.
 */
export function laneSplitProblem(
  lanes: number,
  dims: { readonly dim: number; readonly dimV: number },
  workgroups: readonly (readonly [string, number])[],
  limits: LaneLimits,
  per: 'query' | 'row',
): string | undefined {
  const why = lanesDimProblem(lanes, dims.dim, dims.dimV);
  if (why !== undefined || lanes === 1) return why;
  const sg = limits.subgroupMinSize;
  if (sg === undefined) return `lanes=${lanes} needs the WebGPU feature 'subgroups', which this adapter does not offer`;
  if (lanes > sg) return `lanes=${lanes} exceeds this adapter's minimum subgroup size ${sg} (the lanes of a ${per} must share one subgroup)`;
  const maxInv = Math.min(limits.maxComputeInvocationsPerWorkgroup, limits.maxComputeWorkgroupSizeX);
  for (const [what, p] of workgroups) {
    const inv = p * lanes;
    if (inv % sg !== 0) {
      return `lanes=${lanes} with a ${what} tile of ${p} gives ${inv} invocations per workgroup, not a multiple of this adapter's minimum subgroup size ${sg}`;
    }
    if (inv > maxInv) return `a ${what} tile of ${p} with ${lanes} lanes per ${per} needs ${inv} invocations per workgroup; this device allows ${maxInv}`;
  }
  return undefined;
}

/**
 * Narrowest subgroup (`subgroupMinSize`) for which the heuristic defaults split rows over lanes. SIMT GPUs have
 * 16-64-wide subgroups and gain occupancy from the smaller per-invocation register footprint; CPU-like
 * adapters (lavapipe: 8 wide) gain nothing, and keep the single-lane defaults.
 */
export const DEFAULT_LANES_MIN_SUBGROUP = 16;

/**
 * A default config with the first of `choices` lanes that `valid` accepts, on devices whose subgroups are at
 * least `DEFAULT_LANES_MIN_SUBGROUP` wide; the config unchanged elsewhere or when no choice is valid.
 */
export function withDefaultLanes<C extends { readonly lanes?: number }>(
  config: C,
  limits: Pick<LaneLimits, 'subgroupMinSize'>,
  choices: readonly number[],
  valid: (split: C) => boolean,
): C {
  if (!hasWideSubgroups(limits)) return config;
  for (const lanes of choices) {
    const split = { ...config, lanes };
    if (valid(split)) return split;
  }
  return config;
}

/** Rows per walk step (`keyUnroll` / `queryUnroll`) of the heuristic defaults on devices with wide subgroups. */
export const DEFAULT_UNROLL = 2;

/** Whether a device gets the SIMT-GPU defaults (lane split, unrolled walks): subgroups at least 16 wide. */
export function hasWideSubgroups(limits: Pick<LaneLimits, 'subgroupMinSize'>): boolean {
  return (limits.subgroupMinSize ?? 0) >= DEFAULT_LANES_MIN_SUBGROUP;
}
