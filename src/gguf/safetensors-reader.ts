// Reads a Hugging Face safetensors checkpoint (single file or shards with model.safetensors.index.json)
// in TypeScript, independently of the native loader, for the GGUF converter and for tests.
import fs from 'node:fs';
import path from 'node:path';

export type StDType = 'BF16' | 'F16' | 'F32';
const DTYPE_BYTES: Record<StDType, number> = { BF16: 2, F16: 2, F32: 4 };

export interface StTensor {
  name: string;
  file: string;
  dtype: StDType;
  shape: number[];
  /** Absolute byte offset of the tensor's data in `file`. */
  offset: number;
  byteLength: number;
}

export interface StHeader {
  tensors: Map<string, StTensor>;
  metadata: Record<string, string>;
  headerLength: number;
}

export function readSafetensorsHeader(file: string): StHeader {
  const fd = fs.openSync(file, 'r');
  try {
    const size = fs.fstatSync(fd).size;
    if (size < 8) throw new Error(`${file}: too short for a safetensors header (${size} bytes)`);
    const lenBuf = Buffer.alloc(8);
    fs.readSync(fd, lenBuf, 0, 8, 0);
    const len = lenBuf.readBigUInt64LE(0);
    if (len > BigInt(size - 8) || len > 100_000_000n) throw new Error(`${file}: header length ${len} exceeds the file (${size} bytes)`);
    const json = Buffer.alloc(Number(len));
    fs.readSync(fd, json, 0, json.length, 8);
    let parsed: Record<string, unknown>;
    try {
      parsed = JSON.parse(json.toString('utf8')) as Record<string, unknown>;
    } catch (e) {
      throw new Error(`${file}: header is not valid JSON (${(e as Error).message})`);
    }
    const dataStart = 8 + Number(len);
    const tensors = new Map<string, StTensor>();
    let metadata: Record<string, string> = {};
    for (const [name, v] of Object.entries(parsed)) {
      if (name === '__metadata__') {
        metadata = v as Record<string, string>;
        continue;
      }
      const e = v as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
      if (typeof e.dtype !== 'string' || !(e.dtype in DTYPE_BYTES)) throw new Error(`${file}: tensor ${name} has unsupported dtype ${String(e.dtype)}`);
      const dtype = e.dtype as StDType;
      const shape = e.shape as number[];
      const offs = e.data_offsets as number[];
      if (!Array.isArray(shape) || !Array.isArray(offs) || offs.length !== 2) throw new Error(`${file}: tensor ${name} has a malformed entry`);
      const n = shape.reduce((a, b) => a * b, 1) * DTYPE_BYTES[dtype];
      if (offs[1]! - offs[0]! !== n) throw new Error(`${file}: tensor ${name}: data_offsets span ${offs[1]! - offs[0]!} bytes, dtype × shape needs ${n}`);
      if (dataStart + offs[1]! > size) throw new Error(`${file}: tensor ${name} extends past the end of the file`);
      tensors.set(name, { name, file, dtype, shape, offset: dataStart + offs[0]!, byteLength: n });
    }
    return { tensors, metadata, headerLength: Number(len) };
  } finally {
    fs.closeSync(fd);
  }
}

/** Every tensor of the checkpoint in `dir`, from model.safetensors or the shards named by the index. */
export function readCheckpointTensors(dir: string): Map<string, StTensor> {
  const index = path.join(dir, 'model.safetensors.index.json');
  const files: string[] = [];
  if (fs.existsSync(index)) {
    const map = (JSON.parse(fs.readFileSync(index, 'utf8')) as { weight_map?: Record<string, string> }).weight_map;
    if (!map) throw new Error(`${index}: no weight_map`);
    files.push(...new Set(Object.values(map).map((f) => path.join(dir, f))));
  } else {
    files.push(path.join(dir, 'model.safetensors'));
  }
  const all = new Map<string, StTensor>();
  for (const f of files) {
    for (const [name, t] of readSafetensorsHeader(f).tensors) {
      if (all.has(name)) throw new Error(`${f}: tensor ${name} also appears in ${all.get(name)!.file}`);
      all.set(name, t);
    }
  }
  return all;
}

/** Reads `count` elements starting at element `start` of a tensor, as f32. */
export function readTensorF32(t: StTensor, start = 0, count = t.byteLength / DTYPE_BYTES[t.dtype]): Float32Array {
  const eb = DTYPE_BYTES[t.dtype];
  const raw = Buffer.alloc(count * eb);
  const fd = fs.openSync(t.file, 'r');
  try {
    let got = 0;
    while (got < raw.length) {
      const n = fs.readSync(fd, raw, got, raw.length - got, t.offset + start * eb + got);
      if (n === 0) throw new Error(`${t.file}: unexpected end of file reading ${t.name}`);
      got += n;
    }
  } finally {
    fs.closeSync(fd);
  }
  return decodeToF32(raw, t.dtype);
}

export function decodeToF32(raw: Uint8Array, dtype: StDType): Float32Array {
  if (dtype === 'F32') {
    const out = new Float32Array(raw.length / 4);
    new Uint8Array(out.buffer).set(raw);
    return out;
  }
  const n = raw.length / 2;
  const out = new Float32Array(n);
  const bits = new Uint32Array(out.buffer);
  const dv = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  if (dtype === 'BF16') {
    for (let i = 0; i < n; i++) bits[i] = dv.getUint16(2 * i, true) << 16;
  } else {
    for (let i = 0; i < n; i++) out[i] = f16ToF32(dv.getUint16(2 * i, true));
  }
  return out;
}

export function f16ToF32(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >>> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 0x1f) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}
