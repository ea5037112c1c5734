// safetensors writer: 8-byte little-endian header length, a JSON header (dtype, shape, data_offsets per
// tensor, "__metadata__"), padded with spaces so the data starts 8-byte aligned, then the tensors' bytes
// back to back in header order. The header is computed up front so tensors can be streamed to disk one
// chunk at a time (a multi-GB checkpoint is never held in memory).
import fs from 'node:fs/promises';

export type SafetensorsDType = 'BF16' | 'F16' | 'F32';

export const DTYPE_BYTES: Record<SafetensorsDType, number> = { BF16: 2, F16: 2, F32: 4 };

export interface TensorSpec {
  name: string;
  dtype: SafetensorsDType;
  /** Row-major, outermost first (HF/PyTorch order: a Linear weight is [out, in]). */
  shape: number[];
}

export function numElements(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

export function tensorByteLength(spec: TensorSpec): number {
  return numElements(spec.shape) * DTYPE_BYTES[spec.dtype];
}

export interface SafetensorsLayout {
  /** The 8-byte length prefix followed by the padded JSON header. */
  header: Buffer;
  /** [begin, end) of each tensor, relative to the start of the data section, in spec order. */
  offsets: Array<[number, number]>;
  dataBytes: number;
}

export function safetensorsLayout(specs: readonly TensorSpec[], metadata: Record<string, string> = { format: 'pt' }): SafetensorsLayout {
  const json: Record<string, unknown> = { __metadata__: metadata };
  const offsets: Array<[number, number]> = [];
  const seen = new Set<string>();
  let pos = 0;
  for (const s of specs) {
    if (seen.has(s.name)) throw new Error(`safetensors: duplicate tensor name ${s.name}`);
    if (s.name === '__metadata__') throw new Error('safetensors: "__metadata__" is not a valid tensor name');
    if (!s.shape.every((d) => Number.isInteger(d) && d >= 0)) throw new Error(`safetensors: bad shape for ${s.name}: ${JSON.stringify(s.shape)}`);
    seen.add(s.name);
    const n = tensorByteLength(s);
    offsets.push([pos, pos + n]);
    json[s.name] = { dtype: s.dtype, shape: s.shape, data_offsets: [pos, pos + n] };
    pos += n;
  }
  let text = JSON.stringify(json);
  const textBytes = Buffer.byteLength(text, 'utf8');
  text += ' '.repeat((8 - ((8 + textBytes) % 8)) % 8);
  const body = Buffer.from(text, 'utf8');
  const header = Buffer.alloc(8 + body.length);
  header.writeBigUInt64LE(BigInt(body.length), 0);
  body.copy(header, 8);
  return { header, offsets, dataBytes: pos };
}

/**
 * Streams one safetensors file. Tensors must be written in spec order; each tensor may arrive in any
 * number of chunks, and close() checks that every byte announced in the header was written.
 */
export class SafetensorsWriter {
  private index = 0;
  private writtenInTensor = 0;
  private position: number;

  private constructor(
    readonly path: string,
    private readonly fh: fs.FileHandle,
    private readonly specs: readonly TensorSpec[],
    private readonly layout: SafetensorsLayout,
  ) {
    this.position = layout.header.length;
  }

  static async create(path: string, specs: readonly TensorSpec[], metadata?: Record<string, string>): Promise<SafetensorsWriter> {
    const layout = safetensorsLayout(specs, metadata);
    const fh = await fs.open(path, 'w');
    try {
      await fh.write(layout.header, 0, layout.header.length, 0);
    } catch (e) {
      await fh.close();
      throw e;
    }
    return new SafetensorsWriter(path, fh, specs, layout);
  }

  /** The tensor the next bytes belong to (undefined once all are complete). */
  get current(): TensorSpec | undefined {
    return this.specs[this.index];
  }

  async write(name: string, bytes: Uint8Array): Promise<void> {
    const spec = this.specs[this.index];
    if (!spec) throw new Error(`${this.path}: all tensors already written, got more bytes for ${name}`);
    if (spec.name !== name) throw new Error(`${this.path}: expected bytes for ${spec.name}, got ${name}`);
    const total = tensorByteLength(spec);
    if (this.writtenInTensor + bytes.length > total) {
      throw new Error(`${this.path}: ${name} is ${total} bytes, got ${this.writtenInTensor + bytes.length}`);
    }
    let off = 0;
    while (off < bytes.length) {
      const { bytesWritten } = await this.fh.write(bytes, off, bytes.length - off, this.position);
      off += bytesWritten;
      this.position += bytesWritten;
    }
    this.writtenInTensor += bytes.length;
    if (this.writtenInTensor === total) {
      this.index++;
      this.writtenInTensor = 0;
      // Zero-sized tensors that follow are complete by definition.
      while (this.specs[this.index] && tensorByteLength(this.specs[this.index]!) === 0) this.index++;
    }
  }

  async close(): Promise<void> {
    while (this.specs[this.index] && tensorByteLength(this.specs[this.index]!) === 0) this.index++;
    const incomplete = this.specs[this.index];
    await this.fh.close();
    if (incomplete) throw new Error(`${this.path}: tensor ${incomplete.name} (and any after it) was not fully written`);
  }

  /** Closes without the completeness check (after an error). */
  async abort(): Promise<void> {
    await this.fh.close().catch(() => undefined);
  }

  get fileSize(): number {
    return this.layout.header.length + this.layout.dataBytes;
  }
}

// ---- f32 → storage dtype ----

/** f32 → bf16 with round-to-nearest-even; NaN stays NaN (quiet), ±Inf stays ±Inf. */
export function f32ToBf16(src: Float32Array, dst: Uint16Array = new Uint16Array(src.length)): Uint16Array {
  const u = new Uint32Array(src.buffer, src.byteOffset, src.length);
  for (let i = 0; i < u.length; i++) {
    const x = u[i]!;
    if ((x & 0x7fffffff) > 0x7f800000) {
      dst[i] = (x >>> 16) | 0x0040;
    } else {
      dst[i] = (x + 0x7fff + ((x >>> 16) & 1)) >>> 16;
    }
  }
  return dst;
}

/** f32 → IEEE half with round-to-nearest-even, subnormals, overflow to ±Inf, NaN preserved. */
export function f32ToF16(src: Float32Array, dst: Uint16Array = new Uint16Array(src.length)): Uint16Array {
  const u = new Uint32Array(src.buffer, src.byteOffset, src.length);
  for (let i = 0; i < u.length; i++) {
    const x = u[i]!;
    const sign = (x >>> 16) & 0x8000;
    const exp = (x >>> 23) & 0xff;
    let mant = x & 0x7fffff;
    if (exp === 0xff) {
      dst[i] = sign | 0x7c00 | (mant ? 0x200 | (mant >>> 13) : 0);
      continue;
    }
    const e = exp - 127 + 15;
    if (e >= 0x1f) {
      dst[i] = sign | 0x7c00;
    } else if (e <= 0) {
      if (e < -10) {
        dst[i] = sign;
        continue;
      }
      mant |= 0x800000;
      const shift = 14 - e;
      let h = mant >>> shift;
      const rem = mant & ((1 << shift) - 1);
      const halfway = 1 << (shift - 1);
      if (rem > halfway || (rem === halfway && (h & 1))) h++;
      dst[i] = sign | h;
    } else {
      let h = (e << 10) | (mant >>> 13);
      const rem = mant & 0x1fff;
      if (rem > 0x1000 || (rem === 0x1000 && (h & 1))) h++; // a carry into the exponent is still correct
      dst[i] = sign | h;
    }
  }
  return dst;
}

/** The little-endian bytes of `src` stored as `dtype` (F32 returns a view, no copy). */
export function encodeF32(src: Float32Array, dtype: SafetensorsDType): Uint8Array {
  if (dtype === 'F32') return new Uint8Array(src.buffer, src.byteOffset, src.byteLength);
  const h = dtype === 'BF16' ? f32ToBf16(src) : f32ToF16(src);
  return new Uint8Array(h.buffer, h.byteOffset, h.byteLength);
}
