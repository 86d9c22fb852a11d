// What an exported model says about itself: ONNX metadata_props and doc string, so that other runtimes and
// our server know the architecture, the labels and how to feed it.

import { type ResNetConfig, describe } from '../models/config.js';
import { type Preprocessing, datasetLabels, datasetPreprocessing } from '../models/labels.js';

/** Keys written to metadata_props. Values are strings; structured ones are JSON. */
export const META = {
  config: 'resnet_onnx.config',
  architecture: 'architecture',
  dataset: 'dataset',
  labels: 'labels',
  preprocessing: 'preprocessing',
  weights: 'weights',
  foldedBatchNorm: 'folded_batchnorm',
} as const;

export interface ModelDescription {
  weights: string;
  folded: boolean;
  labels?: string[];
  preprocessing?: Preprocessing;
}

export function modelMetadata(cfg: ResNetConfig, d: ModelDescription): Record<string, string> {
  const labels = d.labels ?? datasetLabels(cfg.dataset, cfg.classes);
  const pre = d.preprocessing ?? datasetPreprocessing(cfg.dataset);
  return {
    [META.architecture]: describe(cfg),
    [META.config]: JSON.stringify(cfg),
    [META.dataset]: cfg.dataset,
    family: cfg.family,
    depth: String(cfg.depth ?? 'custom'),
    unit: cfg.unit,
    activation: cfg.activation,
    shortcut: cfg.shortcut.kind,
    classes: String(cfg.classes),
    [META.labels]: JSON.stringify(labels),
    [META.preprocessing]: JSON.stringify(pre),
    [META.weights]: d.weights,
    [META.foldedBatchNorm]: String(d.folded),
  };
}

export function docString(cfg: ResNetConfig, d: ModelDescription): string {
  const pre = d.preprocessing ?? datasetPreprocessing(cfg.dataset);
  return [
    `${describe(cfg)}: He, Zhang, Ren, Sun, "Identity Mappings in Deep Residual Networks" (2016).`,
    `Input 'input': float32 [N, ${cfg.inChannels}, H, W], ${pre.channelOrder}, ${pre.layout}; pixels * ${pre.scale.toPrecision(6)}, minus mean ${JSON.stringify(pre.mean)}, divided by std ${JSON.stringify(pre.std)}.`,
    `Test-time crop: shorter side resized to ${pre.resize}, centre ${pre.crop}x${pre.crop} crop. Output 'logits': [N, ${cfg.classes}].`,
    `Weights: ${d.weights}. BatchNorm folded into convolutions: ${d.folded ? 'yes' : 'no'}.`,
  ].join('\n');
}
