// Entry of every worker thread: registers tsx's loader in this thread (workers do not inherit it),
// then runs the TypeScript module named by workerData.module.
import { register } from 'tsx/esm/api';
import { workerData } from 'node:worker_threads';

register();
await import(workerData.module);
