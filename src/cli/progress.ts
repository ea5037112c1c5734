// A progress bar on a terminal (cli-progress), nothing when output is piped or logged.
import cliProgress from 'cli-progress';

export interface Progress {
  update(done: number, total: number): void;
  stop(): void;
}

const GiB = 1024 ** 3;

/** Byte progress ("1.2/3.4 GiB"); a no-op unless stdout is a TTY. */
export function byteProgress(label: string, stream: NodeJS.WriteStream = process.stdout): Progress {
  if (!stream.isTTY) return { update() {}, stop() {} };
  const bar = new cliProgress.SingleBar(
    {
      format: `${label} [{bar}] {percentage}% | {doneGiB}/{totalGiB} GiB | {eta_formatted}`,
      hideCursor: true,
      stream,
      etaBuffer: 50,
    },
    cliProgress.Presets.shades_classic,
  );
  let started = false;
  return {
    update(done, total) {
      const payload = { doneGiB: (done / GiB).toFixed(2), totalGiB: (total / GiB).toFixed(2) };
      if (!started) {
        started = true;
        bar.start(total, done, payload);
      } else {
        bar.setTotal(total);
        bar.update(done, payload);
      }
    },
    stop() {
      if (started) bar.stop();
    },
  };
}
