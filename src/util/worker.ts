// Starting a worker thread from a module beside the caller, whether running built JS or the TS sources.

import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';

/**
 * Starts `<name>.js` (built code) or `<name>.ts` (sources under tsx or vitest) from the folder of `callerUrl`.
 * For sources the worker first registers tsx, which Node 20 does not apply to workers from execArgv.
 */
export function spawnWorker(callerUrl: string, name: string, workerData: unknown): Worker {
  const ts = callerUrl.endsWith('.ts');
  const url = new URL(`./${name}${ts ? '.ts' : '.js'}`, callerUrl);
  // Workers inherit the process's flags; `--input-type` (node -e scripts) makes a worker refuse to start.
  const execArgv = process.execArgv.filter((a) => !a.startsWith('--input-type'));
  if (!ts) return new Worker(url, { workerData, execArgv });
  // tsx's ESM entry (its CommonJS one cannot register hooks from a worker), located through its package.json.
  const pkgPath = createRequire(callerUrl).resolve('tsx/package.json');
  const pkg = JSON.parse(readFileSync(pkgPath, 'utf8')) as { exports: Record<string, { import: { default: string } }> };
  const tsxApi = pathToFileURL(join(dirname(pkgPath), pkg.exports['./esm/api'].import.default)).href;
  const boot = `import(${JSON.stringify(tsxApi)}).then((m) => m.register()).then(() => import(${JSON.stringify(url.href)}))`;
  return new Worker(boot, { eval: true, workerData, execArgv });
}
