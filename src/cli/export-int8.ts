// `export ... --int8 --calibrate DATA`: the float export goes to a temporary beside the output, is quantised
// into the output as `resnet-onnx quantize` would, and the temporary is removed.

import type { Command } from 'commander';
import { existsSync, unlinkSync } from 'node:fs';
import { basename } from 'node:path';
import { QuantizeError, quantizeModel } from '../quantize/index.js';
import { trackTemp, untrackTemp } from '../util/files.js';
import { CliError } from './common.js';

export interface Int8Flags {
  int8?: boolean;
  calibrate?: string;
  calibrationImages?: number;
  quiet?: boolean;
}

/** --calibrate and --calibration-images need --int8, --int8 needs --calibrate, and none of them goes with --training. */
export function checkInt8Flags(f: Int8Flags & { training?: boolean }, cmd: Command): void {
  const given = (k: string): boolean => cmd.getOptionValueSource(k) === 'cli';
  if (f.int8 && f.training) throw new CliError('--int8 conflicts with --training (a training step is run in float)');
  if (!f.int8 && (given('calibrate') || given('calibrationImages'))) throw new CliError(`--${given('calibrate') ? 'calibrate' : 'calibration-images'} applies to --int8 exports only`);
  if (f.int8 && f.calibrate === undefined) throw new CliError('--int8 needs --calibrate DATA: a folder of images, or a dataset folder (IDX, CIFAR), to calibrate on');
}

/** A default output path with `-int8` before `.onnx` for --int8 exports. */
export function int8Default(path: string, f: Int8Flags): string {
  return f.int8 ? path.replace(/\.onnx$/, '-int8.onnx') : path;
}

/** Where the float model is written first: the output itself, or a temporary beside it for --int8. */
export function floatStaging(output: string, f: Int8Flags): string {
  return f.int8 ? `${output}.float-${process.pid}.tmp` : output;
}

/** Quantises the staged float model into `output`, removes the staging file, and says what was written. */
export async function finishInt8(staging: string, output: string, f: Int8Flags): Promise<void> {
  trackTemp(staging);
  try {
    const r = await quantizeModel({ model: staging, output, calibrate: f.calibrate!, images: f.calibrationImages, source: 'resnet-onnx export (float, not kept)' });
    const cal = r.record.calibration;
    console.log(`quantised: ${r.convs} convolutions${r.gemms ? ` and ${r.gemms} Gemm` : ''} to int8 (${r.record.scheme}), ${r.record.method} calibration on ${cal.images} images of ${cal.data}`);
    console.log(`wrote ${output}: ${(r.bytes / 1e6).toFixed(1)} MB (${((100 * r.bytes) / r.floatBytes).toFixed(0)}% of the float model's ${(r.floatBytes / 1e6).toFixed(1)} MB; the float model was not kept: export without --int8 for it)`);
  } catch (e) {
    if (e instanceof QuantizeError) throw new CliError(e.message.replaceAll(staging, `the exported model (${basename(output)})`));
    throw e;
  } finally {
    if (existsSync(staging)) unlinkSync(staging);
    untrackTemp(staging);
  }
}
