// The grammar worker's entry (started by GuidedDecoding through src/worker/rpc.ts): one per server,
// holding every compiled grammar and matcher, since xgrammar's compiled grammars cannot move
// between WASM instances.
import { serveCalls, workerInput } from '../worker/rpc.ts';
import type { GuideWorkerData } from './guide-protocol.ts';
import { GuideService, guideHandlers } from './guide-service.ts';

serveCalls(guideHandlers(new GuideService(workerInput<GuideWorkerData>())));
