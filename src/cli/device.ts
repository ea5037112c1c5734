// --device auto|cpu|cuda → the backend a model loads on, from what the addon reports (addon.backends()).
// A pure function of that report, so the choice and its refusals are unit-tested without a GPU.
import type { BackendInfo, BackendName } from '../native/addon-types.ts';

export type DeviceChoice = 'auto' | BackendName;
export const DEVICE_CHOICES = ['auto', 'cpu', 'cuda'] as const;

/** The CUDA entry of the addon's report, if the addon has one. */
export function cudaBackend(backends: BackendInfo[]): BackendInfo | undefined {
  return backends.find((b) => b.name === 'cuda');
}

/** Whether a model can run on CUDA here (compiled in, a driver and a device). */
export function cudaUsable(backends: BackendInfo[]): boolean {
  const cuda = cudaBackend(backends);
  return cuda !== undefined && cuda.available && cuda.compiled !== false;
}

/**
 * 'auto': CUDA when the addon reports it usable, else the CPU. 'cuda' where it is not usable throws, saying
 * whether it is not compiled in or compiled in and not usable here (the addon's detail says why).
 */
export function resolveDevice(requested: DeviceChoice, backends: BackendInfo[]): BackendName {
  if (requested === 'cpu') return 'cpu';
  if (requested === 'auto') return cudaUsable(backends) ? 'cuda' : 'cpu';
  if (requested !== 'cuda') throw new Error(`--device must be one of ${DEVICE_CHOICES.join(', ')} (got ${String(requested)})`);
  if (cudaUsable(backends)) return 'cuda';
  const cuda = cudaBackend(backends);
  const why = cuda?.detail ? `: ${cuda.detail}` : '';
  if (cuda === undefined || cuda.compiled !== true) {
    // compiled undefined: an addon from before the CUDA backend, which says so in its detail.
    return fail(
      `--device cuda: CUDA is not compiled into this build of moeserve${why}; build it on a machine with the CUDA toolkit ` +
        `(MOESERVE_CUDA=1 npm run build:native), or pass --device cpu`,
    );
  }
  return fail(`--device cuda: CUDA is compiled in (${cuda.archs ?? 'unknown architectures'}) but not usable here${why}; pass --device cpu`);
}

function fail(message: string): never {
  throw new Error(message);
}
