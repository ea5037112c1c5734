// A grammar worker for tests: the real one, except that compiling a spec whose param is 'crash'
// exhausts the worker's heap (as a runaway input would), killing the worker.
import { serveCalls, workerInput } from '../../src/worker/rpc.ts';
import type { GuideWorkerData } from '../../src/guided/guide-protocol.ts';
import { GuideService, guideHandlers } from '../../src/guided/guide-service.ts';

const handlers = guideHandlers(new GuideService(workerInput<GuideWorkerData>()));
const crashing: typeof handlers = {
  ...handlers,
  compile: (spec) => {
    if (spec.param === 'crash') {
      const hog: number[][] = [];
      for (;;) hog.push(new Array<number>(1 << 20).fill(hog.length));
    }
    return handlers.compile(spec);
  },
};
serveCalls(crashing);
