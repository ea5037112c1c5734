// A malformed checkpoint never crashes the process: the real addon's loadModel rejects with a message
// naming the file and the tensor. Each case corrupts a copy of a real generated checkpoint (make-model),
// rewriting the safetensors header or bytes on disk, and loads it through config.ts like the server does.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadModelConfig } from '../../src/model/config.ts';
import { makeModel, type MakeModelOptions } from '../../src/model/make-model.ts';
import { loadAddon } from '../../src/native/load-addon.ts';

interface Entry {
  dtype: string;
  shape: number[];
  data_offsets: [number, number];
}
type Header = Record<string, Entry | Record<string, string>>;

interface St {
  header: Header;
  data: Buffer;
}

function readSt(file: string): St {
  const buf = fs.readFileSync(file);
  const n = Number(buf.readBigUInt64LE(0));
  return { header: JSON.parse(buf.subarray(8, 8 + n).toString('utf8')) as Header, data: buf.subarray(8 + n) };
}

/** Writes header + data; `headerLength` overrides the 8-byte prefix (to corrupt it). */
function writeSt(file: string, st: St, headerLength?: bigint): void {
  const text = Buffer.from(JSON.stringify(st.header), 'utf8');
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(headerLength ?? BigInt(text.length));
  fs.writeFileSync(file, Buffer.concat([prefix, text, st.data]));
}

function entry(st: St, name: string): Entry {
  const e = st.header[name];
  if (!e || !('data_offsets' in e)) throw new Error(`test setup: no tensor ${name}`);
  return e as Entry;
}

function editSt(file: string, edit: (st: St) => void): void {
  const st = readSt(file);
  edit(st);
  writeSt(file, st);
}

const SHAPE: MakeModelOptions = {
  layers: 2, hidden: 32, heads: 2, kvHeads: 1, headDim: 16, experts: 4, topK: 2, moeIntermediate: 16,
  intermediate: 48, vocab: 256, dtype: 'bf16', mlpOnlyLayers: [1], seed: 3,
};

let root = '';
let single = '';
let sharded = '';
let counter = 0;

/** A fresh copy of a pristine checkpoint (weights + config; the tokenizer is not needed to load). */
function variant(base: string): string {
  const dir = path.join(root, `case-${counter++}`);
  fs.cpSync(base, dir, { recursive: true, filter: (src) => !path.basename(src).startsWith('tokenizer') });
  return dir;
}

async function load(dir: string) {
  const cfg = loadModelConfig(dir);
  return loadAddon().loadModel({ files: cfg.files, config: cfg.native, threads: 1, kvBlocks: 4, blockSize: 16 });
}

/** loadModel must reject (not crash, not resolve) with a message containing every needle. */
async function expectLoadError(dir: string, needles: string[]): Promise<string> {
  const outcome = await load(dir).then(
    (model) => { model.close(); return null; },
    (e: unknown) => e,
  );
  expect(outcome, 'loadModel resolved on a malformed checkpoint').toBeInstanceOf(Error);
  const message = (outcome as Error).message;
  for (const n of needles) expect(message).toContain(n);
  return message;
}

beforeAll(async () => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'moeserve-malformed-'));
  single = path.join(root, 'single');
  sharded = path.join(root, 'sharded');
  await makeModel(single, SHAPE);
  await makeModel(sharded, { ...SHAPE, shards: 2 });
});

afterAll(() => {
  if (root) fs.rmSync(root, { recursive: true, force: true });
});

describe('malformed checkpoints are rejected with a precise error', () => {
  it('loads the pristine checkpoints (the corruptions below are the only difference)', async () => {
    for (const base of [single, sharded]) {
      const model = await load(variant(base));
      expect(model.weightBytes).toBeGreaterThan(0);
      model.close();
    }
  });

  it('truncated file: the first tensor cut off is named', async () => {
    const dir = variant(single);
    const file = path.join(dir, 'model.safetensors');
    const st = readSt(file);
    const name = 'model.layers.1.self_attn.q_proj.weight';
    const [b, e] = entry(st, name).data_offsets;
    fs.truncateSync(file, fs.statSync(file).size - st.data.length + b + 1);
    await expectLoadError(dir, [`${file}: tensor ${name}: data_offsets [${b}, ${e}] end beyond the data region (${b + 1} bytes)`]);
  });

  it('truncated shard: the shard is named', async () => {
    const dir = variant(sharded);
    const file = path.join(dir, 'model-00002-of-00002.safetensors');
    const st = readSt(file);
    const [name, first] = Object.entries(st.header).find(([k]) => k !== '__metadata__') as [string, Entry];
    fs.truncateSync(file, fs.statSync(file).size - st.data.length + first.data_offsets[0]);
    await expectLoadError(dir, [`${file}: tensor ${name}: data_offsets [${first.data_offsets.join(', ')}] end beyond the data region (${first.data_offsets[0]} bytes)`]);
  });

  it('truncated to less than the length prefix', async () => {
    const dir = variant(single);
    const file = path.join(dir, 'model.safetensors');
    fs.truncateSync(file, 5);
    await expectLoadError(dir, [`${file}: file is 5 bytes, too short for the 8-byte header length`]);
  });

  it('bad header length: beyond the file, zero, and cutting the JSON short', async () => {
    const dir = variant(single);
    const file = path.join(dir, 'model.safetensors');
    const st = readSt(file);
    writeSt(file, st);  // the same file unpadded: its size is what the prefix below must exceed
    const size = fs.statSync(file).size;
    writeSt(file, st, BigInt(size));
    await expectLoadError(dir, [`${file}: header length ${size} exceeds the file (${size - 8} bytes after the length prefix)`]);
    writeSt(file, st, 0n);
    await expectLoadError(dir, [`${file}: header length is 0`]);
    writeSt(file, st, 1n << 40n);
    await expectLoadError(dir, [`${file}: header length ${1n << 40n} exceeds the 100 MB limit`]);
    writeSt(file, st, 100n);
    await expectLoadError(dir, [`${file}: header is not valid JSON: `]);
  });

  it('offsets out of range, and reversed', async () => {
    const dir = variant(single);
    const file = path.join(dir, 'model.safetensors');
    const name = 'model.layers.0.mlp.experts.3.down_proj.weight';
    let size = 0;
    editSt(file, (st) => {
      const t = entry(st, name);
      const n = t.data_offsets[1] - t.data_offsets[0];
      size = st.data.length;
      t.data_offsets = [size - n + 2, size + 2];
    });
    await expectLoadError(dir, [`${file}: tensor ${name}: data_offsets [`, `, ${size + 2}] end beyond the data region (${size} bytes)`]);
    editSt(file, (st) => {
      const t = entry(st, name);
      t.data_offsets = [t.data_offsets[1], t.data_offsets[0]];
    });
    await expectLoadError(dir, [`${file}: tensor ${name}: data_offsets [`, `] must satisfy 0 <= begin <= end`]);
  });

  it('wrong dtype: unsupported, and supported but the wrong size', async () => {
    const dir = variant(single);
    const file = path.join(dir, 'model.safetensors');
    const name = 'model.layers.0.self_attn.k_norm.weight';
    editSt(file, (st) => { entry(st, name).dtype = 'F64'; });
    await expectLoadError(dir, [`${file}: tensor ${name}: unsupported dtype "F64" (supported: BF16, F16, F32)`]);
    editSt(file, (st) => { entry(st, name).dtype = 'I8'; });
    await expectLoadError(dir, [`${file}: tensor ${name}: unsupported dtype "I8"`]);
    let offs: number[] = [];
    editSt(file, (st) => { entry(st, name).dtype = 'F32'; offs = entry(st, name).data_offsets; });
    await expectLoadError(dir, [`${file}: tensor ${name}: data_offsets [${offs.join(', ')}] span 32 bytes but F32 [16] needs 64`]);
  });

  it('wrong shape: same size but transposed, and a size that does not match the bytes', async () => {
    const dir = variant(single);
    const file = path.join(dir, 'model.safetensors');
    const name = 'model.layers.1.self_attn.k_proj.weight';  // [kv 16, hidden 32]
    editSt(file, (st) => { entry(st, name).shape = [32, 16]; });
    await expectLoadError(dir, [`tensor ${name} in ${file} has shape [32, 16], expected [16, 32]`]);
    editSt(file, (st) => { entry(st, name).shape = [16, 33]; });
    await expectLoadError(dir, [`${file}: tensor ${name}: data_offsets [`, ` span 1024 bytes but BF16 [16, 33] needs 1056`]);
  });

  it('wrong shape from the config: config.json disagrees with the weights', async () => {
    const dir = variant(single);
    const cfgFile = path.join(dir, 'config.json');
    const cfg = JSON.parse(fs.readFileSync(cfgFile, 'utf8')) as Record<string, unknown>;
    fs.writeFileSync(cfgFile, JSON.stringify({ ...cfg, vocab_size: 300 }));
    await expectLoadError(dir, [`tensor model.embed_tokens.weight in ${path.join(dir, 'model.safetensors')} has shape [256, 32], expected [300, 32]`]);
  });

  it('missing tensor: every file searched is listed', async () => {
    const dir = variant(single);
    const file = path.join(dir, 'model.safetensors');
    const name = 'model.layers.1.post_attention_layernorm.weight';
    editSt(file, (st) => {
      st.header[`${name}.renamed`] = entry(st, name);
      delete st.header[name];
    });
    await expectLoadError(dir, [`missing tensor ${name} (searched 1 files: ${file})`]);

    const dir2 = variant(sharded);
    const [a, b] = ['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors'].map((f) => path.join(dir2, f));
    const expert = 'model.layers.0.mlp.experts.2.up_proj.weight';
    const holder = expert in readSt(a!).header ? a! : b!;
    editSt(holder, (st) => { delete st.header[expert]; });
    await expectLoadError(dir2, [`missing tensor ${expert} (searched 2 files: ${a}, ${b})`]);
  });

  it('overlapping tensors: both are named with their ranges', async () => {
    const dir = variant(single);
    const file = path.join(dir, 'model.safetensors');
    const a = 'model.layers.0.self_attn.v_proj.weight';
    const b = 'model.layers.0.self_attn.o_proj.weight';
    let ra: number[] = [];
    let rb: number[] = [];
    editSt(file, (st) => {
      ra = entry(st, a).data_offsets;
      const tb = entry(st, b);
      const n = tb.data_offsets[1] - tb.data_offsets[0];
      tb.data_offsets = [ra[0]! + 2, ra[0]! + 2 + n];
      rb = tb.data_offsets;
    });
    await expectLoadError(dir, [`${file}: tensors ${a} [${ra.join(', ')}] and ${b} [${rb.join(', ')}] overlap`]);
  });

  it('duplicate tensor across shards: both files are named', async () => {
    const dir = variant(sharded);
    const [a, b] = ['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors'].map((f) => path.join(dir, f));
    const name = 'model.embed_tokens.weight';
    const src = entry(readSt(a!), name);
    expect(name in readSt(b!).header).toBe(false);
    editSt(b!, (st) => {
      const n = src.data_offsets[1] - src.data_offsets[0];
      const at = st.data.length;
      st.data = Buffer.concat([st.data, Buffer.alloc(n)]);
      st.header[name] = { dtype: src.dtype, shape: src.shape, data_offsets: [at, at + n] };
    });
    await expectLoadError(dir, [`tensor ${name} is present in two files: ${a} and ${b}`]);
  });

  it('a missing weights file and a directory in its place', async () => {
    const dir = variant(single);
    const file = path.join(dir, 'model.safetensors');
    const cfg = loadModelConfig(dir);
    fs.rmSync(file);
    const err = await loadAddon()
      .loadModel({ files: cfg.files, config: cfg.native, threads: 1, kvBlocks: 4, blockSize: 16 })
      .then(() => null, (e: unknown) => e as Error);
    expect(err?.message).toContain(`${file}: cannot open: No such file or directory`);
    fs.mkdirSync(file);
    await expectLoadError(dir, [`${file}: not a regular file`]);
  });

  it('the process survives every rejection and still loads a good checkpoint', async () => {
    const model = await load(variant(single));
    expect(model.kvBlocks).toBe(4);
    model.close();
  });
});
