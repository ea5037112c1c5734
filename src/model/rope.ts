// RoPE inverse frequencies as transformers computes them (modeling_rope_utils.py), including yarn.
// Computed here once and handed to the native side, so the native code knows only "inv_freq × position".

export interface RopeScaling {
  type: 'default' | 'yarn' | 'linear';
  factor: number;
  originalMaxPositionEmbeddings?: number;
  betaFast?: number;
  betaSlow?: number;
  mscale?: number;
  mscaleAllDim?: number;
  attentionFactor?: number;
  truncate?: boolean;
}

export interface RopeTables {
  invFreq: Float32Array;
  attentionFactor: number;
}

function yarnGetMscale(scale: number, mscale = 1): number {
  return scale <= 1 ? 1 : 0.1 * mscale * Math.log(scale) + 1;
}

export function ropeTables(headDim: number, theta: number, scaling: RopeScaling | null, maxPositionEmbeddings: number): RopeTables {
  const half = headDim / 2;
  const base = new Float64Array(half);
  for (let i = 0; i < half; i++) base[i] = 1 / Math.pow(theta, (2 * i) / headDim);
  if (!scaling || scaling.type === 'default') return { invFreq: Float32Array.from(base), attentionFactor: 1 };
  if (scaling.type === 'linear') return { invFreq: Float32Array.from(base, (f) => f / scaling.factor), attentionFactor: 1 };

  const factor = scaling.factor;
  const origMax = scaling.originalMaxPositionEmbeddings ?? maxPositionEmbeddings;
  let attentionFactor = scaling.attentionFactor;
  if (attentionFactor === undefined) {
    attentionFactor = scaling.mscale !== undefined && scaling.mscaleAllDim !== undefined
      ? yarnGetMscale(factor, scaling.mscale) / yarnGetMscale(factor, scaling.mscaleAllDim)
      : yarnGetMscale(factor);
  }
  const betaFast = scaling.betaFast ?? 32;
  const betaSlow = scaling.betaSlow ?? 1;
  const correctionDim = (rotations: number) =>
    (headDim * Math.log(origMax / (rotations * 2 * Math.PI))) / (2 * Math.log(theta));
  let low = correctionDim(betaFast);
  let high = correctionDim(betaSlow);
  if (scaling.truncate ?? true) {
    low = Math.floor(low);
    high = Math.ceil(high);
  }
  low = Math.max(low, 0);
  high = Math.min(high, headDim - 1);
  if (low === high) high += 0.001;
  const invFreq = new Float32Array(half);
  for (let i = 0; i < half; i++) {
    const ramp = Math.min(1, Math.max(0, (i - low) / (high - low)));
    const extrapolationFactor = 1 - ramp;
    const extrapolation = base[i];
    const interpolation = base[i] / factor;
    invFreq[i] = interpolation * (1 - extrapolationFactor) + extrapolation * extrapolationFactor;
  }
  return { invFreq, attentionFactor };
}
