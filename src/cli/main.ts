// The `moeserve` command line (bin/moeserve.js runs this through tsx).
import { Command } from 'commander';
import { serveCommand } from './serve-cmd.ts';
import { infoCommand } from './info-cmd.ts';
import { makeModelCommand } from './make-model-cmd.ts';
import { researchCommand } from './research-cmd.ts';
import { packageVersion } from './package-info.ts';

const program = new Command('moeserve')
  .description('Inference server for Qwen3-MoE models with an OpenAI-compatible API')
  .version(packageVersion())
  .addCommand(serveCommand())
  .addCommand(infoCommand())
  .addCommand(makeModelCommand())
  .addCommand(researchCommand());

try {
  await program.parseAsync(process.argv);
} catch (err) {
  console.error(`moeserve: ${(err as Error).message}`);
  process.exit(1);
}
