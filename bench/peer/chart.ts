// A dependency-free SVG bar chart of the peer benchmark: per metric, moeserve beside llama.cpp (bar
// heights relative to the larger of the two, absolute figures written on the bars), the ratio above.
import type { MetricSummary } from './summary.ts';

const COLORS = { moeserve: '#2f6fdf', llama: '#9a9a9a' };

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

function fmt(x: number): string {
  if (!Number.isFinite(x)) return '–';
  return x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2);
}

export function peerChartSvg(metrics: MetricSummary[], title: string, subtitle: string): string {
  const groupW = 150;
  const barW = 48;
  const left = 30;
  const top = 78;
  const plotH = 220;
  const width = left * 2 + groupW * metrics.length;
  const height = top + plotH + 80;
  const base = top + plotH;
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="Helvetica, Arial, sans-serif">`,
    `<rect width="100%" height="100%" fill="#ffffff"/>`,
    `<text x="${left}" y="26" font-size="16" font-weight="bold">${esc(title)}</text>`,
    `<text x="${left}" y="46" font-size="11" fill="#555">${esc(subtitle)}</text>`,
    `<rect x="${width - 230}" y="56" width="10" height="10" fill="${COLORS.moeserve}"/><text x="${width - 216}" y="65" font-size="11">moeserve</text>`,
    `<rect x="${width - 140}" y="56" width="10" height="10" fill="${COLORS.llama}"/><text x="${width - 126}" y="65" font-size="11">llama.cpp</text>`,
    `<line x1="${left}" y1="${base}" x2="${width - left}" y2="${base}" stroke="#333"/>`,
  ];
  metrics.forEach((m, i) => {
    const x0 = left + i * groupW + (groupW - 2 * barW - 8) / 2;
    const max = Math.max(m.moeserve, m.llama);
    const bars: [number, string, number][] = [[m.moeserve, COLORS.moeserve, x0], [m.llama, COLORS.llama, x0 + barW + 8]];
    for (const [v, color, x] of bars) {
      const h = max > 0 && Number.isFinite(v) ? (v / max) * (plotH - 30) : 0;
      parts.push(`<rect x="${x}" y="${(base - h).toFixed(1)}" width="${barW}" height="${h.toFixed(1)}" fill="${color}"/>`);
      parts.push(`<text x="${x + barW / 2}" y="${(base - h - 4).toFixed(1)}" font-size="11" text-anchor="middle">${fmt(v)}</text>`);
    }
    const cx = left + i * groupW + groupW / 2;
    const ok = m.target === undefined ? '#333' : m.ratio >= m.target ? '#1a7f37' : '#c62828';
    parts.push(`<text x="${cx}" y="${top - 2}" font-size="13" font-weight="bold" text-anchor="middle" fill="${ok}">${fmt(m.ratio)}×</text>`);
    parts.push(`<text x="${cx}" y="${base + 18}" font-size="12" text-anchor="middle">${esc(m.label)}</text>`);
    parts.push(`<text x="${cx}" y="${base + 33}" font-size="10" text-anchor="middle" fill="#555">${esc(m.unit)}</text>`);
    if (m.target !== undefined) parts.push(`<text x="${cx}" y="${base + 48}" font-size="10" text-anchor="middle" fill="#555">target ≥ ${m.target}×</text>`);
  });
  parts.push('</svg>');
  return parts.join('\n') + '\n';
}
