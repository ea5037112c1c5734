// Keeps concurrent llama.cpp streams in lockstep so that node-llama-cpp batches them (see below).

/**
 * Holds every stream after its token until all streams have theirs, then lets them all ask for the next
 * one in the same tick. Without it the batches split: after a llama_decode each sequence samples on the
 * libuv pool, and node-llama-cpp's dispatch loop decodes whichever sequences have already queued their
 * next token (measured: 2-3 tokens per llama_decode with 4 streams, drifting further apart). With it,
 * every step is one llama_decode of all streams, as llama-server batches its slots: llama.cpp's best case.
 */
export function stepBarrier(streams: number): () => Promise<void> {
  let arrived = 0;
  let release!: () => void;
  let gate = new Promise<void>((r) => (release = r));
  return () => {
    const current = gate;
    if (++arrived === streams) {
      arrived = 0;
      const open = release;
      gate = new Promise<void>((r) => (release = r));
      open();
    }
    return current;
  };
}
