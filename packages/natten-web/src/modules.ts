/**
 * `NeighborhoodAttention{1,2,3}D`, NATTEN's modules (spec §3.8): qkv projection, heads split as
 * `qkv(x).reshape(B, *spatial, 3, H, D)`, fused NA, output projection. A host tensor in: the linear layers run on
 * the host (f64 accumulation) and the attention on the chosen backend. A GPU tensor in: everything runs on the GPU
 * (`@natten-web/gpu`'s `linear`, f32 accumulation, its qkv projection writing q, k and v directly), and the result
 * is a GPU tensor; the weights are uploaded once per GPU context and dtype, and again after `loadWeights`.
 */
import {
  type BoolDimsOrScalar,
  type DimsOrScalar,
  type DType,
  formatShape,
  type NaRank,
  NattenArgumentError,
  normalizeBools,
  normalizeDims,
  numel,
  randu,
  type Tensor,
  tensor,
} from '@natten-web/core';
import { fusedForward as gpuFusedForward, type GpuContext, type GpuTensor, linear as gpuLinear } from '@natten-web/gpu';
import { hostTensor, values, withGpuOutputs } from './common.ts';
import { na1d, na2d, na3d } from './functional.ts';
import { type BackendName, checkBackendName, gpuContext } from './runtime.ts';
import { isGpuTensor, isHostTensor } from './tensors.ts';

export interface NeighborhoodAttentionOptions<R extends NaRank> {
  /** Embedding dim C (NATTEN's `dim` / `embed_dim`). */
  readonly dim: number;
  readonly numHeads: number;
  readonly kernelSize: DimsOrScalar<R>;
  readonly dilation?: DimsOrScalar<R> | undefined;
  readonly stride?: DimsOrScalar<R> | undefined;
  readonly isCausal?: BoolDimsOrScalar<R> | undefined;
  /** Learnable relative positional bias `rpb` `[H, 2K-1, ...]` (zero-initialised). Default false. */
  readonly relPosBias?: boolean | undefined;
  /** Bias in the qkv projection. Default true. */
  readonly qkvBias?: boolean | undefined;
  /** Logit scale; default head_dim^-0.5 when absent. */
  readonly qkScale?: number | undefined;
  readonly backend?: BackendName | undefined;
  /** Seed of the weight initialisation (PyTorch nn.Linear style: U(-1/sqrt(C), 1/sqrt(C))). Default 0. */
  readonly seed?: number | undefined;
}

/** A weight given to `loadWeights`: a tensor (shape checked) or a flat array (length checked). */
export type WeightValue = Tensor | Float32Array | Float64Array | readonly number[];

interface Param {
  readonly shape: readonly number[];
  data: Float32Array;
}

const OPTION_KEYS = ['dim', 'numHeads', 'kernelSize', 'dilation', 'stride', 'isCausal', 'relPosBias', 'qkvBias', 'qkScale', 'backend', 'seed'];

class NeighborhoodAttentionBase<R extends NaRank> {
  readonly rank: R;
  readonly dim: number;
  readonly numHeads: number;
  readonly headDim: number;
  readonly scale: number;
  readonly kernelSize: readonly number[];
  readonly dilation: readonly number[];
  readonly stride: readonly number[];
  readonly isCausal: readonly boolean[];
  readonly relPosBias: boolean;
  readonly qkvBias: boolean;
  readonly backend: BackendName | undefined;
  private readonly params: Map<string, Param>;
  private readonly name: string;
  /** The weights on a GPU context in one dtype (`forward` with a GPU tensor); dropped by `loadWeights`. */
  private gpuWeights: { readonly ctx: GpuContext; readonly dtype: 'float32' | 'float16'; readonly tensors: Map<string, GpuTensor> } | undefined;

  protected constructor(rank: R, options: NeighborhoodAttentionOptions<R>) {
    const name = `NeighborhoodAttention${rank}D`;
    this.name = name;
    if (typeof options !== 'object' || options === null) throw new NattenArgumentError(`${name}: options { dim, numHeads, kernelSize } are required`);
    for (const key of Object.keys(options)) {
      if (!OPTION_KEYS.includes(key)) throw new NattenArgumentError(`${name}: unknown option '${key}'; allowed options are ${OPTION_KEYS.join(', ')}`);
    }
    const { dim, numHeads } = options;
    if (!Number.isInteger(dim) || dim < 1) throw new NattenArgumentError(`${name}: dim=${String(dim)} must be a positive integer`);
    if (!Number.isInteger(numHeads) || numHeads < 1) throw new NattenArgumentError(`${name}: numHeads=${String(numHeads)} must be a positive integer`);
    if (dim % numHeads !== 0) throw new NattenArgumentError(`${name}: dim=${dim} must be divisible by numHeads=${numHeads}`);
    this.rank = rank;
    this.dim = dim;
    this.numHeads = numHeads;
    this.headDim = dim / numHeads;
    this.kernelSize = normalizeDims(name, 'kernel_size', options.kernelSize, rank, 2);
    this.dilation = normalizeDims(name, 'dilation', options.dilation ?? 1, rank, 1);
    this.stride = normalizeDims(name, 'stride', options.stride ?? 1, rank, 1);
    this.isCausal = normalizeBools(name, 'is_causal', options.isCausal ?? false, rank);
    this.relPosBias = options.relPosBias ?? false;
    this.qkvBias = options.qkvBias ?? true;
    if (this.relPosBias && this.isCausal.some((c) => c)) {
      throw new NattenArgumentError(`${name}: relPosBias cannot be combined with isCausal; positional biases are defined for non-causal NA only`);
    }
    if (this.relPosBias && this.kernelSize.some((k) => k % 2 === 0)) {
      throw new NattenArgumentError(`${name}: relPosBias needs odd kernel sizes, got kernelSize=${formatShape(this.kernelSize)}`);
    }
    if (options.qkScale !== undefined && (typeof options.qkScale !== 'number' || !Number.isFinite(options.qkScale))) {
      throw new NattenArgumentError(`${name}: qkScale=${String(options.qkScale)} must be a finite number`);
    }
    this.scale = options.qkScale ?? this.headDim ** -0.5;
    this.backend = options.backend === undefined ? undefined : checkBackendName(name, options.backend);
    const seed = options.seed ?? 0;
    const bound = 1 / Math.sqrt(dim);
    const init = (shape: number[], s: number): Param => ({ shape, data: randu(shape, 'float32', seed * 7919 + s, -bound, bound).data });
    this.params = new Map<string, Param>();
    this.params.set('qkv.weight', init([3 * dim, dim], 1));
    if (this.qkvBias) this.params.set('qkv.bias', init([3 * dim], 2));
    if (this.relPosBias) {
      const shape = [numHeads, ...this.kernelSize.map((k) => 2 * k - 1)];
      this.params.set('rpb', { shape, data: new Float32Array(numel(shape)) });
    }
    this.params.set('proj.weight', init([dim, dim], 3));
    this.params.set('proj.bias', init([dim], 4));
  }

  /** Parameter names and shapes, in PyTorch `state_dict` order. */
  get parameterShapes(): Record<string, readonly number[]> {
    const out: Record<string, readonly number[]> = {};
    for (const [k, p] of this.params) out[k] = p.shape;
    return out;
  }

  /**
   * Load weights from a PyTorch NATTEN `state_dict` (keys `qkv.weight` [3C, C], `qkv.bias` [3C],
   * `proj.weight` [C, C], `proj.bias` [C], `rpb` [H, 2K-1, ...]). Every key must be present with the
   * right shape and no other key may appear; nothing is changed unless all checks pass.
   */
  loadWeights(weights: Readonly<Record<string, WeightValue>>): this {
    const op = `${this.name}.loadWeights`;
    if (typeof weights !== 'object' || weights === null) throw new NattenArgumentError(`${op}: expected an object of weights, got ${String(weights)}`);
    const expected = [...this.params.keys()];
    for (const key of Object.keys(weights)) {
      if (!this.params.has(key)) {
        const hint = key === 'rpb' ? ' (this module was built without relPosBias)' : key === 'qkv.bias' ? ' (this module was built with qkvBias: false)' : '';
        throw new NattenArgumentError(`${op}: unexpected key '${key}'${hint}; expected keys are ${expected.join(', ')}`);
      }
    }
    const staged = new Map<string, Float32Array>();
    for (const [key, param] of this.params) {
      const w = weights[key];
      if (w === undefined) throw new NattenArgumentError(`${op}: missing key '${key}' (shape ${formatShape(param.shape)})`);
      const n = numel(param.shape);
      let data: ArrayLike<number>;
      if (isHostTensor(w)) {
        if (w.shape.length !== param.shape.length || w.shape.some((s, i) => s !== param.shape[i])) {
          throw new NattenArgumentError(
            `${op}: '${key}' has shape ${formatShape(w.shape)} but this module (dim=${this.dim}, numHeads=${this.numHeads}) needs ${formatShape(param.shape)}`,
          );
        }
        data = values(w);
      } else if (w instanceof Float32Array || w instanceof Float64Array || Array.isArray(w)) {
        if (w.length !== n) {
          throw new NattenArgumentError(`${op}: '${key}' has ${w.length} values but shape ${formatShape(param.shape)} needs ${n}`);
        }
        data = w as ArrayLike<number>;
      } else {
        throw new NattenArgumentError(`${op}: '${key}' must be a tensor, a Float32Array/Float64Array or an array of numbers`);
      }
      const f = Float32Array.from(data);
      for (let i = 0; i < f.length; i++) {
        if (!Number.isFinite(f[i] as number)) throw new NattenArgumentError(`${op}: '${key}'[${i}]=${f[i]} is not finite`);
      }
      staged.set(key, f);
    }
    for (const [key, data] of staged) (this.params.get(key) as Param).data = data;
    this.releaseGpuWeights();
    return this;
  }

  /** The weights as float32 tensors under PyTorch NATTEN `state_dict` keys (copies). */
  stateDict(): Record<string, Tensor<'float32'>> {
    const out: Record<string, Tensor<'float32'>> = {};
    for (const [k, p] of this.params) out[k] = tensor(p.shape, 'float32', p.data.slice());
    return out;
  }

  /**
   * x `[B, *spatial, C]` -> `[B, *spatial, C]` of x's dtype: a host tensor (float32/float16/float64) gives a host
   * tensor, a GPU tensor (float32/float16) a GPU tensor computed on the GPU alone.
   */
  async forward(x: Tensor): Promise<Tensor>;
  async forward(x: GpuTensor): Promise<GpuTensor>;
  async forward(x: Tensor | GpuTensor): Promise<Tensor | GpuTensor> {
    const op = `${this.name}.forward`;
    if (!isHostTensor(x) && !isGpuTensor(x)) throw new NattenArgumentError(`${op}: x must be a host tensor or a GPU tensor`);
    const R = this.rank;
    if (x.shape.length !== R + 2 || x.shape[R + 1] !== this.dim) {
      throw new NattenArgumentError(`${op}: x must have shape [batch, ${R === 1 ? 'length' : R === 2 ? 'height, width' : 'depth, height, width'}, ${this.dim}], got ${formatShape(x.shape)}`);
    }
    if (isGpuTensor(x)) return this.forwardGpu(op, x);
    const C = this.dim;
    const H = this.numHeads;
    const D = this.headDim;
    const rows = numel(x.shape) / C;
    const xv = values(x);
    const qkv = linear(xv, rows, C, 3 * C, this.param('qkv.weight'), this.qkvBias ? this.param('qkv.bias') : undefined);
    const headShape = [...x.shape.slice(0, R + 1), H, D];
    // qkv(x).reshape(B, *sp, 3, H, D): q/k/v are column blocks [0, C), [C, 2C), [2C, 3C) of each row.
    const split = (part: number): Tensor => {
      const out = new Float64Array(rows * C);
      for (let r = 0; r < rows; r++) out.set(qkv.subarray(r * 3 * C + part * C, r * 3 * C + (part + 1) * C), r * C);
      return hostTensor(headShape, x.dtype, out);
    };
    const rpbParam = this.params.get('rpb');
    const options = {
      kernelSize: this.kernelSize,
      dilation: this.dilation,
      stride: this.stride,
      isCausal: this.isCausal,
      scale: this.scale,
      rpb: rpbParam ? hostTensor(rpbParam.shape, x.dtype, rpbParam.data) : undefined,
      backend: this.backend,
    };
    const attend = R === 1 ? na1d : R === 2 ? na2d : na3d;
    const out = (await (attend as unknown as (q: Tensor, k: Tensor, v: Tensor, o: typeof options) => Promise<Tensor>)(split(0), split(1), split(2), options));
    const y = linear(values(out), rows, C, C, this.param('proj.weight'), this.param('proj.bias'));
    return hostTensor(x.shape, x.dtype as DType, y);
  }

  private param(key: string): Float32Array {
    return (this.params.get(key) as Param).data;
  }

  /** The whole layer on the GPU: qkv projection into q, k and v, fused NA, output projection. */
  private async forwardGpu(op: string, x: GpuTensor): Promise<GpuTensor> {
    if (this.backend === 'cpu') {
      throw new NattenArgumentError(`${op}: x is a GPU tensor but this module was built with backend 'cpu'; pass a host tensor (toHost) or build it with backend 'webgpu' or 'auto'`);
    }
    const ctx = await gpuContext(op);
    const dtype = x.dtype;
    const w = this.weightsOn(ctx, dtype);
    const headShape = [...x.shape.slice(0, this.rank + 1), this.numHeads, this.headDim];
    // q, k, v and the attention's output are pooled temporaries: released once their work is queued, they serve the
    // next forward (WebGPU runs the queue in order); a fresh allocation of each per call cost more than the layer.
    const [q, k, v, attn] = ['q', 'k', 'v', 'attention'].map((n) => ctx.tempTensor(headShape, dtype, { label: `${op}.${n}` })) as [GpuTensor, GpuTensor, GpuTensor, GpuTensor];
    try {
      // The three ops in one submission: one host round trip instead of three.
      return await ctx.batch(async () => {
        await gpuLinear(ctx, { input: x, weight: w.get('qkv.weight') as GpuTensor, bias: w.get('qkv.bias') ?? null, outputs: [q, k, v] });
        await gpuFusedForward(ctx, this.rank, {
          query: q,
          key: k,
          value: v,
          output: attn,
          logsumexp: null,
          rpb: w.get('rpb') ?? null,
          kernelSize: this.kernelSize,
          dilation: this.dilation,
          stride: this.stride,
          isCausal: this.isCausal,
          attnScale: this.scale,
        });
        const { output } = await withGpuOutputs(ctx, op, { output: { shape: x.shape, dtype } }, (outs) =>
          gpuLinear(ctx, { input: attn, weight: w.get('proj.weight') as GpuTensor, bias: w.get('proj.bias') as GpuTensor, outputs: [outs.output as GpuTensor] }),
        );
        return output as GpuTensor;
      }, op);
    } finally {
      for (const t of [q, k, v, attn]) ctx.releaseTensor(t);
    }
  }

  /** The weights on `ctx` in `dtype`, uploaded on first use (and again for another context or dtype). */
  private weightsOn(ctx: GpuContext, dtype: 'float32' | 'float16'): Map<string, GpuTensor> {
    const cached = this.gpuWeights;
    if (cached && cached.ctx === ctx && cached.dtype === dtype) return cached.tensors;
    this.releaseGpuWeights();
    const tensors = new Map<string, GpuTensor>();
    for (const [key, p] of this.params) tensors.set(key, ctx.upload(hostTensor(p.shape, dtype, p.data), `${this.name}.${key}`));
    this.gpuWeights = { ctx, dtype, tensors };
    return tensors;
  }

  /** Free the weights' GPU copies (the next GPU forward uploads them again). */
  releaseGpuWeights(): void {
    const cached = this.gpuWeights;
    this.gpuWeights = undefined;
    if (!cached) return;
    // retire: inside a batch, its recorded forwards still use them.
    for (const t of cached.tensors.values()) cached.ctx.freeTensor(t);
  }
}

/** y[r, o] = sum_i x[r, i] W[o, i] + b[o] (PyTorch nn.Linear, W is [out, in]), f64 accumulation. */
function linear(x: Float64Array, rows: number, inF: number, outF: number, w: Float32Array, b: Float32Array | undefined): Float64Array {
  const y = new Float64Array(rows * outF);
  for (let r = 0; r < rows; r++) {
    const xo = r * inF;
    for (let o = 0; o < outF; o++) {
      const wo = o * inF;
      let s = b ? (b[o] as number) : 0;
      for (let i = 0; i < inF; i++) s += (x[xo + i] as number) * (w[wo + i] as number);
      y[r * outF + o] = s;
    }
  }
  return y;
}

/** 1-D neighborhood attention layer: x `[B, L, C]`. */
export class NeighborhoodAttention1D extends NeighborhoodAttentionBase<1> {
  constructor(options: NeighborhoodAttentionOptions<1>) {
    super(1, options);
  }
}

/** 2-D neighborhood attention layer: x `[B, X, Y, C]`. */
export class NeighborhoodAttention2D extends NeighborhoodAttentionBase<2> {
  constructor(options: NeighborhoodAttentionOptions<2>) {
    super(2, options);
  }
}

/** 3-D neighborhood attention layer: x `[B, X, Y, Z, C]`. */
export class NeighborhoodAttention3D extends NeighborhoodAttentionBase<3> {
  constructor(options: NeighborhoodAttentionOptions<3>) {
    super(3, options);
  }
}
