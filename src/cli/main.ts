// Command-line entry point: parses arguments and calls the library; each command lives in its own file.

import { Command, CommanderError, InvalidArgumentError } from 'commander';
import { installInterruptCleanup, releaseInterruptCleanup } from '../util/files.js';
import { packageVersion } from '../util/paths.js';
import { CliError, USER_ERRORS } from './common.js';
import { evalCommand } from './eval.js';
import { exportCommand } from './export.js';
import { importCommand } from './import.js';
import { infoCommand } from './info.js';
import { pullCommand } from './pull.js';
import { quantizeCommand } from './quantize.js';
import { reproduceCommand } from './reproduce.js';
import { serveCommand } from './serve.js';
import { trainCommand } from './train.js';

export function program(): Command {
  const prog = new Command('resnet-onnx')
    .description('Pre-activation ResNets (He et al. 2016) as ONNX: export, inspect, train, serve, import')
    .version(packageVersion())
    .showHelpAfterError('(run with --help for usage)')
    // An interrupt removes the command's temporaries and exits 130/143; `serve` drains instead.
    .hook('preAction', (_, action) => (action.name() === 'serve' ? undefined : installInterruptCleanup()));
  exportCommand(prog);
  infoCommand(prog);
  importCommand(prog);
  pullCommand(prog);
  serveCommand(prog);
  trainCommand(prog);
  evalCommand(prog);
  quantizeCommand(prog);
  reproduceCommand(prog);
  return prog;
}

/** Exit statuses (README, "Exit status"): the request was done, was wrong, or failed while being done. */
export const EXIT = { ok: 0, failure: 1, badRequest: 2 } as const;

/** The exit status for an error that ended a command. */
export function exitStatus(e: unknown): number {
  const err = e as Error & { code?: string; exitCode?: number };
  // Every parse error (bad value, unknown option or command, missing argument, invalid choice) is a bad request;
  // commander gives them status 1, and 0 to --help and --version, which stay 0.
  if (err instanceof CommanderError) return err.exitCode === 0 ? EXIT.ok : EXIT.badRequest;
  return err instanceof CliError || USER_ERRORS.includes(err?.name) ? EXIT.badRequest : EXIT.failure;
}

/** Makes commander throw instead of exiting, on the program and every subcommand (each has its own setting). */
function throwOnExit(cmd: Command): Command {
  cmd.exitOverride();
  for (const sub of cmd.commands) throwOnExit(sub);
  return cmd;
}

export async function main(argv: string[]): Promise<number> {
  const prog = throwOnExit(program());
  try {
    await prog.parseAsync(argv);
    return EXIT.ok;
  } catch (e) {
    // Commander printed its own errors (and help); an InvalidArgumentError thrown by an action it did not.
    if (!(e instanceof CommanderError) || e instanceof InvalidArgumentError) console.error(`error: ${(e as Error).message}`);
    return exitStatus(e);
  } finally {
    releaseInterruptCleanup();
  }
}
