// GGUF v3 writer (the format of ggml/llama.cpp, see gguf-py/gguf/gguf_writer.py and ggml/include/gguf.h):
//   magic "GGUF", u32 version 3, u64 tensor count, u64 KV count,
//   KV pairs (gguf string key, u32 value type, value), tensor infos (name, u32 n_dims, u64 ne[n_dims],
//   u32 ggml type, u64 offset into the data section), zero padding to the alignment, tensor data, each
//   tensor's start aligned. All little-endian; a gguf string is a u64 byte length + UTF-8 bytes.
// ne[0] is the fastest-varying axis: a row-major [rows, cols] matrix has ne = [cols, rows].
import fs from 'node:fs/promises';

export const GGUF_MAGIC = 0x46554747; // "GGUF" read as a little-endian u32
export const GGUF_VERSION = 3;
export const GGUF_DEFAULT_ALIGNMENT = 32;

export enum GGUFValueType {
  UINT8 = 0,
  INT8 = 1,
  UINT16 = 2,
  INT16 = 3,
  UINT32 = 4,
  INT32 = 5,
  FLOAT32 = 6,
  BOOL = 7,
  STRING = 8,
  ARRAY = 9,
  UINT64 = 10,
  INT64 = 11,
  FLOAT64 = 12,
}

/** ggml tensor types this project writes (ggml.h enum ggml_type). */
export const GGMLType = { F32: 0, F16: 1, BF16: 30 } as const;
export type GGMLTypeName = keyof typeof GGMLType;
export const GGML_TYPE_BYTES: Record<GGMLTypeName, number> = { F32: 4, F16: 2, BF16: 2 };

type Scalar = number | bigint | boolean | string;
type KV =
  | { type: Exclude<GGUFValueType, GGUFValueType.ARRAY>; value: Scalar }
  | { type: GGUFValueType.ARRAY; itemType: Exclude<GGUFValueType, GGUFValueType.ARRAY>; value: readonly Scalar[] };

export interface GgufTensorInfo {
  name: string;
  /** ggml order: ne[0] fastest. */
  ne: number[];
  type: GGMLTypeName;
}

/** Produces one tensor's bytes, in order, in as many chunks as it likes. */
export type TensorSource = () => AsyncIterable<Uint8Array> | Iterable<Uint8Array>;

const FIXED_SIZE: Partial<Record<GGUFValueType, number>> = {
  [GGUFValueType.UINT8]: 1,
  [GGUFValueType.INT8]: 1,
  [GGUFValueType.UINT16]: 2,
  [GGUFValueType.INT16]: 2,
  [GGUFValueType.UINT32]: 4,
  [GGUFValueType.INT32]: 4,
  [GGUFValueType.FLOAT32]: 4,
  [GGUFValueType.BOOL]: 1,
  [GGUFValueType.UINT64]: 8,
  [GGUFValueType.INT64]: 8,
  [GGUFValueType.FLOAT64]: 8,
};

/** A growable little-endian byte buffer. */
class ByteSink {
  private buf = Buffer.alloc(1 << 16);
  length = 0;

  private reserve(n: number): void {
    if (this.length + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.length + n) size *= 2;
    const next = Buffer.alloc(size);
    this.buf.copy(next, 0, 0, this.length);
    this.buf = next;
  }

  u32(v: number): void {
    this.reserve(4);
    this.buf.writeUInt32LE(v, this.length);
    this.length += 4;
  }

  u64(v: number | bigint): void {
    this.reserve(8);
    this.buf.writeBigUInt64LE(BigInt(v), this.length);
    this.length += 8;
  }

  str(s: string): void {
    const n = Buffer.byteLength(s, 'utf8');
    this.u64(n);
    this.reserve(n);
    this.buf.write(s, this.length, 'utf8');
    this.length += n;
  }

  scalar(type: GGUFValueType, v: Scalar): void {
    if (type === GGUFValueType.STRING) {
      if (typeof v !== 'string') throw new Error(`gguf: expected a string, got ${typeof v}`);
      this.str(v);
      return;
    }
    const size = FIXED_SIZE[type];
    if (size === undefined) throw new Error(`gguf: unsupported value type ${type}`);
    this.reserve(size);
    const b = this.buf;
    const o = this.length;
    switch (type) {
      case GGUFValueType.UINT8: b.writeUInt8(Number(v), o); break;
      case GGUFValueType.INT8: b.writeInt8(Number(v), o); break;
      case GGUFValueType.UINT16: b.writeUInt16LE(Number(v), o); break;
      case GGUFValueType.INT16: b.writeInt16LE(Number(v), o); break;
      case GGUFValueType.UINT32: b.writeUInt32LE(Number(v), o); break;
      case GGUFValueType.INT32: b.writeInt32LE(Number(v), o); break;
      case GGUFValueType.FLOAT32: b.writeFloatLE(Number(v), o); break;
      case GGUFValueType.BOOL: b.writeUInt8(v ? 1 : 0, o); break;
      case GGUFValueType.UINT64: b.writeBigUInt64LE(BigInt(v), o); break;
      case GGUFValueType.INT64: b.writeBigInt64LE(BigInt(v), o); break;
      case GGUFValueType.FLOAT64: b.writeDoubleLE(Number(v), o); break;
    }
    this.length += size;
  }

  zeros(n: number): void {
    this.reserve(n);
    this.buf.fill(0, this.length, this.length + n);
    this.length += n;
  }

  bytes(): Buffer {
    return this.buf.subarray(0, this.length);
  }
}

function alignUp(n: number, a: number): number {
  return Math.ceil(n / a) * a;
}

export class GgufWriter {
  private readonly kv = new Map<string, KV>();
  private readonly tensors: Array<GgufTensorInfo & { source: TensorSource; bytes: number }> = [];
  readonly alignment = GGUF_DEFAULT_ALIGNMENT;

  private put(key: string, v: KV): void {
    if (this.kv.has(key)) throw new Error(`gguf: duplicate key ${key}`);
    this.kv.set(key, v);
  }

  addUint32(key: string, v: number): void {
    if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) throw new Error(`gguf: ${key} = ${v} is not a u32`);
    this.put(key, { type: GGUFValueType.UINT32, value: v });
  }

  addInt32(key: string, v: number): void {
    this.put(key, { type: GGUFValueType.INT32, value: v });
  }

  addFloat32(key: string, v: number): void {
    this.put(key, { type: GGUFValueType.FLOAT32, value: v });
  }

  addBool(key: string, v: boolean): void {
    this.put(key, { type: GGUFValueType.BOOL, value: v });
  }

  addString(key: string, v: string): void {
    this.put(key, { type: GGUFValueType.STRING, value: v });
  }

  addArray(key: string, itemType: Exclude<GGUFValueType, GGUFValueType.ARRAY>, values: readonly Scalar[]): void {
    this.put(key, { type: GGUFValueType.ARRAY, itemType, value: values });
  }

  addTensor(info: GgufTensorInfo, source: TensorSource): void {
    if (this.tensors.some((t) => t.name === info.name)) throw new Error(`gguf: duplicate tensor ${info.name}`);
    if (Buffer.byteLength(info.name) >= 64) throw new Error(`gguf: tensor name ${info.name} is longer than ggml's 63-byte limit`);
    if (info.ne.length < 1 || info.ne.length > 4) throw new Error(`gguf: ${info.name} has ${info.ne.length} dims (1..4 allowed)`);
    const bytes = info.ne.reduce((a, b) => a * b, 1) * GGML_TYPE_BYTES[info.type];
    this.tensors.push({ ...info, ne: [...info.ne], source, bytes });
  }

  /** Header, KV data and tensor infos, padded to the alignment; tensor offsets follow from the order. */
  private header(): Buffer {
    const s = new ByteSink();
    s.u32(GGUF_MAGIC);
    s.u32(GGUF_VERSION);
    s.u64(this.tensors.length);
    s.u64(this.kv.size);
    for (const [key, v] of this.kv) {
      s.str(key);
      s.u32(v.type);
      if (v.type === GGUFValueType.ARRAY) {
        s.u32(v.itemType);
        s.u64(v.value.length);
        for (const x of v.value) s.scalar(v.itemType, x);
      } else {
        s.scalar(v.type, v.value);
      }
    }
    let offset = 0;
    for (const t of this.tensors) {
      s.str(t.name);
      s.u32(t.ne.length);
      for (const d of t.ne) s.u64(d);
      s.u32(GGMLType[t.type]);
      s.u64(offset);
      offset = alignUp(offset + t.bytes, this.alignment);
    }
    s.zeros(alignUp(s.length, this.alignment) - s.length);
    return s.bytes();
  }

  /** Writes the file, pulling each tensor's bytes from its source in order; checks every size. */
  async write(path: string): Promise<void> {
    const fh = await fs.open(path, 'w');
    try {
      let pos = 0;
      const put = async (b: Uint8Array) => {
        let off = 0;
        while (off < b.length) {
          const { bytesWritten } = await fh.write(b, off, b.length - off, pos);
          off += bytesWritten;
          pos += bytesWritten;
        }
      };
      await put(this.header());
      const pad = new Uint8Array(this.alignment);
      for (const t of this.tensors) {
        let n = 0;
        for await (const chunk of t.source()) {
          n += chunk.length;
          if (n > t.bytes) throw new Error(`gguf: tensor ${t.name} produced more than its ${t.bytes} bytes`);
          await put(chunk);
        }
        if (n !== t.bytes) throw new Error(`gguf: tensor ${t.name} produced ${n} bytes, expected ${t.bytes}`);
        const padding = alignUp(n, this.alignment) - n;
        if (padding > 0) await put(pad.subarray(0, padding));
      }
    } finally {
      await fh.close();
    }
  }
}
