// `resnet-onnx serve` (the HTTP inference server) and `resnet-onnx triton` (a Triton model repository for the
// same model).

import { existsSync, mkdirSync } from 'node:fs';
import { basename, join } from 'node:path';
import { type Command, InvalidArgumentError, Option } from 'commander';
import * as ort from 'onnxruntime-node';
import { exportInference } from '../export/inference.js';
import { resolveConfig } from '../models/config.js';
import { ModelFileError, readModelInfo } from '../serve/model-info.js';
import { SERVE_DEFAULTS, ServeOptionError, type ServeOptions, startServer } from '../serve/server.js';
import { writeTritonRepository } from '../serve/triton.js';
import { modelsDir } from '../util/paths.js';
import { CliError, intArg, numArg } from './common.js';
import { defaultOutput } from './export.js';

/** The model served when --model is not given: the paper's ImageNet ResNet-200, exported on first use. */
function defaultModel(): string {
  const cfg = resolveConfig({ depth: 200 });
  const path = join(modelsDir(), basename(defaultOutput(cfg)));
  if (!existsSync(path)) {
    console.error(`${path} does not exist: exporting ResNet-200 (random-init weights, seed 0) first ...`);
    mkdirSync(modelsDir(), { recursive: true });
    exportInference(cfg, { output: path });
  }
  return path;
}

function modelPath(given: string | undefined): string {
  if (given === undefined) return defaultModel();
  if (!existsSync(given)) throw new CliError(`--model ${given}: no such file`);
  return given;
}

const mb = (name: string) => (v: string): number => {
  const n = numArg(name)(v);
  if (n <= 0) throw new InvalidArgumentError(`${name} must be a positive number of megabytes, got '${v}'`);
  return n;
};
const MiB = 1024 * 1024;

/** The server's options as flags: sizes in MiB, and the model optional (the default one is exported if absent). */
type ServeFlags = Omit<ServeOptions, 'model' | 'maxBodyBytes' | 'maxJsonBytes' | 'decodeConcurrency' | 'logDestination'> & {
  model?: string;
  maxBodyMb: number;
  maxJsonMb: number;
};

export function serveCommand(prog: Command): void {
  const d = SERVE_DEFAULTS;
  prog
    .command('serve')
    .description('serve ImageNet classification over HTTP (POST /classify, KServe v2, /metrics, a web page at /)')
    .option('--model <file>', 'ONNX model exported by this project (default: models/preact-resnet200-imagenet.onnx, exported first if absent)')
    .option('--host <address>', 'address to listen on (0.0.0.0 for all interfaces)', d.host)
    .option('-p, --port <n>', 'port (0: any free port)', intArg('--port', 0), d.port)
    .option('--max-batch <n>', 'most images per network run (dynamic batching)', intArg('--max-batch'), d.maxBatch)
    .option('--max-delay-ms <n>', 'longest a request waits for others to join its batch', intArg('--max-delay-ms', 0), d.maxDelayMs)
    .option('--max-queue <n>', 'most images waiting; beyond it requests get 503 + Retry-After', intArg('--max-queue'), d.maxQueue)
    .option('--deadline-ms <n>', 'per-request deadline once queued (503 when exceeded)', intArg('--deadline-ms'), d.deadlineMs)
    .option('--max-body-mb <mb>', 'largest image upload', mb('--max-body-mb'), d.maxBodyBytes / MiB)
    .option('--max-json-mb <mb>', 'largest KServe JSON body', mb('--max-json-mb'), d.maxJsonBytes / MiB)
    .option('--max-pixels <n>', 'largest decoded image (width x height of the first frame)', intArg('--max-pixels'), d.maxPixels)
    .option('--min-side <n>', 'smallest shorter side accepted (422 below)', intArg('--min-side'), d.minSide)
    .option('--workers <n>', 'inference worker threads, one onnxruntime session each', intArg('--workers'), d.workers)
    .option('--threads <n>', 'onnxruntime threads per worker (default: cores / workers)', intArg('--threads'))
    .option('--drain-timeout-ms <n>', 'on SIGTERM, how long to wait for in-flight requests', intArg('--drain-timeout-ms', 0), d.drainTimeoutMs)
    .addOption(new Option('--log-level <level>', 'log level (JSON logs on stdout)').choices(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default(d.logLevel))
    .action(async (f: ServeFlags) => {
      const model = modelPath(f.model);
      let server;
      try {
        const { model: _given, maxBodyMb, maxJsonMb, ...options } = f;
        server = await startServer({ ...options, model, maxBodyBytes: Math.round(maxBodyMb * MiB), maxJsonBytes: Math.round(maxJsonMb * MiB) });
      } catch (e) {
        if (e instanceof ModelFileError || e instanceof ServeOptionError) throw new CliError(e.message);
        throw e;
      }
      const running = server;
      let signals = 0;
      const done = new Promise<boolean>((resolve) => {
        const stop = (sig: NodeJS.Signals): void => {
          if (++signals > 1) {
            running.log.warn(`${sig} again: exiting without draining`);
            process.exit(1);
          }
          running.log.info(`${sig} received`);
          void running.close().then(resolve);
        };
        process.on('SIGTERM', stop);
        process.on('SIGINT', stop);
      });
      try {
        await running.ready;
      } catch (e) {
        await running.close();
        throw new Error(`cannot serve ${model}: ${(e as Error).message}`);
      }
      const clean = await done;
      if (!clean) throw new Error('shutdown drain timed out; some requests were cut off');
    });

  prog
    .command('triton')
    .description('write a Triton Inference Server model repository (ONNX Runtime backend, dynamic batching) for a model')
    .option('--model <file>', 'ONNX model exported by this project (default: the ResNet-200 that `serve` uses)')
    .option('-o, --output <dir>', 'repository folder; the model goes to <dir>/<name>/', 'triton-models')
    .option('--max-batch <n>', 'max_batch_size', intArg('--max-batch'), d.maxBatch)
    .option('--max-delay-us <n>', 'dynamic batching: max_queue_delay_microseconds', intArg('--max-delay-us', 0), d.maxDelayMs * 1000)
    .option('--max-queue <n>', 'queue policy: max_queue_size (rejects beyond it)', intArg('--max-queue'), d.maxQueue)
    .option('--timeout-ms <n>', 'queue policy: default timeout per request', intArg('--timeout-ms'), d.deadlineMs)
    .option('--instances <n>', 'model instances (instance_group count)', intArg('--instances'), 1)
    .option('--gpu', 'instance_group kind KIND_GPU (default KIND_CPU)')
    .action(async (f: { model?: string; output: string; maxBatch: number; maxDelayUs: number; maxQueue: number; timeoutMs: number; instances: number; gpu?: boolean }) => {
      const path = modelPath(f.model);
      let info;
      try {
        info = readModelInfo(path);
      } catch (e) {
        if (e instanceof ModelFileError) throw new CliError(e.message);
        throw e;
      }
      // The session gives the true input/output names and the class count.
      const session = await ort.InferenceSession.create(path, { intraOpNumThreads: 1 });
      const shapeOf = (m: ort.InferenceSession.ValueMetadata): (number | string)[] => (m.isTensor ? [...m.shape] : []);
      const sig = { inputName: session.inputNames[0], inputShape: shapeOf(session.inputMetadata[0]), outputs: session.outputNames.map((name, i) => ({ name, shape: shapeOf(session.outputMetadata[i]) })) };
      await session.release();
      const classes = sig.outputs[0].shape[1];
      const labels = typeof classes === 'number' && info.labels.length !== classes ? Array.from({ length: classes }, (_, i) => `class_${i}`) : info.labels;
      const repo = writeTritonRepository(info, sig, labels, {
        repository: f.output,
        maxBatch: f.maxBatch,
        maxQueueDelayUs: f.maxDelayUs,
        maxQueue: f.maxQueue,
        timeoutUs: f.timeoutMs * 1000,
        instances: f.instances,
        kind: f.gpu ? 'gpu' : 'cpu',
      });
      console.log(`wrote Triton model repository ${repo.dir}: ${repo.files.map((p) => p.slice(repo.dir.length + 1)).join(', ')}`);
      console.log(`weights: ${info.weights}${info.randomWeights ? ' (not trained)' : ''}`);
      console.log(`run: tritonserver --model-repository=${f.output}`);
    });
}
