// Command-line entry point: parses arguments and calls the library; each command lives in its own file.

import { Command } from 'commander';
import { packageVersion } from '../util/paths.js';
import { CliError, USER_ERRORS } from './common.js';
import { exportCommand } from './export.js';
import { importCommand } from './import.js';
import { infoCommand } from './info.js';
import { serveCommand } from './serve.js';
import { trainCommand } from './train.js';

export function program(): Command {
  const prog = new Command('resnet-onnx')
    .description('Pre-activation ResNets (He et al. 2016) as ONNX: export, inspect, train, serve, import')
    .version(packageVersion())
    .showHelpAfterError('(run with --help for usage)');
  exportCommand(prog);
  infoCommand(prog);
  importCommand(prog);
  serveCommand(prog);
  trainCommand(prog);
  return prog;
}

export async function main(argv: string[]): Promise<number> {
  const prog = program().exitOverride();
  try {
    await prog.parseAsync(argv);
    return 0;
  } catch (e) {
    const err = e as Error & { code?: string; exitCode?: number };
    if (err.code?.startsWith('commander.')) return err.exitCode ?? 2; // commander already printed it
    console.error(`error: ${err.message}`);
    // Usage and input mistakes exit 2; anything else (I/O, internal) exits 1.
    return err instanceof CliError || USER_ERRORS.includes(err.name) ? 2 : 1;
  }
}
