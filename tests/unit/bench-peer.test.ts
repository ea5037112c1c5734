// The peer/micro benchmark's plain logic: the bytes-per-token and expert formulas, prompts, medians and
// ratios, the SVG chart, and the lockstep barrier that keeps llama.cpp's streams in one batch.
import { describe, expect, it } from 'vitest';
import { peerChartSvg } from '../../bench/peer/chart.ts';
import { bf16RowBytes, codedRowBytes, decodeBytesPerToken } from '../../bench/peer/decode-bytes.ts';
import { describeCpu } from '../../bench/peer/machine.ts';
import { expectedDistinctExperts } from '../../bench/peer/micro-cases.ts';
import { SLICE_SHAPE } from '../../bench/peer/slice-model.ts';
import { withSection } from '../../bench/peer/results-file.ts';
import { stepBarrier } from '../../bench/peer/step-barrier.ts';
import { markdownTable, summarize, textTable, type Sample } from '../../bench/peer/summary.ts';
import { median, promptKey, promptTokens } from '../../bench/peer/workload.ts';

const slice = { ...SLICE_SHAPE, layers: 2 };

describe('decode bytes per token', () => {
  it('counts each weight a token reads once, for the slice shape', () => {
    const b = decodeBytesPerToken(slice, bf16RowBytes, 2);
    expect(b.attention).toBe(2 * (2 * 4096 * 2048 + 2 * 512 * 2048) * 2);
    expect(b.experts).toBe(2 * 8 * 3 * 768 * 2048 * 2);
    expect(b.router).toBe(2 * 128 * 2048 * 2);
    expect(b.lmHead).toBe(151936 * 2048 * 2);
    expect(b.norms).toBe((2 * (2 * 2048 + 2 * 128) + 2048) * 2);
    expect(b.embeddingRow).toBe(2048 * 2);
    expect(b.total).toBe(b.attention + b.experts + b.router + b.norms + b.lmHead + b.embeddingRow);
    // F32 norms and router (the GGUF) cost more only there.
    const f32 = decodeBytesPerToken(slice, bf16RowBytes, 4);
    expect(f32.total - b.total).toBe(b.router + b.norms);
  });

  it('counts coded rows at their coded width (16 + 1.5 bytes per weight, padded to 64)', () => {
    expect(codedRowBytes(2048)).toBe(3136);
    expect(codedRowBytes(768)).toBe(1216);
    expect(codedRowBytes(4096)).toBe(6208);
    expect(codedRowBytes(128)).toBe(256);  // not coded: no smaller
    expect(codedRowBytes(200)).toBe(400);  // not a multiple of 128
    const c = decodeBytesPerToken(slice, codedRowBytes, 2);
    expect(c.lmHead).toBe(151936 * 3136);
    expect(c.experts).toBe(2 * 8 * (2 * 768 * 3136 + 2048 * 1216));
    expect(c.attention).toBe(2 * ((4096 + 2 * 512) * 3136 + 2048 * 6208));
    expect(c.embeddingRow).toBe(2048 * 2);
  });
});

describe('expected distinct experts', () => {
  it('is top_k for one token and approaches all experts as tokens grow', () => {
    expect(expectedDistinctExperts(1, 128, 8)).toBeCloseTo(8, 10);
    expect(expectedDistinctExperts(16, 128, 8)).toBeCloseTo(128 * (1 - (120 / 128) ** 16), 10);
    expect(expectedDistinctExperts(16, 128, 8)).toBeLessThan(16 * 8);
    expect(expectedDistinctExperts(1000, 128, 8)).toBeLessThanOrEqual(128);
    expect(expectedDistinctExperts(1000, 128, 8)).toBeGreaterThan(127.9);
  });
});

describe('workload', () => {
  it('prompts are deterministic, ordinary tokens, and distinct per key', () => {
    const a = promptTokens(promptKey('decode', 1), 16);
    expect(promptTokens(promptKey('decode', 1), 16)).toEqual(a);
    expect(a.every((t) => Number.isInteger(t) && t >= 0 && t < 151643)).toBe(true);
    const keys = new Set<number>();
    for (const phase of ['warmup', 'prefill', 'decode', 'concurrent', 'touch'] as const) {
      for (let run = 0; run < 6; run++) for (let s = 0; s < 32; s++) keys.add(promptKey(phase, run, s, 16));
    }
    expect(keys.size).toBe(5 * 6 * 32);
    const firstTokens = new Set([...keys].map((k) => promptTokens(k, 4).join(',')));
    expect(firstTokens.size).toBe(keys.size);
  });

  it('median of odd and even counts', () => {
    expect(median([3, 1, 2])).toBe(2);
    expect(median([4, 1, 3, 2])).toBe(2.5);
    expect(median([])).toBeNaN();
  });
});

const sample = (value: number, run = 1): Sample => ({ run, value, wallMs: 1000, tokens: value, cpuMs: 2000, foreignCores: 0 });

describe('summary', () => {
  const m = summarize(
    { id: 'decode', label: 'decode 1 stream', unit: 'tok/s', definition: 'd', target: 1.25 },
    { moeserve: [sample(10), sample(14), sample(12)], llama: [sample(8), sample(10), sample(9)] },
  );

  it('takes medians, their ratio, and checks the target', () => {
    expect(m.moeserve).toBe(12);
    expect(m.llama).toBe(9);
    expect(m.ratio).toBeCloseTo(12 / 9, 12);
    expect(m.met).toBe(true);
    expect(m.moeservePerCpuS).toBe(6);
    const miss = summarize({ id: 'x', label: 'x', unit: 'u', definition: 'd', target: 2 }, { moeserve: [sample(3)], llama: [sample(2)] });
    expect(miss.met).toBe(false);
  });

  it('renders the text and Markdown tables', () => {
    expect(textTable([m])).toMatch(/decode 1 stream\s+12\.0\s+9\.0\s+1\.33×\s+≥ 1\.25× met/);
    const md = markdownTable([m]).split('\n');
    expect(md).toHaveLength(3);
    expect(md[2]).toContain('| decode 1 stream | 12.0 | 9.0 | 1.33× |');
  });

  it('draws two bars per metric, labelled, with escaped text', () => {
    const svg = peerChartSvg([m, { ...m, label: 'a<b', ratio: 0.5 }], 'T & U', 'sub');
    expect(svg.startsWith('<svg')).toBe(true);
    expect(svg.trim().endsWith('</svg>')).toBe(true);
    // background + 2 legend swatches + 2 bars per metric
    expect(svg.match(/<rect /g)).toHaveLength(3 + 4);
    expect(svg).toContain('a&lt;b');
    expect(svg).toContain('T &amp; U');
    expect(svg).toContain('1.33×');
    expect(svg).not.toContain('NaN');
  });
});

describe('stepBarrier', () => {
  it('releases every stream only once all have arrived, step after step', async () => {
    const arrive = stepBarrier(3);
    const done: number[] = [];
    const a = arrive().then(() => done.push(1));
    const b = arrive().then(() => done.push(2));
    await Promise.resolve();
    await Promise.resolve();
    expect(done).toEqual([]);
    const c = arrive().then(() => done.push(3));
    await Promise.all([a, b, c]);
    expect(done.sort()).toEqual([1, 2, 3]);
    // The next step needs all three again.
    let next = false;
    const d = arrive().then(() => (next = true));
    await new Promise((r) => setTimeout(r, 5));
    expect(next).toBe(false);
    arrive();
    arrive();
    await d;
    expect(next).toBe(true);
  });
});

describe('RESULTS.md sections', () => {
  it('creates both sections, then replaces one and keeps the other', () => {
    const first = withSection(null, 'micro', '## Micro\n\nm1\n');
    expect(first).toContain('<!-- peer:begin -->\n## moeserve vs llama.cpp\n\nNot run yet');
    expect(first).toContain('<!-- micro:begin -->\n## Micro\n\nm1\n<!-- micro:end -->');
    const second = withSection(first, 'peer', '## Peer\n\np1');
    expect(second).toContain('<!-- peer:begin -->\n## Peer\n\np1\n<!-- peer:end -->');
    expect(second).toContain('m1');
    const third = withSection(second, 'micro', '## Micro\n\nm2');
    expect(third).toContain('p1');
    expect(third).toContain('m2');
    expect(third).not.toContain('m1');
    expect(third.indexOf('peer:begin')).toBeLessThan(third.indexOf('micro:begin'));
    // A file without markers (e.g. hand-written) is rebuilt around the new section.
    expect(withSection('# old notes\n', 'peer', 'p')).toContain('<!-- peer:begin -->\np\n<!-- peer:end -->');
  });
});

describe('describeCpu', () => {
  const info = (vendor: string, family: number, model: number, name: string) =>
    `processor\t: 0\nvendor_id\t: ${vendor}\ncpu family\t: ${family}\nmodel\t\t: ${model}\nmodel name\t: ${name}\nstepping\t: 2\n`;
  it('names the core generation a generic virtual CPU hides, and leaves unknown ones at family and model', () => {
    expect(describeCpu(info('GenuineIntel', 6, 207, 'Intel(R) Xeon(R) Processor'))).toBe('Intel(R) Xeon(R) Processor (family 6 model 207: Emerald Rapids)');
    expect(describeCpu(info('AuthenticAMD', 26, 2, 'AMD EPYC 9B45'))).toBe('AMD EPYC 9B45 (family 26 model 2: Zen 5 (Turin))');
    expect(describeCpu(info('GenuineIntel', 6, 999, 'Some Xeon'))).toBe('Some Xeon (family 6 model 999)');
    expect(describeCpu('flags: avx\n')).toBeNull();
  });
});
