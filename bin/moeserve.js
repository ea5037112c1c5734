#!/usr/bin/env node
// Entry point: the CLI is written in TypeScript and run through tsx's loader, so no build step is needed.
import { register } from 'tsx/esm/api';
register();
await import('../src/cli/main.ts');
