// `resnet-onnx pull NAME`: published pre-activation weights from the catalogue, downloaded into the cache (or taken
// from --file), checked and imported to ONNX; `pull --list` shows the catalogue and what is cached.

import cliProgress from 'cli-progress';
import type { Command } from 'commander';
import { type DownloadProgress, describeReported, listCatalogue, pull } from '../pull/index.js';
import { DOWNLOAD_DEFAULTS, formatBytes } from '../pull/download.js';
import { CliError, intArg, opsetArg, progressBar } from './common.js';

interface PullFlags {
  list?: boolean;
  json?: boolean;
  output?: string;
  force?: boolean;
  cacheDir?: string;
  mirror?: string;
  file?: string;
  sha256?: string;
  timeoutMs: number;
  retries: number;
  retryDelayMs: number;
  fold: boolean;
  opset: number;
  probabilities?: boolean;
  quiet?: boolean;
}

const seconds = (s: number): string => (s >= 3600 ? `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m` : s >= 60 ? `${Math.floor(s / 60)}m${String(Math.round(s % 60)).padStart(2, '0')}s` : `${Math.round(s)}s`);

/** A download bar (bytes, rate, ETA) on stderr when it is a terminal and not --quiet; silent otherwise. */
export function downloadBar(enabled: boolean): { update: (p: DownloadProgress) => void; note: (line: string) => void; stop: () => void } {
  const note = (line: string): void => void (enabled && process.stderr.write(`${line}\n`));
  if (!enabled || !process.stderr.isTTY) return { update: () => {}, note, stop: () => {} };
  let last: DownloadProgress = { received: 0, bytesPerSecond: 0 };
  const bar = new cliProgress.SingleBar(
    {
      stream: process.stderr,
      hideCursor: true,
      fps: 10,
      format: (options, params) => {
        const rate = `${formatBytes(Math.round(last.bytesPerSecond))}/s`;
        if (last.total === undefined) return `downloading ${formatBytes(last.received)} | ${rate}`;
        const width = options.barsize ?? 30;
        const filled = Math.round(params.progress * width);
        const eta = last.etaSeconds === undefined ? '?' : seconds(last.etaSeconds);
        return `downloading ${'\u2588'.repeat(filled)}${'\u2591'.repeat(width - filled)} ${Math.floor(params.progress * 100)}% | ${formatBytes(last.received)} / ${formatBytes(last.total)} | ${rate} | ETA ${eta}`;
      },
    },
    cliProgress.Presets.shades_classic,
  );
  let started = false;
  return {
    update(p) {
      last = p;
      const total = p.total ?? Math.max(p.received, 1);
      if (!started) {
        bar.start(total, p.received);
        started = true;
      }
      bar.setTotal(total);
      bar.update(p.received);
    },
    note(line) {
      process.stderr.write(`${started ? '\n' : ''}${line}\n`);
    },
    stop: () => started && bar.stop(),
  };
}

function printList(f: PullFlags): void {
  const { cacheDir, entries } = listCatalogue({ cacheDir: f.cacheDir });
  if (f.json) {
    console.log(JSON.stringify({ cacheDir, catalogue: entries }, null, 2));
    return;
  }
  const rows = entries.map((e) => [
    e.name,
    e.format,
    e.bytes !== undefined ? formatBytes(e.bytes) : e.approxMB !== undefined ? `~${e.approxMB} MB` : '?',
    e.cached ? 'yes' : 'no',
    e.reported.map((a) => `${a.top1}${a.top5 !== undefined ? ` / ${a.top5}` : ''} at ${a.resolution} (${a.crop})`).join('; ') || '-',
  ]);
  const head = ['name', 'format', 'size', 'cached', "publisher's top-1 [/ top-5] % at resolution (crop)"];
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (r: string[]): string => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]))).join('  ');
  console.log(line(head));
  for (const r of rows) console.log(line(r));
  console.log("also accepted: timm names without 'timm/', and");
  for (const e of entries.filter((x) => x.aliases.length)) console.log(`  ${e.aliases.join(', ')} for ${e.name}`);
  console.log(`cache: ${cacheDir}`);
  for (const e of entries.filter((x) => x.models.length)) console.log(`${e.name}: imported to ${e.models.join(', ')}`);
}

export function pullCommand(prog: Command): void {
  prog
    .command('pull')
    .description('download published pre-activation ResNet weights (the paper\'s ResNet-200, timm ResNetV2), verify and import them to ONNX')
    .argument('[name]', 'a catalogue name, e.g. resnet200 or timm/resnetv2_50.a1h_in1k (see --list)')
    .option('--list', 'print the catalogue: names, sizes, what is cached, the publisher\'s accuracy')
    .option('--json', 'with --list (or a pull): one JSON object on stdout')
    .option('-o, --output <file>', 'ONNX model to write (default: models/<name>.onnx)')
    .option('--force', 'replace an existing output')
    .option('--cache-dir <dir>', 'download cache (default: $RESNET_ONNX_CACHE, else $XDG_CACHE_HOME/resnet-onnx, else ~/.cache/resnet-onnx)')
    .option('--mirror <base>', 'fetch from BASE/<path of the catalogue URL> (default: $RESNET_ONNX_MIRROR)')
    .option('--file <path>', 'use an already-downloaded file instead of the network (same checks, copied into the cache)')
    .option('--sha256 <hex>', 'the sha256 the file must have (a mismatch deletes it and fails)')
    .option('--timeout-ms <n>', 'longest wait to connect, for a response, or between two pieces of data', intArg('--timeout-ms'), DOWNLOAD_DEFAULTS.timeoutMs)
    .option('--retries <n>', 'retries in a row without progress (a cut download resumes where it stopped)', intArg('--retries', 0), DOWNLOAD_DEFAULTS.retries)
    .option('--retry-delay-ms <n>', 'first wait before a retry, doubled each time', intArg('--retry-delay-ms', 0), DOWNLOAD_DEFAULTS.retryDelayMs)
    .option('--no-fold', 'keep BatchNormalization nodes (default: fold into the preceding conv)')
    .option('--opset <n>', 'ONNX opset (13..21; 22 is refused, see the README); the IR version follows it', opsetArg, 17)
    .option('--probabilities', 'add a `probabilities` output (softmax of the logits)')
    .option('-q, --quiet', 'no progress bar and no notes on stderr')
    .action(async (name: string | undefined, f: PullFlags) => {
      if (f.list) {
        if (name !== undefined) throw new CliError(`--list takes no name (got '${name}')`);
        printList(f);
        return;
      }
      if (name === undefined) throw new CliError('give a model name (e.g. pull resnet200), or --list to see the catalogue');
      const dl = downloadBar(!f.quiet);
      const writing = progressBar(!f.quiet);
      // An interrupt removes the partial download: it is a tracked temporary (main.ts installs the cleanup).
      const started = Date.now();
      let r;
      try {
        r = await pull(name, {
          output: f.output,
          force: f.force,
          cacheDir: f.cacheDir,
          mirror: f.mirror,
          file: f.file,
          sha256: f.sha256,
          fold: f.fold,
          opset: f.opset,
          probabilities: f.probabilities,
          log: dl.note,
          download: { timeoutMs: f.timeoutMs, retries: f.retries, retryDelayMs: f.retryDelayMs, onProgress: dl.update, log: dl.note },
          importProgress: (done, total) => {
            dl.stop();
            writing.update(done, total);
          },
        });
      } finally {
        dl.stop();
        writing.stop();
      }
      const secs = ((Date.now() - started) / 1000).toFixed(1);
      if (f.json) {
        const { entry, report, ...rest } = r;
        console.log(JSON.stringify({ ...rest, name: entry.name, url: entry.url, reported: entry.reported, parameters: report.parameters, modelBytes: report.bytes }));
        return;
      }
      const how = r.obtained === 'downloaded' ? `downloaded from ${r.fetchedFrom}` : r.obtained === 'cache' ? 'from the cache' : `from ${f.file}`;
      console.log(r.network);
      console.log(`${r.entry.name}: ${r.file} (${formatBytes(r.bytes)}, sha256 ${r.sha256}), ${how}`);
      for (const note of r.notes) console.log(`note: ${note}`);
      if (r.entry.reported.length) console.log(`publisher's ImageNet-1k val accuracy: ${describeReported(r.entry.reported)}`);
      console.log(
        `wrote ${r.model}: ${(r.report.bytes / 1e6).toFixed(1)} MB, ${r.report.parameters.toLocaleString('en-US')} parameters, ${r.report.foldedBatchNorms} BatchNorms folded, opset ${f.opset} (${secs} s)`,
      );
      console.log(`next: npx resnet-onnx serve --model ${r.model}`);
    });
}
