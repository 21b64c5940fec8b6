import { Float16Array, getFloat16 } from '@petamoriken/float16';
import { NattenArgumentError } from './errors.ts';

/** Element types. `float16` is stored as raw IEEE half bits in a `Uint16Array` (what a GPU buffer holds). */
export type DType = 'float32' | 'float16' | 'float64';

export const DTYPES: readonly DType[] = ['float32', 'float16', 'float64'] as const;

export type DataArray = Float32Array | Float64Array | Uint16Array;

export type DataArrayFor<D extends DType> = D extends 'float32'
  ? Float32Array
  : D extends 'float64'
    ? Float64Array
    : Uint16Array;

export function isDType(value: unknown): value is DType {
  return value === 'float32' || value === 'float16' || value === 'float64';
}

export function bytesPerElement(dtype: DType): number {
  switch (dtype) {
    case 'float64':
      return 8;
    case 'float32':
      return 4;
    case 'float16':
      return 2;
  }
}

export function allocate<D extends DType>(dtype: D, length: number): DataArrayFor<D> {
  switch (dtype) {
    case 'float64':
      return new Float64Array(length) as DataArrayFor<D>;
    case 'float32':
      return new Float32Array(length) as DataArrayFor<D>;
    case 'float16':
      return new Uint16Array(length) as DataArrayFor<D>;
    default:
      throw new NattenArgumentError(`unknown dtype ${String(dtype)}; expected one of ${DTYPES.join(', ')}`);
  }
}

/** Which typed array stores a dtype; used to check user-supplied data. */
export function dataMatchesDType(data: unknown, dtype: DType): boolean {
  switch (dtype) {
    case 'float64':
      return data instanceof Float64Array;
    case 'float32':
      return data instanceof Float32Array;
    case 'float16':
      return data instanceof Uint16Array;
  }
}

let f16Table: Float32Array | undefined;

/** Lookup table of all 65536 half values as f32 (built once, 256 KiB). */
function halfTable(): Float32Array {
  if (!f16Table) {
    const table = new Float32Array(65536);
    const view = new DataView(new ArrayBuffer(2));
    for (let bits = 0; bits < 65536; bits++) {
      view.setUint16(0, bits, true);
      table[bits] = getFloat16(view, 0, true);
    }
    f16Table = table;
  }
  return f16Table;
}

/** Decode half bits to numbers. */
export function halfBitsToFloat(bits: Uint16Array, out: Float32Array | Float64Array = new Float64Array(bits.length)): Float32Array | Float64Array {
  const table = halfTable();
  for (let i = 0; i < bits.length; i++) out[i] = table[bits[i] as number] as number;
  return out;
}

/** Encode numbers to half bits, IEEE round-to-nearest-even (through @petamoriken/float16). */
export function floatToHalfBits(values: ArrayLike<number>): Uint16Array {
  // The bulk constructor converts in one pass (about 13x faster than element-wise proxy writes).
  const half = new Float16Array(values);
  return new Uint16Array(half.buffer, half.byteOffset, half.length).slice();
}

/** Read a whole data array as f64 values, whatever its dtype. */
export function toFloat64(data: DataArray, dtype: DType): Float64Array {
  if (dtype === 'float16') return halfBitsToFloat(data as Uint16Array, new Float64Array(data.length)) as Float64Array;
  return Float64Array.from(data as Float32Array | Float64Array);
}

/** Write f64 values into a new data array of `dtype` (rounding to f32 or f16 as needed). */
export function fromFloat64<D extends DType>(values: ArrayLike<number>, dtype: D): DataArrayFor<D> {
  switch (dtype) {
    case 'float64':
      return Float64Array.from(values) as DataArrayFor<D>;
    case 'float32':
      return Float32Array.from(values) as DataArrayFor<D>;
    default:
      return floatToHalfBits(values) as DataArrayFor<D>;
  }
}

/** Round a value as the dtype would store it. */
export function roundTo(value: number, dtype: DType): number {
  if (dtype === 'float64') return value;
  if (dtype === 'float32') return Math.fround(value);
  const table = halfTable();
  return table[(floatToHalfBits([value])[0] as number)] as number;
}
